"""What the book's code costs on this machine: one run, one table, one JSON file.

    python -m benchmarks.speed                    # the CPU (what `make bench` runs)
    python -m benchmarks.speed --device cuda      # a GPU
    python -m benchmarks.speed --smoke            # a quick check that the script runs
    python -m benchmarks.speed --sections peak,conv4 --out /tmp/b.json

Run it from the repository root. Five sections, each a list of rows (flat dicts) in the JSON:

1. ``peak``: matrix-multiply GFLOP/s in fp32 and bf16, the best of square sizes 512, 1024 and
   2048 (``2 n^3`` flops a product): what the machine can do at best.
2. ``conv4``: one Conv-4 training step (forward, cross-entropy, backward, Adam step) on batches of
   30, 120 and 600 random 28x28 images, with the weights contiguous (fp32), channels-last (fp32)
   and channels-last under bf16 autocast; channels-last (fp32) with each block's ReLU before its
   max-pooling, the papers' order (the book's blocks pool first: ``utils.models.conv_block``);
   and first channels-last (fp32) with glibc's malloc as
   a process starts, before ``utils.config.keep_freed_memory`` (which the other variants and
   sections run after, as the book does): ms per step, GFLOP/s (the flops of one step counted
   by ``torch.utils.flop_counter``), the fraction of the fp32 matrix-multiply peak (the largest
   of the peak section's rate and the same product timed again as this section starts and
   ends: on a shared machine the rate moves between runs more than the Conv-4 steps do, and a
   slow moment while the peak was timed must not inflate the fraction), and the page faults of
   one step after those timed (fresh pages the kernel zero-fills).
3. ``maml_step``: one MAML meta-step on random 5-way 1-shot tasks (25 query images), meta-batch 4
   and 32, second order with 1 inner step and first order with 3, with the book's functional
   MAML task by task (``utils.methods.maml_task_loss``, as ``train_maml`` runs it on a CPU), with
   all the tasks at once (``utils.methods.maml_batch_loss``, ``vmap``: as ``train_maml`` runs it
   on a GPU) and with learn2learn's ``MAML`` from the same weights: ms of each and the ratios
   ours / learn2learn (below 1: ours is faster); and how far our float32 meta-gradient lies
   from the float64 one (relative error), with cuDNN's TF32 convolutions allowed (PyTorch's
   default on a GPU) and not (the book's: ``utils.config.no_tf32``).
4. ``adaptation``: test-time adaptation of MAML, FOMAML and Reptile on the book's fixed 5-way
   1-shot test episodes, the former setting and code ("before": 10 steps for MAML and FOMAML,
   the query pass in the standard layout; 20 steps for Reptile, its former classifier) against
   today's ("after", the steps and learning rate the trained run saved, and for MAML and FOMAML
   the first conv blocks that stay fixed, ``*_fixed_blocks``, which chapter 7 chose on
   validation): ms per episode (the two timed in turns on the same episodes), speed-up and
   accuracy (95 % interval).
   The trained weights come from the book's cache (``$FEWSHOT_CACHE``, quick budget, seed 0);
   a method not trained there is timed untrained (its row says ``"trained": false``).
5. ``training``: each method's quick-budget trainer for a few steps (about 5 s on 2 cores)
   alone, then again beside one competing busy process (``while True: pass``): ms per step
   (``history.seconds``, the training loop alone) and the slowdown; with torch's threads, then
   again with one thread (how each chapter trains in CI, two chapters side by side). The
   trainers run with a temporary ``$FEWSHOT_CACHE``, so nothing lands in the real cache.

Times come from ``time.perf_counter`` after warm-up repetitions (after
``torch.cuda.synchronize()`` on a GPU), as the median of the timed repetitions. The table and the
file are headed by the machine: device name, torch's threads, torch version, ``GOMP_SPINCOUNT``
and ``OMP_NUM_THREADS``, git commit, UTC date, and the load average when the run started (a
machine that was not quiet shows there). The file goes to
``benchmarks/results/<device type>.json`` (``--out`` to change it; ``--smoke`` writes to a
temporary folder unless ``--out`` is given), written again after each section, so that a run
cut short keeps what it measured; the book's page "What it costs"
(``chapters/12_what_it_costs.ipynb``) reads every file there.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import replace
import copy
import io
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SECTIONS = ("peak", "conv4", "maml_step", "adaptation", "training")

PEAK_SIZES = (512, 1024, 2048)
CONV4_BATCHES = (30, 120, 600)
# The first variant runs with glibc's malloc as a process starts (it hands freed blocks back to
# the system); the others after utils.config.keep_freed_memory(), as the book runs.
CONV4_VARIANTS = (
    "channels_last fp32, malloc's defaults",
    "contiguous fp32",
    "channels_last fp32, ReLU before pooling",
    "channels_last fp32",
    "channels_last bf16 autocast",
)
MAML_META_BATCHES = (4, 32)
MAML_ORDERS = (("second", 1), ("first", 3))  # (order, inner steps)
MAML_LR, META_LR = 0.4, 1e-3

# Steps of each quick-budget trainer: about 5 s alone on 2 cores (from the chapters' training
# times on the CI machine). Each entry: the registered method whose trainer runs, for n steps.
TRAINERS: dict[str, tuple[str, int]] = {
    "transfer": ("transfer: SimpleShot", 50),
    "siamese": ("Siamese", 100),
    "matching": ("Matching", 30),
    "protonet": ("ProtoNet", 30),
    "relation": ("Relation", 130),
    "maml": ("MAML", 35),
    "fomaml": ("FOMAML", 35),
    "reptile": ("Reptile", 110),
}

# Repetitions: (warm-up, timed) for each kind of measurement, the adaptation's episodes
# (evaluated, timed) and the training steps (None: those of TRAINERS). The smoke run checks that
# every code path runs, quickly: one repetition, the matrix products, Conv-4 and MAML on their
# smallest size only (a batch of 600 images or a meta-batch of 32 tasks takes seconds a step on 2
# cores, and a CPU without bf16 units multiplies two bf16 matrices of 2048 in seconds).
FULL = dict(
    peak=(2, 5),
    peak_sizes=PEAK_SIZES,
    conv4=(2, 5),
    maml_step=(1, 5),
    episodes=(100, 20),
    train_steps=None,
    conv4_batches=CONV4_BATCHES,
    meta_batches=MAML_META_BATCHES,
)
SMOKE = dict(
    peak=(1, 1),
    peak_sizes=PEAK_SIZES[:1],
    conv4=(1, 1),
    maml_step=(1, 1),
    episodes=(3, 2),
    train_steps=2,
    conv4_batches=CONV4_BATCHES[:1],
    meta_batches=MAML_META_BATCHES[:1],
)


# --- timing and the machine ---------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    """Wait for the GPU's queued work (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int, reps: int) -> float:
    """The median wall-clock time of ``fn()`` in ms over ``reps`` calls, after ``warmup`` calls
    that are not timed; the GPU is synchronised before each reading of the clock."""
    if reps < 1:
        raise ValueError(f"reps must be at least 1, got {reps}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name from ``/proc/cpuinfo`` ("unknown CPU" without it)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def git_commit() -> str:
    """``git rev-parse --short HEAD`` of the repository, or "unknown"."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def _load_average() -> float | None:
    """The system's load average over the last minute when the run starts (None where the
    system has none): well above 0 means the machine was not quiet."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def machine(device: torch.device, smoke: bool) -> dict:
    """What the numbers were measured on, and when."""
    return {
        "device": device_name(device),
        "device_type": device.type,
        "threads": torch.get_num_threads(),
        # the widest vector instructions PyTorch's CPU kernels use here ("AVX2", "AVX512"...):
        # CPUs of one name differ, and bf16 runs at speed only where AVX512 has bf16 units
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "load_average": _load_average(),
        "commit": git_commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "smoke": smoke,
    }


