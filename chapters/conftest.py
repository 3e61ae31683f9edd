"""nbval runs each notebook cell as a test. This file adds two things:

- how long each notebook took in all (kernel start and every cell), printed at the end, so that
  the book's time budget can be read off every run;
- with ``$FEWSHOT_EXECUTED_DIR`` set, every notebook is written there with the outputs its cells
  produced under nbval, so the book is rendered from this one execution (``make book``) instead
  of executing every chapter a second time.
"""

import os
from collections import defaultdict
from pathlib import Path

import nbformat
import pytest

# nbval reads a cell's messages only once the cell has finished. A long cell whose progress
# bars redraw ten times a second queues tens of thousands of messages; ZeroMQ then drops some,
# among them the kernel's "idle", and nbval fails the cell with "Timeout of 5 seconds exceeded
# waiting for output". Kernels inherit this variable, which tqdm reads as its default
# `mininterval`: one redraw per 10 s.
os.environ.setdefault("TQDM_MININTERVAL", "10")

EXECUTED_VAR = "FEWSHOT_EXECUTED_DIR"
WIDGET = "application/vnd.jupyter.widget-view+json"

_seconds: dict[str, float] = defaultdict(float)
_executed: dict[Path, nbformat.NotebookNode] = {}


def pytest_runtest_logreport(report):
    _seconds[Path(report.fspath).name] += report.duration


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep the outputs nbval collected for the cell (a failing cell's too, with its error).
    Progress-bar widgets are dropped: a page has no kernel to draw them, and the loops print
    their summaries as text."""
    yield
    outputs = getattr(item, "test_outputs", None)
    if call.when == "call" and outputs is not None and os.environ.get(EXECUTED_VAR):
        item.cell.outputs = [o for o in outputs if WIDGET not in o.get("data", {})]
        item.cell.execution_count = item.cell_num + 1
        _executed[Path(item.fspath)] = item.parent.nb


def pytest_sessionfinish(session):
    folder = os.environ.get(EXECUTED_VAR)
    if not folder or not _executed:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    for path, nb in _executed.items():
        nbformat.write(nb, str(Path(folder) / path.name))


def pytest_terminal_summary(terminalreporter):
    if _executed:
        folder = os.environ.get(EXECUTED_VAR)
        terminalreporter.write_line(f"{len(_executed)} executed notebooks written to {folder}")
    if not _seconds:
        return
    terminalreporter.section("time per notebook (setup, cells and teardown)")
    for name, seconds in sorted(_seconds.items()):
        terminalreporter.write_line(f"{seconds:8.1f} s  {name}")
    terminalreporter.write_line(f"{sum(_seconds.values()):8.1f} s  in all")
