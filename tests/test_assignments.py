"""The nbgrader assignments grade as intended: the source notebooks (the instructor's
solutions) get full marks, the student versions, handed in untouched, get zero on every
graded test and fail only with the stubs' NotImplementedError, and a plausible wrong answer,
named below, loses the points of the part it breaks and no others.

One generate and one autograde run for the whole module, in two halves side by side: the
sources, the student versions and the wrong answers, 27 notebooks executed, a few minutes on two
CPU cores. The small study (09) trains a network; here it runs the same cells with
FEWSHOT_ASSIGNMENT_TRAIN_EPISODES and FEWSHOT_ASSIGNMENT_TEST_EPISODES set small, in seconds.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from utils.config import cache_dir
from utils.data import CACHE_FILE

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "assignments"))
import classroom  # noqa: E402
from conftest import shared_omniglot  # noqa: E402

NAMES = classroom.assignments()
SOURCE = ROOT / "assignments" / "source"
# nbgrader 0.9 with SQLAlchemy 2 warns about its own session handling; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Object of type:Warning")

# The small study trains ProtoNet and evaluates it on Omniglot: in this test, through the same
# cells, on 5 training episodes and 20 test episodes.
SMALL_RUN = {"FEWSHOT_ASSIGNMENT_TRAIN_EPISODES": "5", "FEWSHOT_ASSIGNMENT_TEST_EPISODES": "20"}
NEEDS_OMNIGLOT = {"09_small_study"}

# A plausible wrong answer for each assignment: what it is, the solution cell it changes, the
# code that replaces that cell's solution, and the graded cell (the part) that must lose its
# points, alone.
WRONG = {
    "01_episode_sampler": (
        "draws the queries with replacement from all D drawings, so a query can be a support image",
        "sample_episode",
        """
n_classes, n_drawings = images.shape[:2]
if n_way > n_classes:
    raise ValueError(f"n_way={n_way} but there are only {n_classes} classes")
if k_shot + n_query > n_drawings:
    raise ValueError(f"k_shot + n_query = {k_shot + n_query} but a class has {n_drawings} drawings")
classes = torch.randperm(n_classes, generator=generator)[:n_way]
shots = torch.stack([torch.randperm(n_drawings, generator=generator)[:k_shot]
                     for _ in range(n_way)])
queries = torch.randint(n_drawings, (n_way, n_query), generator=generator)
labels = torch.arange(n_way)
support = images[classes[:, None], shots].unsqueeze(2).flatten(0, 1)
query = images[classes[:, None], queries].unsqueeze(2).flatten(0, 1)
return Episode(support, labels.repeat_interleave(k_shot), query, labels.repeat_interleave(n_query))
""",
        "test_content",
    ),
    "02_prototypical_loss": (
        "the squared distances as logits, not minus them: the farthest prototype the likeliest",
        "prototypical_loss",
        """
n_way = int(support_labels.max()) + 1
protos = prototypes(support, support_labels, n_way)
distances = ((query[:, None, :] - protos[None, :, :]) ** 2).sum(-1)
loss = F.cross_entropy(distances, query_labels)
accuracy = (distances.argmin(1) == query_labels).float().mean().item()
return loss, accuracy
""",
        "test_loss",
    ),
    "03_maml_inner_loop": (
        "ignores first_order: create_graph=True always, so FOMAML keeps the second-order terms",
        "inner_loop",
        """
adapted = dict(params)
for _ in range(steps):
    loss = loss_fn(functional_call(model, adapted, (support,)), support_labels)
    grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=True)
    adapted = {name: p - inner_lr * g for (name, p), g in zip(adapted.items(), grads)}
return adapted
""",
        "test_first_order",
    ),
    "04_siamese": (
        "the margin term on the same pairs and the squared distance on the different ones",
        "contrastive_loss",
        """
