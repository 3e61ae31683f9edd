import pytest
import torch

from utils.config import Setup, code_key
from utils.train import fit, load_run, save_run, train_or_load


def test_fit_records_every_step(capsys):
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)

    def step(target):
        loss = (w - target).pow(2).sum()
        opt.zero_grad(), loss.backward(), opt.step()
        return {"loss": loss.item(), "w": w.item()}

    history = fit(step, [torch.tensor(1.0)] * 30, desc="toy")
    assert list(history) == ["loss", "w"] and len(history["loss"]) == 30
    assert history["loss"][-1] < history["loss"][0] and history.seconds >= 0
    assert "toy: 30 steps" in capsys.readouterr().out


def test_fit_runs_on_the_threads_asked_and_restores_them():
    before, seen = torch.get_num_threads(), []
    history = fit(lambda _: seen.append(torch.get_num_threads()) or {}, range(2), threads=1)
    assert seen == [1, 1] and history.threads == 1 and torch.get_num_threads() == before
    assert fit(lambda _: {}, range(1)).threads == before  # recorded: the speed depends on it

    def boom(_):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):  # restored after an error too
        fit(boom, range(1), threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        fit(lambda _: {}, range(1), threads=0)


def test_runs_round_trip_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    s = Setup("quick", torch.device("cpu"), 0)
    assert load_run("nothing", s) is None
    save_run("toy", s, model={"w": torch.ones(2)}, results={"5-way 1-shot": [1.0, 0.5]})
    run = load_run("toy", s)
    assert run["budget"] == "quick" and torch.equal(run["model"]["w"], torch.ones(2))
    assert run["results"]["5-way 1-shot"] == [1.0, 0.5]
    assert load_run("toy", Setup("full", torch.device("cpu"), 0)) is None  # budgets never mix


def test_save_run_keeps_what_was_saved_before(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    s = Setup("quick", torch.device("cpu"), 0)
    save_run("toy", s, model={"w": torch.ones(1)})
    save_run("toy", s, results={"a": [1.0]})
    run = load_run("toy", s)
    assert "model" in run and run["results"] == {"a": [1.0]}


def test_train_or_load_trains_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    monkeypatch.delenv("FEWSHOT_RETRAIN", raising=False)
    s = Setup("quick", torch.device("cpu"), 0)
    calls = []

    def train():
        calls.append(1)
        model = torch.nn.Linear(2, 1)
        torch.nn.init.constant_(model.weight, 3.0)
        history = fit(lambda b: {"loss": b}, [1.0, 0.5], desc="toy")
        return model, history

    first, h1 = train_or_load("lin", s, lambda S, c: train(), None, lambda: torch.nn.Linear(2, 1))
    second, h2 = train_or_load("lin", s, lambda S, c: train(), None, lambda: torch.nn.Linear(2, 1))
    assert len(calls) == 1 and torch.equal(second.weight, first.weight)
    assert h2["loss"] == [1.0, 0.5] and h2.seconds == h1.seconds
    n = torch.get_num_threads()  # where it trained, whether trained now or loaded
    assert h1.device == h2.device == f"cpu, {n} thread{'s' * (n > 1)}"
    assert h1.threads == h2.threads == n  # also a field of its own
    assert h1.peak_mb == h2.peak_mb and (h1.peak_mb is None or h1.peak_mb >= 0)
    assert "loaded the model trained before" in capsys.readouterr().out
    monkeypatch.setenv("FEWSHOT_RETRAIN", "1")
    train_or_load("lin", s, lambda S, c: train(), None, lambda: torch.nn.Linear(2, 1))
    assert len(calls) == 2


def test_peak_memory_sees_a_tensor_made_inside():
    """PeakMemory: a 40 MB tensor made and freed inside the block raises the peak by about that
    much (on Linux; elsewhere on a CPU it says it cannot tell: None). In a fresh process, whose
    allocator keeps no freed memory from earlier tests."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import json, torch\n"
        "from utils.train import PeakMemory\n"
        "with PeakMemory() as nothing:\n"
        "    pass\n"
        "with PeakMemory() as peak:\n"
        "    x = torch.ones(10_000_000)  # 40 MB\n"
        "    del x\n"
        "print(json.dumps([nothing.mb, peak.mb, peak.device]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    nothing, peak, device = json.loads(run.stdout.strip().splitlines()[-1])
    if peak is None:
        assert nothing is None
        pytest.skip("no /proc/self/status here: the peak is unknown")
    assert 35 < peak < 200 and nothing < 35 and device == "cpu"


def _toy_config():
    from dataclasses import dataclass

    from utils.config import Budget, Config

    @dataclass(frozen=True)
    class Toy(Config):
        steps: int = Budget(quick=2, full=20)
        scale: float = 3.0

    return Toy


def test_a_changed_setting_trains_anew_and_the_run_keeps_its_config(tmp_path, monkeypatch):
    from dataclasses import asdict, replace

    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    monkeypatch.delenv("FEWSHOT_RETRAIN", raising=False)
    s = Setup("quick", torch.device("cpu"), 0)
    Toy, calls = _toy_config(), []

    def train(S, config):
        c = config.at(S.budget)
        calls.append(c)
        model = torch.nn.Linear(1, 1)
        torch.nn.init.constant_(model.weight, c.scale)
        return model, fit(lambda b: {"loss": b}, [1.0] * c.steps, desc="toy")

    build = lambda: torch.nn.Linear(1, 1)  # noqa: E731
    first, _ = train_or_load("toy", s, train, Toy(), build)
    again, _ = train_or_load("toy", s, train, Toy(), build)  # the same settings: loaded
    assert len(calls) == 1 and torch.equal(again.weight, first.weight)
    changed, _ = train_or_load("toy", s, train, replace(Toy(), scale=5.0), build)
    assert len(calls) == 2 and changed.weight.item() == 5.0  # a changed setting: trained anew
    assert load_run("toy", s, Toy())["config"] == asdict(Toy().at("quick"))
    assert load_run("toy", s, replace(Toy(), scale=5.0))["config"]["scale"] == 5.0


def test_train_steps_seeds_builds_and_steps_on_the_loss(capsys):
    from utils.train import train_steps

    s = Setup("quick", torch.device("cpu"), 4)
    batches = [(torch.ones(4, 1), torch.full((4, 1), 2.0))] * 25

    def loss(model, batch):
        x, y = batch
        error = (model(x) - y).pow(2).mean()
        return error, (error < 0.01).float()

    build = lambda: torch.nn.Linear(1, 1)  # noqa: E731
    torch.manual_seed(123)  # whatever was drawn before, the same start
    model, history = train_steps(s, build, loss, batches, lr=0.1, desc="toy")
    assert list(history) == ["loss", "accuracy"] and len(history["loss"]) == 25
    assert history["loss"][-1] < history["loss"][0] and not model.training
    start, _ = train_steps(s, build, loss, [], lr=0.1)  # no steps: the initial weights
    torch.manual_seed(4)
    assert torch.equal(start.weight, build().weight)  # seeded with S.seed
    assert not torch.equal(start.weight, model.weight)


def _toy_training(checkpoint, steps: int = 12, stop_at: int | None = None):
    """A toy model trained with train_steps (Adam, a schedule, random draws inside the loss) under
    ``checkpointing(checkpoint, every=0)``: a checkpoint after every step. ``stop_at``: the loss
    raises KeyboardInterrupt at that step, as a killed kernel would stop it."""
    from utils.train import checkpointing, train_steps

    s = Setup("quick", torch.device("cpu"), 1)
    g = torch.Generator().manual_seed(5)
    batches = [torch.randn(8, 3, generator=g) for _ in range(steps)]
    calls = []

    def loss(model, x):
        calls.append(1)
        if stop_at is not None and len(calls) == stop_at + 1:
            raise KeyboardInterrupt
        noise = torch.randn(8, 1)  # the global generator: restored from the checkpoint
        out = model(x)
        return (out - x.sum(1, keepdim=True) + 0.1 * noise).pow(2).mean(), 1.0

    def halve(optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)

    build = lambda: torch.nn.Linear(3, 1)  # noqa: E731
    with checkpointing(checkpoint, every=0.0):
        model, history = train_steps(s, build, loss, batches, 0.05, halve, desc="toy", threads=1)
    return model, history, len(calls)


def test_a_stopped_run_continues_from_its_checkpoint_bit_for_bit(tmp_path, capsys):
    """Killed after 5 of 12 steps, then started again: the continued run trains the 7 steps left
    and ends with the weights and history of a run never stopped, bit for bit (one thread)."""
    whole, whole_history, _ = _toy_training(None)
    checkpoint = tmp_path / "toy.checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        _toy_training(checkpoint, stop_at=5)
    assert checkpoint.is_file()
    continued, history, calls = _toy_training(checkpoint)
    assert calls == 7 and "continuing from step 5" in capsys.readouterr().out
    assert torch.equal(continued.weight, whole.weight) and torch.equal(continued.bias, whole.bias)
    assert history["loss"] == whole_history["loss"] and len(history["loss"]) == 12
    broken, _, _ = _toy_training(None, steps=13)  # one step more: another model (the check bites)
    assert not torch.equal(broken.weight, whole.weight)


def test_train_or_load_continues_a_stopped_training_and_deletes_the_checkpoint(
    tmp_path, monkeypatch
):
    from utils import train
    from utils.train import run_path, train_steps

    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    monkeypatch.delenv("FEWSHOT_RETRAIN", raising=False)
    s, toy = Setup("quick", torch.device("cpu"), 0), _toy_config()()
    seen = []

    def loss(model, x):
        seen.append(1)
        if len(seen) == 3 and not stopped:
            raise KeyboardInterrupt
        return model(x).pow(2).mean(), 1.0

    build = lambda: torch.nn.Linear(3, 1)  # noqa: E731
    run = lambda S, c: train_steps(S, build, loss, [torch.ones(2, 3)] * 6, lr=0.1)  # noqa: E731
    monkeypatch.setattr(train, "checkpointing", _every_step(train.checkpointing))
    stopped = False
    with pytest.raises(KeyboardInterrupt):
        train_or_load("toy", s, run, toy, build)
    (checkpoint,) = run_path("toy", s, toy).parent.glob("toy-*.checkpoint.pt")
    assert checkpoint.name.endswith(f".{code_key()}.checkpoint.pt")  # the key of the code
    assert not run_path("toy", s, toy).is_file()
    stopped, seen = True, []
    _, history = train_or_load("toy", s, run, toy, build)
    assert len(seen) == 4 and len(history["loss"]) == 6  # steps 3 to 6 trained now
    assert run_path("toy", s, toy).is_file() and not checkpoint.is_file()


def _every_step(checkpointing):
    """``checkpointing`` with a checkpoint after every step."""
    return lambda path: checkpointing(path, every=0.0)


def test_runs_have_the_budget_seed_and_key_in_their_names(monkeypatch, tmp_path):
    from utils.train import run_path

    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    s = Setup("quick", torch.device("cpu"), 0)
    toy = _toy_config()()
    assert run_path("toy", s, toy).name == f"toy-quick-seed0-{toy.at('quick').key()}.pt"
    assert run_path("toy", s).name == "toy-quick-seed0.pt"  # no config: a record, no key
