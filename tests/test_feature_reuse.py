"""Chapter 9's functions (collected into utils.methods): linear CKA, the layers of MAML's
network, and the inner loops of ANIL and ProtoMAML, against the identities the chapter states."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

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
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_way * (k_shot + n_query), 1, 28, 28, generator=g)
    labels = torch.arange(n_way)
    return x[: n_way * k_shot], labels.repeat_interleave(k_shot), x[n_way * k_shot :]


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
