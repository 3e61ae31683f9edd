"""Bad inputs, as a new user (or a run moved between machines) gives them: each gets an error
that names the value, what is allowed and what to do, or loads where it safely can."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import utils.config as config
import utils.data as data
from test_episodes import numbered_classes
from utils.config import Setup, cache_dir, setup
from utils.episodes import Episodes
from utils.evaluate import evaluate
from utils.config import code_key
from utils.train import History, fit, load_run, run_path, save_run, train_or_load

ROOT = Path(__file__).resolve().parents[1]
CPU = Setup("quick", torch.device("cpu"), 0)


# --- devices ---------------------------------------------------------------------------------


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has ``n`` GPUs (0: none) and no Apple GPU: ``gpus(n)``."""

    def pretend(n):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)

    return pretend


def test_cuda_on_a_machine_without_a_gpu_is_refused_at_setup(gpus):
    gpus(0)
    with pytest.raises(
        ValueError,
        match=r"device 'cuda' is not available on this machine: it has cpu; "
        r"pass one of them, or leave device=None",
    ):
        setup(device="cuda")


def test_a_gpu_number_beyond_the_gpus_is_refused(gpus):
    gpus(1)
    with pytest.raises(
        ValueError, match=r"device 'cuda:3' is not available on this machine: it has cpu, cuda:0;"
    ):
        setup(device="cuda:3")


def test_mps_off_a_mac_is_refused(gpus):
    gpus(0)
    with pytest.raises(
        ValueError, match=r"device 'mps' is not available on this machine: it has cpu;"
    ):
        setup(device="mps")


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x"])
def test_an_unknown_device_lists_the_books_choices(gpus, device):
    gpus(0)
    with pytest.raises(
        ValueError,
        match=rf"unknown device '{device}': allowed are cpu, cuda, mps \(or cuda:N "
        r"for GPU N\); this machine has cpu, or leave device=None",
    ):
        setup(device=device)


# --- the cache folder ------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["a file", "inside a file"])
def test_a_cache_folder_that_cannot_be_a_folder_names_the_variable(tmp_path, monkeypatch, where):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file")
    folder = blocker if where == "a file" else blocker / "cache"
    monkeypatch.setenv("FEWSHOT_CACHE", str(folder))
    with pytest.raises(
        RuntimeError,
        match=rf"the cache folder {folder} \(\$FEWSHOT_CACHE\) cannot be used: .*"
        r"point \$FEWSHOT_CACHE at a writable folder",
    ):
        cache_dir()
    with pytest.raises(RuntimeError, match=r"\$FEWSHOT_CACHE"):  # and so does saving a run
        save_run("toy", CPU, results={"a": [1.0]})


