"""The Conv-4 backbone of Matching, Prototypical, Relation networks and MAML, and embed_once:
each test image embedded once."""

from __future__ import annotations

import weakref

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int, pool: bool = True) -> nn.Sequential:
    """3x3 convolution, batch norm, 2x2 max-pooling (by default) and ReLU: pooling before the
    ReLU gives the papers' outputs (the maximum of four ReLUs is the ReLU of the maximum) with
    the ReLU on a quarter of the values. The weights are stored channels-last, the layout in
    which a CPU runs these convolutions fastest."""
    layers = [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels)]
    layers += [nn.MaxPool2d(2), nn.ReLU()] if pool else [nn.ReLU()]
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


def conv4(in_channels: int = 1, hidden: int = 64, flatten: bool = True) -> nn.Sequential:
    """Four conv blocks of ``hidden`` filters: a 28x28 image becomes a ``hidden``-vector
    (28 -> 14 -> 7 -> 3 -> 1), or a ``[hidden, 1, 1]`` map with ``flatten=False``."""
    blocks = [conv_block(in_channels if i == 0 else hidden, hidden) for i in range(4)]
    return nn.Sequential(*blocks, *([nn.Flatten()] if flatten else []))


def n_parameters(model: nn.Module) -> int:
    """How many trainable numbers ``model`` has."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# What embed_once remembers, per module: (the state of its weights, {image bytes: output}).
_REMEMBERED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def embed_once(module: nn.Module):
    """``embed(x)``: ``module(x)`` with each distinct image computed once, for evaluation.

    In ``eval()`` mode without gradients an image's output does not depend on its batch, so
    ``embed`` remembers each image's output (keyed by its bytes, shared by every ``embed`` of
    the module, forgotten when a parameter or buffer changes) and computes only new images: test
    episodes drawn from one pool embed each image once. Else ``embed(x)`` is ``module(x)``."""

    def embed(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or any(m.training for m in module.modules()):
            return module(x)
        now = [(t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers())]
        state, memo = _REMEMBERED.get(module, (None, {}))
        if now != state:
            memo = {}
            _REMEMBERED[module] = (now, memo)
        keys = [row.tobytes() for row in x.detach().reshape(len(x), -1).cpu().numpy()]
        first: dict[bytes, int] = {}  # where each image comes first
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        new = [k for k in first if k not in memo]
        if new:
            memo.update(zip(new, module(x[[first[k] for k in new]])))
        return torch.stack([memo[k] for k in keys])

    return embed
