"""A training loop with a progress bar, and runs saved in the book's cache."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import Config, Setup, cache_dir, code_key


class History(dict):
    """Training metrics, one list per name (``history["loss"][i]`` is step ``i``'s loss), and
    the loop's wall-clock ``seconds``, CPU ``threads``, ``device`` ("cuda", "cpu, 2 threads")
    and peak memory."""

    seconds: float = 0.0
    threads: int | None = None
    device: str = ""
    peak_mb: float | None = None  # :class:`PeakMemory`, if known


def _status_kb(field: str) -> int | None:
    """A field of Linux's ``/proc/self/status`` in kB (``VmRSS``, ``VmHWM``), or ``None``."""
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(found.group(1)) if found else None


class PeakMemory:
    """``with PeakMemory() as peak: ...``, then ``peak.mb``: how far the memory in use rose above
    its level on entry, in MB, on ``peak.device``: a CUDA device's allocator peak when the block
    used one, else Linux's peak resident memory (``VmHWM``, reset on entry; a lower bound, as
    memory kept from earlier work is reused unseen); ``None`` where neither can be read."""

    def __init__(self):
        self.mb, self.device, self._cuda, self._cpu = None, "cpu", None, None

    def __enter__(self):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            self._cuda = torch.cuda.memory_allocated()
        try:  # freed memory back to the system first, so that reusing it shows (glibc)
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            self._cpu = _status_kb("VmRSS")
        except OSError:
            self._cpu = None
        return self

    def __exit__(self, *exc):
        cuda = torch.cuda.max_memory_allocated() - self._cuda if self._cuda is not None else 0
        if cuda > 0:
            self.mb, self.device = cuda / 2**20, "cuda"
        elif self._cpu is not None and (peak := _status_kb("VmHWM")) is not None:
            self.mb = max(peak - self._cpu, 0) / 1024
        return False


CHECKPOINT_SECONDS = 60.0  # how often a run that train_or_load trains saves its checkpoint
_checkpoint: dict = {"path": None, "every": CHECKPOINT_SECONDS}  # set by :func:`checkpointing`


@contextlib.contextmanager
def checkpointing(path: "os.PathLike | None", every: float = CHECKPOINT_SECONDS):
    """While it lasts, :func:`fit` saves its state to ``path`` every ``every`` seconds and
    continues from that file when it exists: a run stopped midway (a killed kernel, a
    time-limited GPU job) goes on where it stopped. ``path=None``: no checkpoint."""
    before = dict(_checkpoint)
    _checkpoint.update(path=None if path is None else Path(path), every=every)
    try:
        yield
    finally:
        _checkpoint.update(before)


def _rng_state() -> dict:
    """The state of Python's, NumPy's and PyTorch's generators (CPU and every GPU)."""
    import random

    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict) -> None:
    import random

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _state_of(obj):
    """What a checkpoint keeps of ``obj``: a random generator's state, else its state_dict."""
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def _restore(obj, state) -> None:
    obj.set_state(state) if isinstance(obj, torch.Generator) else obj.load_state_dict(state)


