"""nbval runs each notebook cell as a test; this prints how long each notebook took in all
(kernel start and every cell), so that the book's time budget can be read off every run."""
from collections import defaultdict
from pathlib import Path

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
