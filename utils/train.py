"""A training loop with a progress bar, and runs saved in the book's cache."""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import Setup, cache_dir


class History(dict):
    """Training metrics, one list per name (``history["loss"][i]`` is step ``i``'s loss),
    and the wall-clock ``seconds`` the loop took."""

    seconds: float = 0.0


def fit(step: Callable[[Any], dict], batches: Iterable, desc: str = "training") -> History:
    """Call ``step(batch)`` for every batch (an episode, or a batch of images) with a
    progress bar; ``step`` does one update and returns its metrics as ``{name: float}``."""
    history, start = History(), time.perf_counter()
    bar = tqdm(batches, desc=desc)
    for batch in bar:
        for name, value in step(batch).items():
            history.setdefault(name, []).append(float(value))
        bar.set_postfix({n: f"{np.mean(v[-50:]):.3f}" for n, v in history.items()}, refresh=False)
    history.seconds = time.perf_counter() - start
    print(f"{desc}: {len(bar)} steps in {history.seconds:.0f} s")
    return history


def run_path(name: str, setup: Setup) -> "os.PathLike":
    """Where the run ``name`` of this budget and seed lives in the cache."""
    return cache_dir() / "runs" / f"{name}-{setup.budget}-seed{setup.seed}.pt"


def save_run(name: str, setup: Setup, **contents) -> None:
    """Save a run (weights, history, results, ...) for later chapters to reuse; what an
    earlier call saved under other keys is kept."""
    path = run_path(name, setup)
    path.parent.mkdir(parents=True, exist_ok=True)
    run = load_run(name, setup) or {}
    run.update({"budget": setup.budget, "seed": setup.seed, "device": str(setup.device), **contents})
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(run, tmp)
    os.replace(tmp, path)


def load_run(name: str, setup: Setup) -> dict | None:
    """The run saved by :func:`save_run` with this budget and seed, or ``None``."""
    path = run_path(name, setup)
    return torch.load(path, weights_only=False) if path.is_file() else None


RETRAIN_VAR = "FEWSHOT_RETRAIN"


def train_or_load(name: str, setup: Setup, train: Callable[[], tuple], build: Callable[[], torch.nn.Module]):
    """``train()`` (which returns ``(model, history)``) and save the weights and history as
    run ``name``; or, when this budget and seed were trained before, ``build()`` the model and
    load them instead. ``$FEWSHOT_RETRAIN=1`` trains anyway. Returns ``(model, history)``."""
    run = None if os.environ.get(RETRAIN_VAR) == "1" else load_run(name, setup)
    if run is not None and "model" in run:
        model = build().to(setup.device)
        model.load_state_dict(run["model"])
        history = History(run["history"])
        history.seconds = run["seconds"]
        print(f"{name}: loaded the model trained before ({history.seconds:.0f} s of training, "
              f"on {run['device']}) from {run_path(name, setup)}; set {RETRAIN_VAR}=1 to train again")
        return model, history
    model, history = train()
    save_run(name, setup, model=model.state_dict(), history=dict(history), seconds=history.seconds)
    return model, history
