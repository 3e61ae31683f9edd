"""Budgets, device, seeds and the cache folder: the settings every chapter starts with."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

BUDGETS = ("quick", "full")
BUDGET_VAR = "FEWSHOT_BUDGET"
CACHE_VAR = "FEWSHOT_CACHE"


def cache_dir() -> Path:
    """The book's cache folder: ``$FEWSHOT_CACHE``, else ``~/.cache/fewshot-book``.

    It holds the preprocessed Omniglot tensor, unpacked archives and the runs
    (weights, training curves, per-episode results) the chapters save.
    """
    path = Path(os.environ.get(CACHE_VAR) or Path.home() / ".cache" / "fewshot-book")
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_device() -> torch.device:
    """CUDA when present, else Apple's MPS when present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Setup:
    """What a chapter runs with: budget, device and seed."""

    budget: str
    device: torch.device
    seed: int

    def pick(self, quick, full):
        """Return ``quick`` or ``full`` according to the budget."""
        return quick if self.budget == "quick" else full

    @property
    def n_test_episodes(self) -> int:
        """Test episodes per setting: 600 (the papers' protocol) at full budget, 200 at quick."""
        return self.pick(200, 600)

    def __str__(self) -> str:
        return f"budget={self.budget}  device={self.device}  seed={self.seed}  torch={torch.__version__}"


def setup(seed: int = 0, budget: str | None = None, device: str | None = None) -> Setup:
    """Pick budget, device and seed, seed every generator, print them and return them.

    The budget comes from the argument, else ``$FEWSHOT_BUDGET``, else ``full`` on a
    GPU and ``quick`` elsewhere.
    """
    dev = torch.device(device) if device else default_device()
    budget = budget or os.environ.get(BUDGET_VAR) or ("full" if dev.type == "cuda" else "quick")
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}: allowed are {', '.join(BUDGETS)} "
                         f"(argument or ${BUDGET_VAR})")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed_everything(seed)
    s = Setup(budget, dev, seed)
    print(s)
    return s
