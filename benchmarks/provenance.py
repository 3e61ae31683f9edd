"""Where a results file of ``benchmarks/`` came from, and how it is written."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def provenance(script: str, argv: list[str], device) -> dict:
    """The commit, the command (``python -m benchmarks.<script> <argv>``), the device, machine,
    torch's threads and the UTC date of a run: the head of its results file."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "commit": commit or "unknown",
        "command": shlex.join(["python", "-m", f"benchmarks.{script}", *argv]),
        "device": str(device),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_results(result: dict, out: Path) -> Path:
    """``result`` as indented JSON at ``out`` (its folder made); no NaN, which JSON lacks."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    print(f"wrote {out}")
    return out


def results_to_update(out: Path, same: dict) -> dict:
    """The contents of the results file ``out`` that a ``--methods`` run updates: refused with a
    ``SystemExit`` when it does not exist or its ``meta`` differs from ``same`` in any key."""
    before = file_to_keep(out, True, same)
    if before is None:
        raise SystemExit(
            f"--methods replaces entries of {out}, which must exist with {same}: "
            "run without --methods to make it"
        )
    return before


def merged(before: dict, methods: dict, update: dict) -> dict:
    """A results file's contents ``before`` with the entries of ``methods`` replaced or added,
    the others kept, and ``update`` (the methods measured again, with the provenance of that
    run) appended to its ``meta["updates"]``."""
    meta = {**before["meta"], "updates": [*before["meta"].get("updates", []), update]}
    return {"meta": meta, "methods": before["methods"] | methods}


def method_names(text: str, known) -> list[str]:
    """The method names in ``text``, a ``--methods`` option: separated by commas, a name that
    holds a comma itself (``"ProtoNet, affine training"``) read whole when it is one of
    ``known``. A name that is not known is refused with a ``SystemExit`` that lists them."""
    parts, names = [p.strip() for p in text.split(",")], []
    while parts:
        for n in range(len(parts), 0, -1):  # the longest run of parts that is a known name
            name = ", ".join(parts[:n])
            if name in known or n == 1:
                break
        if name not in known:
            raise SystemExit(f"--methods: unknown {name!r}; choose among {', '.join(known)}")
        names.append(name)
        parts = parts[n:]
    return names


def parse_seeds(text: str) -> list[int]:
    """The seeds of a ``--seeds`` option, separated by commas: a value that is not an integer,
    or is negative, is refused with a ``SystemExit`` that names it."""
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise SystemExit(f"--seeds must be comma-separated integers, got {text!r}")
    if any(s < 0 for s in seeds):
        raise SystemExit(f"--seeds must be non-negative, got {text!r}")
    return seeds


def one_method_per_run(methods: dict, text: str | None = None) -> list[str]:
    """The names of ``methods`` (the registry) that a script trains: the first method of each
    trained run (the transfer classifiers share one pretraining), or, given a ``--methods``
    option ``text``, the methods it names (:func:`method_names`, among those with a run)."""
    if text:
        return method_names(text, [n for n, m in methods.items() if m.run])
    runs, chosen = set(), []
    for name, m in methods.items():
        if m.run is not None and m.run not in runs:
            runs.add(m.run)
            chosen.append(name)
    return chosen


def file_to_keep(out: Path, methods_given: bool, same: dict) -> dict | None:
    """The results file ``out`` whose other methods' entries a ``--methods`` run keeps: its
    contents when ``methods_given`` and its ``meta`` agrees with ``same`` in every key, else
    ``None`` (the file is made anew)."""
    before = json.loads(out.read_text()) if methods_given and out.is_file() else None
    if before is not None and any(before["meta"].get(k) != v for k, v in same.items()):
        return None  # another protocol
    return before


def write_methods(
    script: str,
    argv,
    device,
    start: float,
    same: dict,
    found: dict,
    out: Path,
    before: dict | None = None,
    chosen=None,
) -> dict:
    """Write the results file ``out`` of a run of ``benchmarks/<script>.py`` (its arguments
    ``argv``, ``None`` for the command line's) that measured the methods ``found`` (``{name:
    entry}``) from ``time.perf_counter()`` at ``start`` on: made anew, with ``same`` (what the
    run measured and how) and its :func:`provenance` as ``meta``, or, given the file ``before``
    that a ``--methods`` run (``chosen``) keeps (:func:`file_to_keep`), merged into it
    (:func:`merged`). Returns what it wrote."""
    argv = sys.argv[1:] if argv is None else argv
    seconds = time.perf_counter() - start
    made = {**provenance(script, argv, device), "seconds": round(seconds)}
    if before is None:
        result = {"meta": {**same, **made}, "methods": found}
    else:  # --methods on a file of the same protocol: these entries replaced, the others kept
        result = merged(before, found, {"methods": chosen, **made})
    write_results(result, out)
    return result


def budget_registry_and_file(out: str | None, folder: str) -> tuple[str, dict, Path]:
    """What a script over the registry starts from: the budget (``$FEWSHOT_BUDGET``, else
    ``quick``, then set for the chapters' code), the registry of every method (the chapters'
    code imported), and its results file, ``out`` when given, else
    ``benchmarks/results/<folder>/<budget>.json``."""
    budget = os.environ.get("FEWSHOT_BUDGET", "quick")
    os.environ["FEWSHOT_BUDGET"] = budget
    sys.path.insert(0, str(ROOT))
    import utils.methods  # noqa: F401  (the chapters' code registers every method)
    from utils.registry import METHODS

    path = Path(out) if out else ROOT / "benchmarks" / "results" / folder / f"{budget}.json"
    return budget, METHODS, path