# --- Omniglot --------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "empty"])
def test_a_damaged_archive_is_named_and_leaves_nothing(cache, fake_archive, tmp_path, damage):
    whole = fake_archive.read_bytes()
    bad = tmp_path / "bad" / data.ARCHIVE
    bad.parent.mkdir()
    bad.write_bytes(
        {"random bytes": os.urandom(5000), "truncated": whole[: len(whole) // 2], "empty": b""}[
            damage
        ]
    )
    with pytest.raises(
        RuntimeError,
        match=rf"{bad} is corrupt or truncated \(.*\): replace it with a complete "
        r"copy of omniglot-py.tar.gz, or unset \$OMNIGLOT_ROOT",
    ):
        data.load_omniglot(bad)
    assert not any(cache.iterdir()), list(cache.iterdir())  # nothing half-unpacked


def test_a_missing_alphabet_is_named(cache, fake_tree, monkeypatch):
    shutil.rmtree(fake_tree / "images_background" / "Alpha")
    monkeypatch.setenv("OMNIGLOT_ROOT", str(fake_tree))
    with pytest.raises(
        FileNotFoundError,
        match=r"images_background lacks 1 of Omniglot's 2 alphabets there: "
        r"Alpha; point \$OMNIGLOT_ROOT at a complete copy",
    ):
        data.load_omniglot()
    assert not (cache / data.CACHE_FILE).exists()


def test_the_real_alphabets_are_the_fifty():
    assert [len(a) for a in data.ALPHABETS.values()] == [30, 20]
    assert set(data.VINYALS_VAL_ALPHABETS) <= set(data.ALPHABETS["images_background"])


def test_a_truncated_omniglot_cache_is_named(cache, fake_tree):
    data.load_omniglot(fake_tree)
    cached = cache / data.CACHE_FILE
    cached.write_bytes(cached.read_bytes()[:1000])
    with pytest.raises(
        RuntimeError, match=rf"{cached} cannot be read \(.*\): delete it, and the next load"
    ):
        data.load_omniglot(fake_tree)


# --- evaluate --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output, got",
    [
        (lambda q: torch.zeros(len(q), 3), r"shape \[15, 3\]"),  # scores for 3 classes, not 5
        (lambda q: torch.zeros(len(q) - 1, dtype=torch.long), r"shape \[14\]"),  # a label short
        (lambda q: [0] * len(q), "a list"),  # not a tensor
    ],
)
def test_evaluate_refuses_output_of_the_wrong_shape(output, got):
    episodes = Episodes(numbered_classes(), 5, 1, 3, 2)
    with pytest.raises(
        ValueError,
        match=rf"classify returned {got} on a 5-way episode with 15 query images: "
        r"expected a tensor of scores \[15, 5\] or of labels \[15\]",
    ):
        evaluate(lambda s, y, q: output(q), episodes)


# --- runs ------------------------------------------------------------------------------------


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """An empty cache for runs, no ``$FEWSHOT_RETRAIN``, and the path of the run "toy"."""
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FEWSHOT_RETRAIN", raising=False)
    path = run_path("toy", CPU)
    path.parent.mkdir(parents=True)
    return path


