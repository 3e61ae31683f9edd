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


@pytest.fixture
def one_thread():
    """One CPU thread: with several, some CPU kernels (the Siamese net's, here) sum in an order
    that varies from call to call, and Adam's first steps, about ``lr`` whatever the gradient's
    size, turn those last-bit differences into visible ones. One thread sums in one order, so
    any difference left comes from the random state, which is what this test is about."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
