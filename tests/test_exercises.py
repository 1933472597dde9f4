"""The exercises: every reference solution passes the grader, every untouched template fails it
with a message (not a traceback), and typical mistakes are caught and named.

The tests grade the pristine templates (minires/exercises/templates/) and the reference solutions,
never the learner's copies in lessons/exercises/: an exercise in progress must not break pytest.
"""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minires.exercises import EXERCISES, check
from minires.exercises.grader import default_file, reference_file, template_file

NAMES = list(EXERCISES)
ROOT = Path(__file__).resolve().parent.parent
LEARNER_COPIES = ROOT / "lessons" / "exercises"


def run_grader(*args):
    return subprocess.run([sys.executable, "-m", "minires.exercises", *args],
                          capture_output=True, text=True, timeout=120)


def grade(name, path):
    lines = []
    passed = check(name, path, say=lines.append)
    return passed, "\n".join(lines)


@pytest.mark.parametrize("name", NAMES)
def test_reference_solution_passes(name):
    passed, report = grade(name, reference_file(name))
    assert passed, report
    assert f"PASS {name}" in report


@pytest.mark.parametrize("name", NAMES)
def test_untouched_template_fails_with_a_message(name):
    result = run_grader("check", name, "--file", str(template_file(name)))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "backward is not written yet" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_default_file_is_the_learners_copy_in_this_checkout():
    for name in NAMES:
        assert default_file(name) == LEARNER_COPIES / f"{name}.py"


