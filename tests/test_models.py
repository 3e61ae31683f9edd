import copy

import torch

from utils.methods import conv4, conv_block, embed_once, n_parameters


def test_conv4_maps_28x28_to_64():
    net = conv4()
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 64)
    assert conv4(flatten=False)(torch.zeros(2, 1, 28, 28)).shape == (2, 64, 1, 1)


def test_conv4_is_four_blocks_of_the_papers():
    net = conv4()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and all(c.kernel_size == (3, 3) and c.out_channels == 64 for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 4
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.modules()) == 4
    # conv 3x3: 9*in*64 + 64 weights; batch norm: 2*64
    assert n_parameters(net) == (9 * 64 + 64 + 128) + 3 * (9 * 64 * 64 + 64 + 128)


def test_conv_block_without_pooling_keeps_the_size():
    assert conv_block(1, 8, pool=False)(torch.zeros(1, 1, 5, 5)).shape == (1, 8, 5, 5)


def test_conv_block_pools_before_its_relu_as_the_papers_block_computes():
    torch.manual_seed(0)
    block = conv_block(3, 8)
    assert [type(m) for m in block] == [
        torch.nn.Conv2d,
        torch.nn.BatchNorm2d,
        torch.nn.MaxPool2d,
        torch.nn.ReLU,
    ]
    papers = copy.deepcopy(block)
    papers[2], papers[3] = papers[3], papers[2]  # convolution, batch norm, ReLU, max-pooling
    x = torch.randn(5, 3, 8, 8)
    results = []
    for net in (block, papers):
        out = net(x)
        params = list(net.parameters())  # conv weight and bias, batch norm's weight and bias
        first = torch.autograd.grad(out.square().sum(), params, create_graph=True)
        second = torch.autograd.grad(sum(g.square().sum() for g in first), params)  # MAML's
        results.append((out, first, second))
    (out, first, second), (papers_out, papers_first, papers_second) = results
    torch.testing.assert_close(out, papers_out, rtol=0, atol=0)  # bit for bit
    for a, b in zip(first, papers_first):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # up to rounding; not the conv bias, whose gradient batch norm makes zero up to rounding
    for i in (0, 2, 3):
        scale = papers_second[i].abs().max().item()  # of order 1e5 here
        torch.testing.assert_close(second[i], papers_second[i], rtol=1e-4, atol=1e-6 * scale)


def test_conv_weights_are_channels_last_and_give_the_same_numbers():
    torch.manual_seed(0)
    net = conv4()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert m.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(6, 1, 28, 28)
    plain = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(net(x), plain(x), atol=1e-5, rtol=1e-4)


class Counting(torch.nn.Module):
    """conv4 that counts the images it embeds."""

    def __init__(self):
        super().__init__()
        self.net, self.seen = conv4(), 0

    def forward(self, x):
        self.seen += len(x)
        return self.net(x)


def counting_and_embed():
    """A fresh ``Counting`` in eval mode (seed 0) and an ``embed_once`` of it."""
    torch.manual_seed(0)
    model = Counting().eval()
    return model, embed_once(model)


def test_embed_once_embeds_each_image_once_and_gives_the_modules_outputs():
    model, embed = counting_and_embed()
    pool = torch.rand(10, 1, 28, 28)
    with torch.no_grad():
        first = embed(pool[:6])
        torch.testing.assert_close(first, model.net(pool[:6]), rtol=0, atol=0)  # same batch
        again = embed(pool[[5, 2, 9, 9, 7, 0]])  # two new images, one of them twice
        assert model.seen == 6 + 2
        torch.testing.assert_close(again, model.net(pool[[5, 2, 9, 9, 7, 0]]))


def test_embed_once_forgets_when_the_module_changes_and_never_remembers_in_training():
    model, embed = counting_and_embed()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        embed(x)
        for p in model.parameters():
            p.add_(0.1)  # an optimiser step changes the parameters in place
        torch.testing.assert_close(embed(x), model.net(x))
        assert model.seen == 8
    model.train()  # batch statistics: an image's output depends on its batch
    with torch.no_grad():
        embed(x), embed(x)
    assert model.seen == 16
    model.eval()
    out = embed(x)  # gradients on: computed, with its graph
    assert out.requires_grad and model.seen == 20


def test_the_embeds_of_one_module_share_what_they_remember():
    torch.manual_seed(0)
    model, other = Counting().eval(), Counting().eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        embed_once(model)(x)
        torch.testing.assert_close(embed_once(model)(x[:3]), model.net(x[:3]))  # a second embed
        embed_once(other)(x)  # another module remembers its own
    assert (model.seen, other.seen) == (5, 5)
