"""Every method of the comparison trained and tested with several seeds: the seed spread.

    python -m benchmarks.seeds                      # seeds 0, 1 and 2 at the quick budget
    python -m benchmarks.seeds --seeds 1,2 --out /tmp/s.json
    python -m benchmarks.seeds --methods Siamese     # re-measure one method in the file

Run it from the repository root, with ``$OMNIGLOT_ROOT`` set as for the chapters. One seed is an
anecdote: the same code trained with another seed lands a few points away, and chapter 11's
intervals (over test episodes) do not show it. For each seed (``setup(seed=s)``), every method
of the registry goes through ``utils.registry.measure``, as in chapter 11: the chapters'
trainers, settings and test-time choices (made on validation episodes), and the same fixed
5-way 1-shot test episodes; nothing is written twice. Runs land in the book's cache
(``$FEWSHOT_CACHE``) as the chapters' do, so a seed already trained there (seed 0 after the book
was executed) is loaded, not trained again.

It writes ``benchmarks/results/seeds/<budget>.json`` (``--out`` to change it; a folder of its own,
as "What it costs" reads every file of ``benchmarks/results/``): per method and
seed the per-episode accuracies, the training seconds and the key of the method's config, with
the machine, commit, command and date. ``--methods`` measures only those methods and replaces
their entries in the file, whose ``updates`` then say which commit and command did. Chapter 11
reads the file, when it is there, and shows the spread across seeds beside the interval across
episodes, leaving out an entry whose config is not the method's config now.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.provenance import budget_registry_and_file, method_names, parse_seeds
from benchmarks.provenance import results_to_update, write_methods
from utils.registry import RECORD_PROTOCOL, method_code

SETTING = "5-way 1-shot"


def run_seed(seed: int, names=None) -> dict:
    """Every registered method (or those ``names``) trained (or loaded) with ``seed`` and tested
    on the fixed 5-way 1-shot episodes: ``{method: {"per_episode": [...], "seconds": s,
    "config": key}}`` (the run's training seconds, 0 for a method that learns nothing; the key
    of its config, ``None`` without one, by which chapter 11 sees an entry made before the
    config changed)."""
    import utils.methods  # noqa: F401  (the chapters' code registers every method)
    from utils.config import setup
    from utils.registry import METHODS, measure

    S = setup(seed=seed)
    found = {}
    for name, method in METHODS.items():
        if names is not None and name not in names:
            continue
        _, history, _, results = measure(method, S, S.n_test_episodes, settings=(SETTING,))
        found[name] = {
            "per_episode": [float(x) for x in results[SETTING].per_episode],
            "seconds": float(history.seconds) if history is not None else 0.0,
            "config": None if method.config is None else method.config.at(S.budget).key(),
            "code": method_code(method),
        }
    return found


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--out", help="the JSON file (default benchmarks/results/seeds/<budget>.json)")
    keep = "the file keeps the other methods (of the same budget, protocol and seeds)"
    p.add_argument("--methods", help=f"comma-separated method names to measure; {keep}")
    args = p.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    budget, METHODS, out = budget_registry_and_file(args.out, "seeds")
    names = before = None
    if args.methods:
        names = method_names(args.methods, list(METHODS))
        before = results_to_update(
            out, {"budget": budget, "protocol": RECORD_PROTOCOL, "seeds": seeds}
        )
    start = time.perf_counter()
    by_seed = {}
    for seed in seeds:
        t = time.perf_counter()
        by_seed[str(seed)] = run_seed(seed, names)
        print(f"seed {seed}: {time.perf_counter() - t:.0f} s", flush=True)
    methods = {name: {s: by_seed[s][name] for s in by_seed} for name in by_seed[str(seeds[0])]}
    same = {
        "budget": budget,
        "setting": SETTING,
        "protocol": RECORD_PROTOCOL,  # a file without it was made before that protocol
        "seeds": seeds,
    }
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return write_methods("seeds", argv, device, start, same, methods, out, before, names)


if __name__ == "__main__":
    main()