@contextlib.contextmanager
def quiet():
    """Swallow what is printed inside (progress bars on stderr, summaries on stdout)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def _book_setup(device: torch.device):
    """The book's quick-budget setup, seed 0, on ``device`` (its printed line swallowed)."""
    from utils.config import setup

    with quiet():
        return setup(seed=0, budget="quick", device=str(device))


# --- 1. peak ------------------------------------------------------------------------------------

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_rate(device: torch.device, n: int, dtype: torch.dtype, reps: tuple) -> tuple:
    """``(ms, GFLOP/s)`` of the product of two random ``n x n`` matrices of ``dtype``, timed with
    ``reps`` (warm-up, timed) repetitions."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    ms = time_ms(lambda: torch.mm(a, b), device, *reps)
    return ms, 2 * n**3 / ms / 1e6


def section_peak(device: torch.device, reps: dict) -> list[dict]:
    """Matrix-multiply GFLOP/s of square products, fp32 and bf16: one row per dtype with the best
    size's GFLOP/s and ms, and the GFLOP/s of every size."""
    rows = []
    for name, dtype in DTYPES.items():
        row: dict = {"dtype": name}
        for n in reps["peak_sizes"]:
            row[f"ms_n{n}"], row[f"gflops_n{n}"] = matmul_rate(device, n, dtype, reps["peak"])
        best = max(reps["peak_sizes"], key=lambda n: row[f"gflops_n{n}"])
        rows.append(
            {
                "dtype": name,
                "gflops": row[f"gflops_n{best}"],
                "n": best,
                "ms": row[f"ms_n{best}"],
                **{k: v for k, v in row.items() if k != "dtype"},
            }
        )
    return rows


