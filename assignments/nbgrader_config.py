"""nbgrader's configuration for the book's assignments (read by `nbgrader ...` run in this
folder, by formgrader started here, and by `python assignments/classroom.py`).

The course folder is this one: the source notebooks live in `source/`; everything nbgrader
generates (release/, submitted/, autograded/, feedback/, the gradebook) goes into one
working folder, `work/` (git-ignored), or into the folder named by $CLASSROOM_WORK.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.abspath(os.environ.get("CLASSROOM_WORK") or os.path.join(HERE, "work"))

c = get_config()  # noqa: F821 (defined by traitlets when it loads this file)

c.CourseDirectory.course_id = "fewshot-book"
c.CourseDirectory.root = HERE
c.CourseDirectory.source_directory = "source"
# Absolute paths: nbgrader joins them onto the root, and an absolute path wins.
c.CourseDirectory.release_directory = os.path.join(WORK, "release")
c.CourseDirectory.submitted_directory = os.path.join(WORK, "submitted")
c.CourseDirectory.autograded_directory = os.path.join(WORK, "autograded")
c.CourseDirectory.feedback_directory = os.path.join(WORK, "feedback")
c.CourseDirectory.solution_directory = os.path.join(WORK, "solution")
c.CourseDirectory.source_with_tests_directory = os.path.join(WORK, "source_with_tests")
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(WORK, "gradebook.db")

# What a student sees in place of a solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Every test runs on tiny synthetic tensors: a notebook is graded in seconds, except the small
# study (09), whose one cell trains a network at the quick budget (about a minute on two CPU cores;
# grading runs it on one thread). The limit, per cell, only stops a submission that loops forever.
c.Execute.timeout = 900
c.Execute.kernel_name = "python3"
