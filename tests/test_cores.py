"""The core of every method, on inputs small enough to check by hand.

Each ``check_<core>(fn)`` runs ``fn`` (the book's function from ``utils.methods``, or a stand-in
with the same arguments) on a few 2-D vectors and an identity embedding (``nn.Flatten()`` in
place of the Conv-4; small feature maps for the relation module), and compares its output with
numbers worked out from the chapter's formula in the comments beside them: prototypes and
squared distances (chapter 5), cosine attention (chapter 4), pairs and the two Siamese losses,
identical pairs included (chapter 3), the relation scores and their squared error (chapter 6),
one inner step of MAML (chapter 7), Reptile's outer step (chapter 8) and the transfer
classifiers (chapter 2).

A check that any function passes proves nothing, so every core also has one or more broken
variants below: a copy of the book's function wrong in one named respect (a flipped sign, a
missing softmax, the last task instead of the mean, ...). ``test_a_broken_core_fails_its_check``
asserts that each of them fails its core's check; a check that let one through would be too weak
to trust when it passes the real function.

No data set and no training beyond a hundred Adam steps on four 2-D vectors: the file takes
seconds on one thread.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import random_episode
from utils import methods as M
from utils.episodes import Episode

close = torch.testing.assert_close


def t(*rows):
    """A float tensor from nested lists: ``t([0, 0], [2, 0])`` is a 2x2 matrix."""
    return torch.tensor(rows, dtype=torch.float32)


def sp(x):
    """softplus(x) = log(1 + e^x), by hand: the binary cross-entropy of a logit's wrong side."""
    return math.log1p(math.exp(x))


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny checks, one summation order


# --- chapter 5: prototypical networks ---------------------------------------------------------


def check_protonet_prototypes(fn):
    z = t([0, 0], [1, 1], [2, 0], [3, 3])
    labels = torch.tensor([1, 0, 1, 0])  # not class-major: the order must not matter
    # class 0: mean of (1, 1) and (3, 3) = (2, 2); class 1: mean of (0, 0) and (2, 0) = (1, 0)
    assert torch.equal(fn(z, labels), t([2, 2], [1, 0]))
    assert torch.equal(fn(t([5, -1]), torch.tensor([0])), t([5, -1]))  # one shot: the image


def check_protonet_scores(fn):
    prototypes = t([0, 0], [2, 0])
    # (0, 0): squared distances 0 and 4; (1, 1): 2 and 2. Scores are minus these.
    close(fn(t([0, 0], [1, 1]), prototypes), t([0, -4], [-2, -2]))
    close(fn(t([0, 0], [1, 1]), prototypes, "euclidean"), t([0, -4], [-2, -2]))
    # cosine: (1, 0) and (0, 3) against (2, 0) and (1, 1): [1, 1/sqrt2] and [0, 1/sqrt2]
    r = 1 / math.sqrt(2)
    close(fn(t([1, 0], [0, 3]), t([2, 0], [1, 1]), "cosine"), t([1, r], [0, r]))
    with pytest.raises(ValueError):
        fn(t([0, 0]), prototypes, "manhattan")


def check_protonet_loss(fn):
    # class 0: (-1, 0), (1, 0) -> prototype (0, 0); class 1: (2, 1), (2, -1) -> (2, 0)
    support = t([-1, 0], [1, 0], [2, 1], [2, -1])
    episode = Episode(
        support, torch.tensor([0, 0, 1, 1]), t([0, 0], [0.5, 0]), torch.tensor([0, 1])
    )
    loss, accuracy = fn(nn.Flatten(), episode)
    # (0, 0): scores [0, -4], label 0: loss log(1 + e^-4), right.
    # (0.5, 0): scores [-0.25, -2.25], label 1: loss 2.25 + log(e^-0.25 + e^-2.25)
    #   = 2 + log(1 + e^-2), wrong (class 0 scores higher).
    close(loss, torch.tensor((sp(-4) + 2 + sp(-2)) / 2))
    assert float(accuracy) == 0.5


def protonet_prototypes_first_image(z_support, support_labels):
    """Broken: the first support image of each class, not the mean."""
    n_way = int(support_labels.max()) + 1
    return torch.stack([z_support[support_labels == c][0] for c in range(n_way)])


def protonet_scores_unsquared(z_query, prototypes, distance="euclidean"):
    """Broken: minus the distance, not its square."""
    if distance == "euclidean":
        return -torch.cdist(z_query, prototypes)
    return M.protonet_scores(z_query, prototypes, distance)


def protonet_loss_plus_distance(model, episode, distance="euclidean"):
    """Broken: cross-entropy on +d^2 (the sign of the distances flipped)."""
    n = len(episode.support)
    z = model(torch.cat([episode.support, episode.query]))
    prototypes = M.protonet_prototypes(z[:n], episode.support_labels)
    scores = torch.cdist(z[n:], prototypes).pow(2)
    loss = F.cross_entropy(scores, episode.query_labels)
    return loss, (scores.argmax(1) == episode.query_labels).float().mean()


def protonet_loss_first_image(model, episode, distance="euclidean"):
    """Broken: prototypes that are the first support image of each class."""
    n = len(episode.support)
    z = model(torch.cat([episode.support, episode.query]))
    prototypes = protonet_prototypes_first_image(z[:n], episode.support_labels)
    scores = M.protonet_scores(z[n:], prototypes, distance)
    loss = F.cross_entropy(scores, episode.query_labels)
    return loss, (scores.argmax(1) == episode.query_labels).float().mean()