# --- 2. conv4 -----------------------------------------------------------------------------------


def _conv4_classifier(
    device: torch.device, memory_format: torch.memory_format, relu_first: bool = False
) -> nn.Module:
    """Conv-4 and a linear layer to 20 classes, seeded, in ``memory_format``; ``relu_first``:
    each block's ReLU before its max-pooling (the papers' order; the same function)."""
    from utils.models import conv4

    torch.manual_seed(0)
    body = conv4()
    if relu_first:
        for block in body[:4]:  # convolution, batch norm, max-pooling, ReLU
            block[2], block[3] = block[3], block[2]
    return nn.Sequential(body, nn.Linear(64, 20)).to(device).to(memory_format=memory_format)


def _train_step(model: nn.Module, opt, x, y, autocast: bool, device: torch.device) -> Callable:
    """One training step as a function: forward and cross-entropy (under bf16 autocast when
    asked), backward, Adam step."""

    def step():
        opt.zero_grad(set_to_none=True)
        ctx = (
            torch.autocast(device.type, dtype=torch.bfloat16)
            if autocast
            else contextlib.nullcontext()
        )
        with ctx:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def section_conv4(device: torch.device, reps: dict, peak: dict | None) -> list[dict]:
    """Conv-4 training steps per batch size and variant: ms, GFLOP/s and the fraction of the
    fp32 matrix-multiply peak. ``peak``: the fp32 row of :func:`section_peak` (None leaves the
    fraction out); its product is timed again as this section starts and as it ends, and the
    fraction divides by the largest of the three rates (``fp32_peak_gflops``), so that a slow
    moment of the machine while the peak was measured cannot inflate it. The first variant
    runs at every batch size first, before ``keep_freed_memory`` (which cannot be undone in a
    process), so it must run before anything in the process calls it."""
    from torch.utils.flop_counter import FlopCounterMode

    from utils.config import keep_freed_memory

    warmup, timed = reps["conv4"]

    def peak_now() -> float:  # the peak section's fp32 product, timed again
        return matmul_rate(device, peak["n"], torch.float32, reps["peak"])[1]

    peaks = [peak["gflops"], peak_now()] if peak else []
    formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    flops: dict[int, int] = {}  # counted once per batch size, on the first (fp32) variant
    rows = []
    for i, variant in enumerate(CONV4_VARIANTS):
        if i == 1:
            keep_freed_memory()
        for batch in reps["conv4_batches"]:
            g = torch.Generator(device=device).manual_seed(batch)
            x = torch.rand(batch, 1, 28, 28, device=device, generator=g)
            y = torch.randint(0, 20, (batch,), device=device, generator=g)
            model = _conv4_classifier(
                device, formats[variant.split()[0]], "ReLU before pooling" in variant
            )
            opt = torch.optim.Adam(model.parameters(), 1e-3)
            step = _train_step(model, opt, x, y, "bf16" in variant, device)
            if batch not in flops:
                counter = FlopCounterMode(display=False)
                with counter:
                    step()
                flops[batch] = counter.get_total_flops()
            ms = time_ms(step, device, warmup, timed)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            step()  # one more, for the fresh pages it touches (the kernel zero-fills each one)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            gflops = flops[batch] / ms / 1e6
            rows.append(
                {
                    "variant": variant,
                    "batch": batch,
                    "ms": ms,
                    "gflop_per_step": flops[batch] / 1e9,
                    "gflops": gflops,
                    "page_faults_per_step": faults,
                }
            )
    top = max(*peaks, peak_now()) if peak else None
    for row in rows:
        row["fp32_peak_gflops"] = top
        row["fraction_of_fp32_peak"] = row["gflops"] / top if top else None
    return sorted(rows, key=lambda r: r["batch"])  # stable: the variants' order in each batch


