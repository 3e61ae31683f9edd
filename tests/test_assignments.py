"""The nbgrader assignments grade as intended: the source notebooks (the instructor's
solutions) get full marks, and the student versions, handed in untouched, get zero on every
graded test and fail only with the stubs' NotImplementedError.

One generate and one autograde run (8 notebooks executed) for the whole module; it takes a
few minutes on two CPU cores.
"""
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "assignments"))
import classroom  # noqa: E402

NAMES = classroom.assignments()
# nbgrader 0.9 with SQLAlchemy 2 warns about its own session handling; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Object of type:Warning")


def test_the_four_assignments_are_there():
    assert {"01_episode_sampler", "02_prototypical_loss", "03_maml_inner_loop"} <= set(NAMES)
    assert any(n.endswith(("_siamese", "_relation")) for n in NAMES)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Generate the student versions, then autograde the sources as student "instructor"
    and the untouched student versions as student "blank"."""
    tmp = tmp_path_factory.mktemp("classroom")
    work, subs = tmp / "work", tmp / "submissions"
    release = classroom.generate(work, quiet=True)
    for name in NAMES:
        for student, src in (("instructor", ROOT / "assignments" / "source"), ("blank", release)):
            (subs / student / name).mkdir(parents=True)
            shutil.copy(src / name / f"{name}.ipynb", subs / student / name)
    rows = classroom.autograde(subs, work, quiet=True)
    return work, {(r["student"], r["assignment"]): r for r in rows}


def autograded(work, student, name):
    return json.loads((work / "autograded" / student / name / f"{name}.ipynb").read_text())


def errors(nb):
    return [o for c in nb["cells"] if c["cell_type"] == "code"
            for o in c.get("outputs", []) if o["output_type"] == "error"]


def test_release_has_no_solutions_and_no_hidden_tests(graded):
    work, _ = graded
    for name in NAMES:
        text = (work / "release" / name / f"{name}.ipynb").read_text()
        source = (ROOT / "assignments" / "source" / name / f"{name}.ipynb").read_text()
        assert "BEGIN SOLUTION" in source and "BEGIN HIDDEN TESTS" in source, name
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in text, (name, marker)
        assert "raise NotImplementedError()" in text, name


@pytest.mark.parametrize("name", NAMES)
def test_source_notebook_gets_full_marks(graded, name):
    work, rows = graded
    row = rows["instructor", name]
    assert row["max_score"] > 0
    assert row["score"] == row["max_score"], row
    assert errors(autograded(work, "instructor", name)) == []


@pytest.mark.parametrize("name", NAMES)
def test_untouched_student_notebook_gets_zero_and_only_not_implemented(graded, name):
    from nbgrader.api import Gradebook

    work, rows = graded
    assert rows["blank", name]["score"] == 0
    with Gradebook("sqlite:///" + str(work / "gradebook.db")) as gb:
        nb = gb.find_submission_notebook(name, name, "blank")
        grades = [g for g in nb.grades if g.auto_score is not None]
        assert grades and len(grades) == len([g for g in nb.grades])
        assert all(g.auto_score == 0 for g in grades), [(g.name, g.auto_score) for g in grades]
    errs = errors(autograded(work, "blank", name))
    assert errs, "the stubs must raise"
    assert {e["ename"] for e in errs} == {"NotImplementedError"}, [(e["ename"], e["evalue"]) for e in errs]