# --- chapter 4: matching networks -------------------------------------------------------------


def flat_matching_net():
    """A matching network whose encoder is the identity on flat vectors, with scale ln 3: a
    cosine of 1 against one of 0 then weighs e^(ln 3) = 3 against e^0 = 1."""
    net = M.MatchingNet(hidden=2, scale=math.log(3))
    net.encoder = nn.Flatten()
    return net


def check_matching_attention(fn):
    """``fn(net, support, query)``: an unbound ``MatchingNet.attention``."""
    net = flat_matching_net()
    support = t([3, 0], [0, 1])  # lengths 3 and 1: cosines ignore them, dot products do not
    a = fn(net, support, t([2, 0], [1, 1], [0, 5]))
    # cosines [1, 0], [1/sqrt2, 1/sqrt2], [0, 1] -> softmax of ln 3 times them
    close(a, t([3 / 4, 1 / 4], [1 / 2, 1 / 2], [1 / 4, 3 / 4]))
    close(a.sum(1), torch.ones(3))


def check_matching_forward(fn):
    """``fn(net, support, support_labels, query)``: an unbound ``MatchingNet.forward``."""
    net = flat_matching_net()
    support, labels = t([1, 0], [0, 1], [-1, 0]), torch.tensor([0, 1, 1])
    log_p = fn(net, support, labels, t([2, 0], [0, 3]))
    # (2, 0): cosines [1, 0, -1] -> weights [3, 1, 1/3] / (13/3) = [9, 3, 1] / 13;
    #   class 0 gets 9/13, class 1 gets 3/13 + 1/13 = 4/13.
    # (0, 3): cosines [0, 1, 0] -> [1, 3, 1] / 5; class 0: 1/5, class 1: 4/5.
    close(log_p, t([9 / 13, 4 / 13], [1 / 5, 4 / 5]).log())


def check_matching_loss(fn):
    net = flat_matching_net()
    support, labels = t([1, 0], [0, 1], [-1, 0]), torch.tensor([0, 1, 1])
    episode = Episode(support, labels, t([2, 0], [0, 3], [0, 3]), torch.tensor([0, 1, 0]))
    loss, accuracy = fn(net, episode)
    # probabilities of the true classes (as in check_matching_forward): 9/13, 4/5, 1/5
    close(loss, torch.tensor(-(math.log(9 / 13) + math.log(4 / 5) + math.log(1 / 5)) / 3))
    close(accuracy, torch.tensor(2 / 3))  # the third query is wrong


def matching_attention_no_softmax(self, support, query):
    """Broken: scaled cosines without the softmax."""
    z = F.normalize(self.encoder(torch.cat([support, query])), dim=1)
    zs, zq = z[: len(support)], z[len(support) :]
    return self.scale * zq @ zs.T


def matching_attention_dot(self, support, query):
    """Broken: dot products instead of cosines (no normalisation)."""
    z = self.encoder(torch.cat([support, query]))
    zs, zq = z[: len(support)], z[len(support) :]
    return (self.scale * zq @ zs.T).softmax(dim=1)


def matching_forward_nearest_only(self, support, support_labels, query):
    """Broken: each class gets the attention of its nearest support image, not the sum."""
    a = self.attention(support, query)
    n = int(support_labels.max()) + 1
    return torch.stack([a[:, support_labels == c].max(1).values for c in range(n)], 1).log()


def matching_loss_softmax_again(model, episode):
    """Broken: cross-entropy on the probabilities as if they were logits (a second softmax)."""
    log_p = model(episode.support, episode.support_labels, episode.query)
    accuracy = (log_p.argmax(1) == episode.query_labels).float().mean()
    return F.cross_entropy(log_p.exp(), episode.query_labels), accuracy


# --- chapter 3: Siamese networks --------------------------------------------------------------


def check_siamese_pairs(fn):
    z, y = t([0, 0], [1, 0], [0, 0]), torch.tensor([0, 1, 0])
    z1, z2, same = fn(z, y)
    # pairs (0, 1), (0, 2), (1, 2), each once, never an image with itself
    assert torch.equal(z1, t([0, 0], [0, 0], [1, 0]))
    assert torch.equal(z2, t([1, 0], [0, 0], [0, 0]))
    assert torch.equal(same, t(0, 1, 0))
    assert torch.equal(z1[1] - z2[1], t(0, 0))  # identical embeddings: distance exactly 0


def siamese_net(metric):
    """A Siamese network on flat 2-D vectors; for "l1" the head is 1 - |dz_1| - |dz_2|."""
    net = M.SiameseNet(hidden=2, metric=metric)
    net.encoder = nn.Flatten()
    with torch.no_grad():
        net.head.weight.copy_(t([-1, -1]))
        net.head.bias.fill_(1.0)
    return net


