"""The committed weights of the longest runs of ``benchmarks/curves.py`` (``benchmarks/results/
curves/weights/``): each loads into its method's model and, with the test-time choices that its
point made on validation, classifies the first of the fixed test episodes about as accurately as
the results file says, without training: the path of a reader who asks for those weights."""

import json
from pathlib import Path

import pytest
import torch

CURVES = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "curves"
EPISODES = 100  # the first of the 600 fixed test episodes that the results file's test used
MARGIN = 4.0  # points: 100 of the 600 episodes against all of them (each mean within ~1.5)


def weight_files() -> list[str]:
    return sorted(p.name for p in (CURVES / "weights").glob("*.pt"))


@pytest.mark.parametrize("file", weight_files())
def test_committed_weights_classify_as_recorded(file, real, one_thread):
    import utils.methods  # noqa: F401  (the chapters' code registers every method)
    from utils.config import Setup
    from utils.episodes import fixed_test_episodes
    from utils.evaluate import evaluate
    from utils.registry import METHODS, method_code

    run, multiple = file.removesuffix("-seed0.pt").rsplit("-", 1)  # "protonet", "16x"
    methods = json.loads((CURVES / "quick.json").read_text())["methods"]
    found = [
        (name, p)
        for name, e in methods.items()
        if name in METHODS and METHODS[name].run == run
        for p in e["points"]
        if f"{p['multiple']}x" == multiple
    ]
    assert found, f"{file}: the curves file has no point of run {run!r} at {multiple}"
    name, point = found[0]
    method = METHODS[name]
    if point["code"] != method_code(method):
        pytest.skip(f"{name}'s {multiple} point was made by other code than this")
    S = Setup("quick", torch.device("cpu"), 0)
    model = method.build()
    model.load_state_dict(torch.load(CURVES / "weights" / file, weights_only=True))
    model.eval()
    classify = method.classifier(model, S, "5-way 1-shot", dict(point["choices"]))
    accuracy = evaluate(classify, fixed_test_episodes(5, 1, n_episodes=EPISODES))
    recorded = point["test"]["5-way 1-shot"]["mean"]
    assert abs(accuracy.mean - recorded) < MARGIN, (name, accuracy.mean, recorded)