def test_solution_passes_through_the_command_line():
    result = run_grader("check", "relu", "--file", str(reference_file("relu")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_list_names_every_exercise():
    result = run_grader("list")
    assert result.returncode == 0
    for name in NAMES:
        assert name in result.stdout


def _method_sources(path, cls):
    """{method name: source} of class cls in the file at path."""
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    return {f.name: ast.unparse(f) for f in node.body if isinstance(f, ast.FunctionDef)}


@pytest.mark.parametrize("name", NAMES)
def test_template_and_solution_differ_only_in_backward(name):
    cls = EXERCISES[name].cls
    template = _method_sources(template_file(name), cls)
    solution = _method_sources(reference_file(name), cls)
    assert template.keys() == solution.keys()
    for method in template:
        if method != "backward":
            assert template[method] == solution[method], f"{name}: {method} differs"


def _edited_in_this_checkout(path):
    """True when git says path has uncommitted changes, or there is no git to ask."""
    try:
        result = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", path.name],
                                cwd=path.parent, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return result.returncode != 0  # 1: modified; 128 and others: not a git checkout


@pytest.mark.parametrize("name", NAMES)
def test_learners_copy_is_the_template_as_committed(name):
    """lessons/exercises/NAME.py is committed as the template; once the learner edits it, it is
    theirs and is neither compared nor graded here."""
    mine = LEARNER_COPIES / f"{name}.py"
    if mine.read_text() == template_file(name).read_text():
        return
    if _edited_in_this_checkout(mine):
        pytest.skip(f"{mine.name} has been edited: the learner's copy, not the template")
    raise AssertionError(f"{mine} is committed with changes that {template_file(name)} lacks: "
                         "edit both (or run `python -m minires.exercises reset NAME`)")


def test_an_exercise_in_progress_does_not_break_the_suite(tmp_path):
    """A copy of the checkout where the learner has half-written two exercises and broken a
    third: this file's tests, run there, still pass."""
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "minires", copy / "minires",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(LEARNER_COPIES, copy / "lessons" / "exercises")
    (copy / "tests").mkdir()
    shutil.copy(__file__, copy / "tests" / "test_exercises.py")
    mine = copy / "lessons" / "exercises"
    relu = mine / "relu.py"
    relu.write_text(relu.read_text().replace('raise NotImplementedError("write ReLU.backward")',
                                             "return dy  # a first try"))
    (mine / "conv2d.py").write_text("def broken(:\n")
    bn = mine / "batchnorm.py"
    bn.write_text(bn.read_text().replace("eps=1e-5", "eps=1e-3"))
    env = dict(os.environ, PYTHONPATH=str(copy))  # the copy's minires, ahead of the installed one
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
         "not in_progress", str(copy / "tests" / "test_exercises.py")],
        cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def _broken(tmp_path, name, old, new):
    """The reference solution of name with one line changed: a typical mistake."""
    source = reference_file(name).read_text()
    assert old in source, f"{old!r} is not in the {name} solution"
    path = tmp_path / f"{name}.py"
    path.write_text(source.replace(old, new))
    return path


MISTAKES = [
    # batchnorm without the variance path: passes a plain-sum check, fails a random upstream
    ("batchnorm", "- self.x_hat * (dx_hat * self.x_hat).sum(axis=self.axes, keepdims=True)", "",
     "dx"),
    ("batchnorm", "dbeta = dy.sum(axis=self.axes)", "dbeta = dy.mean(axis=self.axes)", "dbeta"),
    ("residual", "dx = dx_branch + ds", "dx = dx_branch", "dx"),
    ("conv2d", "db = dy2.sum(axis=1)", "db = dy2.mean(axis=1)", "db"),
    ("conv2d", "dw = (dy2 @ self.cols.T)", "dw = 2 * (dy2 @ self.cols.T)", "dw"),
    ("relu", "return dy * self.mask", "return dy", "dx"),
    ("linear", "db = dy.sum(axis=0)", "db = dy[0]", "db"),
]


@pytest.mark.parametrize("name, old, new, gradient", MISTAKES)
def test_a_mistake_is_named(tmp_path, name, old, new, gradient):
    passed, report = grade(name, _broken(tmp_path, name, old, new))
    assert not passed
    assert f"  {gradient} " in report and "WRONG" in report, report
    assert "hint:" in report


def test_overlapping_pool_windows_must_add(tmp_path):
    # A natural first attempt: scatter dy to the flat index of each window's maximum. Assignment
    # keeps one gradient where two windows share their maximum, which only overlapping windows
    # (case 2) reveal; np.add.at would add them.
    old = "dx = col2im(dcols, (N * C, 1, H, W), k, k, (s, s), (0, 0))"
    new = ("index = np.arange(N * C * H * W, dtype=np.float64).reshape(N * C, 1, H, W)\n"
           "        where = im2col(index, k, k, (s, s), (0, 0)).astype(np.int64)\n"
           "        dx = np.zeros(N * C * H * W)\n"
           "        dx[where[self.argmax, np.arange(dy.size)]] = dy.ravel()")
    passed, report = grade("maxpool", _broken(tmp_path, "maxpool", old, new))
    assert not passed, report
    assert "case 1 of 2" in report and "case 2 of 2" in report and "dx        WRONG" in report
    fixed = _broken(tmp_path, "maxpool", old, new.replace(
        "dx[where[self.argmax, np.arange(dy.size)]] = dy.ravel()",
        "np.add.at(dx, where[self.argmax, np.arange(dy.size)], dy.ravel())"))
    passed, report = grade("maxpool", fixed)
    assert passed, report


def test_wrong_shape_and_exceptions_are_explained(tmp_path):
    passed, report = grade("linear", _broken(tmp_path, "linear", "dx = dy @ self.w ",
                                             "dx = dy @ self.w.T "))
    assert not passed and "raised ValueError" in report and "line " in report, report
    passed, report = grade("linear", _broken(tmp_path, "linear", "db = dy.sum(axis=0)",
                                             "db = dy.sum(axis=0, keepdims=True)"))
    assert not passed and "db has shape (1, 3), expected (3,)" in report, report
    passed, report = grade("linear", _broken(tmp_path, "linear", "return dx, dw, db",
                                             "return dx, dw"))
    assert not passed and "returned 2 value(s); expected 3" in report, report


def test_missing_file_and_syntax_error(tmp_path):
    passed, report = grade("relu", tmp_path / "nowhere.py")
    assert not passed and "does not exist" in report
    bad = tmp_path / "relu.py"
    bad.write_text("def broken(:\n")
    passed, report = grade("relu", bad)
    assert not passed and "syntax error at line 1" in report
