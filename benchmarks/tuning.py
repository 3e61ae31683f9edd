"""Each method's learning rate checked on validation episodes: the book's value and its neighbours.

    python -m benchmarks.tuning                                   # every method with a run
    python -m benchmarks.tuning --methods Siamese,Relation --factors 0.333,1,3

Run it from the repository root, with ``$OMNIGLOT_ROOT`` set as for the chapters. For each
method (one per trained run: the transfer classifiers share one pretraining), the learning rate
of its config (:data:`RATE_FIELDS`: the first of them the config has) is multiplied by each
factor; the method is trained with that config by its chapter's trainer (``train_or_load``: the
book's own value is loaded from the cache when the chapters ran), its test-time choices are made
on validation episodes as its chapter makes them, and it is scored on 5-way 1-shot episodes of
the **validation** classes (unrotated, as the test classes are; other episodes than those of
the test-time choices). No test episode is touched.

It writes ``benchmarks/results/tuning/<budget>.json`` (``--out`` to change it): per method the
field, the book's value, and per value the per-episode validation accuracies and the training
seconds, with the machine, commit, command and date. With ``--methods``, a file of the same
budget, factors and protocol keeps its other methods' entries, and its ``updates`` say which
commit and command replaced these. Chapter 11 reads it: how far the
accuracy moves with the learning rate, and whether the book's value is within the 95 % interval
of the best one's.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from benchmarks.provenance import (
    budget_registry_and_file,
    file_to_keep,
    one_method_per_run,
    write_methods,
)
from utils.registry import RECORD_PROTOCOL

SETTING = "5-way 1-shot"
RATE_FIELDS = ("lr", "meta_lr", "inner_lr")  # MAML's meta_lr; Reptile's inner Adam's rate
FACTORS = (1 / 3, 1.0, 3.0)
N_EPISODES = 100  # validation episodes per value
EPISODE_SEED = 1  # the test-time choices use the validation episodes of seed 0


def rate_field(config) -> str:
    """The name of ``config``'s learning rate: the first of :data:`RATE_FIELDS` it has."""
    field = next((f for f in RATE_FIELDS if hasattr(config, f)), None)
    if field is None:
        raise ValueError(f"{type(config).__name__} has none of the fields {RATE_FIELDS}")
    return field


def tune(method, S, factors=FACTORS, n_episodes: int = N_EPISODES) -> dict:
    """``method`` trained with its learning rate times each of ``factors`` and scored on
    ``n_episodes`` 5-way 1-shot validation episodes: ``{"field", "book", "values": {value:
    {"per_episode": [...], "seconds": s}}, "code"}`` (the key of the method's code)."""
    from utils.data import load_split
    from utils.episodes import N_QUERY, Episodes
    from utils.evaluate import evaluate
    from utils.registry import method_code
    from utils.train import train_or_load

    field = rate_field(method.config)
    book = getattr(method.config.at(S.budget), field)
    episodes = Episodes(
        load_split("val", rotations=False), 5, 1, N_QUERY, n_episodes, seed=EPISODE_SEED
    )
    values = {}
    for factor in factors:
        value = float(book) if factor == 1 else float(f"{book * factor:.3g}")
        config = replace(method.config, **{field: value})
        model, history = train_or_load(method.run, S, method.train, config, method.build)
        classify = method.classifier(model, S, SETTING, {})  # choices made on validation now
        accuracy = evaluate(classify, episodes, S.device, desc=f"{method.name}, {field}={value:g}")
        print(f"{method.name}, {field} = {value:g}: {accuracy} on validation", flush=True)
        values[f"{value:g}"] = {
            "per_episode": [float(x) for x in accuracy.per_episode],
            "seconds": float(history.seconds),
        }
    return {"field": field, "book": float(book), "values": values, "code": method_code(method)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", help="comma-separated method names (default: one per trained run)")
    p.add_argument("--factors", default=",".join(f"{f:.3g}" for f in FACTORS))
    p.add_argument("--out", help="the JSON file (default benchmarks/results/tuning/<budget>.json)")
    args = p.parse_args(argv)
    try:
        factors = [float(f) for f in args.factors.split(",")]
    except ValueError:
        raise SystemExit(f"--factors must be comma-separated numbers, got {args.factors!r}")
    if not factors or any(f <= 0 for f in factors):
        raise SystemExit(f"--factors must be positive, got {args.factors!r}")
    budget, METHODS, out = budget_registry_and_file(args.out, "tuning")
    from utils.config import setup

    chosen = one_method_per_run(METHODS, args.methods)
    same = {
        "budget": budget,
        "setting": SETTING,
        "split": "val, unrotated",
        "episodes": N_EPISODES,
        "protocol": RECORD_PROTOCOL,
        "factors": factors,
    }
    before = file_to_keep(out, bool(args.methods), same)
    S = setup(seed=0)
    start = time.perf_counter()
    found = {name: tune(METHODS[name], S, factors) for name in chosen}
    return write_methods("tuning", argv, S.device, start, same, found, out, before, chosen)


if __name__ == "__main__":
    main()
