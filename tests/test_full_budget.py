"""Every method's ``full`` budget runs, for two steps, on the CPU.

The README promises the papers' quality on a GPU with ``FEWSHOT_BUDGET=full``, a run of hours
that no test would otherwise start: a typo in a ``full`` setting (a shape that does not fit, a
learning rate that blows up) would reach a reader first. So each trainer runs here with
``setup(budget="full", device="cpu")`` and only its work count overridden (its config's
``steps``): the same episode shapes, batch sizes, inner loops and code path as the real run, for
``STEPS`` = 2 steps (the second one starts from updated weights). The trainers are the
registry's (``tests/conftest.py``'s ``book_runs``): one per trained model of the book.
For each one:

* every metric its history records (the loss above all) is finite;
* it goes through the book's own runs, as the chapters use them: ``train_or_load`` trains and
  saves it, a second ``train_or_load`` with the chapter's ``build`` loads it instead of
  training, and the loaded weights and history equal the trained ones. The runs go to a
  temporary ``$FEWSHOT_CACHE``: a 2-step "full" run must never land in a real cache, where
  a chapter would load it as the real thing;
* the seconds and peak memory of one full-budget step are measured and printed as a table at
  the end of this file's tests (also without ``-s``). Memory: the growth of the process's
  resident memory during the step (activations, gradients, optimizer state) over what it held
  just before. Before each step the allocator gives its free memory back (``malloc_trim``) and
  the kernel's peak counter is reset (``/proc/self/clear_refs``), so memory freed by earlier
  tests cannot hide what the step needs; on a system without them the column says n/a. It is
  the operating system's view, not a count of tensor bytes: expect some 20 % between runs.

Everything runs on one CPU thread: cheap on a shared machine, and the seconds are per thread.
The real Omniglot is needed (the ``real`` fixture skips without it).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import time
from dataclasses import replace

import pytest
import torch

from utils import methods as M
from utils import train as T
from utils.config import setup
from utils.data import load_split

from conftest import book_runs


STEPS = 2
RUNS = book_runs()  # run -> (train, config, build), every model the book trains


# --- the memory of one step ---------------------------------------------------------------------


def _libc_malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def _status_kib(field: str) -> int | None:
    """``VmRSS`` (resident now) or ``VmHWM`` (resident at its peak) of this process, in KiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _start_peak() -> int | None:
    """Hand free memory back and reset the peak counter; the resident KiB now, or None when
    this system cannot measure a step's peak."""
    if _MALLOC_TRIM is None:
        return None
    _MALLOC_TRIM(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to VmRSS (Linux >= 4.0)
    except OSError:
        return None
    return _status_kib("VmRSS")


def measuring_fit(fit, record: list):
    """``fit`` that times each ``step(batch)`` and measures its peak memory growth (MiB, or None)
    into ``record``; patched into ``utils.train`` (for ``train_steps``) and ``utils.methods``
    (for the trainers that call ``fit`` themselves), it reaches every trainer unchanged."""

    def wrapped(step, batches, desc="training", **options):
        def measured(batch):
            before = _start_peak()
            start = time.perf_counter()
            out = step(batch)
            seconds = time.perf_counter() - start
            peak = _status_kib("VmHWM") if before is not None else None
            record.append((seconds, None if peak is None else (peak - before) / 1024))
            return out

        return fit(measured, batches, desc, **options)

    return wrapped


# --- fixtures ------------------------------------------------------------------------------------

TABLE: dict[str, tuple[float, float | None]] = {}  # method -> (s/step, peak MiB)


@pytest.fixture(scope="module")
def runs(real, tmp_path_factory, request):
    """One CPU thread, the real Omniglot loaded, and a temporary, empty ``$FEWSHOT_CACHE`` for
    the runs. At the end, the table of seconds and memory per full-budget step."""
    load_split("test")  # loads (and keeps in memory) the data set from the real cache first
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWSHOT_CACHE", str(tmp_path_factory.mktemp("full-budget-cache")))
        mp.delenv(T.RETRAIN_VAR, raising=False)
        yield
    torch.set_num_threads(threads)
    if TABLE:
        lines = [
            "",
            "full budget on the CPU (1 thread): one step of each method (peak: growth of the RSS)",
            f"{'method':<20}{'s/step':>8}{'peak MiB':>10}",
        ]
        for name, (seconds, mib) in TABLE.items():
            lines.append(f"{name:<20}{seconds:>8.2f}{'n/a' if mib is None else f'{mib:.0f}':>10}")
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            print("\n".join(lines))


# --- the test ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RUNS)
def test_full_budget_trains_saves_and_loads(name, runs, monkeypatch, record_property):
    train, config, build = RUNS[name]
    config = replace(config, steps=STEPS)
    S = setup(seed=0, budget="full", device="cpu")
    record = []
    measured = measuring_fit(T.fit, record)
    monkeypatch.setattr(T, "fit", measured)
    monkeypatch.setattr(M, "fit", measured)

    model, history = T.train_or_load(name, S, train, config, build)

    assert len(record) == STEPS, f"{name}: {len(record)} steps were taken, not {STEPS}"
    assert any("loss" in key for key in history), f"{name} records no loss: {list(history)}"
    for key, values in history.items():
        assert len(values) == STEPS, f"{name}: {key} has {len(values)} values"
        assert all(math.isfinite(v) for v in values), f"{name}: {key} is not finite: {values}"

    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert trained and all(
        torch.isfinite(v).all() for v in trained.values() if v.is_floating_point()
    )
    assert T.run_path(name, S, config).is_file(), f"{name}: no run was saved"
    steps = len(record)  # the same trainer again: it must load, not train (no step taken)
    loaded, loaded_history = T.train_or_load(name, S, train, config, build)
    assert len(record) == steps, f"{name}: train_or_load trained again instead of loading"
    torch.testing.assert_close(loaded.state_dict(), trained, rtol=0, atol=0)
    assert dict(loaded_history) == dict(history) and loaded_history.seconds == history.seconds

    seconds = record[-1][0]  # the last step: the first one also pays for one-time set-up
    peaks = [mib for _, mib in record if mib is not None]
    TABLE[name] = (seconds, max(peaks) if peaks else None)
    record_property("seconds_per_full_step", round(seconds, 3))
    record_property("peak_MiB_per_full_step", None if not peaks else round(max(peaks), 1))
