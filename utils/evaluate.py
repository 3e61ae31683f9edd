"""Accuracy over episodes, with its 95 % confidence interval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from .episodes import Episode


def mean_ci95(values) -> tuple[float, float]:
    """Mean and half-width of the 95 % confidence interval, ``1.96 * std / sqrt(n)``.

    ``std`` is the sample standard deviation (``ddof=1``); one value has no interval.
    """
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("mean_ci95 needs at least one value, got none")
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else float("nan")
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


def evaluate(
    classify: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    episodes: Iterable[Episode],
    device=None,
    desc: str = "evaluating",
) -> Accuracy:
    """Run ``classify(support, support_labels, query)`` on every episode.

    ``classify`` returns class scores ``[N*Q, N]`` or labels ``[N*Q]`` for the query
    images; any other shape (scores for the wrong number of classes, say) is refused with a
    ``ValueError``. The function does not switch off gradients or set ``eval()`` mode: methods
    that adapt at test time need gradients, so that is the caller's choice.
    """
    accs = []
    bar = tqdm(episodes, desc=desc, leave=False)
    for ep in bar:
        if device is not None:
            ep = ep.to(device)
        pred = classify(ep.support, ep.support_labels, ep.query)
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
        accs.append((pred == ep.query_labels).float().mean().item())
        bar.set_postfix(acc=f"{100 * np.mean(accs):.1f}%", refresh=False)
    return Accuracy(np.array(accs))


def choose_on_validation(
    make_classifier: Callable,
    choices,
    n_episodes: int,
    device=None,
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
):
    """Choose a test-time setting (adaptation steps, say) on the validation classes, never on
    the test episodes: ``make_classifier(choice)`` gives a classify function, scored on the
    same ``n_episodes`` ``n_way``-way ``k_shot``-shot episodes of the ``val`` split, unrotated
    as the test classes are. Of the choices whose accuracy is within the 95 % interval of the
    best one's, the first is chosen: list the cheapest first. Returns ``(choice, {choice:
    Accuracy})``."""
    from .data import load_split
    from .episodes import Episodes

    choices = list(choices)
    if not choices:
        raise ValueError("choose_on_validation needs at least one choice, got none")
    episodes = Episodes(
        load_split("val", rotations=False), n_way, k_shot, n_query, n_episodes, seed=0
    )
    scores = {
        c: evaluate(make_classifier(c), episodes, device, desc=f"validation: {c}") for c in choices
    }
    best = max(scores.values(), key=lambda a: a.mean)
    return next(c for c in choices if scores[c].mean >= best.mean - best.ci95), scores


# The three settings of the papers' tables: (n_way, k_shot).
SETTINGS = {"5-way 1-shot": (5, 1), "5-way 5-shot": (5, 5), "20-way 1-shot": (20, 1)}


def evaluate_settings(
    classify, n_episodes: int, device=None, settings: dict = SETTINGS, n_query: int = 15
) -> dict[str, Accuracy]:
    """Evaluate ``classify`` on the book's fixed test episodes of each setting
    (``{"5-way 1-shot": (5, 1), ...}``) and print one line per setting."""
    from .episodes import fixed_test_episodes

    results = {}
    for name, (n_way, k_shot) in settings.items():
        results[name] = evaluate(
            classify, fixed_test_episodes(n_way, k_shot, n_query, n_episodes), device, desc=name
        )
        print(f"{name:>16}: {results[name]}  ({n_episodes} episodes)")
    return results


def results_table(
    rows: dict[str, dict[str, Accuracy]],
    paper: dict[str, dict[str, float]] | None = None,
    cite: str = "paper",
) -> str:
    """A Markdown table: one row per method, one column per setting (mean ± 95 % CI, numbers
    right-aligned), with the papers' numbers, when given, in rows of their own marked ``cite``."""
    settings = list(dict.fromkeys(s for r in rows.values() for s in r))
    lines = ["| method | " + " | ".join(settings) + " |", "|:---" + "|---:" * len(settings) + "|"]
    for method, res in rows.items():
        lines.append(
            f"| {method} | " + " | ".join(str(res[s]) if s in res else "" for s in settings) + " |"
        )
    for method, nums in (paper or {}).items():
        lines.append(
            f"| {method} ({cite}) | "
            + " | ".join(f"{nums[s]:.1f} %" if s in nums else "" for s in settings)
            + " |"
        )
    return "\n".join(lines)
