"""Chapter 2's helpers for the chapters that reuse its pretraining: the centre SimpleShot
subtracts, the loss of the pretraining, and the choice of fine-tuning on validation episodes."""

import torch

from utils import methods as M
from utils.config import Setup
from utils.data import ClassSet


def test_transfer_centre_is_the_mean_training_feature(monkeypatch):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 20, 28, 28, generator=g)
    fake = ClassSet(images, [f"a/{i}" for i in range(6)], ["a"] * 6)
    monkeypatch.setattr(M, "load_split", lambda split, *a, **k: fake)
    torch.manual_seed(0)
    backbone = M.TransferNet(6).backbone
    expected = M.transfer_features(backbone, images[:, 0].unsqueeze(1)).mean(0)
    torch.testing.assert_close(M.transfer_centre(backbone), expected)


def test_transfer_loss_is_the_cross_entropy_of_the_head_with_its_accuracy():
    torch.manual_seed(0)
    net = M.TransferNet(3)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 0])
    loss, accuracy = M.transfer_loss(net, (x, y))
    logits = net(x)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, y))
    assert float(accuracy) == (logits.argmax(1) == y).float().mean().item()


def test_choose_finetuning_takes_the_fewest_steps_within_the_best_interval():
    curve = {  # query accuracy (%) of four episodes at each step, for two learning rates
        1e-3: {"query": {0: [60, 60, 60, 60], 10: [80, 82, 78, 80], 20: [81, 81, 80, 80]}},
        1e-2: {"query": {0: [60, 60, 60, 60], 10: [90, 92, 88, 90], 20: [91, 90, 90, 91]}},
    }
    assert M.choose_finetuning(curve) == {"lr": 1e-2, "steps": 10}
    flat = {lr: {"query": {0: [70, 70], 5: [70, 70]}} for lr in (1e-3, 1e-2)}
    assert M.choose_finetuning(flat) == {"lr": 1e-3, "steps": 0}  # ties: fewest, then smallest


def test_finetune_curve_uses_validation_episodes_at_the_recorded_steps(monkeypatch):
    g = torch.Generator().manual_seed(0)
    fake = ClassSet(torch.rand(6, 20, 28, 28, generator=g), [f"a/{i}" for i in range(6)], ["a"] * 6)
    splits = []
    monkeypatch.setattr(M, "load_split", lambda split, *a, **k: splits.append(split) or fake)
    torch.manual_seed(0)
    backbone = M.TransferNet(6).backbone
    curve = M.finetune_curve(
        backbone, Setup("quick", torch.device("cpu"), 0), lrs=(1e-3,), at=(0, 2)
    )
    assert splits == ["val"]
    query = curve[1e-3]["query"]
    assert sorted(query) == [0, 2] and all(len(v) == 20 for v in query.values())
    assert all(a == 100 for a in curve[1e-3]["support"][0])  # one shot: the mean is the image
