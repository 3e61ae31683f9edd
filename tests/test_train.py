import pytest
import torch

from utils.config import Setup
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
    # recorded: the run's speed depends on it (fewer than PyTorch's while other processes are busy)
    assert 1 <= fit(lambda _: {}, range(1)).threads <= before

    def boom(_):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):  # restored after an error too
        fit(boom, range(1), threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        fit(lambda _: {}, range(1), threads=0)


def test_fit_takes_fewer_threads_while_other_processes_keep_cores_busy(monkeypatch, capsys):
    from utils import train

    free = iter([1, 0, 1, None, 2])  # one core free, then none, one, unknown, two

    class Stub:
        def count(self):
            return next(free)

    monkeypatch.setattr(train, "FreeCores", Stub)
    monkeypatch.setattr(train, "RECHECK_SECONDS", 0.0)  # fit looks again before every step
    before, seen = torch.get_num_threads(), []
    torch.set_num_threads(2)
    try:
        history = fit(lambda _: seen.append(torch.get_num_threads()) or {}, range(5), desc="toy")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1, 1, 2, 2] and history.threads == 1  # the threads of most steps
    assert "(3 on fewer threads than 2: other processes were busy)" in capsys.readouterr().out
    assert fit(lambda _: {}, range(2), threads=2).threads == 2  # asked for: never looked at


def test_free_cores_counts_the_cores_that_other_processes_leave(monkeypatch):
    from utils.train import FreeCores

    free = FreeCores(window=0.0)
    if free.count() is None:
        pytest.skip("no /proc/stat here")
    cores = len(free.cpus)
    # (busy seconds of the cores, this process's CPU seconds, the clock)
    reads = iter([(10.0, 1.0, 100.0), (28.0, 9.0, 110.0), (40.0, 19.0, 120.0)])
    monkeypatch.setattr(free, "_read", lambda: next(reads))
    free._last = free._read()
    assert free.count() == cores - 1  # 18 s busy, 8 of them ours: 1.0 core elsewhere
    assert free.count() == cores  # 12 s busy, 10 of them ours: 0.2 of a core, not counted
    assert 0 <= FreeCores(window=0.05).count() <= cores


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


def test_training_precision_follows_the_variable_and_the_cpu(monkeypatch):
    from utils import train
    from utils.train import PRECISION_VAR, training_precision

    monkeypatch.delenv(PRECISION_VAR, raising=False)
    for has_bf16, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(train, "cpu_has_bf16", lambda: has_bf16)
        assert training_precision("cpu") == expected  # auto: bf16 where the CPU has its units
        assert training_precision(torch.device("cuda")) == "fp32"  # GPUs: not checked in bf16
    for wanted in ("fp32", "bf16"):
        monkeypatch.setenv(PRECISION_VAR, wanted)
        assert training_precision("cpu") == wanted
    monkeypatch.setenv(PRECISION_VAR, "fp16")
    with pytest.raises(ValueError, match=r"FEWSHOT_PRECISION='fp16'.*auto, fp32, bf16"):
        training_precision("cpu")


def test_cpu_has_bf16_answers_a_bool():
    from utils.train import cpu_has_bf16

    assert cpu_has_bf16() in (True, False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_steps_computes_the_loss_in_its_precision_and_keeps_it(
    precision, monkeypatch, tmp_path
):
    from utils.train import PRECISION_VAR, train_steps

    monkeypatch.setenv(PRECISION_VAR, precision)
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    monkeypatch.delenv("FEWSHOT_RETRAIN", raising=False)
    s = Setup("quick", torch.device("cpu"), 0)
    seen, toy = [], _toy_config()()

    def loss(model, batch):
        out = model(batch)
        seen.append(out.dtype)
        return out.float().pow(2).mean(), 1.0

    build = lambda: torch.nn.Linear(3, 1)  # noqa: E731
    model, history = train_steps(s, build, loss, [torch.ones(2, 3)] * 2, lr=0.1, desc="toy")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    assert seen == [dtype, dtype] and history.precision == precision
    assert model.weight.dtype == torch.float32  # the weights stay in fp32
    assert not torch.is_autocast_cpu_enabled()  # only inside the loss

    train = lambda S, c: train_steps(S, build, loss, [torch.ones(2, 3)], lr=0.1)  # noqa: E731
    _, trained_now = train_or_load("toy", s, train, toy, build)
    _, loaded = train_or_load("toy", s, train, toy, build)
    assert trained_now.precision == loaded.precision == precision
    assert loaded.device.endswith(", bf16") == (precision == "bf16")


def test_train_steps_keeps_fp32_for_a_method_that_opts_out(monkeypatch):
    from utils.train import PRECISION_VAR, train_steps

    monkeypatch.setenv(PRECISION_VAR, "bf16")
    seen = []

    def loss(model, batch):
        out = model(batch)
        seen.append(out.dtype)
        return out.float().pow(2).mean(), 1.0

    s = Setup("quick", torch.device("cpu"), 0)
    build = lambda: torch.nn.Linear(3, 1)  # noqa: E731
    _, history = train_steps(s, build, loss, [torch.ones(2, 3)], lr=0.1, bf16=False)
    assert seen == [torch.float32] and history.precision == "fp32"


def test_runs_of_the_two_precisions_have_names_of_their_own(monkeypatch, tmp_path):
    from utils.train import PRECISION_VAR, run_path

    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    s = Setup("quick", torch.device("cpu"), 0)
    monkeypatch.setenv(PRECISION_VAR, "fp32")
    fp32 = run_path("toy", s, _toy_config()())
    monkeypatch.setenv(PRECISION_VAR, "bf16")
    bf16 = run_path("toy", s, _toy_config()())
    assert bf16.name == fp32.name.replace(".pt", "-bf16.pt") and fp32.name.startswith("toy-quick")
    assert run_path("toy", s).name == "toy-quick-seed0.pt"  # no config: nothing trained in bf16

    from dataclasses import dataclass

    from utils.config import Config

    @dataclass(frozen=True)
    class KeptInFp32(Config):
        bf16: bool = False

    kept = run_path("toy", s, KeptInFp32())  # trained in fp32 here too: the fp32 run's name
    monkeypatch.setenv(PRECISION_VAR, "fp32")
    assert kept == run_path("toy", s, KeptInFp32())