# --- 3. maml_step -------------------------------------------------------------------------------


def import_learn2learn():
    """learn2learn (its import prints gym's banner on stderr, swallowed here), or the reason it
    cannot be imported, as a string."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import learn2learn
    except Exception as err:  # not installed, or a build that does not import
        return f"learn2learn unavailable ({type(err).__name__}: {err})"
    return learn2learn


def random_tasks(
    n_tasks: int,
    device: torch.device,
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 5,
    seed: int = 0,
) -> list:
    """``n_tasks`` episodes of random 28x28 images, labels ``arange(n_way).repeat_interleave``."""
    from utils.episodes import Episode

    g = torch.Generator(device=device).manual_seed(seed)
    labels = torch.arange(n_way, device=device)
    return [
        Episode(
            torch.rand(n_way * k_shot, 1, 28, 28, device=device, generator=g),
            labels.repeat_interleave(k_shot),
            torch.rand(n_way * n_query, 1, 28, 28, device=device, generator=g),
            labels.repeat_interleave(n_query),
        )
        for _ in range(n_tasks)
    ]


def section_maml_step(device: torch.device, reps: dict) -> list[dict]:
    """One MAML meta-step, ours (``maml_task_loss`` per task, and ``maml_batch_loss`` for all the
    tasks at once: the two ways of ``train_maml``) against learn2learn's ``MAML`` from the same
    initial weights; the three are timed in turn."""
    from utils import methods as M

    l2l = import_learn2learn()
    warmup, timed = reps["maml_step"]
    rows = []
    for order, steps in MAML_ORDERS:
        first_order = order == "first"
        for B in reps["meta_batches"]:
            tasks = random_tasks(B, device)
            torch.manual_seed(0)
            ours = M.maml_conv4().to(device)
            theirs = copy.deepcopy(ours)
            opt = torch.optim.Adam(ours.parameters(), META_LR)

            def our_step():
                params, buffers = dict(ours.named_parameters()), dict(ours.named_buffers())
                opt.zero_grad()
                for ep in tasks:
                    loss, _ = M.maml_task_loss(
                        ours, params, buffers, ep, steps, MAML_LR, first_order
                    )
                    (loss / B).backward()
                opt.step()

            def our_batched_step():
                params, buffers = dict(ours.named_parameters()), dict(ours.named_buffers())
                opt.zero_grad()
                losses, _ = M.maml_batch_loss(
                    ours, params, buffers, tasks, steps, MAML_LR, first_order
                )
                losses.mean().backward()
                opt.step()

            row = {
                "order": order,
                "inner_steps": steps,
                "meta_batch": B,
                "ours_ms": None,
                "ours_batched_ms": None,
                "learn2learn_ms": None,
                "ratio_ours_over_learn2learn": None,
                "ratio_batched_over_learn2learn": None,
                "grad_error_tf32": None,
                "grad_error_fp32": None,
                "learn2learn": "ok" if not isinstance(l2l, str) else l2l,
            }
            runs = {"ours_ms": our_step, "ours_batched_ms": our_batched_step}
            if not isinstance(l2l, str):
                maml = l2l.algorithms.MAML(theirs, lr=MAML_LR, first_order=first_order)
                opt_l2l = torch.optim.Adam(maml.parameters(), META_LR)

                def their_step():
                    opt_l2l.zero_grad()
                    for ep in tasks:
                        learner = maml.clone()
                        for _ in range(steps):
                            learner.adapt(F.cross_entropy(learner(ep.support), ep.support_labels))
                        (F.cross_entropy(learner(ep.query), ep.query_labels) / B).backward()
                    opt_l2l.step()

                runs["learn2learn_ms"] = their_step
            for fn in runs.values():
                for _ in range(warmup):
                    fn()
            times: dict[str, list[float]] = {k: [] for k in runs}
            for _ in range(timed):  # in turn, so that a slow moment of the machine hits both
                for key, fn in runs.items():
                    times[key].append(time_ms(fn, device, 0, 1))
            for key, values in times.items():
                row[key] = statistics.median(values)
            for key, tf32 in (("grad_error_tf32", True), ("grad_error_fp32", False)):
                row[key] = meta_gradient_error(ours, tasks, steps, first_order, tf32)
            if row["learn2learn_ms"]:
                row["ratio_ours_over_learn2learn"] = row["ours_ms"] / row["learn2learn_ms"]
                row["ratio_batched_over_learn2learn"] = (
                    row["ours_batched_ms"] / row["learn2learn_ms"]
                )
            rows.append(row)
    return rows


def meta_gradient_error(model: nn.Module, tasks: list, steps: int, first_order: bool, tf32: bool):
    """The relative error (2-norm over every weight) of the float32 meta-gradient of the mean
    ``maml_task_loss`` of ``tasks`` at ``model``'s weights against the float64 one, with cuDNN's
    TF32 convolutions allowed or not (as it was after)."""
    from utils import methods as M

    def meta_gradient(m, episodes):
        params = dict(m.named_parameters())
        losses = [
            M.maml_task_loss(m, params, {}, ep, steps, MAML_LR, first_order)[0] for ep in episodes
        ]
        grads = torch.autograd.grad(torch.stack(losses).mean(), list(params.values()))
        return torch.cat([g.flatten() for g in grads]).double()

    double = [ep._replace(support=ep.support.double(), query=ep.query.double()) for ep in tasks]
    reference = meta_gradient(copy.deepcopy(model).double(), double)
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        error = meta_gradient(model, tasks) - reference
    finally:
        torch.backends.cudnn.allow_tf32 = before
    return (error.norm() / reference.norm()).item()


# --- 4. adaptation ------------------------------------------------------------------------------


def _reptile_before(model: nn.Module, steps: int, lr: float, transductive: bool = True) -> Callable:
    """Reptile's test-time classifier as it was before (``classifier_reptile`` of
    ``utils/methods.py`` at commit e80b711): a deep copy takes ``steps`` Adam steps (beta1 = 0)
    on the whole support set, then scores the query images with batch norm on the statistics of
    the query batch (``transductive``) or, one query image at a time, of the support set plus
    that image."""
    from utils import methods as M

    def classify(support, support_labels, query):
        m = copy.deepcopy(model)
        opt = torch.optim.Adam(m.parameters(), lr, betas=(0.0, 0.999))
        M.reptile_inner_loop(m, opt, support, support_labels, steps, len(support))
        with torch.no_grad():
            if transductive:
                return m(query)
            return torch.stack([m(torch.cat([support, q[None]]))[-1] for q in query])

    return classify


def _maml_before(model: nn.Module, steps: int, lr: float) -> Callable:
    """MAML's transductive test-time classifier as it was before (``classifier_maml`` of
    ``utils/methods.py`` at commit f9ff2f3): ``steps`` first-order steps of ``lr`` on the support
    set, then the query images in one batch with the weights in the standard layout."""
    from torch.func import functional_call

    from utils import methods as M

    def classify(support, support_labels, query):
        params = {n: p.detach().requires_grad_() for n, p in model.named_parameters()}
        buffers = dict(model.named_buffers())
        adapted = M.maml_adapt(model, params, buffers, support, support_labels, steps, lr, True)
        with torch.no_grad():
            return functional_call(model, (adapted, buffers), (query,))

    return classify


def _trained_model(name: str, S) -> tuple[nn.Module, dict, bool]:
    """The registered method ``name``'s model on ``S.device`` with the weights of the book's run
    when the cache has it: ``(model, choices, trained)``; without a run, untrained weights and
    ``{}`` (a run that cannot be read is refused with a ``RuntimeError`` that says what to do).
    ``choices`` are the test-time choices its chapter saved (``utils.registry.save_record``)."""
    from utils.registry import METHODS, load_record
    from utils.train import load_run

    method = METHODS[name]
    run = load_run(method.run, S, method.config) or {}
    torch.manual_seed(0)  # the same untrained weights in every run, when there are no others
    model = method.build().to(S.device)
    trained = "model" in run
    if trained:
        model.load_state_dict(run["model"])
    return model, load_record(method, S)["choices"], trained


def _ms_per_episode(before: Callable, after: Callable, episodes: list, device: torch.device):
    """The median ms of ``before`` and of ``after`` on each of ``episodes``, timed in turns (on
    every episode both, the one that goes first alternating), so that a change of the machine's
    speed during the run reaches both alike; the first episode, untimed, warms both up. Returns
    ``(before_ms, after_ms)``."""
    times: tuple[list, list] = ([], [])
    for i, ep in enumerate(episodes):
        ep = ep.to(device)
        for k in (0, 1) if i % 2 == 0 else (1, 0):
            _sync(device)
            start = time.perf_counter()
            (before, after)[k](ep.support, ep.support_labels, ep.query)
            _sync(device)
            if i > 0 or len(episodes) == 1:
                times[k].append(1e3 * (time.perf_counter() - start))
    return statistics.median(times[0]), statistics.median(times[1])


def _one_shot(choices: dict, what: str, default):
    """The 5-way 1-shot test-time choice ``what`` ("test steps", "test fixed blocks") a chapter
    made on validation and saved in its record, or ``default`` when it saved none."""
    return choices.get(f"{what}, 5-way 1-shot", default)


def section_adaptation(device: torch.device, reps: dict) -> list[dict]:
    """Test-time adaptation per episode, the former setting against today's, for MAML, FOMAML
    and Reptile (transductive and not): ms per episode and accuracy on the same episodes."""
    from utils import methods as M
    from utils.episodes import fixed_test_episodes
    from utils.evaluate import evaluate

    n_eval, n_timed = reps["episodes"]
    S = _book_setup(device)
    episodes = fixed_test_episodes(5, 1, n_episodes=n_eval)
    timed = [episodes[i] for i in range(min(n_eval, n_timed + 1))]  # +1: the warm-up episode
    cases = []
    for label in ("MAML", "FOMAML"):
        model, choices, trained = _trained_model(label, S)
        steps, blocks = (
            _one_shot(choices, "test steps", 10),
            _one_shot(choices, "test fixed blocks", 0),
        )
        adapt = M.maml_adapt_fixing(blocks)
        cases.append(
            (
                label,
                "transductive",
                trained,
                (10, MAML_LR, 0),
                (steps, MAML_LR, blocks),
                _maml_before(model, 10, MAML_LR),
                M.classifier_maml(model, steps, MAML_LR, adapt, statistics="queries"),
            )
        )
    model, choices, trained = _trained_model("Reptile", S)
    steps, lr = _one_shot(choices, "test steps", 20), 1e-2
    # before: the model as the book had it then, its convolutions in the contiguous layout
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    for transductive in (True, False):
        setting = "transductive" if transductive else "non-transductive"
        cases.append(
            (
                "Reptile",
                setting,
                trained,
                (20, 1e-2, None),
                (steps, lr, None),
                _reptile_before(plain, 20, 1e-2, transductive),
                M.classifier_reptile(
                    model, steps, lr, "queries" if transductive else "support + one query"
                ),
            )
        )
    rows = []
    for label, setting, trained, before_h, after_h, before, after in cases:
        row: dict = {
            "method": label,
            "setting": setting,
            "trained": trained,
            "episodes": n_eval,
            "timed_episodes": max(1, len(timed) - 1),
        }
        for when, h, classify in (("before", before_h, before), ("after", after_h, after)):
            torch.manual_seed(0)
            acc = evaluate(classify, episodes, device, desc=f"{label} {setting} {when}")
            row.update(
                {
                    f"{when}_steps": h[0],
                    f"{when}_lr": h[1],
                    f"{when}_fixed_blocks": h[2],
                    f"{when}_acc": acc.mean,
                    f"{when}_ci95": acc.ci95,
                }
            )
        torch.manual_seed(0)
        row["before_ms"], row["after_ms"] = _ms_per_episode(before, after, timed, device)
        row["speedup"] = row["before_ms"] / row["after_ms"]
        rows.append(row)
    return rows


# --- 5. training --------------------------------------------------------------------------------


@contextlib.contextmanager
def busy_process():
    """One competing process that keeps a core busy (``while True: pass``), killed at the end."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it start and reach the loop
        yield proc
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def temporary_cache():
    """``$FEWSHOT_CACHE`` pointed at a temporary folder inside, as it was after."""
    from utils.config import CACHE_VAR

    old = os.environ.get(CACHE_VAR)
    with tempfile.TemporaryDirectory(prefix="fewshot-bench-cache-") as folder:
        os.environ[CACHE_VAR] = folder
        try:
            yield Path(folder)
        finally:
            if old is None:
                os.environ.pop(CACHE_VAR, None)
            else:
                os.environ[CACHE_VAR] = old