y = same.to(h1.dtype)
d = (h1 - h2).pow(2).sum(1).sqrt()
return ((1 - y) * d ** 2 + y * F.relu(margin - d) ** 2).mean()
""",
        "test_contrastive",
    ),
    "05_transfer_cosine": (
        "normalises the features first, then subtracts the mean (SimpleShot centres first)",
        "normalise",
        """
features = F.normalize(features, dim=1)
return features if mean is None else features - mean
""",
        "test_normalise",
    ),
    "06_matching_attention": (
        "the cross-entropy of the class probabilities (a second softmax) instead of their -log",
        "matching_loss",
        """
n_way = int(support_labels.max()) + 1
probs = class_probabilities(attention(support, query, scale), support_labels, n_way)
loss = F.cross_entropy(probs, query_labels)
accuracy = (probs.argmax(1) == query_labels).float().mean().item()
return loss, accuracy
""",
        "test_loss",
    ),
    "07_relation_scores": (
        "regresses only the scores of the query's own class onto 1, not the others onto 0",
        "relation_loss",
        """
own = scores[torch.arange(len(scores)), query_labels]
loss = ((own - 1) ** 2).mean()
accuracy = (scores.argmax(1) == query_labels).float().mean().item()
return loss, accuracy
""",
        "test_loss",
    ),
    "08_reptile_outer_step": (
        "adapts the tasks one after the other, each from where the last ended, not each from phi",
        "reptile_outer_step",
        """
start = {k: v.detach().clone() for k, v in model.state_dict().items()}
ends, losses = [], []
for task in tasks:
    losses.append(adapt(model, task))
    ends.append({k: v.detach().clone() for k, v in model.state_dict().items()
                 if v.is_floating_point()})
moved = interpolate({k: v for k, v in start.items() if v.is_floating_point()}, ends, outer_lr)
model.load_state_dict({**start, **moved})
return sum(losses) / len(losses)
""",
        "test_outer_step",
    ),
    "09_small_study": (
        "reports numbers typed in from elsewhere, not those of its own run",
        "report",
        """
report = {
    "protonet": (96.9, 0.5),
    "pixels": (45.1, 1.6),
    "difference": (51.8, 50.1, 53.5),
}
""",
        "test_report",
    ),
    "10_preprocess": (
        "always inverts, taking every image for dark ink on light paper",
        "ink_bright",
        """
border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
gray, border = 1 - gray, 1 - border
low, high = np.median(border), gray.max()
return np.clip((gray - low) / (high - low), 0, 1)
""",
        "test_ink",
    ),
    "11_mel_features": (
        "spaces the filters' edges equally in hertz, not in mels",
        "mel_filterbank",
        """
