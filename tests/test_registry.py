"""The registry of methods (``utils.registry``): what a chapter registers, what it saves, and how
the comparison measures a method whichever chapters ran before."""

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from utils import registry as R
from utils.config import Budget, Config, Setup
from utils.data import load_split
from utils.evaluate import Accuracy
from utils.train import fit, save_run

S = Setup("quick", torch.device("cpu"), 0)


@dataclass(frozen=True)
class ToyConfig(Config):
    steps: int = Budget(quick=2, full=20)
    bias: float = 0.0


def toy_method(calls, **overrides):
    """A method whose model scores every query with its bias on class 0: a known accuracy."""

    def train(S, config):
        c = config.at(S.budget)
        calls.append(c)
        model = torch.nn.Linear(1, 1)
        torch.nn.init.constant_(model.bias, c.bias)
        return model, fit(lambda b: {"loss": b}, [1.0] * c.steps, desc="toy")

    def classifier(model, S, setting, choices):
        shift = R.chosen(choices, "shift", lambda: 1.0)

        def classify(support, support_labels, query):
            n = int(support_labels.max()) + 1
            scores = torch.zeros(len(query), n)
            scores[:, 0] = model.bias.detach() + shift
            return scores

        return classify

    fields = dict(
        run="toy",
        config=ToyConfig(),
        train=train,
        build=lambda: torch.nn.Linear(1, 1),
        settings=("5-way 1-shot",),
    )
    return R.Method("toy method", "00_toy", classifier, **(fields | overrides))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    monkeypatch.delenv("FEWSHOT_RETRAIN", raising=False)
    return tmp_path


def test_a_method_is_checked_when_made():
    with pytest.raises(ValueError, match="unknown settings \\['7-way 1-shot'\\]"):
        toy_method([], settings=("7-way 1-shot",))
    with pytest.raises(ValueError, match="run, config, train and build go together"):
        toy_method([], build=None)
    with pytest.raises(ValueError, match="tested in '5-way 1-shot', which is not among"):
        toy_method([], settings=("5-way 5-shot",), transductive=lambda *a: None)


def test_register_keeps_one_method_per_name(monkeypatch):
    monkeypatch.setattr(R, "METHODS", {})
    first = R.register(toy_method([]))
    again = R.register(toy_method([], settings=("5-way 5-shot",)))
    assert list(R.METHODS) == ["toy method"] and R.METHODS["toy method"] is again is not first


def test_method_code_follows_the_methods_it_uses(monkeypatch):
    """A method that classifies with another method's trained model (chapter 10's DAGAN copies
    with chapter 5's network) changes key when that method's code does."""
    from utils import config

    monkeypatch.setattr(config, "CODE_MODULES", (__name__,))
    monkeypatch.setattr(R, "METHODS", {})
    R.register(toy_method([]))
    user = replace(toy_method([]), name="user", uses=("toy method",))
    key = R.method_code(user)

    def other_train(S, config):
        return torch.nn.Linear(1, 1), fit(lambda b: {"loss": b}, [2.0], desc="other")

    R.register(toy_method([], train=other_train))
    assert R.method_code(user) != key


def test_chosen_makes_a_missing_choice_once():
    calls = []
    choices = {"steps": 3}
    assert R.chosen(choices, "steps", lambda: calls.append(1) or 5) == 3 and calls == []
    assert R.chosen(choices, "lr", lambda: calls.append(1) or 0.1) == 0.1
    assert R.chosen(choices, "lr", lambda: calls.append(1) or 0.2) == 0.1 and calls == [1]


def test_records_round_trip_and_follow_the_config(cache, monkeypatch):
    monkeypatch.setattr(R, "METHODS", {})
    method = R.register(toy_method([]))
    results = {"5-way 1-shot": Accuracy(np.array([1.0, 0.5]))}
    R.save_record("toy method", S, results, choices={"shift": 2.0})
    record = R.load_record("toy method", S)
    assert record["choices"] == {"shift": 2.0}
    assert record["results"]["5-way 1-shot"].per_episode.tolist() == [1.0, 0.5]
    changed = toy_method([], config=ToyConfig(bias=1.0))  # other settings: nothing saved yet
    assert R.load_record(changed, S) == {"results": {}, "choices": {}}
    assert R.load_record(method, Setup("full", torch.device("cpu"), 0))["results"] == {}


def test_a_record_of_another_protocol_is_not_read(cache, monkeypatch):
    """A record saved before every classifier was non-transductive (no protocol in the file)
    holds results of another test: it is measured again, not read."""
    monkeypatch.setattr(R, "METHODS", {})
    method = R.register(toy_method([]))
    name, config = R._record(method)
    save_run(name, S, config, results={"5-way 1-shot": [1.0]}, choices={"shift": 2.0})
    assert R.load_record(method, S) == {"results": {}, "choices": {}}
    R.save_record(method, S, {"5-way 1-shot": Accuracy(np.array([0.5]))}, {"shift": 3.0})
    assert R.load_record(method, S)["choices"] == {"shift": 3.0}


