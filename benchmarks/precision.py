"""Each method trained in fp32 and in bfloat16, both scored on the same validation episodes.

    python -m benchmarks.precision                       # every method with a run of its own
    python -m benchmarks.precision --methods Siamese --seeds 0,1

Run it from the repository root, with ``$OMNIGLOT_ROOT`` set as for the chapters, on a CPU with
bfloat16 units (where the book trains in bf16: ``utils.train.training_precision``). For each
method (one per trained run: the transfer classifiers share one pretraining), its run is
trained (or loaded from the book's cache, whose runs of the two precisions have names of their
own) by its chapter's trainer with ``$FEWSHOT_PRECISION`` set to ``fp32``, then to ``bf16``;
each model's test-time choices are made on validation episodes as its chapter makes them, and
both are scored on the same 5-way 1-shot episodes of the **validation** classes (and 20-way
1-shot where the method is tested there; other episodes than those of the test-time choices).
No test episode is touched. A method whose config says ``bf16 = False`` (the book trains it
in fp32, because this check found bf16 worse) is trained in bf16 here all the same, so that the
file shows why. A method whose trainer does not go through ``train_steps`` (Reptile's
interpolation, DAGAN's two players) trains in fp32 either way and is left out.

One seed is an anecdote: another seed trains another model, a point or more away, whatever
the precision. ``--seeds`` trains and scores each precision with each seed (``setup(seed=s)``).

It writes ``benchmarks/results/precision/<budget>.json`` (``--out`` to change it): per method,
seed and precision the per-episode validation accuracies, the training loop's seconds and the
device it ran on (threads, precision), with the machine, commit, command and date. With
``--methods``, a file of the same budget and protocol keeps its other methods' entries, and
its ``updates`` say which commit and command replaced these.
Chapter 12 reads it: what bfloat16 costs in accuracy and what it saves in time.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

from benchmarks.provenance import (
    budget_registry_and_file,
    file_to_keep,
    one_method_per_run,
    parse_seeds,
    write_methods,
)
from utils.registry import RECORD_PROTOCOL

SETTINGS = ("5-way 1-shot", "20-way 1-shot")  # those of them a method is tested in
N_EPISODES = 300  # validation episodes per setting
EPISODE_SEED = 1  # the test-time choices use the validation episodes of seed 0
PRECISIONS = ("bf16", "fp32")  # bf16 first: a trainer that ignores it is seen at once


def compare(method, S, n_episodes: int = N_EPISODES) -> dict | None:
    """``method`` trained in each of :data:`PRECISIONS` and scored on ``n_episodes`` validation
    episodes of each of its :data:`SETTINGS`: ``{precision: {"seconds", "device",
    "per_episode": {setting: [...]}}}``; ``None`` when its trainer ignores the precision."""
    from utils.data import load_split
    from utils.episodes import N_QUERY, Episodes
    from utils.evaluate import SETTINGS as ALL
    from utils.evaluate import evaluate
    from utils.train import PRECISION_VAR, train_or_load

    val = load_split("val", rotations=False)
    episodes = {  # the same episodes for both precisions
        s: Episodes(val, *ALL[s], N_QUERY, n_episodes, seed=EPISODE_SEED)
        for s in SETTINGS
        if s in method.settings
    }
    before = os.environ.get(PRECISION_VAR)
    found = {}
    try:
        for precision in PRECISIONS:
            os.environ[PRECISION_VAR] = precision
            config = method.config  # a config whose ``bf16`` is False: trained in bf16 here
            if precision == "bf16" and getattr(config, "bf16", True) is False:
                config = replace(config, bf16=True)
            model, history = train_or_load(method.run, S, method.train, config, method.build)
            if history.precision != precision:
                return None  # trained in fp32 whatever the switch says
            per_episode = {}
            for setting, setting_episodes in episodes.items():
                classify = method.classifier(model, S, setting, {})  # choices made on val now
                accuracy = evaluate(
                    classify, setting_episodes, S.device, desc=f"{method.name}, {setting}"
                )
                print(
                    f"{method.name}, {precision}, {setting}: {accuracy} on validation", flush=True
                )
                per_episode[setting] = [float(x) for x in accuracy.per_episode]
            found[precision] = {
                "seconds": float(history.seconds),
                "device": history.device,
                "per_episode": per_episode,
            }
    finally:
        if before is None:
            os.environ.pop(PRECISION_VAR, None)
        else:
            os.environ[PRECISION_VAR] = before
    return found


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", help="comma-separated method names (default: one per trained run)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--out", help="the JSON file (default: benchmarks/results/precision/)")
    args = p.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    budget, METHODS, out = budget_registry_and_file(args.out, "precision")
    from utils.config import setup

    chosen = one_method_per_run(METHODS, args.methods)
    same = {
        "budget": budget,
        "settings": list(SETTINGS),
        "split": "val, unrotated",
        "episodes": N_EPISODES,
        "protocol": RECORD_PROTOCOL,
    }
    before = file_to_keep(out, bool(args.methods), same)
    start, found = time.perf_counter(), {}
    for seed in seeds:
        S = setup(seed=seed)
        for name in chosen:
            entry = compare(METHODS[name], S)
            if entry is not None:  # None: a trainer that ignores the precision
                found.setdefault(name, {})[str(seed)] = entry
    return write_methods("precision", argv, S.device, start, same, found, out, before, chosen)


if __name__ == "__main__":
    main()
