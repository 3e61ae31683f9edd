"""Chapter 10's functions (collected into utils.methods): affine distortions, support sets grown
by copies, DAGAN's generator and its training split, and the hallucinator."""

import pytest
import torch

import utils.data
from utils import methods as M
from utils.config import Setup
from utils.data import ClassSet
from utils.episodes import Episode


def images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 8:20, 12:16] = torch.rand(n, 1, 12, 4, generator=g)  # a bright bar
    return x


def test_warp_identity_and_random_affine():
    x = images()
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(len(x), 2, 3)
    torch.testing.assert_close(M.warp(x, identity), x, rtol=1e-5, atol=1e-5)
    a = M.random_affine(x, torch.Generator().manual_seed(1))
    b = M.random_affine(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape  # seeded: reproducible
    assert not torch.equal(a, x)
    assert 0 <= a.min() and a.max() <= 1  # bilinear interpolation stays in range
    ink = a.sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert torch.all((ink > 0.5) & (ink < 1.6))  # scales of 0.8-1.2 per axis keep the ink


def test_affine_episode_keeps_labels():
    x = images(8)
    ep = Episode(x[:4], torch.arange(4), x[4:], torch.arange(4))
    out = M.affine_episode(ep, torch.Generator().manual_seed(0))
    assert torch.equal(out.support_labels, ep.support_labels)
    assert out.query.shape == ep.query.shape and not torch.equal(out.query, ep.query)


def test_augmented_prototypes():
    torch.manual_seed(0)
    net = M.protonet_embedding()
    x = images(8)
    support, labels, query = x[:4], torch.arange(4), x[4:]
    plain = M.classifier_protonet(net)(support, labels, query)
    torch.testing.assert_close(
        M.classifier_protonet_augmented(net, M.random_affine, 0)(support, labels, query), plain
    )
    same = M.classifier_protonet_augmented(net, lambda im, g: im.clone(), 3)  # copies = originals
    torch.testing.assert_close(same(support, labels, query), plain, rtol=1e-4, atol=1e-4)
    distorted = M.classifier_protonet_augmented(net, M.random_affine, 3)
    torch.testing.assert_close(distorted(support, labels, query), distorted(support, labels, query))


def test_dagan_networks():
    torch.manual_seed(0)
    G, D = M.DAGANGenerator(), M.dagan_discriminator()
    x = images(5)
    a, b = G(x, torch.Generator().manual_seed(0)), G(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, b)  # the noise matters
    assert D(torch.cat([x, a], 1)).shape == (5, 1)
    copies = M.dagan_copies(G)(x, torch.Generator().manual_seed(0))
    assert not G.training and not copies.requires_grad and copies.shape == x.shape


def test_dagan_trains_on_the_training_characters_only(monkeypatch):
    asked = []

    def spy(split, *args, **kwargs):
        asked.append(split)
        return ClassSet(
            images(4 * 20).view(4, 20, 28, 28), ["a/1", "a/2", "b/1", "b/2"], list("aabb")
        )

    monkeypatch.setattr(M, "load_split", spy)  # a name of utils.methods, hoisted
    S = Setup("quick", torch.device("cpu"), 0)
    G, history = M.train_dagan(S, M.DAGANConfig(steps=2, batch=4))
    assert asked == ["train"]
    assert len(history["generator loss"]) == 2
    assert all(torch.isfinite(torch.tensor(v)).all() for v in history.values())
    # and the training split holds no test or validation character (the Vinyals split)
    names, background = [f"A/c{i}" for i in range(10)], [True] * 6 + [False] * 4
    train = set(utils.data.split_names(names, background, "train"))
    assert not train & set(utils.data.split_names(names, background, "test"))


def test_hallucinator_and_its_prototypes():
    torch.manual_seed(0)
    model = M.HallucinatingProtoNet()
    z = torch.rand(4, 64)
    labels = torch.arange(4)
    torch.testing.assert_close(
        M.hallucinated_prototypes(model, z, labels, 0), M.protonet_prototypes(z, labels)
    )
    torch.nn.init.zeros_(model.hallucinator.net[-1].weight)
    torch.nn.init.zeros_(model.hallucinator.net[-1].bias)
    torch.testing.assert_close(model.hallucinator(z), z)  # residual: a zero MLP adds nothing
    x = images(8)
    ep = Episode(x[:4], labels, x[4:], labels)
    loss, accuracy = M.hallucination_loss(model, ep)
    assert torch.isfinite(loss) and 0 <= accuracy <= 1
    torch.testing.assert_close(
        M.classifier_hallucination(model, 0)(*ep[:3]),
        M.classifier_protonet(model.embedding)(*ep[:3]),
    )


@pytest.mark.parametrize("m", [1, 5])
def test_hallucination_is_reproducible(m):
    torch.manual_seed(0)
    model = M.HallucinatingProtoNet()
    x = images(8)
    classify = M.classifier_hallucination(model, m)
    torch.testing.assert_close(
        classify(x[:4], torch.arange(4), x[4:]), classify(x[:4], torch.arange(4), x[4:])
    )
