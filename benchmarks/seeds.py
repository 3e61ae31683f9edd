"""Every method of the comparison trained and tested with several seeds: the seed spread.

    python -m benchmarks.seeds                      # seeds 0, 1 and 2 at the quick budget
    python -m benchmarks.seeds --seeds 1,2 --out /tmp/s.json

Run it from the repository root, with ``$OMNIGLOT_ROOT`` set as for the chapters. One seed is an
anecdote: the same code trained with another seed lands a few points away, and chapter 11's
intervals (over test episodes) do not show it. This script runs chapter 11's own cells, from
its start to the loop that trains what is missing and evaluates it, once per seed, with
``setup(seed=0)`` replaced by ``setup(seed=s)`` and every method tested on 5-way 1-shot only:
the same registry, trainers, test-time choices on validation and fixed test episodes as the
chapter, and nothing written twice. Runs land in the book's cache (``$FEWSHOT_CACHE``) as the
chapters' do, so a seed already trained there (seed 0 after the book was executed) is loaded,
not trained again.

It writes ``benchmarks/results/seeds/<budget>.json`` (``--out`` to change it; a folder of its own,
as "What it costs" reads every file of ``benchmarks/results/``): per method and
seed the per-episode accuracies and the training seconds, with the machine, commit, command and
date. Chapter 11 reads the file, when it is there, and shows the spread across seeds beside the
interval across episodes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import types
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "chapters" / "11_comparison.ipynb"
SEED_LINE = "S = setup(seed=0)"
LAST_CELL = "models, runs, results = {}, {}, {}"  # the start of the cell that trains and tests
SETTING = "5-way 1-shot"


def chapter_cells(path: Path = CHAPTER) -> list[str]:
    """The code of chapter 11's cells that run here: from its first code cell to the one that
    trains what is missing and tests it, without the cells tagged ``remove-cell`` (the Colab
    set-up). A ``RuntimeError`` names what is missing when the chapter no longer has the seed
    line or that cell."""
    cells = json.loads(path.read_text())["cells"]
    code = [
        "".join(c["source"])
        for c in cells
        if c["cell_type"] == "code" and "remove-cell" not in c.get("metadata", {}).get("tags", [])
    ]
    last = next((i for i, src in enumerate(code) if src.startswith(LAST_CELL)), None)
    if last is None:
        raise RuntimeError(f"{path} has no code cell that starts with {LAST_CELL!r}")
    code = code[: last + 1]
    if sum(src.count(SEED_LINE) for src in code) != 1:
        raise RuntimeError(f"{path} must set its seed exactly once with {SEED_LINE!r}")
    return code


def run_seed(seed: int, cells: list[str]) -> dict:
    """Run ``cells`` with ``seed`` and return ``{method: {"per_episode": [...], "seconds": s}}``
    for 5-way 1-shot (the training seconds are the run's)."""
    module = types.ModuleType(f"chapter11_seed{seed}")  # a module, as dataclasses expect
    namespace = module.__dict__
    namespace["display"] = print
    sys.modules[module.__name__] = module
    try:
        for i, src in enumerate(cells):
            src = src.replace(SEED_LINE, f"S = setup(seed={seed})")
            exec(compile(src, f"<chapter 11, seed {seed}, cell {i}>", "exec"), namespace)
            if "METHODS" in namespace and "_only" not in namespace:  # after the registry's cell
                for m in namespace["METHODS"].values():
                    m.settings = tuple(s for s in m.settings if s == SETTING)
                namespace["_only"] = SETTING
    finally:
        del sys.modules[module.__name__]
    return {
        name: {
            "per_episode": [float(x) for x in namespace["results"][name][SETTING].per_episode],
            "seconds": float(namespace["runs"][name]["seconds"]),
        }
        for name in namespace["METHODS"]
    }


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
    cells = chapter_cells()
    sys.path.insert(0, str(ROOT))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    start = time.perf_counter()
    by_seed = {}
    for seed in seeds:
        t = time.perf_counter()
        by_seed[str(seed)] = run_seed(seed, cells)
        print(f"seed {seed}: {time.perf_counter() - t:.0f} s", flush=True)
    result = {
        "meta": {
            "budget": budget,
            "setting": SETTING,
            "seeds": seeds,
            "commit": commit or "unknown",
            "command": "python -m benchmarks.seeds " + " ".join(argv or sys.argv[1:]),
            "device": str(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
            "threads": torch.get_num_threads(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "seconds": round(time.perf_counter() - start),
        },
        "methods": {
            name: {seed: by_seed[seed][name] for seed in by_seed} for name in by_seed[str(seeds[0])]
        },
    }
    out = (
        Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "seeds" / f"{budget}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
