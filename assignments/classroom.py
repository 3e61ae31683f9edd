"""The book's classroom: nbgrader assignments, generated and autograded with one command each.

Run from the repository root with the book's environment:

    python assignments/classroom.py generate
        the student versions of every assignment in assignments/source/ (nbgrader's
        generate_assignment: solutions replaced by stubs, hidden tests removed), into
        assignments/work/release/<assignment>/<assignment>.ipynb

    python assignments/classroom.py autograde SUBMISSIONS_DIR
        SUBMISSIONS_DIR/<student>/<assignment>/<assignment>.ipynb: copied into nbgrader's
        submitted/ folder, autograded (hidden tests put back, every notebook executed),
        a table of scores printed and written to assignments/work/grades.csv; written
        answers (manually graded cells) wait for the formgrader, and the table says how
        many points do

Both take --work DIR (default assignments/work, or $CLASSROOM_WORK): the folder that holds
everything nbgrader writes, release/, submitted/, autograded/, feedback/ and gradebook.db.
The configuration is assignments/nbgrader_config.py, so nbgrader's own commands and its
formgrader, started in assignments/, see the same course.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCE = HERE / "source"
WORK_VAR = "CLASSROOM_WORK"


def assignments() -> list[str]:
    """The assignments: the folders of assignments/source/ that hold a notebook of their name."""
    return sorted(p.name for p in SOURCE.iterdir() if (p / f"{p.name}.ipynb").is_file())


def work_dir(work: str | os.PathLike | None = None) -> Path:
    return Path(work or os.environ.get(WORK_VAR) or HERE / "work").resolve()


@contextlib.contextmanager
def _course(work: Path):
    """nbgrader's API on this course, with everything it writes under ``work``."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    work.mkdir(parents=True, exist_ok=True)
    # nbgrader runs `alembic` and the kernel by name: find those of this Python's environment
    # first, also when the environment is not activated (.venv/bin/python assignments/classroom.py).
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    # The tests run on tiny tensors: one thread per kernel is many times faster than PyTorch's
    # default on a shared machine (an instructor may override it).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    old = os.environ.get(WORK_VAR)
    os.environ[WORK_VAR] = str(work)  # read by nbgrader_config.py
    cwd = os.getcwd()
    try:
        config = PyFileConfigLoader("nbgrader_config.py", path=str(HERE)).load_config()
        os.chdir(HERE)
        coursedir = CourseDirectory(config=config)
        yield NbGraderAPI(coursedir=coursedir, config=config), config
    finally:
        os.chdir(cwd)
        if old is None:
            os.environ.pop(WORK_VAR, None)
        else:
            os.environ[WORK_VAR] = old


def _check(result: dict, what: str) -> None:
    if not result.get("success"):
        raise RuntimeError(f"nbgrader failed: {what}\n{result.get('log', '')}\n{result.get('error', '')}")


def generate(work=None, names: list[str] | None = None, quiet: bool = False) -> Path:
    """nbgrader generate_assignment for ``names`` (default: all); returns the release folder."""
    work = work_dir(work)
    names = names or assignments()
    with _course(work) as (api, _):
        for name in names:
            start = time.perf_counter()
            _check(api.generate_assignment(name, force=True, create=True), f"generate {name}")
            if not quiet:
                print(f"generated {name} in {time.perf_counter() - start:.1f} s")
    release = work / "release"
    if not quiet:
        print(f"student versions: {release}/<assignment>/<assignment>.ipynb")
    return release