def section_training(device: torch.device, reps: dict) -> list[dict]:
    """Each quick-budget trainer for a few steps alone, then beside a busy process, with torch's
    threads and again with one thread (as each chapter trains in CI, ``tools/execute.py``): ms
    per step of the training loop (``history.seconds``) and the slowdown, one row per method
    and thread count (the threads torch was set to; Reptile's trainer takes one anyway), with
    the threads of most steps beside the busy process (``utils.train.fit`` takes fewer while
    other processes keep cores busy)."""
    import utils.methods  # noqa: F401  (the chapters' code registers every method)
    from utils.data import load_split
    from utils.registry import METHODS

    load_split("train")  # loads Omniglot from the real cache and keeps it in memory for the runs
    threads = torch.get_num_threads()
    rows = []
    with temporary_cache():
        S = _book_setup(device)
        for n_threads in dict.fromkeys((threads, 1)):  # torch's threads, then one (once if 1)
            torch.set_num_threads(n_threads)
            try:
                for name, (method, default_steps) in TRAINERS.items():
                    n = reps["train_steps"] or default_steps
                    m = METHODS[method]
                    config = replace(m.config, steps=n)
                    with quiet():
                        alone = m.train(S, config)[1]
                    with busy_process(), quiet():
                        beside = m.train(S, config)[1]
                    rows.append(
                        {
                            "method": name,
                            "threads": n_threads,
                            "beside_threads": beside.threads,
                            "steps": n,
                            "alone_ms": 1e3 * alone.seconds / n,
                            "beside_ms": 1e3 * beside.seconds / n,
                            "slowdown": beside.seconds / alone.seconds,
                        }
                    )
            finally:
                torch.set_num_threads(threads)
    return rows


