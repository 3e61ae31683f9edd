"""Where a results file of ``benchmarks/`` came from, and how it is written."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def provenance(script: str, argv: list[str], device) -> dict:
    """The commit, the command (``python -m benchmarks.<script> <argv>``), the device, machine,
    torch's threads and the precision models train in there (``training_precision``), and the
    UTC date of a run: the head of its results file."""
    from utils.train import training_precision

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "commit": commit or "unknown",
        "command": shlex.join(["python", "-m", f"benchmarks.{script}", *argv]),
        "device": str(device),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "precision": training_precision(device),
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
    before = json.loads(out.read_text()) if out.is_file() else None
    if before is None or any(before["meta"].get(k) != v for k, v in same.items()):
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
