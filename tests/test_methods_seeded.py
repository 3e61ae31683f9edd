"""Every chapter's training function seeds itself: the weights it returns depend on ``S.seed``
alone, not on what drew random numbers before it. The comparison chapter, run alone, trains
with these functions and must get the very models the chapters get (and save in the cache)."""

from dataclasses import replace

import pytest
import torch

from utils.config import Setup

from conftest import book_runs

S = Setup("quick", torch.device("cpu"), 0)
RUNS = book_runs()  # run -> (train, config, build): each trainer of the book, once


def tiny(name):
    """The run's trainer for two updates: enough to show that the same start gives the same end."""
    train, config, _ = RUNS[name]
    return train(S, replace(config, steps=2))[0]


@pytest.mark.parametrize("name", RUNS)
def test_training_ignores_the_global_random_state(name, real, one_thread):
    weights = []
    for earlier_seed in (1, 2):
        torch.manual_seed(earlier_seed)  # as if other cells had drawn random numbers before
        torch.rand(7)
        weights.append(tiny(name).state_dict())
    first, second = weights
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), f"{name}: {key} differs"