def collect(submissions: Path, work: Path) -> list[tuple[str, str]]:
    """Copy SUBMISSIONS/<student>/<assignment>/ into nbgrader's submitted/ folder.

    Returns the (student, assignment) pairs found; folders that are not assignments are skipped
    with a warning.
    """
    known = set(assignments())
    pairs = []
    for student in sorted(p for p in Path(submissions).iterdir() if p.is_dir()):
        for folder in sorted(p for p in student.iterdir() if p.is_dir()):
            if folder.name not in known:
                print(f"warning: skipping {folder} (no assignment named {folder.name!r})", file=sys.stderr)
                continue
            dest = work / "submitted" / student.name / folder.name
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(folder, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
            pairs.append((student.name, folder.name))
    if not pairs:
        raise SystemExit(f"no submissions in {submissions}: expected <student>/<assignment>/<notebook>.ipynb")
    return pairs


def autograde(submissions, work=None, csv_path=None, quiet: bool = False) -> list[dict]:
    """Autograde every submission in ``submissions``; print and write the score table.

    Returns one row per (student, assignment): ``student, assignment, score, max_score``,
    ``manual_pending`` (the points of written answers that wait for grading by hand, counted
    as 0 in ``score`` until then) and ``seconds`` (how long autograding it took).
    """
    from nbgrader.api import Gradebook

    work = work_dir(work)
    pairs = collect(Path(submissions), work)
    with _course(work) as (api, config):
        db_url = config.CourseDirectory.db_url
        with Gradebook(db_url) as gb:
            have = {a.name for a in gb.assignments}
        missing = sorted({a for _, a in pairs} - have)
        if missing:  # autograding needs the assignment's master copy in the gradebook
            generate(work, missing, quiet=quiet)
        seconds = {}
        for student, name in pairs:
            start = time.perf_counter()
            _check(api.autograde(name, student, force=True, create=True), f"autograde {student}/{name}")
            seconds[student, name] = time.perf_counter() - start
            if not quiet:
                print(f"autograded {student}/{name} in {seconds[student, name]:.1f} s")
        rows = []
        with Gradebook(db_url) as gb:
            for student, name in pairs:
                sub = gb.find_submission(name, student)
                pending = sum(g.max_score for nb in sub.notebooks for g in nb.grades if g.needs_manual_grade)
                rows.append(dict(student=student, assignment=name, score=float(sub.score),
                                 max_score=float(sub.max_score), manual_pending=float(pending),
                                 seconds=round(seconds[student, name], 1)))
    csv_path = Path(csv_path) if csv_path else work / "grades.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["student", "assignment", "score", "max_score", "manual_pending"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    if not quiet:
        print()
        print(score_table(rows))
        print(f"\nscores written to {csv_path}; graded notebooks in {work / 'autograded'}")
    return rows


def score_table(rows: list[dict]) -> str:
    """One line per student, one column per assignment (score/max), and the total; a ``*``
    marks a score with written answers still to grade by hand (a line below says how many
    points)."""
    names = sorted({r["assignment"] for r in rows})
    students = sorted({r["student"] for r in rows})
    cell = {(r["student"], r["assignment"]): r for r in rows}
    width = max([len("student")] + [len(s) for s in students])
    cols = [max(len(n), 9) for n in names]
    lines = [f"{'student':<{width}}  " + "  ".join(f"{n:>{w}}" for n, w in zip(names, cols)) + f"{'total':>11}"]
    for s in students:
        got = [cell.get((s, n)) for n in names]
        score = sum(r["score"] for r in got if r)
        out_of = sum(r["max_score"] for r in got if r)
        waiting = [r.get("manual_pending", 0) > 0 if r else False for r in got]
        marks = [f"{r['score']:g}/{r['max_score']:g}" + "*" * w if r else "-" for r, w in zip(got, waiting)]
        total = f"{score:g}/{out_of:g}" + "*" * any(waiting)
        lines.append(f"{s:<{width}}  " + "  ".join(f"{m:>{w}}" for m, w in zip(marks, cols)) + total.rjust(11))
    pending = sum(r.get("manual_pending", 0) for r in rows)
    if pending:
        lines.append(f"\n* written answers, {pending:g} points in all, wait for grading by hand in nbgrader's "
                     "formgrader (counted as 0 until then)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate the student versions (nbgrader generate_assignment)")
    g.add_argument("assignments", nargs="*", help=f"default: all ({', '.join(assignments())})")
    a = sub.add_parser("autograde", help="autograde SUBMISSIONS_DIR/<student>/<assignment>/*.ipynb")
    a.add_argument("submissions", type=Path)
    a.add_argument("--csv", type=Path, help="where to write the scores (default WORK/grades.csv)")
    for p in (g, a):
        p.add_argument("--work", type=Path, help="working folder (default assignments/work or $CLASSROOM_WORK)")
    args = parser.parse_args(argv)
    if args.command == "generate":
        unknown = set(args.assignments) - set(assignments())
        if unknown:
            parser.error(f"unknown assignments {sorted(unknown)}: known are {assignments()}")
        generate(args.work, args.assignments)
    else:
        if not args.submissions.is_dir():
            parser.error(f"{args.submissions} is not a folder")
        autograde(args.submissions, args.work, args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
