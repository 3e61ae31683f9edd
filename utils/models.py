"""The Conv-4 backbone of Matching, Prototypical, Relation networks and MAML."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int, pool: bool = True) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU and (by default) 2x2 max-pooling.

    Its convolution weights are stored channels-last (``torch.channels_last``): the
    convolutions then compute in that layout, which trains Conv-4 faster on a CPU (the
    measured ratio is in the book's page "What it costs", from ``make bench``). The results
    are the same up to rounding; ``model.to(memory_format=torch.contiguous_format)`` undoes it."""
    layers = [
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


def conv4(in_channels: int = 1, hidden: int = 64, flatten: bool = True) -> nn.Sequential:
    """Four conv blocks of ``hidden`` filters: a 28x28 image becomes a ``hidden``-vector
    (28 -> 14 -> 7 -> 3 -> 1), or a ``[hidden, 1, 1]`` map with ``flatten=False``."""
    blocks = [conv_block(in_channels if i == 0 else hidden, hidden) for i in range(4)]
    return nn.Sequential(*blocks, *([nn.Flatten()] if flatten else []))


def n_parameters(model: nn.Module) -> int:
    """How many trainable numbers ``model`` has."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
