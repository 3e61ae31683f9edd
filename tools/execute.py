"""Execute the book's chapters under nbval, two side by side, each chapter once.

``make notebooks`` (so ``make book``) runs this, and ``make test`` with ``--unit-tests``. Each
chapter runs in its own pytest process (``pytest --nbval-lax``, from ``chapters/``), with its
output in ``_build/logs/<chapter>.log``, printed in part when the chapter ends. With
``--unit-tests`` the unit tests (``pytest tests``, log ``_build/logs/tests.log``) are one more job
of the same two lanes, the first to start: beside the chapters they cost the run about half of
their time alone, and a failing test stops the chapters early. With ``--colab-check`` (CI's ``make
test COLAB_CHECK=1``) the Colab reproduction is one more job too (``.ci/colab-check``, log
``_build/logs/colab.log``): it starts once chapter 7 has trained the two MAML runs it loads, and
takes a lane, so that it shares the cores with one chapter, not with two: in CI, beside chapter 11.

Two at a time: the chapters' training and test-time steps are small operations that two CPU
threads share poorly. On the book's 2-core machine, two chapters side by side with one thread
each finish 1.2 to 1.4 times as much work as one chapter with two threads (ProtoNet's and MAML's
training, MAML's test-time adaptation), and twice as much for Reptile's training, which runs on
one thread anyway. A machine with more cores gives each chapter half of them.

Order: a chapter starts once the chapters whose trained models or records it reads have ended
(:data:`NEEDS`); among those ready, the first of :data:`ORDER` (roughly the longest first).
The comparison, chapter 11, reads every method's run and record: it runs last, with every
thread when it runs alone (one when the Colab reproduction is still running). The first job
that fails stops the others; the exit status is 1 then, else 0.

    python -m tools.execute                      # every chapter
    python -m tools.execute 05_prototypical 10   # some (names or their numbers)
    python -m tools.execute --unit-tests         # the unit tests and every chapter (make test)
    python -m tools.execute --unit-tests --colab-check   # and the Colab reproduction (CI)
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
LOGS = ROOT / "_build" / "logs"
LAST = "11_comparison"  # reads every other chapter's runs and records
UNIT = "tests"  # the job of the unit tests (``pytest tests`` from the repository's root)
COLAB = "colab"  # the job of the Colab reproduction (``.ci/colab-check``, with chapter 7's runs)
NEEDS = {  # job -> the chapters whose runs or records it loads (else it would train them)
    COLAB: {"07_maml"},  # the MAML and FOMAML runs, loaded under Colab's versions
    "09_what_meta_learning_learns": {
        "01_few_shot_problem",  # the record of the pixels' nearest class mean
        "02_transfer_learning",  # the transfer backbone and SimpleShot's record
        "05_prototypical",  # ProtoNet
        "07_maml",  # MAML and its record
    },
    "10_more_data_from_less": {"05_prototypical"},
    "13_your_own_images": {  # the trained runs it classifies the example folder with
        "02_transfer_learning",  # SimpleShot
        "05_prototypical",  # ProtoNet
        "07_maml",  # MAML
    },
}
# The unit tests first (a failure ends the run early), then roughly the longest first: chapter 7
# then 9 is the longest chain; chapter 9 before 10 and 6 before 8 pack the two lanes more evenly.
# The Colab reproduction last, beside chapter 11, which then runs on one thread.
ORDER = (
    UNIT,
    "07_maml",
    "14_beyond_images",
    "02_transfer_learning",
    "05_prototypical",
    "01_few_shot_problem",
    "09_what_meta_learning_learns",
    "10_more_data_from_less",
    "06_relation",
    "08_reptile",
    "03_siamese",
    "04_matching",
    "13_your_own_images",
    COLAB,
)


def chapters() -> list[str]:
    """The chapters' names (``"07_maml"``), in the book's order."""
    return sorted(p.stem for p in CHAPTERS.glob("[0-9][0-9]_*.ipynb"))


def needs(chapter: str, among: list[str]) -> set[str]:
    """The jobs of ``among`` that must end before ``chapter`` starts (chapter 11: every other one
    but the Colab reproduction, which it may run beside)."""
    if chapter == LAST:
        return set(among) - {chapter, COLAB}
    return NEEDS.get(chapter, set()) & set(among)


def next_ready(waiting: list[str], done: set[str], among: list[str]) -> str | None:
    """The chapter of ``waiting`` (in :data:`ORDER`'s order, then the book's) whose needs are all
    ``done``, or ``None`` when none is ready yet."""
    rank = {c: i for i, c in enumerate(ORDER)}
    for chapter in sorted(waiting, key=lambda c: (rank.get(c, len(ORDER)), c)):
        if needs(chapter, among) <= done:
            return chapter
    return None


def threads(cores: int, side_by_side: int) -> int:
    """The CPU threads of a chapter that runs beside ``side_by_side - 1`` others."""
    if cores < 1 or side_by_side < 1:
        raise ValueError(f"cores and side_by_side must be at least 1, got {cores}, {side_by_side}")
    return max(1, cores // side_by_side)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def command(job: str, durations: int) -> tuple[list[str], Path]:
    """The command line of ``job`` (a chapter, :data:`UNIT` or :data:`COLAB`) and its folder."""
    if job == COLAB:  # says so loudly, and passes, without Colab's Python or the disk it needs
        from utils.config import cache_dir  # torch: only for this job

        runs = cache_dir() / "runs"
        line = ["bash", ".ci/colab-check", "--skip-if-no-python", "--skip-if-no-room"]
        return line + ["--runs-from", str(runs)], ROOT
    line = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    line += [f"--durations={durations}", "--durations-min=1"]
    if job == UNIT:
        return line + ["tests"], ROOT
    return line + ["--nbval-lax", f"{job}.ipynb"], CHAPTERS


def _start(job: str, n_threads: int, durations: int) -> tuple[subprocess.Popen, Path]:
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{job}.log"
    env = os.environ | {"OMP_NUM_THREADS": str(n_threads), "MKL_NUM_THREADS": str(n_threads)}
    line, cwd = command(job, durations)
    with open(log, "w") as out:  # its own process group: stopped with its kernel (_stop)
        process = subprocess.Popen(
            line, cwd=cwd, env=env, stdout=out, stderr=out, start_new_session=True
        )
    return process, log


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    process.wait()


def _summary(log: Path) -> tuple[str, list[str]]:
    """The last line of pytest's report in ``log`` (else its last line), and its slowest cells."""
    lines = log.read_text(errors="replace").splitlines()
    report = (ln for ln in reversed(lines) if ln.startswith("=") and ln.endswith("="))
    last = next((ln.strip("= ") for ln in report), None)
    last = last or next((ln.strip() for ln in reversed(lines) if ln.strip()), "no report")
    slow = [ln for ln in lines if re.match(r"\d+\.\d+s (call|setup|teardown) ", ln)]
    return last, slow


