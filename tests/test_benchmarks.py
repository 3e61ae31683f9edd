"""The scripts of ``benchmarks/``: the speed benchmark (``speed.py``) runs, in its smoke mode,
and writes its JSON; the seed study (``seeds.py``) and the learning-rate check (``tuning.py``)
go through the registry as chapter 11 does, here with toy methods, and so do the training on
``trainval`` (``trainval.py``) and the points of accuracy against compute (``curves.py``);
results files say where they came from (``provenance.py``).

Of the speed benchmark, only the sections that need no data set and no training run here (peak,
conv4, maml_step), on one CPU thread as in ``test_full_budget.py``: a few seconds, and cheap on
a shared machine, where two threads that wait for each other can take many times longer. The
numbers of a smoke run are not measurements: only their shape is checked.
"""

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest tests` (not `python -m pytest`) leaves the root out
    sys.path.insert(0, str(ROOT))

from benchmarks import curves, seeds, speed, trainval, tuning  # noqa: E402

SECTIONS = ("peak", "conv4", "maml_step")  # the sections that need no data set and no run
TIMES = {"peak": ("gflops",), "conv4": ("ms",), "maml_step": ("ours_ms", "ours_batched_ms")}


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
    assert data["meta"]["threads"] == 1 and "commit" in data["meta"]
    for section in SECTIONS:
        rows = data["sections"][section]
        assert rows, f"{section} has no rows"
        for row in rows:
            for key in TIMES[section]:
                assert row[key] > 0, f"{section}: {key} = {row[key]} in {row}"
    peak = data["sections"]["peak"][0]["gflops"]
    for row in data["sections"]["conv4"]:  # the fraction of the largest of the peak's rates
        assert row["fp32_peak_gflops"] >= peak, row
        assert row["fraction_of_peak"] == row["gflops"] / row["fp32_peak_gflops"], row
    for row in data["sections"]["maml_step"]:  # learn2learn's time when it is installed
        assert row["learn2learn"] != "ok" or row["learn2learn_ms"] > 0
    printed = capsys.readouterr().out
    assert "maml_step" in printed and str(out) in printed


def test_episode_and_training_sections_time_the_registered_methods(real, monkeypatch, tmp_path):
    """A method that learns nothing is timed per test episode; one whose run the cache lacks is
    left out with a note; each trainer runs a few steps in a temporary cache."""
    from dataclasses import dataclass

    from utils import methods as M
    from utils import registry as R
    from utils.config import Budget, Config
    from utils.data import load_split
    from utils.train import fit

    @dataclass(frozen=True)
    class ToyConfig(Config):
        steps: int = Budget(quick=7, full=70)

    load_split("train"), load_split("test")  # the data set from the real cache
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))

    def train(S, config):
        return torch.nn.Linear(2, 1), fit(lambda b: {"loss": 0.0}, range(config.at(S.budget).steps))

    pixels = R.Method("pixels", "01", lambda model, S, setting, choices: M.pixel_nearest_neighbour)
    toy = R.Method(
        "toy", "00", pixels.classifier, "toy", ToyConfig(), train, lambda: torch.nn.Linear(2, 1)
    )
    monkeypatch.setattr(R, "METHODS", {"pixels": pixels, "toy": toy})
    cpu = torch.device("cpu")
    rows = speed.section_episode(cpu, speed.SMOKE)
    assert rows[0]["method"] == "pixels" and rows[0]["ms"] > 0
    assert rows[1] == {"method": "toy", "ms": None, "note": "not trained in this cache"}
    (row,) = speed.section_training(cpu, speed.SMOKE)
    assert row["method"] == "toy" and row["ms_per_step"] >= 0
    assert (row["steps"], row["quick_steps"], row["full_steps"]) == (2, 7, 70)
    assert not list(tmp_path.glob("runs/toy-*"))  # trained in a temporary cache


def test_seed_study_measures_every_registered_method_per_seed(real, monkeypatch, tmp_path):
    """``run_seed`` goes through the registry as chapter 11 does: here one method that learns
    nothing, on the fixed 5-way 1-shot test episodes."""
    from utils import methods as M
    from utils import registry as R
    from utils.data import load_split

    load_split("test")  # the data set from the real cache, before the runs' cache is emptied
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    pixels = R.Method("pixels", "01", lambda model, S, setting, choices: M.pixel_nearest_neighbour)
    monkeypatch.setattr(R, "METHODS", {"pixels": pixels})
    found = seeds.run_seed(3)
    assert list(found) == ["pixels"] and found["pixels"]["seconds"] == 0.0
    assert len(found["pixels"]["per_episode"]) == 200  # the quick budget's test episodes
    assert found["pixels"]["config"] is None  # a method without a config
    # --methods replaces the named methods' entries of a file and keeps the others
    out = tmp_path / "seeds.json"
    with pytest.raises(SystemExit, match="must exist"):
        seeds.main(["--seeds", "3", "--methods", "pixels", "--out", str(out)])
    with pytest.raises(SystemExit, match="unknown 'nope'"):
        seeds.main(["--seeds", "3", "--methods", "nope", "--out", str(out)])
    first = seeds.main(["--seeds", "3", "--out", str(out)])
    first["methods"]["other"] = {"3": {"per_episode": [0.5], "seconds": 1.0, "config": "k"}}
    out.write_text(json.dumps(first))
    again = seeds.main(["--seeds", "3", "--methods", "pixels", "--out", str(out)])
    assert (
        list(again["methods"]) == ["pixels", "other"]
        and again["methods"]["other"]["3"]["seconds"] == 1.0
    )
    assert (
        again["meta"]["updates"][0]["methods"] == ["pixels"]
        and "commit" in again["meta"]["updates"][0]
    )


def test_trainval_trains_again_on_trainval_and_keeps_the_choices_made_on_validation(
    real, monkeypatch, tmp_path
):
    """A toy method through ``trainval.main``: trained on ``train`` (4,112 classes) in the
    book's cache and on ``trainval`` (4,800) in its folder, its test-time choice made once
    (for the first model) and reused, frozen, for the second; both tested on the same
    episodes; the cache and ``load_split`` as they were afterwards."""
    import os
    from dataclasses import dataclass

    from utils import methods as M
    from utils import registry as R
    from utils.config import Budget, Config
    from utils.data import load_split
    from utils.train import fit

    @dataclass(frozen=True)
    class ToyConfig(Config):
        steps: int = Budget(quick=1, full=2)

    load_split("test")  # the data set from the real cache, before the runs' cache is emptied
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    monkeypatch.delenv("FEWSHOT_RETRAIN", raising=False)
    seen, choices_made = [], []

    def train(S, config):
        seen.append((len(M.load_split("train")), os.environ["FEWSHOT_CACHE"]))
        return torch.nn.Linear(1, 1), fit(lambda b: {"loss": 0.0}, range(1))

    def classifier(model, S, setting, choices):
        R.chosen(choices, "k", lambda: choices_made.append(1) or 3)
        return M.pixel_nearest_neighbour

    build = lambda: torch.nn.Linear(1, 1)  # noqa: E731
    toy = R.Method("toy", "05", classifier, "toy", ToyConfig(), train, build)
    monkeypatch.setattr(R, "METHODS", {"toy": toy})
    out = tmp_path / "trainval.json"
    found = trainval.main(["--out", str(out)])
    assert seen == [(4112, str(tmp_path)), (4800, str(tmp_path / "trainval"))]
    assert choices_made == [1] and os.environ["FEWSHOT_CACHE"] == str(tmp_path)
    assert M.load_split is load_split  # the trainers read train again
    entry = found["methods"]["toy"]
    assert entry["train"]["per_episode"] == entry["trainval"]["per_episode"]  # same classifier
    assert len(entry["train"]["per_episode"]) == 200 and found["meta"]["budget"] == "quick"
    again = trainval.main(["--methods", "toy", "--out", str(out)])  # loaded, not trained again
    assert len(seen) == 2 and again["meta"]["updates"][0]["methods"] == ["toy"]
    import utils.data as D

    with trainval.training_on_trainval():  # validation is out of reach once it was trained on
        with pytest.raises(RuntimeError, match="validation characters were read"):
            D.load_split("val")
    assert D.load_split is load_split and len(D.load_split("val")) > 0


def test_seed_study_refuses_bad_seeds():
    for bad in ("1,x", "-1"):
        with pytest.raises(SystemExit, match="--seeds"):
            seeds.main(["--seeds", bad])


def test_tuning_trains_each_learning_rate_and_scores_it_on_validation(real, monkeypatch, tmp_path):
    """``tune``: the method's learning rate times each factor, trained by its trainer (the
    book's own value loaded when it was trained before), scored on validation episodes."""
    from dataclasses import dataclass

    from utils import methods as M
    from utils import registry as R
    from utils.config import Budget, Config, Setup
    from utils.data import load_split
    from utils.train import fit

    @dataclass(frozen=True)
    class RateConfig(Config):
        steps: int = Budget(quick=1, full=2)
        lr: float = 0.01

    load_split("val")  # the data set from the real cache, before the runs' cache is emptied
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    monkeypatch.delenv("FEWSHOT_RETRAIN", raising=False)
    trained = []

    def train(S, config):
        trained.append(config.at(S.budget).lr)
        return torch.nn.Linear(1, 1), fit(lambda b: {"loss": 0.0}, [0], desc="toy")

    pixels = lambda model, S, setting, choices: M.pixel_nearest_neighbour  # noqa: E731
    toy = R.Method("toy", "00", pixels, "toy", RateConfig(), train, lambda: torch.nn.Linear(1, 1))
    S = Setup("quick", torch.device("cpu"), 0)
    found = tuning.tune(toy, S, factors=(0.5, 1.0), n_episodes=3)
    assert trained == [0.005, 0.01] and found["field"] == "lr" and found["book"] == 0.01
    assert list(found["values"]) == ["0.005", "0.01"]
    assert all(len(v["per_episode"]) == 3 for v in found["values"].values())
    tuning.tune(toy, S, factors=(1.0,), n_episodes=3)
    assert trained == [0.005, 0.01]  # the same config again: loaded from the cache
    with pytest.raises(ValueError, match="none of the fields"):
        tuning.rate_field(Config())


def test_tuning_methods_replace_their_entries_and_keep_the_others(monkeypatch, tmp_path):
    import json

    def tune(method, S, factors):
        return {"field": "lr", "book": 1.0, "values": {"1": {"per_episode": [1.0], "seconds": 0}}}

    monkeypatch.setattr(tuning, "tune", tune)
    out = tmp_path / "tuning.json"
    tuning.main(["--methods", "ProtoNet,Siamese", "--out", str(out)])
    tuning.main(["--methods", "Siamese", "--out", str(out)])
    second = json.loads(out.read_text())
    assert set(second["methods"]) == {"ProtoNet", "Siamese"}
    assert [u["methods"] for u in second["meta"]["updates"]] == [["Siamese"]]
    tuning.main(["--methods", "Siamese", "--factors", "1,2", "--out", str(out)])
    assert set(json.loads(out.read_text())["methods"]) == {"Siamese"}  # other factors: anew


def test_a_methods_run_updates_only_a_file_of_the_same_meta(tmp_path):
    from benchmarks.provenance import results_to_update

    out = tmp_path / "r.json"
    with pytest.raises(SystemExit, match="must exist with"):
        results_to_update(out, {"budget": "quick"})
    out.write_text(json.dumps({"meta": {"budget": "quick", "seeds": [0]}, "methods": {}}))
    with pytest.raises(SystemExit, match="run without --methods"):
        results_to_update(out, {"budget": "full"})
    assert results_to_update(out, {"budget": "quick"})["meta"]["seeds"] == [0]


def test_method_names_read_a_name_with_a_comma_whole():
    from benchmarks.provenance import method_names

    known = ["ProtoNet", "ProtoNet, affine training", "Relation"]
    assert method_names("ProtoNet, affine training,Relation", known) == known[1:]
    assert method_names("ProtoNet,Relation", known) == ["ProtoNet", "Relation"]
    with pytest.raises(SystemExit, match="unknown 'affine'; choose among ProtoNet, "):
        method_names("Relation,affine", known)


def test_tuning_refuses_bad_factors_and_methods():
    for bad in ("1,x", "0,1", "-2"):
        with pytest.raises(SystemExit, match="--factors"):
            tuning.main(["--factors", bad])
    with pytest.raises(SystemExit, match="unknown 'nope'; choose among transfer: SimpleShot"):
        tuning.main(["--methods", "nope"])


def test_a_results_file_says_where_it_came_from(tmp_path):
    import re

    from benchmarks.provenance import provenance, write_results

    meta = provenance("seeds", ["--seeds", "1"], "cpu")
    assert meta["command"] == "python -m benchmarks.seeds --seeds 1" and meta["device"] == "cpu"
    assert re.fullmatch(r"[0-9a-f]{4,}|unknown", meta["commit"]) and "torch" in meta["machine"]
    out = write_results({"meta": meta, "x": [1.0]}, tmp_path / "a" / "b.json")
    assert json.loads(out.read_text()) == {"meta": meta, "x": [1.0]}
    with pytest.raises(ValueError):  # JSON has no NaN: refused, not written as a bare NaN
        write_results({"x": float("nan")}, tmp_path / "c.json")


def test_parse_seeds_reads_integers_and_refuses_the_rest():
    from benchmarks.provenance import parse_seeds

    assert parse_seeds("0,1,2") == [0, 1, 2]
    for bad, reason in (("a", "integers"), ("1,-1", "non-negative")):
        with pytest.raises(SystemExit, match=reason):
            parse_seeds(bad)


def test_one_method_per_run_takes_the_first_method_of_each_run():
    from types import SimpleNamespace

    from benchmarks.provenance import one_method_per_run

    methods = {
        "pixels": SimpleNamespace(run=None),
        "transfer: A": SimpleNamespace(run="transfer"),
        "transfer: B": SimpleNamespace(run="transfer"),
        "ProtoNet, affine training": SimpleNamespace(run="affine"),
    }
    assert one_method_per_run(methods) == ["transfer: A", "ProtoNet, affine training"]
    assert one_method_per_run(methods, "transfer: B") == ["transfer: B"]
    with pytest.raises(SystemExit, match="unknown 'pixels'"):
        one_method_per_run(methods, "pixels")  # learns nothing: nothing to train


def test_file_to_keep_only_for_methods_and_the_same_protocol(tmp_path):
    from benchmarks.provenance import file_to_keep

    out = tmp_path / "r.json"
    assert file_to_keep(out, True, {"budget": "quick"}) is None  # no file yet
    out.write_text(json.dumps({"meta": {"budget": "quick"}, "methods": {"a": 1}}))
    assert file_to_keep(out, True, {"budget": "quick"})["methods"] == {"a": 1}
    assert file_to_keep(out, False, {"budget": "quick"}) is None  # every method: made anew
    assert file_to_keep(out, True, {"budget": "full"}) is None  # another protocol


def test_budget_registry_and_file_sets_the_budget_and_names_the_file(monkeypatch, tmp_path):
    from benchmarks.provenance import ROOT, budget_registry_and_file

    monkeypatch.delenv("FEWSHOT_BUDGET", raising=False)
    budget, methods, out = budget_registry_and_file(None, "tuning")
    assert budget == "quick" and os.environ["FEWSHOT_BUDGET"] == "quick" and "ProtoNet" in methods
    assert out == ROOT / "benchmarks" / "results" / "tuning" / "quick.json"
    assert budget_registry_and_file(str(tmp_path / "x.json"), "tuning")[2] == tmp_path / "x.json"


def test_write_methods_makes_a_file_or_merges_into_the_one_kept(tmp_path):
    from benchmarks.provenance import write_methods

    out, same = tmp_path / "r.json", {"budget": "quick"}
    first = write_methods(
        "tuning", ["--x"], "cpu", time.perf_counter(), same, {"a": 1, "b": 2}, out
    )
    assert first["methods"] == {"a": 1, "b": 2} and first["meta"]["budget"] == "quick"
    assert first["meta"]["command"] == "python -m benchmarks.tuning --x"
    assert first["meta"]["seconds"] == 0 and json.loads(out.read_text()) == first
    again = write_methods("tuning", [], "cpu", 0.0, same, {"b": 3}, out, first, ["b"])
    assert again["methods"] == {"a": 1, "b": 3} and again["meta"]["updates"][0]["methods"] == ["b"]


def test_curves_train_each_multiple_as_its_own_run_and_test_each_point(real, monkeypatch, tmp_path):
    """A toy method through ``curves.main``: one run per multiple of its quick steps (a run that
    two methods share trained once), scored on validation and test episodes, the file written
    with a point per multiple and the largest point's weights kept."""
    from dataclasses import dataclass

    from utils import methods as M
    from utils import registry as R
    from utils.config import Budget, Config
    from utils.data import load_split
    from utils.train import fit

    @dataclass(frozen=True)
    class ToyConfig(Config):
        steps: int = Budget(quick=2, full=100)

    load_split("val"), load_split("test")  # the data set from the real cache
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    monkeypatch.delenv("FEWSHOT_RETRAIN", raising=False)
    monkeypatch.setattr(curves, "VAL_EPISODES", 3)
    monkeypatch.setattr(curves, "TEST_EPISODES", 4)
    trained = []

    def train(S, config):
        trained.append(config.at(S.budget).steps)
        return torch.nn.Linear(2, 1), fit(lambda b: {"loss": 0.0}, range(trained[-1]))

    pixels = lambda model, S, setting, choices: M.pixel_nearest_neighbour  # noqa: E731
    build = lambda: torch.nn.Linear(2, 1)  # noqa: E731
    toy = R.Method("toy", "00", pixels, "toy", ToyConfig(), train, build)
    twin = R.Method("twin", "00", pixels, "toy", ToyConfig(), train, build, ("5-way 1-shot",))
    monkeypatch.setattr(R, "METHODS", {"toy": toy, "twin": twin})
    out = tmp_path / "curves" / "quick.json"
    found = curves.main(["--multiples", "1,4", "--out", str(out)])
    assert trained == [2, 8]  # one run per multiple; twin reuses toy's
    points = found["methods"]["toy"]["points"]
    assert [p["multiple"] for p in points] == [1, 4] and [p["steps"] for p in points] == [2, 8]
    assert set(points[0]["test"]) == {"5-way 1-shot", "20-way 1-shot"}
    assert (
        points[0]["val"]["5-way 1-shot"]["n"] == 3 and points[0]["test"]["5-way 1-shot"]["n"] == 4
    )
    assert list(found["methods"]["twin"]["points"][1]["test"]) == ["5-way 1-shot"]
    assert json.loads(out.read_text()) == found and "commit" in found["methods"]["toy"]
    assert (out.parent / "weights" / "toy-4x-seed0.pt").is_file()
    with pytest.raises(SystemExit, match="--multiples"):
        curves.main(["--multiples", "0", "--out", str(out)])
    with pytest.raises(SystemExit, match="unknown 'nope'"):
        curves.main(["--methods", "nope", "--out", str(out)])