def check_siamese_bce_loss(fn):
    x, y = t([0, 0], [0, 0], [1, 0], [0, 2]), torch.tensor([0, 0, 1, 1])
    loss, accuracy = fn(siamese_net("l1"), (x, y))
    # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3): L1 distances 0 1 2 1 2 3, logits 1 - L1 =
    # 1 0 -1 0 -1 -2; same pairs (0,1) (identical: logit = the bias) and (2,3).
    # BCE: same pairs softplus(-logit), different pairs softplus(logit); each kind averaged,
    # then the two weighted 1/2 each.
    same = (sp(-1) + sp(2)) / 2
    different = (sp(0) + sp(-1) + sp(0) + sp(-1)) / 4
    close(loss, torch.tensor(0.5 * same + 0.5 * different))
    # judged "same" when the logit > 0: same pairs 1 of 2 right, different pairs 4 of 4
    assert float(accuracy) == 0.75


def check_siamese_contrastive_loss(fn):
    net = siamese_net("euclidean")

    def run(points, labels, **margin):
        x = t(*points).requires_grad_()
        loss, accuracy = fn(net, (x, torch.tensor(labels)), **margin)
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(grad).all(), "the gradient is not finite"
        return loss, float(accuracy)

    # identical same pairs (d = 0) and different pairs 3 >= margin 1 apart: nothing to pay
    loss, accuracy = run([[0, 0], [0, 0], [3, 0], [3, 0]], [0, 0, 1, 1])
    close(loss, torch.tensor(0.0), rtol=0, atol=1e-7)
    assert accuracy == 1.0
    # same pairs at 0 and 0.4 (d^2 = 0, 0.16), different pairs all >= 3 apart (0):
    # 1/2 * mean(0, 0.16) + 1/2 * 0; judged same when d < margin / 2 = 0.5: all right
    loss, accuracy = run([[0, 0], [0, 0], [3, 0], [3, 0.4]], [0, 0, 1, 1])
    close(loss, torch.tensor(0.04))
    assert accuracy == 1.0
    # four different pairs 0.3 apart: (1 - 0.3)^2 = 0.49 each; judged same (0.3 < 0.5): wrong
    loss, accuracy = run([[0, 0], [0, 0], [0.3, 0], [0.3, 0]], [0, 0, 1, 1])
    close(loss, torch.tensor(0.5 * 0.49))
    assert accuracy == 0.5
    # the same with margin 0.5: (0.5 - 0.3)^2 = 0.04; 0.3 >= 0.25, judged different: right
    loss, accuracy = run([[0, 0], [0, 0], [0.3, 0], [0.3, 0]], [0, 0, 1, 1], margin=0.5)
    close(loss, torch.tensor(0.5 * 0.04))
    assert accuracy == 1.0


def siamese_pairs_with_self(z, y):
    """Broken: the diagonal is included, every image paired with itself as a "same" pair."""
    i, j = torch.triu_indices(len(z), len(z), 0)
    return z[i], z[j], (y[i] == y[j]).float()


def siamese_bce_ignores_label(model, batch):
    """Broken: BCE towards "same" for every pair, whatever its label."""
    x, y = batch
    z1, z2, same = M.siamese_pairs(model.encoder(x), y)
    logits = model.head((z1 - z2).abs()).squeeze(-1)
    losses = F.binary_cross_entropy_with_logits(logits, torch.ones_like(same), reduction="none")
    loss = 0.5 * losses[same == 1].mean() + 0.5 * losses[same == 0].mean()
    return loss, M.siamese_pair_accuracy(logits.detach() > 0, same)


def siamese_bce_plain_mean(model, batch):
    """Broken: a plain mean over the pairs, so the many different pairs outweigh the same."""
    x, y = batch
    z1, z2, same = M.siamese_pairs(model.encoder(x), y)
    logits = model.head((z1 - z2).abs()).squeeze(-1)
    loss = F.binary_cross_entropy_with_logits(logits, same)
    return loss, M.siamese_pair_accuracy(logits.detach() > 0, same)


def siamese_contrastive_margin_on_same(model, batch, margin=1.0):
    """Broken: the margin term applied to the same pairs (and d^2 to the different ones)."""
    x, y = batch
    z1, z2, same = M.siamese_pairs(model.encoder(x), y)
    d = (z1 - z2).pow(2).sum(1).add(1e-8).sqrt()
    loss = (
        0.5 * (margin - d[same == 1]).clamp_min(0).pow(2).mean() + 0.5 * d[same == 0].pow(2).mean()
    )
    return loss, M.siamese_pair_accuracy(d.detach() < margin / 2, same)


def siamese_contrastive_no_hinge(model, batch, margin=1.0):
    """Broken: (margin - d)^2 without the max(0, .): far different pairs are pulled in."""
    x, y = batch
    z1, z2, same = M.siamese_pairs(model.encoder(x), y)
    d = (z1 - z2).pow(2).sum(1).add(1e-8).sqrt()
    loss = 0.5 * d[same == 1].pow(2).mean() + 0.5 * (margin - d[same == 0]).pow(2).mean()
    return loss, M.siamese_pair_accuracy(d.detach() < margin / 2, same)


def siamese_contrastive_no_epsilon(model, batch, margin=1.0):
    """Broken: d = sqrt(sum of squares) without the 1e-8: NaN gradients on identical pairs."""
    x, y = batch
    z1, z2, same = M.siamese_pairs(model.encoder(x), y)
    d = (z1 - z2).pow(2).sum(1).sqrt()
    loss = (
        0.5 * d[same == 1].pow(2).mean() + 0.5 * (margin - d[same == 0]).clamp_min(0).pow(2).mean()
    )
    return loss, M.siamese_pair_accuracy(d.detach() < margin / 2, same)