def run(selected: list[str], jobs: int = 2, durations: int = 10) -> int:
    """Execute ``selected`` chapters, ``jobs`` at a time; 0 when all pass, else 1."""
    cores, start = _cores(), time.perf_counter()
    jobs = max(1, min(jobs, cores))
    waiting, done, running, took = list(selected), set(), {}, {}
    stamp = lambda: f"[{time.perf_counter() - start:5.0f} s]"  # noqa: E731
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                chapter = next_ready(waiting, done, selected)
                if chapter is None and not running:  # cannot happen while NEEDS has no cycle
                    raise RuntimeError(f"no chapter of {waiting} can start: check NEEDS")
                if chapter is None:
                    break
                waiting.remove(chapter)
                alone = not running and not [c for c in waiting if needs(c, selected) <= done]
                n = threads(cores, 1 if alone else jobs)
                running[chapter] = (*_start(chapter, n, durations), time.perf_counter())
                print(f"{stamp()} {chapter}: started, {n} thread{'s' * (n > 1)}", flush=True)
            time.sleep(0.2)  # a lane waits at most 0.2 s for its next chapter
            for chapter, (process, log, began) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[chapter]
                took[chapter] = time.perf_counter() - began
                last, slow = _summary(log)
                print(f"{stamp()} {chapter}: {last} ({took[chapter]:.0f} s)", flush=True)
                for line in slow:
                    print(f"    {line}")
                if process.returncode != 0:
                    print(f"--- {log}, its last 150 lines ---")
                    print("\n".join(log.read_text(errors="replace").splitlines()[-150:]))
                    return 1  # the others are stopped below
                done.add(chapter)
    finally:  # a chapter failed, Ctrl-C, or an error here: the chapters still running stop
        for chapter, (process, _, _) in running.items():
            _stop(process)
            print(f"{stamp()} {chapter}: stopped")
    what = "job" if {UNIT, COLAB} & set(selected) else "chapter"
    print(f"{stamp()} every {what} passed; their seconds:")
    for chapter in selected:
        print(f"    {took[chapter]:6.0f} s  {chapter}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="names or numbers (default: every chapter)")
    parser.add_argument("--jobs", type=int, default=2, help="chapters side by side (default 2)")
    parser.add_argument(
        "--unit-tests", action="store_true", help="the unit tests too, as one more job (make test)"
    )
    parser.add_argument(
        "--colab-check",
        action="store_true",
        help="the Colab reproduction too, after chapter 7 (make test COLAB_CHECK=1, as in CI)",
    )
    args = parser.parse_args(argv)
    every = chapters()
    selected = []
    for name in args.chapters or every:
        match = [c for c in every if c == name or c.split("_")[0] == name.zfill(2)]
        if not match:
            parser.error(f"no chapter {name!r}; the chapters are {', '.join(every)}")
        selected += match
    if args.colab_check:
        if "07_maml" not in selected:
            parser.error("--colab-check loads chapter 7's runs: select 07_maml too")
        selected.append(COLAB)
    if args.unit_tests:
        selected.insert(0, UNIT)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: stop the chapters too
    return run(selected, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
