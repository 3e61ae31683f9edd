"""Checks of the repository itself: clean notebooks, the table of contents, the Colab cell,
the generated methods module, and the two lists of pinned packages."""

import json
import math
import re
from pathlib import Path

import pytest

from tools import collect

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def code_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 1


@pytest.mark.parametrize(
    "path", CHAPTERS + sorted(ROOT.glob("assignments/source/*/*.ipynb")), ids=lambda p: p.name
)
def test_notebooks_are_committed_without_outputs(path):
    for cell in code_cells(path):
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, source(cell)[:60]


def test_every_chapter_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    for path in CHAPTERS:
        assert f"file: chapters/{path.stem}\n" in toc, path.name


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_starts_with_the_colab_cell_and_the_setup(path):
    first, second = (source(c) for c in code_cells(path)[:2])
    cell = (
        "colab-cell-learn2learn.py" if "import learn2learn" in path.read_text() else "colab-cell.py"
    )
    assert first.strip() == (ROOT / ".ci" / cell).read_text().strip()
    assert "setup(" in second


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_the_rendered_page_hides_the_colab_cell_and_the_imports(path):
    first, second = (c["metadata"].get("tags", []) for c in code_cells(path)[:2])
    assert "remove-cell" in first and "hide-input" in second


def test_the_colab_cell_pins_this_release():
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    for cell in ("colab-cell.py", "colab-cell-learn2learn.py"):
        assert f'fewshot-book@v{version}"' in (ROOT / ".ci" / cell).read_text()


def test_methods_module_is_current():
    assert (ROOT / "utils" / "methods.py").read_text() == collect.render(), (
        "utils/methods.py is stale: run `make methods` (python -m tools.collect)"
    )


def test_saved_definitions_are_the_marked_ones_with_their_imports_hoisted(tmp_path):
    cells = [
        "import math\nimport os\n\n\n# @save\ndef f():\n    return math.pi\n\n\n"
        "def g():  # not saved\n    return 2",
        "x = f()",
        "#@save is only a mark in code",
        "from collections import OrderedDict\n\n\nclass A:  #@save\n    d = OrderedDict()",
        "from utils.methods import f  # the module itself: never imported by it",
    ]
    nb = {"cells": [{"cell_type": "code", "source": c} for c in cells]}
    nb["cells"][2]["cell_type"] = "markdown"
    folder = tmp_path / "chapters"
    folder.mkdir()
    (folder / "99_x.ipynb").write_text(json.dumps(nb))
    assert collect.saved_definitions(cells[0]) == ["def f():\n    return math.pi"]
    assert collect.saved_definitions(cells[3]) == ["class A:\n    d = OrderedDict()"]
    text = collect.render(folder)
    assert "from chapters/99_x.ipynb" in text and "x = f()" not in text and "def g" not in text
    assert text.index("import math") < text.index("def f") and "import os" not in text
    assert "from collections import OrderedDict" in text and "utils.methods" not in text
    namespace = {}
    exec(text, namespace)
    assert namespace["f"]() == math.pi and "d" in vars(namespace["A"])


def test_a_mark_that_marks_nothing_is_refused():
    with pytest.raises(ValueError, match="marks no top-level statement"):
        collect.saved_definitions("def f():\n    # @save\n    return 1")


def pins(text, pattern):
    return dict(re.findall(pattern, text, re.M))


def test_environment_yml_pins_what_requirements_txt_pins():
    req = pins((ROOT / "requirements.txt").read_text(), r"^([A-Za-z0-9_.-]+)==(\S+)")
    env_text = (ROOT / "environment.yml").read_text()
    env = pins(env_text, r"^\s+- ([A-Za-z0-9_.-]+)==(\S+)")
    # learn2learn needs a special build, without its dependencies: the Makefile pins it, and
    # environment.yml names the same version in the instructions of its header.
    learn2learn = re.search(
        r"^LEARN2LEARN := (learn2learn==\S+)$", (ROOT / "Makefile").read_text(), re.M
    ).group(1)
    assert f"--no-deps --no-build-isolation {learn2learn}" in env_text
    assert "learn2learn" not in req and env == req
    assert int(req["numpy"].split(".")[0]) >= 2, "numpy < 2 has no wheel for Python 3.13"
    assert re.search(r"^\s+- python=3\.11", env_text, re.M)


def _run_colab_cell(cell: str, folder: Path):
    """``cell`` run as in Colab (``google.colab`` imported) by a Python started in ``folder``
    (first on its path, as in a notebook), with ``%pip install`` replaced by a print."""
    import subprocess
    import sys

    code = (ROOT / ".ci" / cell).read_text()
    code = re.sub(r"^(\s*)%pip install .*$", r'\1print("PIP INSTALL")', code, flags=re.M)
    code = (
        "import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab')\n" + code
    )
    return subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True)


@pytest.mark.parametrize("cell", ["colab-cell.py", "colab-cell-learn2learn.py"])
def test_the_colab_cell_is_not_fooled_by_a_foreign_utils_module(cell, tmp_path):
    """A reader's own ``utils.py`` is not the book's package: the cell installs the helpers and,
    as that file still hides them, stops with an error that names it. Without one, the helpers
    installed here are found and nothing is installed."""
    (tmp_path / "utils.py").write_text("def helper():\n    return 1\n")
    run = _run_colab_cell(cell, tmp_path)
    assert "PIP INSTALL" in run.stdout and run.returncode != 0
    assert f"{tmp_path / 'utils.py'} hides the book's" in run.stderr
    (tmp_path / "utils.py").unlink()
    run = _run_colab_cell(cell, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "PIP INSTALL" not in run.stdout  # the helpers (and learn2learn) are installed here
