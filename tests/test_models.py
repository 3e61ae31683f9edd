import copy

import torch

from utils.models import conv4, conv_block, n_parameters


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


def test_conv_weights_are_channels_last_and_give_the_same_numbers():
    torch.manual_seed(0)
    net = conv4()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert m.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(6, 1, 28, 28)
    plain = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(net(x), plain(x), atol=1e-5, rtol=1e-4)