class Payload:
    """What an attacker pickles: loading it unsafely creates ``marker`` (it could do anything)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_run_that_would_run_code_is_refused_and_runs_nothing(runs, tmp_path):
    marker = tmp_path / "the-code-ran"
    torch.save({"model": {"w": torch.ones(1)}, "extra": Payload(marker)}, runs)
    with pytest.raises(
        RuntimeError,
        match=rf"{runs} holds objects other than tensors, numbers, strings, lists "
        r"and dicts, and such a file can run code when loaded, so it is not loaded "
        r"\(Unsupported global: .*open.*\): delete it or set \$FEWSHOT_RETRAIN=1",
    ):
        load_run("toy", CPU)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "random bytes"])
def test_a_damaged_run_is_named(runs, damage):
    save_run("toy", CPU, model={"w": torch.ones(1000)})
    whole = runs.read_bytes()
    runs.write_bytes(
        {"truncated": whole[: len(whole) // 2], "empty": b"", "random bytes": os.urandom(300)}[
            damage
        ]
    )
    with pytest.raises(
        RuntimeError,
        match=rf"{runs} is not a readable run: it is corrupt, truncated, or not a run \(.*\): "
        r"delete it or set \$FEWSHOT_RETRAIN=1 to train again",
    ):
        load_run("toy", CPU)


def test_a_run_of_another_budget_under_this_name_is_refused(runs):
    torch.save({"budget": "full", "seed": 0, "results": {}}, runs)  # copied or renamed by hand
    with pytest.raises(
        RuntimeError,
        match=rf"{runs} holds a run of budget 'full', but its name and this setup "
        r"say 'quick': delete",
    ):
        load_run("toy", CPU)


def test_a_run_of_other_code_is_trained_again(runs, capsys):
    """A run saved without this code's key (another version of the book, weights without their
    history) is not loaded: the method trains again."""
    torch.save({"budget": "quick", "seed": 0, "model": torch.nn.Linear(2, 1).state_dict()}, runs)
    trained = []

    def train(S, c):
        trained.append(1)
        return torch.nn.Linear(2, 1), fit(lambda b: {"loss": 0.0}, range(1))

    train_or_load("toy", CPU, train, None, lambda: torch.nn.Linear(2, 1))
    assert trained == [1] and "trained by other code" in capsys.readouterr().out
    assert load_run("toy", CPU)["code"] == code_key() and "history" in load_run("toy", CPU)


def test_weights_that_do_not_fit_the_model_are_refused(runs):
    save_run(
        "toy",
        CPU,
        model=torch.nn.Linear(3, 1).state_dict(),
        **dict(history={"loss": [1.0]}, seconds=1.0, device="cpu", threads=1, peak_mb=None),
        code=code_key(),  # the key of code outside the chapters': of nothing
    )
    with pytest.raises(
        RuntimeError,
        match=rf"the weights in {runs} do not fit the model that build\(\) makes: "
        r"delete it or set \$FEWSHOT_RETRAIN=1",
    ):
        train_or_load("toy", CPU, lambda S, c: None, None, lambda: torch.nn.Linear(2, 1))


def test_retraining_replaces_an_unreadable_run(runs, monkeypatch):
    runs.write_bytes(b"not a run")
    monkeypatch.setenv("FEWSHOT_RETRAIN", "1")
    train_or_load(
        "toy",
        CPU,
        lambda S, c: (torch.nn.Linear(2, 1), History(loss=[1.0])),
        None,
        lambda: torch.nn.Linear(2, 1),
    )
    assert set(load_run("toy", CPU)) >= {"model", "history", "seconds"}


def test_numpy_values_are_saved_as_plain_lists(runs):
    save_run("toy", CPU, more=np.arange(2), seconds=np.float64(3.0))
    assert torch.serialization.get_unsafe_globals_in_checkpoint(runs) == []
    assert load_run("toy", CPU)["more"] == [0, 1] and load_run("toy", CPU)["seconds"] == 3.0


def test_a_run_trained_on_a_gpu_loads_on_this_device(runs, monkeypatch):
    gpu = Setup("quick", torch.device("cuda:0"), 0)
    with monkeypatch.context() as m:  # write the file as a GPU would: every tensor tagged cuda:0
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        save_run("toy", gpu, model={"w": torch.ones(2)}, history={"loss": [1.0]}, seconds=1.0)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(run_path("toy", CPU), weights_only=True)  # how runs were loaded before
    run = load_run("toy", CPU)
    assert run["device"] == "cuda:0" and run["model"]["w"].device.type == "cpu"


def test_an_interrupted_save_keeps_the_previous_run(runs, monkeypatch):
    save_run("toy", CPU, results={"a": [1.0]})

    def disk_full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a fi")
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m, pytest.raises(OSError, match="No space left on device"):
        m.setattr(torch, "save", disk_full)
        save_run("toy", CPU, results={"a": [0.0]})
    assert load_run("toy", CPU)["results"] == {"a": [1.0]}
    assert [p.name for p in runs.parent.iterdir()] == [runs.name]  # no temporary file left


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    from utils.config import Setup
    from utils.train import save_run
    me, go = int(sys.argv[1]), Path(sys.argv[2])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.01)
    for i in range(40):
        weights = {"w": torch.full((20000,), float(me))}
        save_run("toy", Setup("quick", torch.device("cpu"), 0), model=weights, **{f"writer{me}": i})
""")


def test_two_processes_writing_the_same_run_leave_a_valid_file(runs, tmp_path):
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(me), str(go)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for me in (1, 2)
    ]
    for w in writers:
        assert w.stdout.readline().strip() == "ready"
    go.touch()  # both start writing at once
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    run = load_run("toy", CPU)
    w = run["model"]["w"]
    assert (
        w.shape == (20000,) and float(w[0]) in (1.0, 2.0) and torch.all(w == w[0])
    )  # one writer's, whole
    assert [p.name for p in runs.parent.iterdir()] == [runs.name]


def test_setup_on_this_machine_still_works(capsys):
    s = setup(device="cpu", budget="quick")
    assert (
        s.device == torch.device("cpu") and config.check_device(torch.device("cpu")).type == "cpu"
    )
