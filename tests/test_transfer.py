"""Chapter 2's helpers for the chapters that reuse its pretraining: the backbone alone, and the
centre SimpleShot subtracts."""

import torch

import utils.data
from utils import methods as M
from utils.config import Setup
from utils.data import ClassSet


def test_transfer_centre_is_the_mean_training_feature(monkeypatch):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 20, 28, 28, generator=g)
    fake = ClassSet(images, [f"a/{i}" for i in range(6)], ["a"] * 6)
    monkeypatch.setattr(utils.data, "load_split", lambda split, *a, **k: fake)
    torch.manual_seed(0)
    backbone = M.build_transfer_backbone()
    expected = M.transfer_features(backbone, images[:, 0].unsqueeze(1)).mean(0)
    torch.testing.assert_close(M.transfer_centre(backbone), expected)


def test_train_transfer_backbone_keeps_the_backbone(monkeypatch):
    net = M.TransferNet(7)
    monkeypatch.setattr(M, "train_transfer", lambda S: (net, {"loss": [1.0]}))
    backbone, history = M.train_transfer_backbone(Setup("quick", torch.device("cpu"), 0))
    assert backbone is net.backbone and history == {"loss": [1.0]}
