"""The grader: runs a learner's backward() and says what is wrong with it, in words.

For each case of an exercise it compares forward with the reference solution, calls backward
with a random upstream gradient, checks what comes back (how many gradients, their shapes), compares
each gradient with the reference solution's, and finally runs minires.gradcheck on it: central
differences in float64, the same test every op of the engine passes (lesson 2). Every gradient is
graded, even when another has the wrong shape, and a wrong one gets the likely mistake named
(mistakes.py). The hints come in steps: a question first, the formula last (--hint 1, 2, 3).
"""

import contextlib
import importlib.util
import io
import traceback
from pathlib import Path

import numpy as np

import minires

from . import solutions
from .catalog import EXERCISES
from .mistakes import diagnose

TEMPLATES = Path("lessons") / "exercises"


def default_file(name):
    """The learner's file: lessons/exercises/<name>.py of the checkout minires was installed
    from, else of the current folder."""
    checkout = Path(minires.__file__).resolve().parent.parent / TEMPLATES / f"{name}.py"
    here = Path.cwd() / TEMPLATES / f"{name}.py"
    return checkout if checkout.is_file() or not here.is_file() else here


def reference_file(name):
    return Path(solutions.__file__).parent / f"{name}.py"


def template_file(name):
    """The pristine template, as shipped: minires/exercises/templates/<name>.py. The learner
    edits the copy in lessons/exercises/; the tests grade this one, so that work in progress
    there never breaks them."""
    return Path(__file__).resolve().parent / "templates" / f"{name}.py"


class _Failed(Exception):
    """Stops a check; the message says what is wrong."""