# --- the table and the file ---------------------------------------------------------------------


def _f(value, fmt: str = "{:.1f}") -> str:
    """``value`` formatted, or "n/a" for None."""
    return "n/a" if value is None else fmt.format(value)


def table_rows(sections: dict[str, list[dict]]) -> list[tuple[str, ...]]:
    """One line per row of every section: (section, case, ms, baseline ms, ratio, notes)."""
    lines = []
    for r in sections.get("peak", []):
        lines.append(
            (
                "peak",
                f"{r['dtype']} matmul, n={r['n']}",
                _f(r["ms"], "{:.2f}"),
                "",
                "",
                f"{r['gflops']:.1f} GFLOP/s (best of n="
                + "/".join(k[len("gflops_n") :] for k in r if k.startswith("gflops_n"))
                + ")",
            )
        )
    for r in sections.get("conv4", []):
        lines.append(
            (
                "conv4",
                f"{r['variant']}, batch {r['batch']}",
                _f(r["ms"]),
                "",
                _f(r["fraction_of_fp32_peak"], "{:.3f}"),
                f"{r['gflops']:.1f} GFLOP/s, {r['gflop_per_step']:.2f} GFLOP/step"
                + (
                    f" (fp32 peak {r['fp32_peak_gflops']:.1f})"
                    if r.get("fp32_peak_gflops") is not None
                    else ""
                )
                + (
                    f", {r['page_faults_per_step']} page faults/step"
                    if r.get("page_faults_per_step") is not None
                    else ""
                ),
            )
        )
    for r in sections.get("maml_step", []):
        for way, ms, ratio in (
            ("", "ours_ms", "ratio_ours_over_learn2learn"),
            (", batched", "ours_batched_ms", "ratio_batched_over_learn2learn"),
        ):
            lines.append(
                (
                    "maml_step",
                    f"{r['order']} order, {r['inner_steps']} step(s), meta-batch "
                    f"{r['meta_batch']}{way}",
                    _f(r[ms]),
                    _f(r["learn2learn_ms"]),
                    _f(r[ratio], "{:.2f}"),
                    ("" if r["learn2learn"] == "ok" else r["learn2learn"] + "; ")
                    + (
                        "float32 meta-gradient vs float64: "
                        f"{_f(r['grad_error_tf32'], '{:.1e}')} with TF32, "
                        f"{_f(r['grad_error_fp32'], '{:.1e}')} without"
                        if not way
                        else ""
                    ),
                )
            )
    for r in sections.get("adaptation", []):
        acc = (
            f"acc {r['before_acc']:.1f}±{_f(r['before_ci95'])} -> "
            f"{r['after_acc']:.1f}±{_f(r['after_ci95'])} %"
        )
        lines.append(
            (
                "adaptation",
                f"{r['method']} {r['setting']}, {r['before_steps']} -> {r['after_steps']} steps",
                _f(r["after_ms"]),
                _f(r["before_ms"]),
                _f(r["speedup"], "{:.2f}"),
                acc + ("" if r["trained"] else " (untrained)"),
            )
        )
    for r in sections.get("training", []):
        lines.append(
            (
                "training",
                f"{r['method']}, {r['steps']} steps, {r.get('threads', '?')} thread(s)",
                _f(r["beside_ms"]),
                _f(r["alone_ms"]),
                _f(r["slowdown"], "{:.2f}"),
                f"beside: {r.get('beside_threads', '?')} thread(s)",
            )
        )
    return lines


