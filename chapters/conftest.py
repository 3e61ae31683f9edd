"""nbval runs each notebook cell as a test; this prints how long each notebook took in all
(kernel start and every cell), so that the book's time budget can be read off every run."""
import os
from collections import defaultdict
from pathlib import Path

# nbval reads a cell's messages only once the cell has finished. A long cell (chapter 9
# trains every method in one) whose progress bars redraw ten times a second queues tens of
# thousands of messages; ZeroMQ then drops some, among them the kernel's "idle", and nbval
# fails the cell with "Timeout of 5 seconds exceeded waiting for output". Kernels inherit
# this variable, which tqdm reads as its default `mininterval`: one redraw per 10 s.
os.environ.setdefault("TQDM_MININTERVAL", "10")

_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    _seconds[Path(report.fspath).name] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    terminalreporter.section("time per notebook (setup, cells and teardown)")
    for name, seconds in sorted(_seconds.items()):
        terminalreporter.write_line(f"{seconds:8.1f} s  {name}")
    terminalreporter.write_line(f"{sum(_seconds.values()):8.1f} s  in all")
