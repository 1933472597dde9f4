"""Every lesson runs top to bottom in quick mode, as a learner would run it, and exits 0.

A lesson asserts what it prints, so this is a test of the lesson's claims as well as of the code
it uses. Each runs in its own process (`python lessons/NN_topic.py --out TMP`), writing its
figures to a temporary folder. Lessons 8-10 are the slow ones: their test ids end in "-slow",
so `pytest -k "not slow"` leaves them out.
"""

import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
FILES = sorted(LESSONS.glob("[0-9][0-9]_*.py"))
SLOW = {"08", "09", "10"}


def lesson_id(path):
    return path.stem + ("-slow" if path.stem[:2] in SLOW else "")


def test_lessons_are_numbered_one_to_eleven():
    assert [int(p.name[:2]) for p in FILES] == list(range(1, 12))


@pytest.mark.parametrize("path", FILES, ids=lesson_id)
def test_lesson_runs_in_quick_mode(path, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    # One thread each for BLAS and numba, unless asked otherwise: on a busy 2-core machine idle
    # worker threads spin and make a lesson several times slower (conftest.py sets the first).
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("NUMBA_NUM_THREADS", "1")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(path), "--out", str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{path.name} failed after {seconds:.0f} s:\n{output}"
    print(f"{path.name}: {seconds:.1f} s")
    # Each figure a lesson announces was written.
    for figure in re.findall(r"figure saved: (\S+\.png)", result.stdout):
        assert Path(figure).is_file() and Path(figure).parent == tmp_path


@pytest.mark.parametrize("path", FILES, ids=lesson_id)
def test_lesson_is_a_jupytext_percent_notebook(path):
    text = path.read_text()
    assert "format_name: percent" in text.split("# %%", 1)[0], "jupytext header missing"
    cells = re.split(r"^# %%.*$", text, flags=re.MULTILINE)[1:]
    markdown = re.findall(r"^# %% \[markdown\]$", text, flags=re.MULTILINE)
    assert len(markdown) >= 3 and len(cells) - len(markdown) >= 3
    assert "sys.path" not in text  # lessons import the installed package
    assert "lesson.parse(parser)" in text  # its flags checked; the kernel's ignored in Jupyter


def test_lesson_flags_ignore_what_jupyter_passes(monkeypatch, tmp_path):
    """In a notebook, the kernel's flags (-f kernel.json) are not the lesson's: defaults."""
    from minires import lesson

    kernel = types.SimpleNamespace(initialized=lambda: True)  # a kernel that has started
    monkeypatch.setitem(sys.modules, "ipykernel.kernelapp", types.SimpleNamespace(
        IPKernelApp=kernel))
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # so that numba's threads stay as they are
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "/run/kernel.json"])
    monkeypatch.chdir(tmp_path)
    args, out = lesson.parse(lesson.parser("Lesson 0", full_help="nothing"))
    assert args.full is False and args.out is None
    assert out == tmp_path / "out" and out.is_dir()


def test_an_unknown_lesson_flag_is_an_error(monkeypatch, capsys, tmp_path):
    """A mistyped flag (`--iter 5` for `--iters 5`) stops the script instead of being dropped."""
    from minires import lesson

    parser = lesson.parser("Lesson 0", full_help="nothing")
    parser.add_argument("--iters", type=int, default=40)
    monkeypatch.setattr(sys, "argv", ["lesson.py", "--iter", "5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        lesson.parse(parser)
    assert stop.value.code == 2
    assert "unrecognized arguments: --iter 5" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["lesson.py", "--iters", "5", "--out", str(tmp_path)])
    args, out = lesson.parse(parser)
    assert args.iters == 5 and out == tmp_path


def test_quick_mode_on_a_small_machine_restarts_with_one_thread(monkeypatch, capsys, tmp_path):
    from minires import lesson

    calls = []
    monkeypatch.setattr(lesson.os, "execve", lambda *a: calls.append(a))
    monkeypatch.setattr(lesson.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")  # the user's choice is kept
    monkeypatch.setattr(sys, "argv", ["lesson.py", "--out", str(tmp_path)])
    monkeypatch.setattr(sys, "orig_argv", ["python", "lesson.py", "--out", str(tmp_path)])
    lesson.parse(lesson.parser("Lesson 0", full_help="nothing"))
    (executable, argv, env), = calls
    assert executable == sys.executable and argv == [sys.executable, "lesson.py", "--out",
                                                     str(tmp_path)]
    assert env["OPENBLAS_NUM_THREADS"] == "1" and env["NUMBA_NUM_THREADS"] == "2"
    assert "restarting with OPENBLAS_NUM_THREADS=1" in capsys.readouterr().out

    calls.clear()  # --full, a big machine, or both variables set: no restart
    monkeypatch.setattr(sys, "argv", ["lesson.py", "--full", "--out", str(tmp_path)])
    lesson.parse(lesson.parser("Lesson 0", full_help="nothing"))
    monkeypatch.setattr(sys, "argv", ["lesson.py", "--out", str(tmp_path)])
    monkeypatch.setattr(lesson.os, "cpu_count", lambda: 64)
    lesson.parse(lesson.parser("Lesson 0", full_help="nothing"))
    monkeypatch.setattr(lesson.os, "cpu_count", lambda: 2)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    lesson.parse(lesson.parser("Lesson 0", full_help="nothing"))
    assert calls == []


def test_the_first_compile_is_announced(monkeypatch, capsys, tmp_path):
    from minires import lesson

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))  # an empty cache: nothing compiled
    missing = lesson.uncompiled_kernels()
    assert any(name.startswith("conv.") for name in missing)
    lesson.announce_first_compile()
    assert f"{len(missing)} of minires's numba kernels are not compiled yet" in (
        capsys.readouterr().out)
    (tmp_path / "numba_0").mkdir()
    for name in missing:  # what numba writes once each kernel has been compiled
        (tmp_path / "numba_0" / f"{name}.py311.nbi").write_bytes(b"")
    assert lesson.uncompiled_kernels() == []
    lesson.announce_first_compile()
    assert capsys.readouterr().out == ""