LEGEND = """\
ms / baseline ms / ratio, by section:
  peak        ms of one product at the best size
  conv4       ms per training step; ratio = fraction of the fp32 matmul peak
  maml_step   ms per meta-step ours (task by task, or batched) / learn2learn;
              ratio = ours / learn2learn (< 1: ours faster)
  adaptation  ms per episode after / before; ratio = speed-up before / after (> 1: faster now)
  training    ms per step beside a busy process / alone; ratio = slowdown"""


def render(meta: dict, sections: dict[str, list[dict]]) -> str:
    """The plain-text report: the machine, then one aligned table of every section, then its
    legend."""
    head = [
        f"device: {meta['device']} ({meta['device_type']}, "
        f"{meta.get('cpu_capability', 'capability unknown')})   torch {meta['torch']}   "
        f"threads {meta['threads']}   load average {meta['load_average']}",
        f"GOMP_SPINCOUNT={meta['GOMP_SPINCOUNT']}   "
        f"OMP_NUM_THREADS={meta['OMP_NUM_THREADS']}   commit {meta['commit']}   "
        f"{meta['date']}" + ("   (smoke run)" if meta["smoke"] else ""),
    ]
    rows = [("section", "case", "ms", "baseline ms", "ratio", "notes")] + table_rows(sections)
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for i, r in enumerate(rows):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(r[2:5], widths[2:5])]
        lines.append("  ".join(cells + [r[5]]).rstrip())
        if i == 0:
            lines.append("-" * max(len(line) for line in lines))
    return "\n".join(head + [""] + lines + ["", LEGEND])