def _save_whole(contents, path: Path) -> None:
    """``torch.save`` to ``path`` whole or not at all (a temporary file, then ``os.replace``)."""
    tmp = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        torch.save(contents, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _save_checkpoint(path: Path, done: int, history: dict, seconds: float, state: dict) -> None:
    """Write :func:`fit`'s checkpoint whole or not at all (:func:`_save_whole`)."""
    contents = {
        "done": done,
        "history": dict(history),
        "seconds": seconds,
        "rng": _rng_state(),
        "state": {name: _state_of(obj) for name, obj in state.items()},
    }
    _save_whole(contents, path)


def fit(
    step: Callable[[Any], dict],
    batches: Iterable,
    desc: str = "training",
    threads: int | None = None,
    state: dict | None = None,
) -> History:
    """Run ``step(batch)`` over ``batches`` with a progress bar; return the metrics ``step``
    returns (a dict of numbers per step) as a :class:`History`.

    ``threads``: the CPU threads of the loop (``None``: PyTorch's). ``state``: ``{name:
    object}``, the model, optimizer, scheduler and the step's own generators. Under
    :func:`checkpointing` they are saved with the loop's position, history and the global
    generators; a run that finds a checkpoint draws the batches done before it again, without
    training on them, and goes on: the same run as one never stopped, bit for bit on one thread.
    """
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    path, every = _checkpoint["path"], _checkpoint["every"]  # None: no checkpoint
    if state is None:
        path = None
    history, done, earlier, saved = History(), 0, 0.0, None
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=False)
        for name, obj in state.items():
            _restore(obj, saved["state"][name])
        history.update(saved["history"])
        done, earlier = saved["done"], saved["seconds"]
        print(f"{desc}: continuing from step {done} ({path})")
    iterator = iter(batches)
    for _ in range(done):  # the batches done before the checkpoint: drawn again, not trained on
        next(iterator)
    if saved is not None:  # the generators as they were after those batches
        _set_rng_state(saved["rng"])
    before = torch.get_num_threads()
    start = saved_at = time.perf_counter()
    total = len(batches) if hasattr(batches, "__len__") else None
    bar = tqdm(iterator, desc=desc, initial=done, total=total)
    steps = done
    try:
        torch.set_num_threads(threads or before)
        with PeakMemory() as peak:  # the loop's own memory: models, optimizer, activations
            for steps, batch in enumerate(bar, start=done + 1):
                for name, value in step(batch).items():
                    history.setdefault(name, []).append(float(value))
                bar.set_postfix(
                    {n: f"{np.mean(v[-50:]):.3f}" for n, v in history.items()}, refresh=False
                )
                if path is not None and time.perf_counter() - saved_at >= every:
                    seconds = earlier + time.perf_counter() - start
                    _save_checkpoint(path, steps, history, seconds, state)
                    saved_at = time.perf_counter()
    finally:
        torch.set_num_threads(before)
    history.seconds = earlier + time.perf_counter() - start
    history.peak_mb, history.threads = peak.mb, threads or before
    print(f"{desc}: {steps} steps in {history.seconds:.0f} s")
    return history


def _to(batch, device):
    """``batch`` on ``device``: an episode (anything with ``.to``), or a list or tuple of them."""
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "to"):
        return type(batch)(_to(b, device) for b in batch)
    return batch.to(device)


def train_steps(
    setup: Setup,
    build: Callable[[], torch.nn.Module],
    loss: Callable[[torch.nn.Module, Any], tuple],
    batches: Iterable,
    lr: float,
    schedule: Callable | None = None,
    desc: str = "training",
    threads: int | None = None,
) -> tuple[torch.nn.Module, History]:
    """The book's training loop: seed PyTorch with ``setup.seed``, ``build()`` the model on
    ``setup.device``, then for every batch one Adam step of size ``lr`` on ``loss(model,
    batch)``, which returns ``(loss, accuracy)``; ``schedule(optimizer)`` makes a scheduler,
    stepped after every step. Returns the model, in evaluation mode, and :func:`fit`'s history.
    """
    torch.manual_seed(setup.seed)  # the same initial weights, whoever calls
    model = build().to(setup.device)
    optimizer = torch.optim.Adam(model.parameters(), lr)
    scheduler = schedule(optimizer) if schedule is not None else None

    def step(batch):
        value, accuracy = loss(model, _to(batch, setup.device))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return {"loss": value.item(), "accuracy": float(accuracy)}

    state = {"model": model, "optimizer": optimizer}
    if scheduler is not None:
        state["scheduler"] = scheduler
    model.train()
    history = fit(step, batches, desc, threads=threads, state=state)
    model.eval()
    return model, history


def run_path(name: str, setup: Setup, config: Config | None = None) -> "os.PathLike":
    """Where the run ``name`` of this budget, seed and ``config`` lives in the cache, named by the
    config's key: a changed setting finds no run."""
    key = "" if config is None else f"-{config.at(setup.budget).key()}"
    return cache_dir() / "runs" / f"{name}-{setup.budget}-seed{setup.seed}{key}.pt"


RETRAIN_VAR = "FEWSHOT_RETRAIN"


