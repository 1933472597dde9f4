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
    third: this file's tests that read exercise files, run there, still pass. (The others grade
    broken copies of the solutions, which the learner's files do not reach.)"""
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
         "template or learner or reference_solution or command_line or list_names",
         str(copy / "tests" / "test_exercises.py")],
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
    assert "hint 1 of 3:" in report and "--hint 2" in report


# Each diagnosis the grader names: (exercise, line of the solution, its mistaken version, the
# gradient that goes wrong, words the report must contain).
CONV_SCATTER = (
    "import numpy as np\n"
    "        size = int(np.prod(self.x_shape))\n"
    "        index = np.arange(1, size + 1, dtype=np.float64).reshape(self.x_shape)\n"
    "        where = im2col(index, KH, KW, s, p).astype(np.int64)\n"
    "        flat = np.zeros(index.size + 1)\n"
    "        flat[where] = dcols  # one copy's gradient wins where windows share a pixel\n"
    "        dx = flat[1:].reshape(self.x_shape)")
DIAGNOSED = [
    # conv2d: a missing term (overlapping copies assigned, not added), a transpose, a wrong axis
    ("conv2d", "dx = col2im(dcols, self.x_shape, KH, KW, s, p)", CONV_SCATTER, "dx",
     "wrong only where windows share a pixel"),
    ("conv2d", "dw = (dy2 @ self.cols.T).reshape(self.w.shape)",
     "dw = (self.cols @ dy2.T).reshape(self.w.shape)", "dw", "transposed before a reshape"),
    ("conv2d", "db = dy2.sum(axis=1)", "db = dy2.sum(axis=0)", "db",
     "sum over the one axis it should keep"),
    # batchnorm: a missing term, a transpose, a wrong axis, a missing gamma
    ("batchnorm", "- self.x_hat * (dx_hat * self.x_hat).sum(axis=self.axes, keepdims=True)", "",
     "dx", "the path through the variance is missing"),
    ("batchnorm", "- dx_hat.sum(axis=self.axes, keepdims=True)", "", "dx",
     "the path through the mean is missing"),
    ("batchnorm", "return dx, dgamma, dbeta", "return dx.swapaxes(0, 1), dgamma, dbeta", "dx",
     "axes are in the wrong order"),
    ("batchnorm", "dbeta = dy.sum(axis=self.axes)", "dbeta = dy.sum(axis=0)", "dbeta",
     "a wrong axis"),
    ("batchnorm", "dx_hat = dy * self.gamma", "dx_hat = dy", "dx", "gamma is missing"),
    ("batchnorm", "dgamma = (dy * self.x_hat).sum(axis=self.axes)",
     "dgamma = (dy * self.x_hat).sum(axis=self.axes) * 2", "dgamma", "times 2 everywhere"),
    # batchnorm in evaluation mode (the training cases pass): the training formula kept
    ("batchnorm", "if not self.training:", "if False:", "dx",
     "the training-mode formula in evaluation mode"),
    ("linear", "dw = dy.T @ self.x ", "dw = self.x.T @ dy ", "dw", "axes are in the wrong order"),
    ("relu", "return dy * self.mask", "return -dy * self.mask", "dx", "sign is flipped"),
]


@pytest.mark.parametrize("name, old, new, gradient, words", DIAGNOSED)
def test_the_likely_mistake_is_named(tmp_path, name, old, new, gradient, words):
    passed, report = grade(name, _broken(tmp_path, name, old, new))
    assert not passed
    assert f"  {gradient} " in report and "WRONG" in report, report
    assert "likely: " in report and words in report, report


def test_every_gradient_is_graded_when_one_has_the_wrong_shape(tmp_path):
    # dbeta summed over N only: (C, H, W) instead of (C,) in the first 4-D case, which is case 2
    passed, report = grade("batchnorm", _broken(tmp_path, "batchnorm",
                                                "dbeta = dy.sum(axis=self.axes)",
                                                "dbeta = dy.sum(axis=0)"))
    case2 = report[report.index("case 2 of"):]
    assert not passed
    assert "dx        ok" in case2 and "dgamma    ok" in case2, report
    assert "dbeta     WRONG: dbeta has shape (2, 3, 3), expected (2,)" in case2, report


def test_every_exercise_has_at_least_five_cases():
    for name, ex in EXERCISES.items():
        assert len(ex.cases) >= 5, name
        assert len({c.description for c in ex.cases}) == len(ex.cases), name


def test_hints_come_in_steps():
    for name, ex in EXERCISES.items():
        assert len(ex.hints) == 3 and all(h.strip() for h in ex.hints), name
        assert ex.hints[0].rstrip().endswith("?"), f"{name}: the first hint is a question"
    lines = []
    check("conv2d", reference_file("conv2d"), say=lines.append, hint=2)
    report = "\n".join(lines)
    assert "hint 1 of 3:" in report and "hint 2 of 3:" in report
    assert "hint 3 of 3" not in report and "--hint 3" in report
    result = run_grader("check", "batchnorm", "--file", str(template_file("batchnorm")),
                        "--hint", "3")
    assert "hint 3 of 3:" in result.stdout and "inv_std / m" in result.stdout


def test_at_least_five_cases_per_exercise_with_odd_shapes_and_stride_two():
    for name, ex in EXERCISES.items():
        assert len(ex.cases) >= (3 if name == "residual" else 5), name
    conv = [c.settings for c in EXERCISES["conv2d"].cases]
    assert any(c["stride"] == 2 for c in conv) and any(c["padding"] > 1 for c in conv)


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
    assert "case 1 of 5" in report and "case 2 of 5" in report and "dx        WRONG" in report
    assert "wrong only where windows share a pixel" in report
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
