"""The command line ``python -m utils.predict`` (chapter 13's ``predict_main``): its output on
the book's example folder, its help, and one line on stderr, no traceback, for bad input. The
trained model is replaced by a nearest class mean on pixels (no training, no cache), so the file
takes seconds."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from utils import methods as predict
from utils.registry import Method

ROOT = Path(__file__).resolve().parents[1]
GLYPHS = ROOT / "examples" / "glyphs"


def pixel_means(support, labels, query):
    """Minus the squared distance of each query's pixels to each class's mean image."""
    n = int(labels.max()) + 1
    means = torch.stack([support[labels == c].mean(0) for c in range(n)]).flatten(1)
    return -torch.cdist(query.flatten(1), means).pow(2)


@pytest.fixture
def fake(monkeypatch):
    asked = {}

    def load_classifier(name, S, n_way, k_shot, weights=None):
        asked.update(name=name, n_way=n_way, k_shot=k_shot, weights=weights)
        return pixel_means

    monkeypatch.setattr(predict, "load_classifier", load_classifier)
    return asked


def test_prints_the_top_classes_of_each_image(fake, capsys):
    query = GLYPHS / "query" / "infinity"
    args = ["--support", str(GLYPHS / "support"), str(query), "--top", "2"]
    assert predict.predict_main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert fake == dict(name="ProtoNet", n_way=5, k_shot=1, weights=None)
    assert out[0] == "ProtoNet, 5 classes, 5 support images"
    assert len(out) == 1 + len(list(query.glob("*.png")))  # one line per query image
    first = out[1].split(": ")[1].split("  ")
    assert len(first) == 2 and all(len(c.split()) == 2 for c in first)
    assert sum(float(c.split()[1]) for c in first) <= 1.0001
    assert out[1].startswith(str(query / "DejaVuSans-Bold.png"))


def test_help_says_what_the_folder_looks_like_and_names_the_methods():
    run = subprocess.run(
        [sys.executable, "-m", "utils.predict", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 0
    assert "one subfolder per class" in run.stdout and "DIR/cat/1.png" in run.stdout
    assert all(name in run.stdout.replace("\n", " ") for name in ("ProtoNet", "MAML", "SimpleShot"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--support", "no/such/dir", "x.png"], "error: no/such/dir: no such folder"),
        (["--support", str(GLYPHS / "support"), "gone.png"], "error: gone.png: no such image"),
        (["--support", str(GLYPHS / "query"), str(GLYPHS / "README.md")], "README.md is not an"),
        (["--method", "MAML", "--support", str(GLYPHS), "a.png"], "allowed are 2 to 5 classes"),
    ],
)
def test_bad_input_is_one_line_without_traceback(fake, capsys, args, message, tmp_path):
    if "MAML" in args:  # six classes for a method of 5-way tasks
        for c in "abcdef":
            (tmp_path / c).mkdir()
        args[args.index(str(GLYPHS))] = str(tmp_path)
    assert predict.predict_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert not any("Traceback" in line for line in err)


def test_max_classes():
    from utils.registry import METHODS

    assert predict.max_classes(METHODS["MAML"]) == 5
    assert predict.max_classes(METHODS["ProtoNet"]) == 20


def test_setting_for_an_episode():
    m = Method("m", "00", lambda *a: None)  # all three settings
    assert predict.setting_for(m, 5, 1) == "5-way 1-shot"
    assert predict.setting_for(m, 3, 4) == "5-way 5-shot"
    assert predict.setting_for(m, 6, 1) == "20-way 1-shot"
    five = Method("five", "00", lambda *a: None, settings=("5-way 1-shot", "5-way 5-shot"))
    with pytest.raises(ValueError, match="at most 5 classes"):
        predict.setting_for(five, 6, 1)


def test_probabilities_of_scores_and_of_labels():
    labels = torch.tensor([0, 1, 2])
    scores = torch.tensor([[0.0, 0.0, 0.0, 9.0, 9.0]])  # a 5-way head on 3 classes: 3 kept
    p = predict.probabilities(lambda s, y, q: scores, None, labels, None)
    assert torch.allclose(p, torch.full((1, 3), 1 / 3))
    p = predict.probabilities(lambda s, y, q: torch.tensor([2, 0]), None, labels, None)
    assert p.tolist() == [[0, 0, 1], [1, 0, 0]]


def test_a_missing_run_is_announced_then_trained(monkeypatch, tmp_path, capsys):
    """With an empty cache, load_classifier says which chapter's code trains the run, then trains
    it (here a stand-in for the training returns an untrained network at once)."""
    from utils.config import setup
    from utils.methods import load_query, load_support

    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    monkeypatch.setattr(predict, "trained", lambda m, S: (m.build(), None))
    S = setup(seed=0)
    classify = predict.load_classifier("ProtoNet", S, 5, 1)
    out = capsys.readouterr().out
    assert "ProtoNet: no trained run in the book's cache" in out and "05_prototypical" in out
    support, labels, _, _ = load_support(GLYPHS / "support")
    query, _ = load_query([GLYPHS / "query" / "partial"])
    assert predict.probabilities(classify, support, labels, query).shape == (len(query), 5)


def test_no_data_to_train_on_is_exit_status_1_without_traceback(monkeypatch, capsys):
    def no_omniglot(*args, **kwargs):
        raise RuntimeError("Omniglot was not found and could not be downloaded")

    monkeypatch.setattr(predict, "load_classifier", no_omniglot)
    args = ["--support", str(GLYPHS / "support"), str(GLYPHS / "query" / "partial")]
    assert predict.predict_main(args) == 1
    err = capsys.readouterr().err
    assert "error: Omniglot was not found" in err and "Traceback" not in err


def test_top_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exit:
        predict.predict_main(["--support", str(GLYPHS / "support"), "--top", "0", "x.png"])
    assert exit.value.code == 2 and "--top must be at least 1, got 0" in capsys.readouterr().err
