"""Our functional MAML (chapter 7) against learn2learn's ``l2l.algorithms.MAML``.

From the same initial weights and the same task, both must give the same adapted weights and
the same meta-gradient, for second- and first-order MAML.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

l2l = pytest.importorskip("learn2learn")

from utils.episodes import Episode  # noqa: E402
from utils.methods import maml_adapt, maml_conv4, maml_task_loss  # noqa: E402

STEPS, LR, TOL = 2, 0.4, 1e-5


def small_task(n_way=3, k_shot=2, n_query=2, seed=0):
    """A random task of 28x28 images (a small Conv-4 needs the 28x28 input)."""
    g = torch.Generator().manual_seed(seed)
    return Episode(
        torch.rand(n_way * k_shot, 1, 28, 28, generator=g),
        torch.arange(n_way).repeat_interleave(k_shot),
        torch.rand(n_way * n_query, 1, 28, 28, generator=g),
        torch.arange(n_way).repeat_interleave(n_query),
    )


@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
def test_same_adapted_weights_and_meta_gradient(first_order):
    torch.manual_seed(0)
    ours_net = maml_conv4(n_way=3, hidden=8)
    theirs_net = copy.deepcopy(ours_net)
    ep = small_task()

    # ours: functional inner loop, then the query loss backward to the initial weights
    params = dict(ours_net.named_parameters())
    adapted = maml_adapt(
        ours_net, params, {}, ep.support, ep.support_labels, STEPS, LR, first_order
    )
    loss, _ = maml_task_loss(ours_net, params, {}, ep, STEPS, LR, first_order)
    loss.backward()

    # learn2learn: clone, adapt in place, query loss backward
    learner = l2l.algorithms.MAML(theirs_net, lr=LR, first_order=first_order).clone()
    for _ in range(STEPS):
        learner.adapt(F.cross_entropy(learner(ep.support), ep.support_labels))
    F.cross_entropy(learner(ep.query), ep.query_labels).backward()

    theirs_adapted = dict(learner.module.named_parameters())
    assert adapted.keys() == theirs_adapted.keys()
    for name in adapted:
        torch.testing.assert_close(adapted[name], theirs_adapted[name], atol=TOL, rtol=0, msg=name)
    for (name, a), b in zip(ours_net.named_parameters(), theirs_net.parameters()):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, atol=TOL, rtol=0, msg=name)


def test_orders_differ():
    """The switch matters: second- and first-order meta-gradients are not the same."""
    torch.manual_seed(0)
    net = maml_conv4(n_way=3, hidden=8)
    ep = small_task()
    grads = []
    for first_order in (False, True):
        net.zero_grad()
        maml_task_loss(net, dict(net.named_parameters()), {}, ep, STEPS, LR, first_order)[
            0
        ].backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert (grads[0] - grads[1]).abs().max() > 1e-4


def test_batch_norm_has_no_running_statistics():
    """MAML's batch norm: batch statistics always, in train() and eval() mode alike."""
    net = maml_conv4(n_way=3, hidden=8)
    assert dict(net.named_buffers()) == {}
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(net.train()(x), net.eval()(x))
