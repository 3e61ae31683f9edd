"""Pictures: an episode as a grid, training curves, results with error bars."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .episodes import Episode


def show_images(images: torch.Tensor, titles=None, ncols: int = 10, size: float = 1.0, axes=None):
    """Show ``[n, 1, H, W]`` or ``[n, H, W]`` images in a grid, with optional titles."""
    images = images.detach().cpu().reshape(-1, *images.shape[-2:])
    n = len(images)
    if axes is None:
        nrows = (n + ncols - 1) // ncols
        _, axes = plt.subplots(
            nrows, ncols, figsize=(ncols * size, nrows * size * 1.15), squeeze=False
        )
    axes = np.ravel(axes)
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
    return axes


def show_episode(episode: Episode, max_query: int = 2, title: str | None = None):
    """Show an episode: one row per class, its support images, then ``max_query`` of its
    query images (framed in red), each labelled with its class."""
    n, k = episode.n_way, len(episode.support) // episode.n_way
    q = min(max_query, len(episode.query) // n)
    fig, axes = plt.subplots(n, k + q, figsize=(1.1 * (k + q), 1.2 * n), squeeze=False)
    for c in range(n):
        row = list(episode.support[episode.support_labels == c][:k]) + list(
            episode.query[episode.query_labels == c][:q]
        )
        for j, img in enumerate(row):
            ax = axes[c, j]
            ax.imshow(img.cpu().squeeze(0), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if j >= k:
                for s in ax.spines.values():
                    s.set_edgecolor("red"), s.set_linewidth(2)
            if c == 0:
                ax.set_title("support" if j < k else "query", fontsize=9)
        axes[c, 0].set_ylabel(f"class {c}", fontsize=9)
    fig.suptitle(title or f"{n}-way {k}-shot episode", y=1.0)
    fig.tight_layout()
    return fig


def plot_history(history: dict, smooth: int = 25, title: str = "training"):
    """Plot each metric of a training history against the step, smoothed by a running
    mean over ``smooth`` steps (the raw values faint behind)."""
    names = list(history)
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        v = np.asarray(history[name])
        ax.plot(v, alpha=0.25, color="C0")
        w = min(smooth, len(v))
        if w > 1:
            ax.plot(
                np.arange(w - 1, len(v)), np.convolve(v, np.ones(w) / w, mode="valid"), color="C0"
            )
        ax.set_xlabel("step"), ax.set_ylabel(name), ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def bar_with_ci(labels, means, cis, ylabel: str = "accuracy (%)", title: str = "", ax=None):
    """A bar chart of ``means`` with ``cis`` (95 % half-widths) as error bars."""
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4, 0.8 * len(labels)), 3.2))
    ax.bar(
        range(len(labels)),
        means,
        yerr=cis,
        capsize=4,
        color=[f"C{i % 10}" for i in range(len(labels))],
    )
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    lo = min(m - c for m, c in zip(means, cis))
    ax.set_ylim(max(0, lo - 5), 100)
    ax.set_ylabel(ylabel), ax.set_title(title), ax.grid(axis="y", alpha=0.3)
    return ax
