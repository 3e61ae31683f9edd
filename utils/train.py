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

from .config import Config, Setup, cache_dir


class History(dict):
    """Training metrics, one list per name (``history["loss"][i]`` is step ``i``'s loss),
    the wall-clock ``seconds`` the loop took, the CPU ``threads`` PyTorch used in it, the
    ``precision`` its losses were computed in (:func:`training_precision`), and the ``device``
    it ran on (set by :func:`train_or_load`, for a run trained now or loaded: "cuda", or "cpu,
    2 threads", with ", bf16" when the loss was computed in bfloat16; empty when unknown)."""

    seconds: float = 0.0
    threads: int | None = None
    precision: str = "fp32"
    device: str = ""
    peak_mb: float | None = None  # the loop's peak memory (:class:`PeakMemory`), if known


def _status_kb(field: str) -> int | None:
    """A field of Linux's ``/proc/self/status`` in kB (``VmRSS``, ``VmHWM``), or ``None``."""
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(found.group(1)) if found else None


class PeakMemory:
    """``with PeakMemory() as peak: ...``, then ``peak.mb``: how far the memory in use rose above
    its level on entry while the block ran, in MB, and ``peak.device``, whose memory it is. When
    the block allocated memory on a CUDA device, the most that PyTorch's allocator handed out
    there (``torch.cuda.max_memory_allocated``). Else, on a CPU under Linux, the process's peak
    resident memory (``VmHWM``, reset on entry through ``/proc/self/clear_refs``, after glibc's
    ``malloc_trim`` hands freed memory back): a lower bound, as memory that the allocator still
    keeps from earlier work is reused unseen. ``None`` where neither can be read (a CPU under
    macOS or Windows)."""

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


class FreeCores:
    """How many of this process's CPU cores the other processes leave free: ``count()``
    measures, on Linux, the busy time of those cores (``/proc/stat``) less this process's own
    CPU time, since the previous ``count()`` (the first waits ``window`` seconds), and counts a
    core as taken from 0.4 of a core busy elsewhere on. It returns ``None`` where
    ``/proc/stat`` cannot be read (macOS, Windows)."""

    def __init__(self, window: float = 0.1):
        self.cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.window = window
        self._last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        """(busy seconds of the cores since boot, this process's CPU seconds, the clock)."""
        try:
            lines = Path("/proc/stat").read_text().splitlines()
        except OSError:
            return None
        busy = 0
        for line in lines:  # cpuN user nice system idle iowait irq softirq steal ...
            name, *ticks = line.split()
            if name[3:].isdigit() and name.startswith("cpu") and int(name[3:]) in self.cpus:
                t = [int(x) for x in ticks[:8]]
                busy += sum(t) - t[3] - t[4]
        return busy / os.sysconf("SC_CLK_TCK"), time.process_time(), time.perf_counter()

    def count(self) -> int | None:
        """The free cores since the previous call (or since this object was made)."""
        if self._last is None or not self.cpus:
            return None
        time.sleep(max(0.0, self.window - (time.perf_counter() - self._last[2])))
        now = self._read()
        if now is None:
            return None
        busy, own, wall = (a - b for a, b in zip(now, self._last))
        self._last = now
        elsewhere = max(0.0, busy - own) / max(wall, 1e-9)
        return max(0, len(self.cpus) - int(elsewhere + 0.6))


RECHECK_SECONDS = 10.0  # how often fit looks again at the cores that other processes leave free


def fit(
    step: Callable[[Any], dict],
    batches: Iterable,
    desc: str = "training",
    threads: int | None = None,
) -> History:
    """Call ``step(batch)`` for every batch (an episode, or a batch of images) with a
    progress bar; ``step`` does one update and returns its metrics as ``{name: float}``. The
    history holds them, the loop's seconds, the CPU threads of most of its steps and its peak
    memory (:class:`PeakMemory`).

    ``threads``: the CPU threads PyTorch uses during the loop (then restored). One thread suits
    training made of many small operations (Reptile's minibatches of ten images): it is about
    as fast as two on a quiet machine, and two threads on cores that another busy process
    shares wait on each other and slow down several times (measured by ``make bench``).
    ``None``: PyTorch's threads, fewer while other processes keep cores busy
    (:class:`FreeCores`, looked at when the loop starts and every :data:`RECHECK_SECONDS`), so
    that a busy machine slows training down about as much as it would on one thread. On a quiet
    machine that is PyTorch's threads throughout, so a run is the one it would be without the
    check (with two threads a seed need not repeat its run exactly: the sums' order may vary);
    under other load the thread count, and so the last digits of the sums, depend on that load.
    """
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    before = torch.get_num_threads()
    most = threads or before
    free = FreeCores() if threads is None and most > 1 else None
    steps_at: dict[int, int] = {}  # threads -> steps run on them
    history, start = History(), time.perf_counter()
    bar = tqdm(batches, desc=desc)
    checked = -float("inf")
    try:
        torch.set_num_threads(most)
        with PeakMemory() as peak:  # the loop's own memory: models, optimizer, activations
            for batch in bar:
                if free is not None and time.perf_counter() - checked >= RECHECK_SECONDS:
                    n = free.count()
                    torch.set_num_threads(most if n is None else max(1, min(most, n)))
                    checked = time.perf_counter()
                n_threads = torch.get_num_threads()
                steps_at[n_threads] = steps_at.get(n_threads, 0) + 1
                for name, value in step(batch).items():
                    history.setdefault(name, []).append(float(value))
                bar.set_postfix(
                    {n: f"{np.mean(v[-50:]):.3f}" for n, v in history.items()}, refresh=False
                )
    finally:
        torch.set_num_threads(before)
    history.seconds, history.peak_mb = time.perf_counter() - start, peak.mb
    history.threads = max(steps_at, key=steps_at.get) if steps_at else most
    fewer = sum(k for t, k in steps_at.items() if t < most)
    busy = f" ({fewer} on fewer threads than {most}: other processes were busy)" if fewer else ""
    print(f"{desc}: {len(bar)} steps in {history.seconds:.0f} s{busy}")
    return history