def _clean(value):
    """``value`` with NaN and infinities turned into None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


# --- the command --------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    """The command line: ``--device``, ``--smoke``, ``--out``, ``--sections``."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda (cuda:N for GPU N)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="one repetition, the smallest batches, 3 test episodes, 2 training steps: "
        "a check that the script runs, not a measurement; writes to a temporary "
        "folder unless --out is given",
    )
    p.add_argument(
        "--out", help="where the JSON goes (default: benchmarks/results/<device type>.json)"
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    args = p.parse_args(argv)
    from utils.config import check_device

    try:
        args.device = check_device(args.device)
    except ValueError as err:
        p.error(str(err))
    if args.device.type not in ("cpu", "cuda"):
        p.error(f"--device {args.device} is not measured here: allowed are cpu and cuda")
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        p.error(
            f"--sections {args.sections!r}: unknown {', '.join(unknown) or '(none given)'}; "
            f"allowed are {', '.join(SECTIONS)}"
        )
    args.sections = [s for s in SECTIONS if s in chosen]
    return args


def main(argv=None) -> dict:
    """Run the chosen sections, print the table, write the JSON (again after each section, so
    that a run cut short keeps the sections it measured); returns what was written."""
    args = parse_args(argv)
    device, reps = args.device, SMOKE if args.smoke else FULL
    from utils.config import keep_freed_memory, no_tf32

    no_tf32()  # float32 computed as the book computes it (setup does the same)
    if args.out:
        out = Path(args.out)
    elif args.smoke:
        out = Path(tempfile.mkdtemp(prefix="fewshot-bench-")) / f"{device.type}.json"
    else:
        out = RESULTS / f"{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = machine(device, args.smoke)
    sections: dict[str, list[dict]] = {}
    for name in args.sections:
        print(f"measuring {name} on {device} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        if name == "conv4":
            peak = next((r for r in sections.get("peak", []) if r["dtype"] == "fp32"), None)
            sections[name] = section_conv4(device, reps, peak)
        else:
            if name != "peak":  # as the book runs (setup calls it); conv4 calls it itself
                keep_freed_memory()
            sections[name] = globals()[f"section_{name}"](device, reps)
        meta[f"seconds_{name}"] = round(time.perf_counter() - start, 1)
        result = _clean({"meta": meta, "sections": sections})
        out.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    print(render(result["meta"], result["sections"]), flush=True)
    print(f"\nwritten to {out}", flush=True)
    return result


if __name__ == "__main__":
    main()