def test_measured_runs_a_result_once_and_keeps_it_in_the_record(cache, monkeypatch):
    monkeypatch.setattr(R, "METHODS", {})
    R.register(toy_method([]))
    R.save_record("toy method", S, {"5-way 1-shot": Accuracy(np.array([1.0]))}, {"shift": 2.0})
    calls = []

    def now():
        calls.append(1)
        return Accuracy(np.array([0.5, 0.25]))

    first = R.measured("toy method", S, "digits, 5-way 1-shot", now, n_episodes=2)
    again = R.measured("toy method", S, "digits, 5-way 1-shot", now, n_episodes=2)
    assert calls == [1] and again.per_episode.tolist() == first.per_episode.tolist() == [0.5, 0.25]
    record = R.load_record("toy method", S)  # the rest of the record is kept
    assert record["choices"] == {"shift": 2.0}
    assert record["results"]["5-way 1-shot"].per_episode.tolist() == [1.0]
    # another number of episodes: measured now, and the saved result stays as it was
    assert R.measured("toy method", S, "digits, 5-way 1-shot", now, n_episodes=3) is not None
    assert calls == [1, 1]
    assert R.load_record("toy method", S)["results"]["digits, 5-way 1-shot"].per_episode.size == 2


def test_trained_trains_once_and_learns_nothing_without_a_run(cache):
    calls = []
    method = toy_method(calls)
    model, history = R.trained(method, S)
    again, _ = R.trained(method, S)
    assert len(calls) == 1 and torch.equal(again.bias, model.bias) and history.seconds >= 0
    assert R.trained(toy_method([], run=None, config=None, train=None, build=None), S) == (
        None,
        None,
    )


def test_measure_trains_what_is_missing_and_reuses_what_was_saved(real, monkeypatch, tmp_path):
    """The comparison's path on an empty cache: trained and evaluated here (the missing
    test-time choice made now), then, once the chapter saved its record, reused as saved."""
    load_split("test")  # the data set, from the real cache, before the runs' cache is emptied
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    monkeypatch.delenv("FEWSHOT_RETRAIN", raising=False)
    monkeypatch.setattr(R, "METHODS", {})
    calls = []
    method = R.register(toy_method(calls, config=ToyConfig(bias=5.0)))
    model, history, choices, results = R.measure(method, S, n_episodes=3)
    assert len(calls) == 1 and choices == {"shift": 1.0}
    assert results["5-way 1-shot"].per_episode.tolist() == pytest.approx([0.2] * 3)  # class 0
    R.save_record(method, S, {"5-way 1-shot": Accuracy(np.array([0.9]))}, {"shift": 7.0})
    _, _, choices, results = R.measure(method, S, n_episodes=3)
    assert len(calls) == 1 and choices == {"shift": 7.0}
    assert results["5-way 1-shot"].per_episode.tolist() == [0.9]


class TinySetup(Setup):
    """The quick budget with every count that ``S.pick`` gives (validation and test episodes,
    steps to choose from) cut to 2: the chapters' code paths, in seconds."""

    def pick(self, quick, full):
        return 2 if isinstance(quick, int) and not isinstance(quick, bool) else quick


def test_the_comparison_trains_and_measures_every_method_on_an_empty_cache(
    real, monkeypatch, tmp_path
):
    """Chapter 11 run first, on an empty cache (as in Colab): every registered method, with its
    config cut to two training steps, is trained with its chapter's code, its test-time choices
    are made on validation episodes as its chapter makes them, and it is measured on the fixed
    5-way 1-shot episodes, through ``measure``, the very function chapter 11 calls."""
    import utils.methods  # noqa: F401  (the chapters register their methods)

    load_split("test")  # the data set from the real cache, before the runs' cache is emptied
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    monkeypatch.delenv("FEWSHOT_RETRAIN", raising=False)
    for name, m in list(R.METHODS.items()):  # in place: the chapters' code reads this dict
        if m.config is not None:
            monkeypatch.setitem(R.METHODS, name, replace(m, config=replace(m.config, steps=2)))
    S = TinySetup("quick", torch.device("cpu"), 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, m in R.METHODS.items():
            model, history, choices, results = R.measure(m, S, 2, settings=("5-way 1-shot",))
            assert (model is None) == (m.run is None), name
            assert history is None or len(next(iter(history.values()))) == 2, name
            assert len(results["5-way 1-shot"].per_episode) == 2, name
    finally:
        torch.set_num_threads(threads)
    assert not list((tmp_path / "runs").glob("record-*")), "measure writes no chapter's record"


def test_maml_registry_classifier_takes_the_steps_saved_or_chooses_them_now(monkeypatch):
    """Steps a chapter chose are used as they are; missing ones are chosen now on validation
    (``maml_test_steps``) and kept in the choices."""
    from utils import methods as M

    asked = []
    monkeypatch.setattr(M, "maml_test_steps", lambda *a: asked.append(a[3]) or (3, {}))
    classifier, model = M.maml_registry_classifier(), M.maml_conv4(5)
    choices = {}
    classifier(model, S, "5-way 1-shot", choices)
    assert choices == {"test steps, 5-way 1-shot": 3} and asked == [1]
    classifier(model, S, "5-way 5-shot", {"test steps, 5-way 5-shot": 1})
    assert asked == [1]  # loaded, not chosen again
