"""Chapter 9's functions (collected into utils.methods): linear CKA, the layers of MAML's
network, and the inner loops of ANIL and ProtoMAML, against the identities the chapter states."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from conftest import random_episode
from utils import methods as M


def test_linear_cka_identities():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 20, generator=g)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g))
    torch.testing.assert_close(M.linear_cka(x, x), 1.0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(M.linear_cka(x, -2.5 * x @ q + 7.0), 1.0, rtol=1e-4, atol=1e-4)
    y = torch.randn(50, 3, generator=g)
    assert M.linear_cka(x, y) == pytest.approx(M.linear_cka(y, x), rel=1e-5)
    assert 0.0 <= M.linear_cka(x, y) < 0.5  # 50 images of 3 and 20 unrelated features
    # feature maps are flattened: [n, c, h, w] works as [n, c*h*w]
    maps = torch.randn(10, 2, 3, 3, generator=g)
    assert M.linear_cka(maps, maps.flatten(1)) == pytest.approx(1.0, rel=1e-5)


def test_part_selects_and_renames():
    w = {"0.1.weight": 1, "0.10.bias": 2, "1.weight": 3}
    assert M._part(w, "0.") == {"1.weight": 1, "10.bias": 2}
    assert M._part(w, "0.1.") == {"weight": 1}


def episode(n_way=5, k_shot=1, n_query=3, seed=0):
    return random_episode(n_way, k_shot, n_query, seed)


def test_layer_outputs_end_with_the_models_output():
    torch.manual_seed(0)
    net = M.maml_conv4()
    _, _, query = episode()
    outs = M.layer_outputs(net, dict(net.named_parameters()), query)
    assert [tuple(o.shape[1:]) for o in outs] == [
        (64, 14, 14),
        (64, 7, 7),
        (64, 3, 3),
        (64, 1, 1),
        (5,),
    ]
    torch.testing.assert_close(outs[-1], net(query))


def test_anil_one_step_is_mamls_head_step_and_leaves_the_body():
    torch.manual_seed(0)
    net = M.maml_conv4()
    support, labels, _ = episode()
    params = dict(net.named_parameters())
    full = M.maml_adapt(net, params, {}, support, labels, 1, 0.4)
    head = M.anil_adapt(net, params, {}, support, labels, 1, 0.4)
    for name in ("1.weight", "1.bias"):
        torch.testing.assert_close(head[name], full[name])
    assert all(head[n] is params[n] for n in params if n.startswith("0."))


def test_anil_meta_gradient_reaches_the_body():
    torch.manual_seed(0)
    net = M.maml_conv4()
    support, labels, query = episode()
    adapted = M.anil_adapt(net, dict(net.named_parameters()), {}, support, labels, 2, 0.4)
    F.cross_entropy(functional_call(net, adapted, (query,)), labels.repeat_interleave(3)).backward()
    assert net[0][0][0].weight.grad.abs().sum() > 0  # the first convolution gets a gradient


def test_protomaml_starts_from_the_prototypical_scores():
    torch.manual_seed(0)
    net = M.maml_conv4()
    support, labels, query = episode(k_shot=2)
    start = M.protomaml_adapt(net, dict(net.named_parameters()), {}, support, labels, 0, 0.4)
    with torch.no_grad():
        logits = functional_call(net, start, (query,))
        z_q = net[0](query)
        scores = M.protonet_scores(z_q, M.protonet_prototypes(net[0](support), labels))
    torch.testing.assert_close(logits - (z_q**2).sum(1, keepdim=True), scores, rtol=1e-4, atol=1e-3)
    # its steps move every weight, the body's too
    moved = M.protomaml_adapt(net, dict(net.named_parameters()), {}, support, labels, 1, 0.4)
    assert not torch.equal(moved["0.0.0.weight"], net[0][0][0].weight)


def two_pass_protomaml(model, params, buffers, x, y, steps, lr, first_order=False):
    """ProtoMAML's inner loop as the book first wrote it: the body embeds ``x`` for the
    prototypes, then ``maml_adapt`` runs it again for its first step."""
    z = functional_call(model[0], (M._part(params, "0."), M._part(buffers, "0.")), (x,))
    c = M.protonet_prototypes(z, y)
    params = {**params, "1.weight": 2 * c, "1.bias": -(c * c).sum(1)}
    return M.maml_adapt(model, params, buffers, x, y, steps, lr, first_order)


def adapt_and_meta_gradient(adapt, net, steps, first_order, backward=True):
    """The weights ``adapt`` reaches on a 5-way 2-shot support set, the query logits, and the
    body's meta-gradient of the query loss (None without ``backward``)."""
    support, labels, query = episode(k_shot=2)
    net.zero_grad()
    adapted = adapt(net, dict(net.named_parameters()), {}, support, labels, steps, 0.4, first_order)
    logits = functional_call(net, adapted, (query,))
    body = None
    if backward:
        F.cross_entropy(logits, torch.arange(5).repeat_interleave(3)).backward()
        body = torch.cat([p.grad.flatten() for n, p in net.named_parameters() if n[0] == "0"])
    return {n: w.detach() for n, w in adapted.items()}, logits.detach(), body


@pytest.mark.parametrize("steps", [0, 1, 2])
@pytest.mark.parametrize("first_order", [False, True])
def test_protomaml_first_step_from_the_prototypes_features_is_the_two_pass_step(steps, first_order):
    """protomaml_adapt takes its first step from the features that gave the prototypes: the same
    adapted weights and query logits as running the body again, up to rounding, and in second
    order the same meta-gradient (through the prototypes too). In first order the two-pass loop
    cannot be differentiated at all (its first step frees the graph that the prototypes need);
    the one-pass loop keeps that graph, and its meta-gradient reaches the body."""
    torch.manual_seed(0)
    net = M.maml_conv4()
    ours, ours_logits, ours_grad = adapt_and_meta_gradient(
        M.protomaml_adapt, net, steps, first_order
    )
    two, two_logits, two_grad = adapt_and_meta_gradient(
        two_pass_protomaml, net, steps, first_order, backward=not first_order
    )
    for n in ours:
        torch.testing.assert_close(ours[n], two[n], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours_logits, two_logits, rtol=1e-4, atol=1e-4)
    if first_order:
        assert ours_grad.abs().sum() > 0
    else:  # conv biases before batch norm get gradients of rounding alone: the whole vector
        assert (ours_grad - two_grad).norm() <= 1e-5 * two_grad.norm()
