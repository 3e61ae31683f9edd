"""The book's methods, each registered by the chapter that teaches it, and what they saved.

A chapter registers its method in a ``#@save`` cell beside its code, as a :class:`Method`; the
comparison chapter and the tests iterate :data:`METHODS`. Contracts (``CONTRIBUTING.md``):
``train(S, config) -> (model, history)``; ``classifier(model, S, setting, choices) ->
classify(support, support_labels, query)``, non-transductive, where ``choices`` holds the
test-time choices made on validation episodes (:func:`chosen`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .config import Config, Setup, code_key
from .episodes import fixed_test_episodes
from .evaluate import SETTINGS, Accuracy, evaluate
from .train import load_run, save_run, train_or_load


# The setting a method's ``transductive`` classifier is tested in, as MAML's, first-order MAML's
# and Reptile's papers test it, and the key of that result in the method's record.
TRANSDUCTIVE = "5-way 1-shot"
TRANSDUCTIVE_KEY = f"{TRANSDUCTIVE}, transductive"


@dataclass(frozen=True)
class Method:
    """A method of the book, as its chapter registers it. ``run``, ``config``, ``train`` and
    ``build`` name its trained model (all ``None`` for a method that learns nothing; shared by
    the classifiers on chapter 2's backbone); ``paper``: the published accuracies, from ``cite``
    at ``source``."""

    name: str
    chapter: str
    classifier: Callable  # (model, S, setting, choices) -> classify
    run: str | None = None
    config: Config | None = None
    train: Callable | None = None  # (S, config) -> (model, history)
    build: Callable | None = None  # () -> a model that the run's weights load into
    settings: tuple = tuple(SETTINGS)
    # The papers' transductive test (batch statistics of all the query images), if any
    transductive: Callable | None = None  # tested in the setting TRANSDUCTIVE
    paper: dict = field(default_factory=dict)  # {setting: accuracy in %}, as published
    paper_transductive: bool = False  # the published numbers are transductive
    cite: str = ""  # the paper's key in book/references.bib
    source: str = ""  # where in the paper: "Snell et al. 2017, Table 1"
    uses: tuple = ()  # registered methods whose trained models it uses too (their cost is its)

    def __post_init__(self):
        unknown = [s for s in self.settings if s not in SETTINGS]
        if unknown:
            raise ValueError(
                f"{self.name}: unknown settings {unknown}: allowed are {', '.join(SETTINGS)}"
            )
        if self.transductive is not None and TRANSDUCTIVE not in self.settings:
            raise ValueError(
                f"{self.name}: a transductive classifier is tested in {TRANSDUCTIVE!r}, which is "
                f"not among its settings {self.settings}"
            )
        parts = (self.run, self.config, self.train, self.build)
        if any(p is None for p in parts) and any(p is not None for p in parts):
            raise ValueError(f"{self.name}: run, config, train and build go together (all or none)")


METHODS: dict[str, Method] = {}  # name -> method, in the order the chapters register them

# What a record's results mean: saved with every record (and in the seed study's file); a
# record saved under another protocol, or none, is not read.
RECORD_PROTOCOL = "non-transductive"


def method_code(method: Method) -> str:
    """The key of ``method``'s code (:func:`utils.config.code_key`): its trainer, model,
    classifiers and settings, and those of the methods it ``uses``. A result saved with another
    key is measured again."""
    key = code_key(
        method.train, method.build, method.classifier, method.transductive, method.config
    )
    if not method.uses:
        return key
    used = "".join(method_code(METHODS[name]) for name in method.uses)
    return hashlib.sha256((key + used).encode()).hexdigest()[:8]


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (again under its name, when a cell runs twice)."""
    METHODS[method.name] = method
    return method


def trained(method: Method, setup: Setup):
    """``(model, history)`` of ``method``: loaded from the book's cache, or trained there now
    with its chapter's code and settings; ``(None, None)`` for a method that learns nothing."""
    if method.run is None:
        return None, None
    return train_or_load(method.run, setup, method.train, method.config, method.build)


def _record(method: Method | str) -> tuple[str, Config | None]:
    """The run name and config under which ``method``'s record is kept."""
    m = METHODS[method] if isinstance(method, str) else method
    return "record-" + re.sub(r"[^a-z0-9]+", "-", m.name.lower()).strip("-"), m.config


def save_record(
    method: Method | str, setup: Setup, results: dict, choices: dict | None = None
) -> None:
    """Save what the chapter of ``method`` (a :class:`Method` or its name) measured: ``results``
    (``{setting: Accuracy}`` on the fixed test episodes) and test-time ``choices``."""
    name, config = _record(method)
    per_episode = {s: a.per_episode for s, a in results.items()}
    save_run(
        name,
        setup,
        config,
        results=per_episode,
        choices=choices or {},
        protocol=RECORD_PROTOCOL,
        code=method_code(METHODS[method] if isinstance(method, str) else method),
    )


def load_record(method: Method | str, setup: Setup) -> dict:
    """What :func:`save_record` saved for ``method`` with this budget, seed and config:
    ``{"results": {setting: Accuracy}, "choices": {...}}``, empty when nothing was, or under
    another :data:`RECORD_PROTOCOL` or code (:func:`method_code`)."""
    name, config = _record(method)
    run = load_run(name, setup, config) or {}
    m = METHODS[method] if isinstance(method, str) else method
    if run.get("protocol") != RECORD_PROTOCOL or run.get("code") != method_code(m):
        run = {}
    results = {s: Accuracy(np.asarray(r)) for s, r in run.get("results", {}).items()}
    return {"results": results, "choices": run.get("choices", {})}


def measure(method: Method, setup: Setup, n_episodes: int, settings=None):
    """``(model, history, choices, {setting: Accuracy})`` of ``method`` on the fixed test
    episodes of ``settings`` (default: its own), as its chapter saved them, else measured now on
    ``n_episodes`` episodes."""
    model, history = trained(method, setup)
    record = load_record(method, setup)
    results = {}
    for s in settings or method.settings:
        if s not in record["results"]:
            n_way, k_shot = SETTINGS[s]
            classify = method.classifier(model, setup, s, record["choices"])
            episodes = fixed_test_episodes(n_way, k_shot, n_episodes=n_episodes)
            record["results"][s] = evaluate(
                classify, episodes, setup.device, desc=f"{method.name}, {s}"
            )
        results[s] = record["results"][s]
    return model, history, record["choices"], results


def measured(method: Method | str, setup: Setup, key: str, measure_now: Callable, n_episodes: int):
    """``method``'s result ``key`` (``"digits, 5-way 1-shot"``) on ``n_episodes`` episodes as a
    chapter saved it in its record; else ``measure_now()`` (an :class:`Accuracy`), kept there
    unless a result on another number of episodes is."""
    record = load_record(method, setup)
    saved = record["results"].get(key)
    if saved is not None and len(saved.per_episode) == n_episodes:
        return saved
    result = measure_now()
    if saved is None:
        record["results"][key] = result
        save_record(method, setup, record["results"], record["choices"])
    return result


def chosen(choices: dict, key: str, choose: Callable):
    """``choices[key]``, the test-time choice a chapter saved; else ``choose()``, kept there."""
    if key not in choices:
        choices[key] = choose()
    return choices[key]
