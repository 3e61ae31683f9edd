"""Every chapter's training function seeds itself: the weights it returns depend on ``S.seed``
alone, not on what drew random numbers before it. The comparison chapter, run alone, trains
with these functions and must get the very models the chapters get (and save in the cache)."""

import pytest
import torch

from utils import methods as M
from utils.config import Setup
from utils.data import load_split

S = Setup("quick", torch.device("cpu"), 0)

TINY = {  # each trainer for two updates: enough to show that the same start gives the same end
    "transfer": lambda: M.train_transfer(S, steps=2)[0],
    "siamese": lambda: M.train_siamese(S, steps=2)[0],
    "matching": lambda: M.train_matching(S, steps=2)[0],
    "protonet": lambda: M.train_protonet(S, n_episodes=2)[0],
    "protonet-background": lambda: M.train_protonet(  # chapter 11's Lake protocol
        S, n_episodes=2, classes=load_split("background", rotations=True)
    )[0],
    "relation": lambda: M.train_relation(S, n_episodes=2)[0],
    "maml": lambda: M.train_maml(S, iterations=2)[0],
    "fomaml": lambda: M.train_maml(S, first_order=True, iterations=2)[0],
    "reptile": lambda: M.train_reptile(S, iterations=2)[0],
    "anil": lambda: M.train_maml(S, adapt=M.anil_adapt, iterations=2)[0],
    "protomaml": lambda: M.train_maml(S, adapt=M.protomaml_adapt, iterations=2)[0],
    "protonet-affine": lambda: M.train_protonet(S, n_episodes=2, augment=M.affine_episode)[0],
    "dagan": lambda: M.train_dagan(S, steps=2)[0],
    "hallucination": lambda: M.train_protonet(
        S, n_episodes=2, build=M.HallucinatingProtoNet, loss=M.hallucination_loss
    )[0],
}


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


@pytest.mark.parametrize("name", TINY)
def test_training_ignores_the_global_random_state(name, real, one_thread):
    weights = []
    for earlier_seed in (1, 2):
        torch.manual_seed(earlier_seed)  # as if other cells had drawn random numbers before
        torch.rand(7)
        weights.append(TINY[name]().state_dict())
    first, second = weights
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), f"{name}: {key} differs"