# --- chapter 6: relation networks -------------------------------------------------------------


def check_relation_scores(fn):
    """``fn(module, class_maps, query_maps)``: an unbound ``RelationModule.forward``."""
    torch.manual_seed(0)
    module = M.RelationModule(channels=4, hidden=3)
    class_maps, query_maps = torch.randn(2, 4, 5, 5), torch.randn(3, 4, 5, 5)
    scores = fn(module, class_maps, query_maps)
    assert scores.shape == (3, 2)  # [queries, classes]
    assert ((scores >= 0) & (scores <= 1)).all()
    # the split first convolution gives the scores of the literal concatenation [class; query]
    close(scores, module.forward_concat(class_maps, query_maps))
    # a last layer of zero weights and bias ln 3 scores every pair sigmoid(ln 3) = 3 / (1 + 3)
    with torch.no_grad():
        module.head[-2].weight.zero_()
        module.head[-2].bias.fill_(math.log(3))
    close(fn(module, class_maps, query_maps), torch.full((3, 2), 0.75))


def check_relation_loss(fn):
    scores = t([0.9, 0.2], [0.4, 0.6], [0.7, 0.1])

    def fixed_model(support, support_labels, query):
        return scores

    x = torch.zeros(3, 1, 1, 1)
    loss, accuracy = fn(
        fixed_model, Episode(x, torch.tensor([0, 1, 1]), x, torch.tensor([0, 1, 1]))
    )
    # targets [1, 0], [0, 1], [0, 1]; squared errors 0.01 0.04, 0.16 0.16, 0.49 0.81: mean 1.67/6
    close(loss, torch.tensor(1.67 / 6))
    close(accuracy, torch.tensor(2 / 3))  # the third query's argmax is class 0


def relation_scores_no_sigmoid(self, class_maps, query_maps):
    """Broken: the head without its final sigmoid (scores are not in [0, 1])."""
    conv, c = self.blocks[0][0], class_maps.shape[1]
    a = F.conv2d(class_maps, conv.weight[:, :c], padding=conv.padding)
    b = F.conv2d(query_maps, conv.weight[:, c:], conv.bias, padding=conv.padding)
    h = self.blocks[0][1:]((b[:, None] + a[None]).flatten(0, 1))
    return self.head[:-1](self.blocks[1](h)).view(len(query_maps), len(class_maps))


def relation_scores_halves_swapped(self, class_maps, query_maps):
    """Broken: the class maps convolved with the query half of the filters, and vice versa."""
    conv, c = self.blocks[0][0], class_maps.shape[1]
    a = F.conv2d(class_maps, conv.weight[:, c:], padding=conv.padding)
    b = F.conv2d(query_maps, conv.weight[:, :c], conv.bias, padding=conv.padding)
    h = self.blocks[0][1:]((b[:, None] + a[None]).flatten(0, 1))
    return self.head(self.blocks[1](h)).view(len(query_maps), len(class_maps))


def relation_loss_own_class_only(model, episode):
    """Broken: regresses only the own class's score onto 1, never the others onto 0."""
    scores = model(episode.support, episode.support_labels, episode.query)
    own = scores.gather(1, episode.query_labels[:, None]).squeeze(1)
    loss = F.mse_loss(own, torch.ones_like(own))
    return loss, (scores.argmax(1) == episode.query_labels).float().mean()


# --- chapter 7: MAML's inner loop -------------------------------------------------------------


def check_maml_adapt(fn):
    model, x, y = nn.Linear(2, 2), t([1, 2]), torch.tensor([0])

    def zero():
        return {
            "weight": torch.zeros(2, 2).requires_grad_(),
            "bias": torch.zeros(2).requires_grad_(),
        }

    # cross-entropy from zero weights: p = [1/2, 1/2], label 0, so grad W = (p - onehot) x^T =
    # [[-0.5, -1], [0.5, 1]], grad b = [-0.5, 0.5]; a step of 0.1 adds 0.1 times their negatives
    for first_order in (True, False):
        params = {n: w.requires_grad_() for n, w in zero().items()}
        new = fn(model, params, {}, x, y, 1, 0.1, first_order)
        close(new["weight"], t([0.05, 0.1], [-0.05, -0.1]))
        close(new["bias"], t(0.05, -0.05))
        assert torch.equal(params["weight"], torch.zeros(2, 2))  # the start is left as it was
        # d(new W_00 + new W_01)/dW_kj = [k=0] - 0.1 * p_0 ([k=0] - p_k) x_j (x_0 + x_1), through
        # the gradient (second order): [[0.925, 0.85], [0.075, 0.15]]; [[1, 1], [0, 0]] when the
        # gradient is a constant (first order). d(new b_0)/db = [1 - 0.025, 0.025], or [1, 0].
        (dw,) = torch.autograd.grad(new["weight"][0].sum(), params["weight"], retain_graph=True)
        (db,) = torch.autograd.grad(new["bias"][0], params["bias"])
        close(dw, t([1, 1], [0, 0]) if first_order else t([0.925, 0.85], [0.075, 0.15]))
        close(db, t(1, 0) if first_order else t(0.975, 0.025))
    # a second step from there: logits W x + b = [0.3, -0.3], p_0 = 1 / (1 + e^-0.6), so each
    # weight moves by 0.1 (1 - p_0) x_j and each bias by 0.1 (1 - p_0), up for class 0
    new = fn(model, {n: w.requires_grad_() for n, w in zero().items()}, {}, x, y, 2, 0.1, True)
    move = 0.1 * (1 - 1 / (1 + math.exp(-0.6)))
    close(new["weight"], t([0.05 + move, 0.1 + 2 * move], [-0.05 - move, -0.1 - 2 * move]))
    close(new["bias"], t(0.05 + move, -0.05 - move))