edges = torch.linspace(low, high, n_mels + 2, dtype=torch.float64)
f = torch.linspace(0, rate / 2, n_fft // 2 + 1, dtype=torch.float64)
left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
rising, falling = (f - left) / (centre - left), (right - f) / (right - centre)
return torch.minimum(rising, falling).clamp(min=0).float()
""",
        "test_filterbank",
    ),
}


def have_omniglot():
    return shared_omniglot() is not None or (cache_dir() / CACHE_FILE).is_file()


def cells(nb):
    return [(c, c["metadata"].get("nbgrader", {})) for c in nb["cells"]]


def source_notebook(name):
    return json.loads((SOURCE / name / f"{name}.ipynb").read_text())


def graded_points(name):
    """{grade_id: points} of the autograded test cells, and of the written answers."""
    tests, written = {}, {}
    for c, m in cells(source_notebook(name)):
        if m.get("grade"):
            (written if m.get("solution") else tests)[m["grade_id"]] = m["points"]
    return tests, written


def with_wrong_answer(name):
    """The source notebook with the solution of one cell replaced by WRONG[name]'s code."""
    _, cell_id, code, _ = WRONG[name]
    nb = source_notebook(name)
    cell = next(c for c, m in cells(nb) if m.get("grade_id") == cell_id)
    lines = "".join(cell["source"]).split("\n")
    begin = next(i for i, line in enumerate(lines) if "### BEGIN SOLUTION" in line)
    end = next(i for i, line in enumerate(lines) if "### END SOLUTION" in line)
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    body = [indent + line if line else line for line in code.strip("\n").split("\n")]
    new = lines[:begin] + body + lines[end + 1 :]
    cell["source"] = [line + "\n" for line in new[:-1]] + [new[-1]]
    return nb


def test_the_assignments_are_there():
    assert set(NAMES) == {
        "01_episode_sampler",
        "02_prototypical_loss",
        "03_maml_inner_loop",
        "04_siamese",
        "05_transfer_cosine",
        "06_matching_attention",
        "07_relation_scores",
        "08_reptile_outer_step",
        "09_small_study",
        "10_preprocess",
        "11_mel_features",
    }
    assert set(WRONG) == set(NAMES)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Generate the student versions, then autograde the sources as student "instructor", the
    untouched student versions as student "blank" and the wrong answers as student "wrong".

    The assignments are graded in two halves at once, each by ``classroom.py autograde`` in a
    process and a working folder of its own: the kernels run on one thread each, so the two
    CPU cores of CI grade in about half the time. Returns ``({assignment: its working folder},
    {(student, assignment): row of the score table})``."""
    tmp = tmp_path_factory.mktemp("classroom")
    names = [n for n in NAMES if n not in NEEDS_OMNIGLOT or have_omniglot()]
    env = dict(os.environ, **SMALL_RUN)
    if not os.environ.get("OMNIGLOT_ROOT") and shared_omniglot() is not None:
        env["OMNIGLOT_ROOT"] = str(shared_omniglot())
    work_of, runs = {}, []
    for half, group in enumerate((names[0::2], names[1::2])):
        work, subs = tmp / f"work{half}", tmp / f"submissions{half}"
        release = classroom.generate(work, group, quiet=True)
        for name in group:
            work_of[name] = work
            for student, src in (("instructor", SOURCE), ("blank", release)):
                (subs / student / name).mkdir(parents=True)
                shutil.copy(src / name / f"{name}.ipynb", subs / student / name)
            (subs / "wrong" / name).mkdir(parents=True)
            text = json.dumps(with_wrong_answer(name), indent=1, ensure_ascii=False)
            (subs / "wrong" / name / f"{name}.ipynb").write_text(text)
        command = [sys.executable, str(ROOT / "assignments" / "classroom.py"), "autograde"]
        command += [str(subs), "--work", str(work)]
        log = open(tmp / f"autograde{half}.log", "w")
        runs.append((subprocess.Popen(command, env=env, stdout=log, stderr=log), log, work))
    rows = {}
    for process, log, work in runs:
        code = process.wait(timeout=1800)
        log.close()
        assert code == 0, Path(log.name).read_text()[-3000:]
        with open(work / "grades.csv") as f:
            for r in csv.DictReader(f):
                for k in ("score", "max_score", "manual_pending"):
                    r[k] = float(r[k])
                rows[r["student"], r["assignment"]] = r
    return work_of, rows


def row(graded, student, name):
    _, rows = graded
    if (student, name) not in rows:
        pytest.skip(f"{name} needs Omniglot: set OMNIGLOT_ROOT")
    return rows[student, name]


def autograded(work, student, name):
    return json.loads((work / "autograded" / student / name / f"{name}.ipynb").read_text())


def errors(nb):
    """(grade_id or None, error name) of every error output of the executed notebook."""
    return [
        (m.get("grade_id"), o["ename"])
        for c, m in cells(nb)
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
        if o["output_type"] == "error"
    ]


def test_release_has_no_solutions_and_no_hidden_tests(graded):
    work_of, _ = graded
    for name in NAMES:
        if name not in work_of:
            continue  # not generated without Omniglot
        path = work_of[name] / "release" / name / f"{name}.ipynb"
        text = path.read_text()
        source = (SOURCE / name / f"{name}.ipynb").read_text()
        assert "BEGIN SOLUTION" in source and "BEGIN HIDDEN TESTS" in source, name
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in text, (name, marker)
        assert "raise NotImplementedError()" in text, name
        written = [c for c, m in cells(json.loads(text)) if m.get("grade") and m.get("solution")]
        assert all("".join(c["source"]) == "YOUR ANSWER HERE" for c in written), name


@pytest.mark.parametrize("name", NAMES)
def test_source_notebook_gets_full_marks(graded, name):
    r = row(graded, "instructor", name)
    tests, written = graded_points(name)
    assert r["max_score"] == sum(tests.values()) + sum(written.values()) > 0
    # the written answers wait for the instructor; every autograded point is there
    assert r["manual_pending"] == sum(written.values())
    assert r["score"] == r["max_score"] - r["manual_pending"], r
    assert errors(autograded(graded[0][name], "instructor", name)) == []


def test_small_study_ran_small_and_graded_by_hand_gets_full_marks(graded):
    """The study's test run was the small one; its written answers, given their points by hand
    (as in the formgrader), complete full marks."""
    from nbgrader.api import Gradebook

    name = "09_small_study"
    r = row(graded, "instructor", name)
    work = graded[0][name]
    out = "".join(
        "".join(o.get("text", ""))
        for c, m in cells(autograded(work, "instructor", name))
        if m.get("grade_id") == "imports"
        for o in c["outputs"]
    )
    assert "5 training episodes, 20 test episodes" in out, out
    saved = json.loads((work / "autograded" / "instructor" / name / "study.json").read_text())
    assert len(saved["protonet"]) == len(saved["pixels"]) == 20
    with Gradebook("sqlite:///" + str(work / "gradebook.db")) as gb:
        nb = gb.find_submission_notebook(name, name, "instructor")
        by_hand = [g for g in nb.grades if g.needs_manual_grade]
        assert sorted(g.name for g in by_hand) == ["answer_interval", "answer_seeds"]
        for g in by_hand:
            g.manual_score, g.needs_manual_grade = g.max_score, False
        gb.db.commit()
        sub = gb.find_submission(name, "instructor")
        assert sub.score == sub.max_score == r["max_score"]


@pytest.mark.parametrize("name", NAMES)
def test_untouched_student_notebook_gets_zero_and_only_not_implemented(graded, name):
    from nbgrader.api import Gradebook

    assert row(graded, "blank", name)["score"] == 0
    work = graded[0][name]
    with Gradebook("sqlite:///" + str(work / "gradebook.db")) as gb:
        nb = gb.find_submission_notebook(name, name, "blank")
        grades = [g for g in nb.grades if g.auto_score is not None]
        assert grades and len(grades) == len([g for g in nb.grades])
        assert all(g.auto_score == 0 for g in grades), [(g.name, g.auto_score) for g in grades]
    errs = errors(autograded(work, "blank", name))
    assert errs, "the stubs must raise"
    assert {e for _, e in errs} == {"NotImplementedError"}, errs


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_answer_loses_the_points_of_the_part_it_breaks(graded, name):
    from nbgrader.api import Gradebook

    what, _, _, broken = WRONG[name]
    r = row(graded, "wrong", name)
    tests, written = graded_points(name)
    assert r["score"] == r["max_score"] - tests[broken] - sum(written.values()), (what, r)
    work = graded[0][name]
    with Gradebook("sqlite:///" + str(work / "gradebook.db")) as gb:
        nb = gb.find_submission_notebook(name, name, "wrong")
        auto = {g.name: g.auto_score for g in nb.grades if g.name in tests}
    assert auto == {t: (0 if t == broken else p) for t, p in tests.items()}, what
    assert errors(autograded(work, "wrong", name)) == [(broken, "AssertionError")], what
