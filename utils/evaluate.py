"""Accuracy over episodes, with its 95 % confidence interval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import scipy.stats
import torch
from tqdm.auto import tqdm

from .episodes import N_QUERY, Episode


def t_quantile_975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (``df >= 1``)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    return float(scipy.stats.t.ppf(0.975, df))


def mean_ci95(values) -> tuple[float, float]:
    """Mean and half-width of the 95 % confidence interval, ``t * std / sqrt(n)`` (sample
    ``std``, Student's ``t`` with ``n - 1`` degrees of freedom); one value has no interval."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("mean_ci95 needs at least one value, got none")
    if v.size == 1:
        return float(v.mean()), float("nan")
    half = t_quantile_975(v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean()), float(half)


@dataclass
class Accuracy:
    """Per-episode accuracies (fractions), with their mean and 95 % interval in percent."""

    per_episode: np.ndarray

    @property
    def mean(self) -> float:
        return 100 * mean_ci95(self.per_episode)[0]

    @property
    def ci95(self) -> float:
        return 100 * mean_ci95(self.per_episode)[1]

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.ci95:.2f} %"


def _episode_accuracy(pred, ep: Episode) -> float:
    """The fraction of ``ep``'s query images that ``pred`` (scores ``[N*Q, N]`` or labels
    ``[N*Q]``; anything else is refused with a ``ValueError``) classifies right."""
    n_q, n_way = len(ep.query), ep.n_way
    if not isinstance(pred, torch.Tensor) or tuple(pred.shape) not in ((n_q, n_way), (n_q,)):
        got = (
            f"shape {list(pred.shape)}"
            if isinstance(pred, torch.Tensor)
            else f"a {type(pred).__name__}"
        )
        raise ValueError(
            f"classify returned {got} on a {n_way}-way episode with {n_q} query images: "
            f"expected a tensor of scores [{n_q}, {n_way}] or of labels [{n_q}]; make it score "
            f"each query image against the {n_way} classes of the support set"
        )
    if pred.dim() == 2:
        pred = pred.argmax(1)
    return (pred == ep.query_labels).float().mean().item()


def evaluate(
    classify: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    episodes: Iterable[Episode],
    device=None,
    desc: str = "evaluating",
) -> Accuracy:
    """The accuracy of ``classify(support, support_labels, query)`` (scores ``[N*Q, N]`` or
    labels ``[N*Q]``) on every episode. Gradients and ``eval()`` are the caller's choice: methods
    that adapt at test time need gradients."""
    accs = []
    bar = tqdm(episodes, desc=desc, leave=False)
    for ep in bar:
        if device is not None:
            ep = ep.to(device)
        accs.append(_episode_accuracy(classify(ep.support, ep.support_labels, ep.query), ep))
        bar.set_postfix(acc=f"{100 * np.mean(accs):.1f}%", refresh=False)
    return Accuracy(np.array(accs))


def evaluate_along(
    classify_along: Callable,
    choices,
    episodes: Iterable[Episode],
    device=None,
    desc: str = "evaluating",
) -> dict:
    """:func:`evaluate` for several ``choices`` at the cost of one adaptation per episode:
    ``classify_along(support, support_labels, query, choices)`` returns ``{choice: scores}``
    (numbers of steps, ascending). Returns ``{choice: Accuracy}`` on the same episodes."""
    choices = list(choices)
    per_episode = {c: [] for c in choices}
    for ep in tqdm(episodes, desc=desc, leave=False):
        if device is not None:
            ep = ep.to(device)
        scores = classify_along(ep.support, ep.support_labels, ep.query, choices)
        missing = [c for c in choices if c not in scores]
        if missing:
            raise ValueError(
                f"classify_along returned scores for {list(scores)}, not for {missing}: it must "
                f"answer every one of the choices {choices}"
            )
        for c in choices:
            per_episode[c].append(_episode_accuracy(scores[c], ep))
    return {c: Accuracy(np.array(v)) for c, v in per_episode.items()}


def _validation_episodes(k_shot: int, n_episodes: int):
    """The 5-way ``k_shot``-shot episodes every validation choice is scored on, of the unrotated
    ``val`` classes (as the test classes are)."""
    from .data import load_split
    from .episodes import Episodes

    return Episodes(load_split("val", rotations=False), 5, k_shot, N_QUERY, n_episodes, seed=0)


def _fewest_within_best(choices: list, scores: dict):
    """The first of ``choices`` whose mean is within the 95 % interval of the best one's."""
    best = max(scores.values(), key=lambda a: a.mean)
    return next(c for c in choices if scores[c].mean >= best.mean - best.ci95)


def choose_on_validation(
    make_classifier: Callable,
    choices,
    n_episodes: int,
    device=None,
    k_shot: int = 1,
):
    """A test-time setting chosen on validation, never on test episodes: ``make_classifier(choice)``
    is scored on ``n_episodes`` 5-way ``k_shot``-shot episodes of the unrotated ``val`` classes;
    the first choice within the 95 % interval of the best one's wins (list the cheapest first).
    Returns ``(choice, {choice: Accuracy})``."""
    choices = list(choices)
    if not choices:
        raise ValueError("choose_on_validation needs at least one choice, got none")
    episodes = _validation_episodes(k_shot, n_episodes)
    scores = {
        c: evaluate(make_classifier(c), episodes, device, desc=f"validation: {c}") for c in choices
    }
    return _fewest_within_best(choices, scores), scores


def choose_steps_on_validation(
    classify_along: Callable,
    choices,
    n_episodes: int,
    device=None,
    k_shot: int = 1,
):
    """The number of test-time steps, chosen on :func:`choose_on_validation`'s episodes along one
    adaptation (:func:`evaluate_along`): the most accurate (the fewer on a tie), as steps cost
    little at test time. Returns ``(steps, {steps: Accuracy})``."""
    choices = sorted(choices)
    if not choices or choices[0] < 0:
        raise ValueError(f"choices must be numbers of steps, 0 or more, got {choices}")
    episodes = _validation_episodes(k_shot, n_episodes)
    desc = f"validation: {', '.join(map(str, choices))} steps"
    scores = evaluate_along(classify_along, choices, episodes, device, desc)
    return max(choices, key=lambda k: scores[k].mean), scores


# The three settings of the papers' tables: (n_way, k_shot).
SETTINGS = {"5-way 1-shot": (5, 1), "5-way 5-shot": (5, 5), "20-way 1-shot": (20, 1)}