PRECISION_VAR = "FEWSHOT_PRECISION"
PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_bf16() -> bool:
    """Whether this machine's CPU has bfloat16 units (AVX512-BF16 or AMX), as PyTorch detects
    them; ``False`` where this PyTorch cannot tell."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def training_precision(device) -> str:
    """``"bf16"`` or ``"fp32"``: what :func:`train_steps` computes the loss in on ``device``.

    ``$FEWSHOT_PRECISION`` chooses: ``fp32``, ``bf16``, or ``auto`` (the default), which is
    bf16 on a CPU with bfloat16 units (:func:`cpu_has_bf16`) and fp32 everywhere else. There
    a training step runs up to twice as fast in bfloat16 (``make bench``); a CPU without those
    units emulates bfloat16, slower than fp32, and on a GPU the book has not been checked in
    bfloat16. Whether a method loses accuracy in bf16 is checked on validation episodes
    (``benchmarks/precision.py``, chapter 12); one that does passes ``bf16=False`` to
    :func:`train_steps`. The weights, the optimizer and every evaluation stay in fp32.
    """
    wanted = os.environ.get(PRECISION_VAR) or "auto"
    if wanted not in PRECISIONS:
        raise ValueError(
            f"${PRECISION_VAR}={wanted!r} is not a precision: allowed are {', '.join(PRECISIONS)}"
        )
    if wanted != "auto":
        return wanted
    return "bf16" if torch.device(device).type == "cpu" and cpu_has_bf16() else "fp32"


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
    bf16: bool = True,
) -> tuple[torch.nn.Module, History]:
    """The book's training loop, shared by every method trained by gradient descent on a loss.

    Seeds PyTorch with ``setup.seed`` and builds the model (``build()``, on ``setup.device``),
    then for every batch (an episode, a list of episodes, or a batch of images and labels) one
    Adam step of size ``lr`` on ``loss(model, batch)``, which returns ``(loss, accuracy)``;
    ``schedule(optimizer)`` makes a learning-rate scheduler, stepped after every step. The
    loss is computed under autocast to bfloat16 where :func:`training_precision` says so,
    unless ``bf16=False`` (a method that bfloat16 costs accuracy on validation episodes:
    chapter 12). A progress bar shows both metrics, and :func:`fit`'s history records them and
    the precision. Returns the model, in evaluation mode, and the history.
    """
    torch.manual_seed(setup.seed)  # the same initial weights, whoever calls
    model = build().to(setup.device)
    optimizer = torch.optim.Adam(model.parameters(), lr)
    scheduler = schedule(optimizer) if schedule is not None else None
    precision = training_precision(setup.device) if bf16 else "fp32"
    autocast = (  # not made at all in fp32: older PyTorch refuses autocast on some devices
        torch.autocast(setup.device.type, torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )

    def step(batch):
        with autocast:
            value, accuracy = loss(model, _to(batch, setup.device))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return {"loss": value.item(), "accuracy": float(accuracy)}

    model.train()
    history = fit(step, batches, f"{desc}, bf16" if precision == "bf16" else desc, threads=threads)
    history.precision = precision
    model.eval()
    return model, history


def run_path(name: str, setup: Setup, config: Config | None = None) -> "os.PathLike":
    """Where the run ``name`` of this budget, seed and ``config`` lives in the cache: the key of
    the config's values at this budget is part of the file's name, so that a changed setting
    finds no run and trains anew, and so is ``-bf16`` where models train in bfloat16
    (:func:`training_precision`, unless the config says ``bf16 = False``), so that the runs and
    records of the two precisions never stand in for each other. Reptile's and DAGAN's trainers
    do not go through :func:`train_steps` and train in fp32: their configs say ``bf16 = False``;
    a run without a config (the record of a method that trains nothing) has neither suffix."""
    key = "" if config is None else f"-{config.at(setup.budget).key()}"
    in_bf16 = (
        config is not None
        and training_precision(setup.device) == "bf16"
        and getattr(config, "bf16", True)
    )
    bf16 = "-bf16" if in_bf16 else ""
    return cache_dir() / "runs" / f"{name}-{setup.budget}-seed{setup.seed}{key}{bf16}.pt"


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


def _numpy_globals() -> list:
    """The NumPy functions and classes that rebuild an array or a number: older runs (saved
    before :func:`save_run` stored lists) hold NumPy arrays, and only these may rebuild them."""
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)]
    return [
        np.array(0.0).__reduce__()[0],
        np.float64(0).__reduce__()[0],
        np.ndarray,
        np.dtype,
        *dtypes,
    ]


REDO = f"delete it or set ${RETRAIN_VAR}=1 to train again"  # what to do with a run that is refused


def save_run(name: str, setup: Setup, config: Config | None = None, **contents) -> None:
    """Save a run (weights, history, results, ...) of ``config`` for later chapters to reuse,
    with the config's values; what an earlier call saved under other keys is kept, and NumPy
    arrays are stored as lists.

    The file is written whole or not at all (a temporary file, then ``os.replace``): a save
    that is interrupted keeps the previous file, and of two processes saving the same run,
    the last one's file is the run. With ``$FEWSHOT_RETRAIN=1`` a previous file that cannot
    be read is replaced rather than refused.
    """
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
    # this writer's own temporary file
    tmp = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        torch.save(run, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_run(name: str, setup: Setup, config: Config | None = None) -> dict | None:
    """The run saved by :func:`save_run` with this budget, seed and config, or ``None``.

    It is read safely (``weights_only=True``: tensors, numbers, strings, lists and dicts, and
    the NumPy arrays of older runs, as lists) onto ``setup.device``, wherever it was trained.
    A file that is corrupt, holds anything else, or holds another budget or seed is refused
    with a ``RuntimeError`` that names it and says what to do.
    """
    path = run_path(name, setup, config)
    if not path.is_file():
        return None
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            run = torch.load(path, map_location=setup.device, weights_only=True)
    except Exception as err:
        text = str(err)  # the safe loader's reason follows "WeightsUnpickler error:"
        detail = (
            text.split("WeightsUnpickler error:", 1)[-1].strip() or type(err).__name__
        ).splitlines()[0]
        detail = detail.split(". ")[0]
        if "Unsupported global" in text or "Can only build" in text:
            raise RuntimeError(
                f"{path} holds objects other than tensors, numbers, strings, lists and dicts "
                f"({detail}), and such a file can run code when loaded, so it is not "
                f"loaded: {REDO}"
            ) from err
        raise RuntimeError(
            f"{path} is not a readable run (corrupt, truncated, or not a run: {detail}): {REDO}"
        ) from err
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
    name: str,
    setup: Setup,
    train: Callable[[Setup, Config], tuple],
    config: Config,
    build: Callable[[], torch.nn.Module],
):
    """``train(setup, config)`` (which returns ``(model, history)``) and save the weights, the
    history (with its device, CPU threads and its loop's peak memory) and the config as run
    ``name``; or, when this budget, seed and config were trained before, ``build()`` the model
    and load them instead, onto ``setup.device``. ``$FEWSHOT_RETRAIN=1`` trains anyway. A saved
    run whose weights do not fit ``build()``'s model, or that lacks its history, is refused with
    a ``RuntimeError`` that says what to do. Returns ``(model, history)``."""
    path = run_path(name, setup, config)
    run = None if os.environ.get(RETRAIN_VAR) == "1" else load_run(name, setup, config)
    if run is not None and "model" in run:
        missing = [key for key in ("history", "seconds") if key not in run]
        if missing:
            raise RuntimeError(
                f"{path} holds weights but no {' or '.join(missing)} (a run of an older "
                f"format): {REDO}"
            )
        model = build().to(setup.device)
        try:
            model.load_state_dict(run["model"])
        except RuntimeError as err:
            raise RuntimeError(
                f"the weights in {path} do not fit the model that build() makes: {REDO}\n{err}"
            ) from err
        model.eval()
        history = History(run["history"])
        history.seconds, history.device = run["seconds"], run.get("device", "")
        history.threads = run.get("threads")  # None in a run saved before it was kept
        history.peak_mb = run.get("peak_mb")  # None in a run saved before it was measured
        history.precision = run.get("precision", "fp32")  # every run before it was kept
        print(
            f"{name}: loaded the model trained before ({history.seconds:.0f} s of training, "
            f"on {run.get('device', 'an unknown device')}) from {path}; set {RETRAIN_VAR}=1 to "
            "train again"
        )
        return model, history
    model, history = train(setup, config)
    history.device = str(setup.device)
    if setup.device.type == "cpu" and history.threads is not None:  # 1 thread is slower than 2
        history.device += f", {history.threads} thread{'s' * (history.threads > 1)}"
    if history.precision != "fp32":
        history.device += f", {history.precision}"
    save_run(
        name,
        setup,
        config,
        model=model.state_dict(),
        history=dict(history),
        seconds=history.seconds,
        peak_mb=history.peak_mb,
        device=history.device,
        threads=history.threads,
        precision=history.precision,
    )
    return model, history