def maml_adapt_ascent(model, params, buffers, x, y, steps, lr, first_order=False):
    """Broken: steps up the gradient (+lr)."""
    for _ in range(steps):
        loss = F.cross_entropy(torch.func.functional_call(model, (params, buffers), (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        params = {name: p + lr * g for (name, p), g in zip(params.items(), grads)}
    return params


def maml_adapt_always_first_order(model, params, buffers, x, y, steps, lr, first_order=False):
    """Broken: never keeps the graph of the gradient (no create_graph): always FOMAML."""
    for _ in range(steps):
        loss = F.cross_entropy(torch.func.functional_call(model, (params, buffers), (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()))
        params = {name: p - lr * g for (name, p), g in zip(params.items(), grads)}
    return params


# --- chapter 8: Reptile's outer step ----------------------------------------------------------


class Tiny(nn.Module):
    """A linear layer, a floating buffer (as batch norm's running mean) and an integer one (as
    its ``num_batches_tracked``)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.register_buffer("stat", torch.zeros(1))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


def check_reptile_outer_step(fn):
    model = Tiny()
    with torch.no_grad():  # phi: w = (1, 2), b = 0, stat = 0, count = 0
        model.linear.weight.copy_(t([1, 2]))
        model.linear.bias.zero_()
    tasks = [  # where each task's adaptation ends, and the loss it returns
        dict(weight=[[3.0, 2.0]], bias=[1.0], stat=[4.0], count=5, loss=1.0),
        dict(weight=[[1.0, 6.0]], bias=[-1.0], stat=[2.0], count=7, loss=3.0),
    ]
    starts = []

    def adapt(m, task):
        starts.append({k: v.clone() for k, v in m.state_dict().items()})
        with torch.no_grad():
            m.linear.weight.copy_(torch.tensor(task["weight"]))
            m.linear.bias.copy_(torch.tensor(task["bias"]))
            m.stat.copy_(torch.tensor(task["stat"]))
            m.count.fill_(task["count"])
        return task["loss"]

    assert fn(model, tasks, adapt, 0.5) == 2.0  # the mean of the tasks' losses
    for s in starts:  # every task starts from phi
        assert torch.equal(s["linear.weight"], t([1, 2])) and torch.equal(s["stat"], t(0))
    # mean of the adapted: w = (2, 4), b = 0, stat = 3; phi + 0.5 * (mean - phi):
    # w = (1.5, 3), b = 0, stat = 1.5 (floating buffers interpolated); count stays at phi's 0
    state = model.state_dict()
    assert torch.equal(state["linear.weight"], t([1.5, 3]))
    assert torch.equal(state["linear.bias"], t(0))
    assert torch.equal(state["stat"], t(1.5))
    assert int(state["count"]) == 0


def reptile_minus(model, tasks, adapt, outer_lr):
    """Broken: moves phi away from the adapted weights (minus sign)."""
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    total = {k: torch.zeros_like(v) for k, v in start.items() if v.is_floating_point()}
    losses = []
    for task in tasks:
        model.load_state_dict(start)
        losses.append(adapt(model, task))
        for k in total:
            total[k] += model.state_dict()[k].detach()
    new = {k: start[k] - outer_lr * (total[k] / len(tasks) - start[k]) for k in total}
    model.load_state_dict({**start, **new})
    return sum(losses) / len(losses)


def reptile_last_task(model, tasks, adapt, outer_lr):
    """Broken: steps towards the last task's weights instead of the mean of all."""
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    losses = []
    for task in tasks:
        model.load_state_dict(start)
        losses.append(adapt(model, task))
    last = {k: v.detach().clone() for k, v in model.state_dict().items()}
    new = {k: v + outer_lr * (last[k] - v) for k, v in start.items() if v.is_floating_point()}
    model.load_state_dict({**start, **new})
    return sum(losses) / len(losses)


def reptile_no_restart(model, tasks, adapt, outer_lr):
    """Broken: each task starts where the previous one ended, not from phi."""
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    total = {k: torch.zeros_like(v) for k, v in start.items() if v.is_floating_point()}
    losses = []
    for task in tasks:
        losses.append(adapt(model, task))
        for k in total:
            total[k] += model.state_dict()[k].detach()
    new = {k: start[k] + outer_lr * (total[k] / len(tasks) - start[k]) for k in total}
    model.load_state_dict({**start, **new})
    return sum(losses) / len(losses)


def reptile_parameters_only(model, tasks, adapt, outer_lr):
    """Broken: only the parameters move; the buffers are left at phi's."""
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    total = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    losses = []
    for task in tasks:
        model.load_state_dict(start)
        losses.append(adapt(model, task))
        for k, p in model.named_parameters():
            total[k] += p.detach()
    new = {k: start[k] + outer_lr * (total[k] / len(tasks) - start[k]) for k in total}
    model.load_state_dict({**start, **new})
    return sum(losses) / len(losses)


# --- chapter 2: the transfer classifiers ------------------------------------------------------

# Frozen "features" (the backbone is nn.Flatten()): class 0 at (3, 4) and (0, 10), class 1 at
# (0, -2), given out of class order; one query at (6, 8). L2-normalised: (0.6, 0.8) and (0, 1),
# mean (0.3, 0.9); (0, -1); the query (0.6, 0.8). M0 is a centre: the SimpleShot check adds it
# to every feature, so that centring and normalising must give these same numbers.
S0, Y0, Q0, M0 = t([3, 4], [0, -2], [0, 10]), torch.tensor([0, 1, 0]), t([6, 8]), t([1, 1])


def check_transfer_normalise(fn):
    close(fn(t([3, 4], [0, 2])), t([0.6, 0.8], [0, 1]))
    # centred on (1, 0): (2, 4) and (-1, 2), both of length sqrt(20) and sqrt(5)
    r = 1 / math.sqrt(5)
    close(fn(t([3, 4], [0, 2]), t([1, 0])), t([r, 2 * r], [-r, 2 * r]))


def check_transfer_ncm(make):
    """``make(backbone, mean=None, l2=False)`` -> ``classify``, as ``classifier_transfer_ncm``."""
    backbone = nn.Flatten()
    # raw: prototypes (1.5, 7) and (0, -2); the query is sqrt(4.5^2 + 1) and sqrt(6^2 + 10^2) away
    close(make(backbone)(S0, Y0, Q0), -t([math.sqrt(21.25), math.sqrt(136)]))
    # L2: prototypes (0.3, 0.9) and (0, -1); (0.6, 0.8) is sqrt(0.1) and sqrt(3.6) away
    l2 = -t([math.sqrt(0.1), math.sqrt(3.6)])
    close(make(backbone, l2=True)(S0, Y0, Q0), l2)
    close(make(backbone, mean=M0, l2=True)(S0 + M0, Y0, Q0 + M0), l2)  # SimpleShot: CL2N


def check_transfer_cosine(make):
    """``make(backbone, mean, steps=0, scale=10)`` -> ``classify``: the starting classifier."""
    backbone = nn.Flatten()
    # class directions: (0.3, 0.9) normalised = (1, 3) / sqrt(10), and (0, -1); the query
    # (0.6, 0.8): cosines 3 / sqrt(10) and -0.8; scores 10 times these
    expected = t([30 / math.sqrt(10), -8])
    close(make(backbone, steps=0, scale=10.0)(S0, Y0, Q0), expected)
    close(make(backbone, mean=M0, steps=0, scale=10.0)(S0 + M0, Y0, Q0 + M0), expected)


def check_transfer_logreg(make):
    """``make(backbone, mean, steps, lr)`` -> ``classify``: logistic regression from zero."""
    backbone, m = nn.Flatten(), t([1, 1])
    support, labels = t([2, 0], [-3, 0]) + m, torch.tensor([0, 1])  # centred, normalised: +-e1
    query = t([4, 3]) + m  # centred and normalised: (0.8, 0.6)
    assert torch.equal(make(backbone, mean=m, steps=0)(support, labels, query), torch.zeros(1, 2))
    # at zero weights p = (1/2, 1/2): grad w_0 = mean over the support of (p_0 - [y = 0]) s =
    # (-1/2, 0), grad w_1 = (1/2, 0), grad b = 0. Adam's first step is lr * sign(grad):
    # w_0 = (0.1, 0), w_1 = (-0.1, 0), b = 0; the query scores (0.08, -0.08).
    scores = make(backbone, mean=m, steps=1, lr=0.1)(support, labels, query)
    close(scores, t([0.08, -0.08]))
    # trained (the default 100 steps): two well-separated classes come out right
    support = t([2, 0.1], [3, -0.2], [-2, 0.3], [-3, 0]) + m
    query = t([5, 1], [-4, -1]) + m
    scores = make(backbone, mean=m)(support, torch.tensor([0, 0, 1, 1]), query)
    assert scores.argmax(1).tolist() == [0, 1]


def transfer_normalise_columns(features, mean=None):
    """Broken: scales every column (feature) to length 1 instead of every row (image)."""
    if mean is not None:
        features = features - mean
    return F.normalize(features, dim=0)


def ncm_normalise_then_centre(backbone, mean=None, l2=False):
    """Broken: SimpleShot normalising before centring."""

    def classify(support, support_labels, query):
        s, q = backbone(support), backbone(query)
        if mean is not None or l2:
            s, q = F.normalize(s, dim=1), F.normalize(q, dim=1)
            if mean is not None:
                s, q = s - mean, q - mean
        n = int(support_labels.max()) + 1
        prototypes = torch.stack([s[support_labels == c].mean(0) for c in range(n)])
        return -torch.cdist(q, prototypes)

    return classify


def cosine_raw_class_means(backbone, mean=None, steps=100, lr=0.01, scale=10.0):
    """Broken (steps ignored): class directions from the means of the raw features, not of the
    centred and normalised ones."""

    def classify(support, support_labels, query):
        s, q = backbone(support), M.transfer_normalise(backbone(query), mean)
        n = int(support_labels.max()) + 1
        w = torch.stack([s[support_labels == c].mean(0) for c in range(n)])
        return scale * q @ F.normalize(w, dim=1).T

    return classify


def logreg_not_centred(backbone, mean=None, steps=100, lr=0.1, weight_decay=1e-3):
    """Broken: the book's logistic regression with the centre ignored."""
    return M.classifier_transfer_logreg(backbone, None, steps, lr, weight_decay)


# --- the book's cores pass, the broken ones fail ----------------------------------------------

CHECKS = {  # core -> (its check, the book's function)
    "protonet_prototypes": (check_protonet_prototypes, M.protonet_prototypes),
    "protonet_scores": (check_protonet_scores, M.protonet_scores),
    "protonet_loss": (check_protonet_loss, M.protonet_loss),
    "MatchingNet.attention": (check_matching_attention, M.MatchingNet.attention),
    "MatchingNet.forward": (check_matching_forward, M.MatchingNet.forward),
    "matching_loss": (check_matching_loss, M.matching_loss),
    "siamese_pairs": (check_siamese_pairs, M.siamese_pairs),
    "siamese_bce_loss": (check_siamese_bce_loss, M.siamese_bce_loss),
    "siamese_contrastive_loss": (check_siamese_contrastive_loss, M.siamese_contrastive_loss),
    "RelationModule.forward": (check_relation_scores, M.RelationModule.forward),
    "relation_loss": (check_relation_loss, M.relation_loss),
    "maml_adapt": (check_maml_adapt, M.maml_adapt),
    "reptile_outer_step": (check_reptile_outer_step, M.reptile_outer_step),
    "transfer_normalise": (check_transfer_normalise, M.transfer_normalise),
    "classifier_transfer_ncm": (check_transfer_ncm, M.classifier_transfer_ncm),
    "classifier_transfer_cosine": (check_transfer_cosine, M.classifier_transfer_cosine),
    "classifier_transfer_logreg": (check_transfer_logreg, M.classifier_transfer_logreg),
}

BROKEN = {  # core -> its broken variants
    "protonet_prototypes": [protonet_prototypes_first_image],
    "protonet_scores": [protonet_scores_unsquared],
    "protonet_loss": [protonet_loss_plus_distance, protonet_loss_first_image],
    "MatchingNet.attention": [matching_attention_no_softmax, matching_attention_dot],
    "MatchingNet.forward": [matching_forward_nearest_only],
    "matching_loss": [matching_loss_softmax_again],
    "siamese_pairs": [siamese_pairs_with_self],
    "siamese_bce_loss": [siamese_bce_ignores_label, siamese_bce_plain_mean],
    "siamese_contrastive_loss": [
        siamese_contrastive_margin_on_same,
        siamese_contrastive_no_hinge,
        siamese_contrastive_no_epsilon,
    ],
    "RelationModule.forward": [relation_scores_no_sigmoid, relation_scores_halves_swapped],
    "relation_loss": [relation_loss_own_class_only],
    "maml_adapt": [maml_adapt_ascent, maml_adapt_always_first_order],
    "reptile_outer_step": [
        reptile_minus,
        reptile_last_task,
        reptile_no_restart,
        reptile_parameters_only,
    ],
    "transfer_normalise": [transfer_normalise_columns],
    "classifier_transfer_ncm": [ncm_normalise_then_centre],
    "classifier_transfer_cosine": [cosine_raw_class_means],
    "classifier_transfer_logreg": [logreg_not_centred],
}


@pytest.mark.parametrize("core", CHECKS)
def test_the_books_core_passes_its_check(core):
    check, fn = CHECKS[core]
    check(fn)


@pytest.mark.parametrize(
    "core, broken",
    [pytest.param(core, b, id=f"{core}-{b.__name__}") for core, bs in BROKEN.items() for b in bs],
)
def test_a_broken_core_fails_its_check(core, broken):
    check, _ = CHECKS[core]
    with pytest.raises(AssertionError):
        check(broken)


def test_every_core_has_a_broken_variant():
    assert BROKEN.keys() == CHECKS.keys()
    assert all(BROKEN.values())


def test_relation_network_scores_every_query_against_every_class_in_0_1():
    """The whole relation network on two 28x28 support images and three queries: scores
    ``[queries, classes]`` in [0, 1], a class's score the mean of the query's scores against
    its support maps (g reads single maps, as in training), not g on the mean of the maps."""
    torch.manual_seed(0)
    net = M.RelationNetwork()
    support, query = torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    labels = torch.tensor([0, 1, 1])
    scores = net(support, labels, query)
    assert scores.shape == (3, 2)
    assert ((scores >= 0) & (scores <= 1)).all()
    z = net.embedding(torch.cat([support, query]))
    every = net.relation(z[:3], z[3:])  # [queries, support images]
    close(scores, torch.stack([every[:, 0], every[:, 1:3].mean(1)], 1))
    mean_map = net.relation(torch.stack([z[0], z[1:3].mean(0)]), z[3:])
    assert not torch.allclose(scores, mean_map, atol=1e-4)  # the other way to serve 5-shot
    with torch.no_grad():  # the classifier embeds each image once: the same scores
        close(
            M.classifier_relation(net)(support, labels, query), net.eval()(support, labels, query)
        )

    class Constant(M.RelationNetwork):
        def forward(self, support, support_labels, query):
            return torch.full((len(query), 2), 0.5)

    close(M.classifier_relation(Constant())(support, labels, query), torch.full((3, 2), 0.5))


def test_classifier_matching_gives_the_models_scores_and_runs_a_subclass_as_written():
    """The matching classifier embeds each test image once (``embed_once``) and scores as
    ``model(...)`` does; a subclass with its own attention (chapter 4's FCE exercise) is run
    as it is written, its own attention used."""
    torch.manual_seed(0)
    net = M.MatchingNet().eval()
    support, query = torch.rand(4, 1, 28, 28), torch.rand(6, 1, 28, 28)
    labels = torch.tensor([0, 0, 1, 1])
    classify = M.classifier_matching(net)
    with torch.no_grad():
        close(classify(support, labels, query), net(support, labels, query))
        close(classify(support, labels, query[:2]), net(support, labels, query[:2]))

    class Uniform(M.MatchingNet):
        def attention(self, support, query):
            return torch.full((len(query), len(support)), 1 / len(support))

    uniform = M.classifier_matching(Uniform())(support, labels, query)
    close(uniform, torch.full((6, 2), 0.5).log())


@pytest.mark.parametrize(
    "adapt",
    [None, M.anil_adapt, M.protomaml_adapt],
    ids=["maml", "anil", "protomaml"],
)
def test_scores_along_one_adaptation_are_those_of_each_count_alone(adapt):
    """The validation choice of test-time steps scores every count along one adaptation: the
    same scores as adapting anew for each count (ProtoMAML's head is set from the prototypes
    once, then its steps go on as MAML's: ``protomaml_adapt.then``)."""
    torch.manual_seed(0)
    model = M.maml_conv4(3)
    support, labels, query = random_episode()
    along = M.maml_along(model, 0.4, adapt)(support, labels, query, (0, 1, 3))
    for k, scores in along.items():
        close(scores, M.classifier_maml(model, k, 0.4, adapt)(support, labels, query))


def test_reptile_scores_along_one_adaptation_are_those_of_each_count_alone():
    torch.manual_seed(0)
    model = M.reptile_model(3, 8)
    support, labels, query = random_episode()
    along = M.reptile_along(model, 0.01)(support, labels, query, (1, 3, 5))
    for k, scores in along.items():  # minibatches of the whole support set, in another order
        expected = M.classifier_reptile(model, k, 0.01)(support, labels, query)
        torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("build", [lambda: M.maml_conv4(3), lambda: M.reptile_model(3, 8)])
def test_support_statistics_scores_each_query_image_on_its_own(build):
    """The non-transductive test (chapter 7): a query image's scores do not change with the
    other query images; scoring the support images themselves is a batch-norm forward pass of
    the support set alone; and the queries' own statistics (transductive) give other scores."""
    torch.manual_seed(0)
    model = build().train()
    params = dict(model.named_parameters())
    support, _, query = random_episode()
    scores = M.support_statistics_forward(model, params, support, query)
    with torch.no_grad():
        close(M.support_statistics_forward(model, params, support, query[:1]), scores[:1])
        close(M.support_statistics_forward(model, params, support, query.flip(0)), scores.flip(0))
        close(M.support_statistics_forward(model, params, support, support), model(support))
        close(M.support_statistics_forward(model, params, support), model(support))
        assert not torch.allclose(model(query), scores, atol=1e-3)


@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
def test_maml_batch_loss_is_the_loop_over_the_tasks(first_order):
    """All the tasks at once (``vmap``, chapter 7) give each task's loss, query scores and the
    meta-gradient of the loop over ``maml_task_loss``, in float64: second order too, which
    ``vmap`` gets wrong through the built-in batch norm."""
    torch.manual_seed(0)
    model = M.maml_conv4(3, hidden=8).double()
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(1)
    tasks = [
        Episode(
            torch.rand(6, 1, 28, 28, generator=g, dtype=torch.float64),
            torch.arange(3).repeat_interleave(2),
            torch.rand(9, 1, 28, 28, generator=g, dtype=torch.float64),
            torch.arange(3).repeat_interleave(3),
        )
        for _ in range(3)
    ]
    loop = [M.maml_task_loss(model, params, {}, ep, 2, 0.4, first_order) for ep in tasks]
    losses, logits = M.maml_batch_loss(model, params, {}, tasks, 2, 0.4, first_order)
    assert losses.shape == (3,) and logits.shape == (3, 9, 3)
    close(losses, torch.stack([loss for loss, _ in loop]))
    close(logits, torch.stack([scores for _, scores in loop]))
    expected = torch.autograd.grad(
        torch.stack([loss for loss, _ in loop]).sum(), [*params.values()]
    )
    for a, b in zip(torch.autograd.grad(losses.sum(), [*params.values()]), expected):
        close(a, b)


def test_the_batch_statistics_of_a_test_are_named_or_refused():
    """MAML's and Reptile's classifiers refuse an unknown ``statistics`` naming the allowed."""
    support, labels, query = random_episode()
    with pytest.raises(ValueError, match="support.*queries"):
        M.classifier_maml(M.maml_conv4(3), 1, 0.4, statistics="query")(support, labels, query)
    with pytest.raises(ValueError, match="support \\+ one query"):
        M.classifier_reptile(M.reptile_model(3, 8), 1, 0.01, "batch")(support, labels, query)
