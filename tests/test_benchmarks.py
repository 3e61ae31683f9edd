"""The speed benchmark (``benchmarks/speed.py``) runs, in its smoke mode, and writes its JSON.

Only the sections that need no data set and no training run here (peak, conv4, maml_step), on
one CPU thread as in ``test_full_budget.py``: a few seconds, and cheap on a shared machine, where
two threads that wait for each other can take many times longer. The numbers of a smoke run are
not measurements: only their shape is checked.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest tests` (not `python -m pytest`) leaves the root out
    sys.path.insert(0, str(ROOT))

from benchmarks import seeds, speed  # noqa: E402

SECTIONS = ("peak", "conv4", "maml_step")
TIMES = {"peak": ("ms",), "conv4": ("ms",), "maml_step": ("ours_ms",)}


def test_smoke_run_writes_every_section_with_positive_times(tmp_path, capsys):
    out = tmp_path / "b.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        speed.main(["--smoke", "--sections", ",".join(SECTIONS), "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    data = json.loads(out.read_text())

    assert set(data["sections"]) == set(SECTIONS)
    assert data["meta"]["device_type"] == "cpu" and data["meta"]["smoke"] is True
    assert data["meta"]["threads"] == 1
    for section in SECTIONS:
        rows = data["sections"][section]
        assert rows, f"{section} has no rows"
        for row in rows:
            for key in TIMES[section]:
                assert row[key] > 0, f"{section}: {key} = {row[key]} in {row}"
    assert {r["dtype"] for r in data["sections"]["peak"]} == {"fp32", "bf16"}
    for row in data["sections"]["conv4"]:
        assert row["gflops"] > 0 and row["fraction_of_fp32_peak"] > 0, row
    for row in data["sections"]["maml_step"]:  # learn2learn's time when it is installed
        assert row["learn2learn"] != "ok" or row["learn2learn_ms"] > 0
    printed = capsys.readouterr().out
    assert "device:" in printed and "maml_step" in printed and str(out) in printed


def test_seed_study_runs_the_comparison_up_to_its_training_loop():
    cells = seeds.chapter_cells()
    assert cells[-1].startswith(seeds.LAST_CELL)
    assert sum(c.count(seeds.SEED_LINE) for c in cells) == 1
    assert not any("google.colab" in c for c in cells), "the Colab cell is left out"
    assert any("METHODS = {" in c for c in cells), "the registry is among the cells"


def test_seed_study_refuses_a_chapter_without_its_anchors(tmp_path):
    nb = tmp_path / "c.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["S = setup(seed=0)"]}]}))
    with pytest.raises(RuntimeError, match="models, runs, results"):
        seeds.chapter_cells(nb)
    for bad in ("1,x", "-1"):
        with pytest.raises(SystemExit, match="--seeds"):
            seeds.main(["--seeds", bad])


def test_seed_study_runs_cells_that_define_dataclasses(tmp_path):
    """The chapter's registry is a dataclass: the cells run in a module, as in a kernel."""
    cells = [
        "from dataclasses import dataclass\nfrom utils.config import setup\nS = setup(seed=0)",
        "@dataclass\nclass Method:\n    settings: tuple = ()\n\n\nMETHODS = {'a': Method(('x',))}",
        "models, runs, results = {}, {}, {}\nMETHODS = {}",
    ]
    assert seeds.run_seed(3, cells) == {}