def _load(path, name):
    """The learner's file as a module; _Failed when it does not run."""
    spec = importlib.util.spec_from_file_location(f"_minires_exercise_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise _Failed(f"{path.name} has a syntax error at line {e.lineno}: {e.msg}") from None
    except Exception as e:
        raise _Failed(f"{path.name} fails while it is imported: {_describe(e, path)}") from None
    return module


def _describe(error, path):
    """'ValueError: message (line 12 of conv2d.py: `dx = ...`)': the error, where in path."""
    frames = traceback.extract_tb(error.__traceback__)
    mine = [f for f in frames if Path(f.filename).resolve() == Path(path).resolve()]
    where = ""
    if mine:
        frame = mine[-1]
        where = f" (line {frame.lineno} of {Path(path).name}: `{(frame.line or '').strip()}`)"
    return f"{type(error).__name__}: {error}{where}"


def _compare(actual, expected, rtol=1e-5, atol=1e-7):
    """None when actual matches expected, else where and by how much it differs."""
    error = np.abs(actual - expected) - (atol + rtol * np.abs(expected))
    bad = ~(error <= 0)  # NaN counts as wrong
    if not bad.any():
        return None
    worst = np.unravel_index(np.argmax(np.where(np.isnan(error), np.inf, error)), expected.shape)
    return (f"{int(bad.sum())} of {expected.size} elements differ from the reference; worst at "
            f"index {tuple(int(i) for i in worst)}: yours {actual[worst]:.6g}, expected "
            f"{expected[worst]:.6g}")


def _as_gradient(value, name, shape):
    """value as a float array of shape, or _Failed saying what backward returned instead."""
    if value is None:
        raise _Failed(f"{name} is None; backward must return an array of shape {shape}")
    if isinstance(value, minires.Tensor):
        raise _Failed(f"{name} is a Tensor; backward works on raw arrays (return its .data, or "
                      "better, compute with the arrays forward saved)")
    value = np.asarray(value)
    if value.dtype.kind not in "fiu":
        raise _Failed(f"{name} has dtype {value.dtype}; expected numbers")
    if value.shape != shape:
        raise _Failed(f"{name} has shape {value.shape}, expected {shape} (the shape of its input)")
    return value.astype(np.float64)


def _returned(result, names, what):
    """The tuple backward returned, checked: one value per input (each is checked on its own)."""
    if isinstance(result, list):
        raise _Failed(f"{what} returned a list; return a tuple ({', '.join(names)})")
    result = result if isinstance(result, tuple) else (result,)
    if len(result) != len(names):
        raise _Failed(f"{what} returned {len(result)} value(s); expected {len(names)}: "
                      f"({', '.join(names)})")
    return result


def _gradcheck(cls, settings, inputs, i):
    """gradcheck of input i alone; None when it passes, else its report."""
    tensors = [minires.Tensor(x.copy(), requires_grad=(j == i)) for j, x in enumerate(inputs)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        passed = minires.gradcheck(lambda *ts: cls(**settings)(*ts), tensors,
                                   raise_exception=False)
    if passed:
        return None
    lines = [line.strip() for line in printed.getvalue().splitlines()[1:]]
    # "input 0 (shape (4, 5)): 3 of 20 elements differ; ..." -> "3 of 20 elements differ; ..."
    return "; ".join(line.split("): ", 1)[-1] for line in lines)


def _check_case(ex, case, cls, ref_cls, path, say):
    """Checks one case, printing a line per step; _Failed at the first wrong step."""
    inputs = case.inputs
    shapes = [x.shape for x in inputs]
    signature = ", ".join(f"{n} {s}" for n, s in zip(ex.grads, shapes))
    fn, ref = cls(**case.settings), ref_cls(**case.settings)
    y_ref = ref.forward(*[x.copy() for x in inputs])
    try:
        y = fn.forward(*[x.copy() for x in inputs])
    except Exception as e:
        raise _Failed(f"forward raised {_describe(e, path)}; forward was given with the "
                      "exercise: compare it with a fresh copy of the template") from None
    if np.shape(y) != y_ref.shape:
        problem = f"output has shape {np.shape(y)}, expected {y_ref.shape}"
    else:
        problem = _compare(np.asarray(y, dtype=np.float64), y_ref)
    if problem:
        raise _Failed(f"forward: {problem}. forward was given with the exercise: did it change?")
    say("  forward   ok")

    # A random upstream gradient, the one gradcheck (seed 0) uses: the numbers below agree.
    dy = np.random.default_rng(0).standard_normal(y_ref.shape)
    what = f"{ex.cls}.backward"
    try:
        result = fn.backward(dy.copy())
    except NotImplementedError as e:
        raise _Failed(f"backward is not written yet: {what} in {path.name} raised "
                      f"NotImplementedError ({e}). It must return the gradients "
                      f"({signature}): write it, then run the check again.") from None
    except Exception as e:
        raise _Failed(f"{what} raised {_describe(e, path)}") from None
    if result is None:
        raise _Failed(f"backward is not written yet: {what} in {path.name} returned None. "
                      f"It must return the gradients ({signature}).")
    result = _returned(result, ex.grads, what)
    expected = ref.backward(dy.copy())
    expected = expected if isinstance(expected, tuple) else (expected,)

    wrong = []
    for i, (name, value) in enumerate(zip(ex.grads, result)):
        try:
            grad = _as_gradient(value, name, shapes[i])
        except _Failed as e:
            wrong.append(name)
            say(f"  {name:<9} WRONG: {e}")
            if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
                likely = diagnose(ex.name, case, dy, name, value.astype(np.float64), expected[i])
                if likely:
                    say(f"  {'':<9} likely: {likely}")
            continue
        problem = _compare(grad, expected[i])
        try:
            numeric = _gradcheck(cls, case.settings, inputs, i)
        except Exception as e:
            numeric = f"backward raised {_describe(e, path)} when called through the graph"
        if problem is None and numeric is None:
            say(f"  {name:<9} ok (matches the reference and the numerical gradient)")
            continue
        wrong.append(name)
        say(f"  {name:<9} WRONG: {problem or 'matches the reference'}")
        say(f"  {'':<9} gradcheck: {numeric or 'passed'}")
        likely = diagnose(ex.name, case, dy, name, grad, expected[i]) if problem else None
        if likely:
            say(f"  {'':<9} likely: {likely}")
    if wrong:
        raise _Failed(f"{', '.join(wrong)} wrong")


def hints(name, level, say=print):
    """Prints the hints of exercise name up to level (1: a question ... 3: the formula)."""
    ex = EXERCISES[name]
    level = max(1, min(level, len(ex.hints)))
    for k in range(level):
        say(f"hint {k + 1} of {len(ex.hints)}: {ex.hints[k]}")
    if level < len(ex.hints):
        say(f"(stuck? `python -m minires.exercises check {name} --hint {level + 1}`)")


def check(name, path=None, say=print, hint=0):
    """Grade the learner's file for exercise name (default: the template); True when correct.
    hint > 0 prints the hints up to that level after the check; a failed check prints hint 1."""
    if name not in EXERCISES:
        say(f"no exercise named {name!r}; the exercises are: {', '.join(EXERCISES)}")
        return False
    ex = EXERCISES[name]
    path = Path(path) if path is not None else default_file(name)
    say(f"Checking {name} ({ex.summary}; {ex.lesson}) in {path}")
    try:
        if not path.is_file():
            raise _Failed(f"{path} does not exist; pass the file with --file PATH")
        module = _load(path, name)
        cls = getattr(module, ex.cls, None)
        if cls is None:
            raise _Failed(f"{path.name} defines no class {ex.cls}; keep the template's names")
        ref_cls = getattr(_load(reference_file(name), f"{name}_reference"), ex.cls)
        for k, case in enumerate(ex.cases, 1):
            say(f"case {k} of {len(ex.cases)}: {case.description}")
            _check_case(ex, case, cls, ref_cls, path, say)
    except _Failed as e:
        say(f"FAIL {name}: {e}")
        if "not written yet" in str(e):
            say(f"{ex.lesson.capitalize()} explains the op; once backward returns something, "
                "this check says which gradient is wrong, where, and gives a hint.")
            if hint:
                hints(name, hint, say)
        else:
            hints(name, max(hint, 1), say)
        return False
    say(f"PASS {name}: backward is right on every case ({len(ex.cases)}).")
    if hint:
        hints(name, hint, say)
    return True