def _plain(value):
    """``value`` with NumPy arrays and numbers turned into lists and Python numbers (inside plain
    dicts, lists and tuples), so that a run holds only what a safe load reads."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if type(value) is dict:
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


REDO = f"delete it or set ${RETRAIN_VAR}=1 to train again"  # what to do with a run that is refused


def save_run(name: str, setup: Setup, config: Config | None = None, **contents) -> None:
    """Save a run (weights, history, results, ...) of ``config`` for later chapters, whole or
    not at all, keeping what an earlier call saved under other keys (NumPy arrays as lists).
    With ``$FEWSHOT_RETRAIN=1`` an unreadable previous file is replaced rather than refused."""
    path = run_path(name, setup, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    if config is not None:
        contents["config"] = asdict(config.at(setup.budget))
    try:
        run = load_run(name, setup, config) or {}
    except RuntimeError:
        if os.environ.get(RETRAIN_VAR) != "1":
            raise
        run = {}
    run.update(
        _plain(
            {"budget": setup.budget, "seed": setup.seed, "device": str(setup.device), **contents}
        )
    )
    _save_whole(run, path)


def load_run(name: str, setup: Setup, config: Config | None = None) -> dict | None:
    """The run saved by :func:`save_run` with this budget, seed and config, or ``None``, read
    safely (``weights_only=True``) onto ``setup.device``. A file that is corrupt, holds other
    objects, or another budget or seed, is refused with a ``RuntimeError`` that names it."""
    path = run_path(name, setup, config)
    if not path.is_file():
        return None
    try:
        run = torch.load(path, map_location=setup.device, weights_only=True)
    except Exception as err:  # the safe loader's reason follows "WeightsUnpickler error:"
        text = str(err)
        detail = text.split("WeightsUnpickler error:")[-1].strip().split("\n")[0].split(". ")[0]
        unsafe = "Unsupported global" in text or "Can only build" in text
        why = (
            "holds objects other than tensors, numbers, strings, lists and dicts, and such a "
            "file can run code when loaded, so it is not loaded"
            if unsafe
            else "is not a readable run: it is corrupt, truncated, or not a run"
        )
        raise RuntimeError(f"{path} {why} ({detail or type(err).__name__}): {REDO}") from err
    if not isinstance(run, dict):
        raise RuntimeError(f"{path} holds a {type(run).__name__}, not a run (a dict): {REDO}")
    for key, expected in (("budget", setup.budget), ("seed", setup.seed)):
        if run.get(key, expected) != expected:
            raise RuntimeError(
                f"{path} holds a run of {key} {run[key]!r}, but its name and this setup say "
                f"{expected!r}: {REDO}"
            )
    return _plain(run)


def train_or_load(
    run: str,
    setup: Setup,
    train: Callable[[Setup, Config], tuple],
    config: Config,
    build: Callable[[], torch.nn.Module],
):
    """``(model, history)``: ``train(setup, config)``, saved as run ``run`` (weights, history,
    config, code key); or, when the same budget, seed, config and code
    (:func:`utils.config.code_key`) trained before, ``build()`` with the saved weights.
    ``$FEWSHOT_RETRAIN=1`` trains anyway. A training saves a checkpoint every minute
    (:func:`checkpointing`) and continues from it when called again with the same code."""
    path, code = run_path(run, setup, config), code_key(train, build, config)
    saved = None if os.environ.get(RETRAIN_VAR) == "1" else load_run(run, setup, config)
    if saved is not None and "model" in saved and saved.get("code") != code:
        print(f"{run}: the run in {path} was trained by other code than this; training again")
        saved = None
    if saved is not None and "model" in saved:
        model = build().to(setup.device)
        try:
            model.load_state_dict(saved["model"])
        except RuntimeError as err:
            raise RuntimeError(
                f"the weights in {path} do not fit the model that build() makes: {REDO}\n{err}"
            ) from err
        model.eval()
        history = History(saved["history"])
        history.seconds, history.device = saved["seconds"], saved["device"]
        history.threads, history.peak_mb = saved["threads"], saved["peak_mb"]
        print(
            f"{run}: loaded the model trained before ({history.seconds:.0f} s of training, "
            f"on {history.device}) from {path}; set {RETRAIN_VAR}=1 to train again"
        )
        return model, history
    checkpoint = path.with_name(f"{path.stem}.{code}.checkpoint.pt")  # of this code alone
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.environ.get(RETRAIN_VAR) == "1":
        checkpoint.unlink(missing_ok=True)
    with checkpointing(checkpoint):
        model, history = train(setup, config)
    history.device = str(setup.device)
    if setup.device.type == "cpu" and history.threads is not None:  # 1 thread is slower than 2
        history.device += f", {history.threads} thread{'s' * (history.threads > 1)}"
    save_run(
        run,
        setup,
        config,
        model=model.state_dict(),
        history=dict(history),
        seconds=history.seconds,
        peak_mb=history.peak_mb,
        device=history.device,
        threads=history.threads,
        code=code,
    )
    checkpoint.unlink(missing_ok=True)
    return model, history
