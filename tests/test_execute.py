"""The chapters' runner (``tools/execute.py``): which chapter may start, and on how many threads.
Its runs themselves are ``make notebooks``."""

import pytest

from tools import execute

EVERY = execute.chapters()


def test_the_chapters_are_the_notebooks_in_the_books_order():
    assert EVERY[0] == "01_few_shot_problem" and execute.LAST in EVERY
    assert EVERY == sorted(EVERY) and execute.UNIT not in EVERY
    assert all(c in EVERY for c in execute.ORDER if c not in (execute.UNIT, execute.COLAB))
    assert all(need in EVERY for needed in execute.NEEDS.values() for need in needed)


def test_a_chapter_waits_for_the_runs_it_reads():
    assert execute.needs(execute.LAST, EVERY) == set(EVERY) - {execute.LAST}
    assert execute.needs("10_more_data_from_less", EVERY) == {"05_prototypical"}
    assert execute.needs("10_more_data_from_less", ["10_more_data_from_less"]) == set()
    waiting = ["09_what_meta_learning_learns", "10_more_data_from_less", execute.LAST]
    assert execute.next_ready(waiting, set(), EVERY) is None
    done = set(EVERY) - set(waiting) - {"07_maml"}  # chapter 9 waits for chapter 7's MAML
    assert execute.next_ready(waiting, done, EVERY) == "10_more_data_from_less"
    first = min(waiting[:2], key=execute.ORDER.index)  # both ready: ORDER's first
    assert execute.next_ready(waiting, done | {"07_maml"}, EVERY) == first
    assert execute.next_ready([execute.LAST], set(EVERY) - {execute.LAST}, EVERY) == execute.LAST


def test_the_longest_ready_chapter_starts_first():
    assert execute.next_ready(EVERY, set(), EVERY) == execute.ORDER[1]  # ORDER[0]: UNIT


def test_the_unit_tests_are_one_more_job_that_starts_first():
    line, folder = execute.command(execute.UNIT, 10)
    assert folder == execute.ROOT and line[-1] == "tests" and "--nbval-lax" not in line
    line, folder = execute.command("07_maml", 10)
    assert folder == execute.CHAPTERS and line[-2:] == ["--nbval-lax", "07_maml.ipynb"]
    jobs = [execute.UNIT, *EVERY]
    assert execute.next_ready(jobs, set(), jobs) == execute.UNIT
    assert execute.needs(execute.LAST, jobs) == set(jobs) - {execute.LAST}  # after the tests too
    assert execute.needs(execute.UNIT, jobs) == set()


def test_the_colab_reproduction_is_one_more_job_after_chapter_7(monkeypatch, tmp_path):
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    line, folder = execute.command(execute.COLAB, 10)
    assert folder == execute.ROOT and line[:2] == ["bash", ".ci/colab-check"]
    assert "--skip-if-no-python" in line and "--skip-if-no-room" in line
    assert line[-2:] == ["--runs-from", str(tmp_path / "runs")]
    jobs = [execute.UNIT, *EVERY, execute.COLAB]
    assert execute.needs(execute.COLAB, jobs) == {"07_maml"}
    assert execute.needs(execute.LAST, jobs) == set(jobs) - {execute.LAST, execute.COLAB}
    done = {execute.UNIT, "07_maml"}
    waiting = [j for j in jobs if j not in done]
    assert execute.next_ready(waiting, done, jobs) != execute.COLAB  # the chapters first
    others = set(jobs) - {execute.COLAB, execute.LAST, "12_what_it_costs"}
    assert execute.next_ready([execute.COLAB, execute.LAST], others, jobs) == execute.COLAB
    assert execute.next_ready([execute.COLAB], {execute.UNIT}, jobs) is None


def test_the_colab_reproduction_needs_chapter_7(capsys):
    with pytest.raises(SystemExit):
        execute.main(["01", "--colab-check"])
    assert "--colab-check loads chapter 7's runs: select 07_maml too" in capsys.readouterr().err


def test_threads_share_the_cores():
    assert execute.threads(2, 2) == 1 and execute.threads(2, 1) == 2
    assert execute.threads(8, 2) == 4 and execute.threads(1, 2) == 1
    with pytest.raises(ValueError, match="got 0, 2"):
        execute.threads(0, 2)


def test_an_unknown_chapter_is_refused_with_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        execute.main(["99"])
    assert "no chapter '99'; the chapters are 01_few_shot_problem" in capsys.readouterr().err


def _notebook(path, code):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbformat.write(nb, str(path))


def test_a_failing_chapter_fails_the_run_and_shows_its_log(tmp_path, monkeypatch, capsys):
    _notebook(tmp_path / "01_fine.ipynb", "print('fine')")
    _notebook(tmp_path / "02_broken.ipynb", "raise ValueError('broken on purpose')")
    monkeypatch.setattr(execute, "CHAPTERS", tmp_path)
    monkeypatch.setattr(execute, "LOGS", tmp_path / "logs")
    assert execute.chapters() == ["01_fine", "02_broken"]
    assert execute.run(["01_fine"]) == 0
    assert execute.run(["01_fine", "02_broken"]) == 1
    out = capsys.readouterr().out
    assert "broken on purpose" in out and (tmp_path / "logs" / "02_broken.log").is_file()


def test_a_jobs_summary_is_pytests_report_else_its_last_line(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("==> a stage\n===== 3 passed in 1.00s =====\n1.50s call     x.ipynb::Cell 2\n")
    assert execute._summary(log) == ("3 passed in 1.00s", ["1.50s call     x.ipynb::Cell 2"])
    log.write_text("==> done (360 s since start)\ncolab-check: PASSED in 360 s\n\n")
    assert execute._summary(log) == ("colab-check: PASSED in 360 s", [])
