"""What the book's methods cost on this machine: one run, one table, one JSON file.

    python -m benchmarks.speed                    # the CPU (what `make bench` runs)
    python -m benchmarks.speed --device cuda      # a GPU
    python -m benchmarks.speed --smoke            # a quick check that the script runs
    python -m benchmarks.speed --sections peak,conv4 --out /tmp/b.json

Run it from the repository root. Five sections, each a list of rows (flat dicts) that chapter 12
("What it costs") reads: ``peak``, the best float32 matrix-multiply GFLOP/s over square sizes;
``conv4``, one training step of the book's Conv-4 with a 20-class head at batches 30, 120 and
600 (ms, flops counted by ``torch.utils.flop_counter``, the fraction of the peak); ``maml_step``,
one MAML meta-step on random 5-way 1-shot tasks, second and first order, ours task by task and
batched against learn2learn's ``MAML`` from the same weights, timed in turn, with our memory;
``episode``, the ms to classify one 5-way 1-shot test episode with each method as the book's
cache (``$FEWSHOT_CACHE``, quick, seed 0) holds it; ``training``, each trainer for a few steps
of its quick settings, in a temporary cache.

Times are medians of timed repetitions after warm-up ones, the GPU synchronised. The file
(``benchmarks/results/<device type>.json``, or ``--out``) is written after each section.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import statistics
import sys
import tempfile
import time
from unittest import mock
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.provenance import provenance
from utils.config import check_device

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SECTIONS = ("peak", "conv4", "maml_step", "episode", "training")
MAML_ORDERS = (("second", 1), ("first", 3))  # (order, inner steps)
MAML_LR, META_LR = 0.4, 1e-3
# (warm-up, timed) repetitions, sizes, test episodes and training steps of each kind of run; the
# smoke run checks that every code path runs, on the smallest sizes, once
FULL = dict(
    reps=(2, 5),
    peak_sizes=(512, 1024, 2048),
    batches=(30, 120, 600),
    meta_batches=(4, 32),
    episodes=20,
    train_steps=20,
)
SMOKE = dict(
    reps=(1, 1), peak_sizes=(512,), batches=(30,), meta_batches=(4,), episodes=2, train_steps=2
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int, reps: int) -> float:
    """The median wall-clock time of ``fn()`` in ms over ``reps`` calls, after ``warmup`` calls
    that are not timed; the GPU is synchronised before each reading of the clock."""
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


def matmul_rate(device: torch.device, n: int, reps: tuple) -> float:
    """GFLOP/s of the product of two random float32 ``n x n`` matrices."""
    g = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, generator=g) for _ in range(2))
    return 2 * n**3 / time_ms(lambda: torch.mm(a, b), device, *reps) / 1e6


def section_peak(device: torch.device, run: dict) -> list[dict]:
    """The best float32 matrix-multiply rate over the sizes, and the rate at each."""
    rates = {n: matmul_rate(device, n, run["reps"]) for n in run["peak_sizes"]}
    best = max(rates, key=rates.get)
    return [{"gflops": rates[best], "n": best, **{f"gflops_n{n}": r for n, r in rates.items()}}]


def section_conv4(device: torch.device, run: dict, peak: dict | None) -> list[dict]:
    """Conv-4 training steps per batch size: ms, GFLOP per step, GFLOP/s and the fraction of the
    float32 peak (``peak``: the row of :func:`section_peak`; None leaves the fraction out)."""
    from torch.utils.flop_counter import FlopCounterMode

    from utils.methods import conv4

    rows = []
    for batch in run["batches"]:
        g = torch.Generator(device=device).manual_seed(batch)
        x = torch.rand(batch, 1, 28, 28, device=device, generator=g)
        y = torch.randint(0, 20, (batch,), device=device, generator=g)
        torch.manual_seed(0)
        model = nn.Sequential(conv4(), nn.Linear(64, 20)).to(device)
        opt = torch.optim.Adam(model.parameters(), 1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        counter = FlopCounterMode(display=False)
        with counter:
            step()
        ms = time_ms(step, device, *run["reps"])
        flops = counter.get_total_flops()
        rows.append(
            {"batch": batch, "ms": ms, "gflop_per_step": flops / 1e9, "gflops": flops / ms / 1e6}
        )
    if peak:  # timed again: a slow moment while the peak was measured must not inflate it
        top = max(peak["gflops"], matmul_rate(device, peak["n"], run["reps"]))
        for row in rows:
            row["fp32_peak_gflops"], row["fraction_of_peak"] = top, row["gflops"] / top
    return rows


def import_learn2learn():
    """learn2learn (its import prints gym's banner on stderr, swallowed here), or the reason it
    cannot be imported, as a string."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import learn2learn
    except Exception as err:  # not installed, or a build that does not import
        return f"learn2learn unavailable ({type(err).__name__}: {err})"
    return learn2learn


def random_tasks(n_tasks: int, device: torch.device, n_way: int = 5, n_query: int = 5) -> list:
    """``n_tasks`` 1-shot episodes of random 28x28 images."""
    from utils.episodes import Episode

    g = torch.Generator(device=device).manual_seed(0)
    labels = torch.arange(n_way, device=device)
    return [
        Episode(
            torch.rand(n_way, 1, 28, 28, device=device, generator=g),
            labels,
            torch.rand(n_way * n_query, 1, 28, 28, device=device, generator=g),
            labels.repeat_interleave(n_query),
        )
        for _ in range(n_tasks)
    ]


def section_maml_step(device: torch.device, run: dict) -> list[dict]:
    """One MAML meta-step: ours task by task and batched, and learn2learn's from the same
    weights, timed in turn; the peak memory of ours task by task."""
    from utils import methods as M
    from utils.train import PeakMemory

    l2l = import_learn2learn()
    rows = []
    for order, steps in MAML_ORDERS:
        first_order = order == "first"
        for B in run["meta_batches"]:
            tasks = random_tasks(B, device)
            torch.manual_seed(0)
            ours = M.maml_conv4().to(device)
            theirs = copy.deepcopy(ours)
            opt = torch.optim.Adam(ours.parameters(), META_LR)
            params, buffers = dict(ours.named_parameters()), dict(ours.named_buffers())

            def our_step():
                opt.zero_grad()
                for ep in tasks:
                    loss, _ = M.maml_task_loss(
                        ours, params, buffers, ep, steps, MAML_LR, first_order
                    )
                    (loss / B).backward()
                opt.step()

            def our_batched_step():
                opt.zero_grad()
                losses, _ = M.maml_batch_loss(
                    ours, params, buffers, tasks, steps, MAML_LR, first_order
                )
                losses.mean().backward()
                opt.step()

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
            warmup, timed = run["reps"]
            for fn in runs.values():
                time_ms(fn, device, warmup, 1)
            times: dict[str, list[float]] = {k: [] for k in runs}
            for _ in range(timed):  # in turn, so that a slow moment of the machine hits all
                for key, fn in runs.items():
                    times[key].append(time_ms(fn, device, 0, 1))
            with PeakMemory() as peak:
                our_step()
            row = {
                "order": order,
                "inner_steps": steps,
                "meta_batch": B,
                "learn2learn_ms": None,
                "learn2learn": "ok" if not isinstance(l2l, str) else l2l,
                "ours_peak_mb": peak.mb,
            }
            row |= {key: statistics.median(values) for key, values in times.items()}
            if row["learn2learn_ms"]:
                row["ours_over_learn2learn"] = row["ours_ms"] / row["learn2learn_ms"]
                row["batched_over_learn2learn"] = row["ours_batched_ms"] / row["learn2learn_ms"]
            rows.append(row)
    return rows


def section_episode(device: torch.device, run: dict) -> list[dict]:
    """The ms to classify one 5-way 1-shot test episode with each registered method, as the
    book's cache holds its model and its chapter's choices; a method whose run is not in the
    cache, or whose chapter saved no choices, is left out with a note."""
    import utils.methods  # noqa: F401  (the chapters' code registers every method)
    from utils.episodes import fixed_test_episodes
    from utils.registry import METHODS, load_record, trained
    from utils.train import load_run

    S = _book_setup(device)
    episodes = [ep.to(device) for ep in fixed_test_episodes(5, 1, n_episodes=run["episodes"])]
    rows = []
    for name, method in METHODS.items():
        if method.run is not None and load_run(method.run, S, method.config) is None:
            rows.append({"method": name, "ms": None, "note": "not trained in this cache"})
            continue
        with quiet():
            model, _ = trained(method, S)
        record = load_record(method, S)
        if method.run is not None and not record["results"]:
            rows.append({"method": name, "ms": None, "note": "its chapter has not run here"})
            continue
        classify = method.classifier(model, S, "5-way 1-shot", record["choices"])

        def all_episodes():
            for ep in episodes:
                classify(ep.support, ep.support_labels, ep.query)

        ms = time_ms(all_episodes, device, 0, 1) / len(episodes)  # once: as the book tests
        choices = {k: v for k, v in record["choices"].items() if "5-way 1-shot" in k}
        rows.append({"method": name, "ms": ms, "choices": json.dumps(choices, default=str)})
    return rows


def section_training(device: torch.device, run: dict) -> list[dict]:
    """Each trained method's trainer for a few steps of its quick settings, in a temporary
    cache: ms per step, and the steps of its quick and full budgets (methods that share a run
    once)."""
    import utils.methods  # noqa: F401
    from utils.config import CACHE_VAR
    from utils.data import load_split
    from utils.registry import METHODS

    load_split("train")  # from the real cache, kept in memory for the runs below
    rows, seen, n = [], set(), run["train_steps"]
    with tempfile.TemporaryDirectory(prefix="fewshot-bench-") as folder:
        with mock.patch.dict(os.environ, {CACHE_VAR: folder}):
            S = _book_setup(device)
            for name, method in METHODS.items():
                if method.run is None or method.run in seen:
                    continue
                seen.add(method.run)
                with quiet():
                    history = method.train(S, replace(method.config, steps=n))[1]
                steps = {b: method.config.at(b).steps for b in ("quick", "full")}
                rows.append(
                    {"method": name, "steps": n, "ms_per_step": 1e3 * history.seconds / n}
                    | {"quick_steps": steps["quick"], "full_steps": steps["full"]}
                )
    return rows


def render(sections: dict[str, list[dict]]) -> str:
    """The plain-text report: every row of every section, one line each."""
    return "\n".join(
        f"{name:>10}  "
        + "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        for name, rows in sections.items()
        for row in rows
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda (cuda:N for GPU N)")
    p.add_argument("--smoke", action="store_true", help="the smallest sizes, once: a check")
    p.add_argument("--out", help="the JSON file (default: benchmarks/results/<device type>.json)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"some of {','.join(SECTIONS)}")
    args = p.parse_args(argv)
    try:
        args.device = check_device(args.device)
    except ValueError as err:
        p.error(str(err))
    chosen = args.sections.split(",")
    unknown = [s for s in chosen if s not in SECTIONS]
    if args.device.type not in ("cpu", "cuda"):
        p.error(f"--device {args.device} is not measured here: allowed are cpu and cuda")
    if unknown:
        p.error(f"--sections: unknown {unknown}; allowed are {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in chosen]
    return args


def main(argv=None) -> dict:
    """Run the chosen sections, print them, and write the JSON after each section, so that a
    run cut short keeps what it measured; returns what was written."""
    args = parse_args(argv)
    device, run = args.device, SMOKE if args.smoke else FULL
    from utils.config import keep_freed_memory, no_tf32

    no_tf32()  # float32 computed as the book computes it (setup does the same)
    keep_freed_memory()
    out = Path(args.out) if args.out else RESULTS / f"{device.type}.json"
    if args.smoke and not args.out:  # a check, not a measurement: not in the results
        out = Path(tempfile.mkdtemp(prefix="fewshot-bench-")) / out.name
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = sys.argv[1:] if argv is None else argv
    meta = provenance("speed", argv, device) | {
        "device_name": device_name(device),
        "device_type": device.type,
        "smoke": args.smoke,
    }
    sections: dict[str, list[dict]] = {}
    for name in args.sections:
        print(f"measuring {name} on {device} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        if name == "conv4":
            sections[name] = section_conv4(device, run, next(iter(sections.get("peak", [])), None))
        else:
            sections[name] = globals()[f"section_{name}"](device, run)
        meta[f"seconds_{name}"] = round(time.perf_counter() - start, 1)
        result = {"meta": meta, "sections": sections}
        out.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    print(render(sections), flush=True)
    print(f"\nwritten to {out}", flush=True)
    return result


if __name__ == "__main__":
    main()
