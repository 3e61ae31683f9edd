"""Every method of the comparison trained and tested with several seeds: the seed spread.

    python -m benchmarks.seeds                      # seeds 0, 1 and 2 at the quick budget
    python -m benchmarks.seeds --seeds 1,2 --out /tmp/s.json

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
seed the per-episode accuracies and the training seconds, with the machine, commit, command and
date. Chapter 11 reads the file, when it is there, and shows the spread across seeds beside the
interval across episodes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from benchmarks.provenance import provenance, write_results
from utils.registry import RECORD_PROTOCOL

ROOT = Path(__file__).resolve().parents[1]
SETTING = "5-way 1-shot"


def run_seed(seed: int) -> dict:
    """Every registered method trained (or loaded) with ``seed`` and tested on the fixed 5-way
    1-shot episodes: ``{method: {"per_episode": [...], "seconds": s}}`` (the run's training
    seconds; 0 for a method that learns nothing)."""
    import utils.methods  # noqa: F401  (the chapters' code registers every method)
    from utils.config import setup
    from utils.registry import METHODS, measure

    S = setup(seed=seed)
    found = {}
    for name, method in METHODS.items():
        _, history, _, results = measure(method, S, S.n_test_episodes, settings=(SETTING,))
        found[name] = {
            "per_episode": [float(x) for x in results[SETTING].per_episode],
            "seconds": float(history.seconds) if history is not None else 0.0,
        }
    return found


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--out", help="the JSON file (default benchmarks/results/seeds/<budget>.json)")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if any(s < 0 for s in seeds):
        raise SystemExit(f"--seeds must be non-negative, got {args.seeds!r}")
    budget = os.environ.get("FEWSHOT_BUDGET", "quick")
    os.environ["FEWSHOT_BUDGET"] = budget
    sys.path.insert(0, str(ROOT))
    start = time.perf_counter()
    by_seed = {}
    for seed in seeds:
        t = time.perf_counter()
        by_seed[str(seed)] = run_seed(seed)
        print(f"seed {seed}: {time.perf_counter() - t:.0f} s", flush=True)
    result = {
        "meta": {
            "budget": budget,
            "setting": SETTING,
            "protocol": RECORD_PROTOCOL,  # a file without it was made before that protocol
            "seeds": seeds,
            **provenance(
                "seeds", argv or sys.argv[1:], "cuda" if torch.cuda.is_available() else "cpu"
            ),
            "seconds": round(time.perf_counter() - start),
        },
        "methods": {
            name: {seed: by_seed[seed][name] for seed in by_seed} for name in by_seed[str(seeds[0])]
        },
    }
    out = (
        Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "seeds" / f"{budget}.json"
    )
    write_results(result, out)
    return result


if __name__ == "__main__":
    main()
