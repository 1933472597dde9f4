"""The command line never loses a run and answers every mistake with one line.

Runs `minires.__main__.main` in this process on the embedded sample (ResNet-8, a few
iterations), so each call takes a second or two; test_train.py runs it as a subprocess.
"""

import json
import pickle

import numpy as np
import pytest

from minires import __main__ as cli
from minires import train as training

SMALL = ["--model", "resnet8", "--data", "sample", "--batch", "32", "--no-progress"]


def main(capsys, *args):
    """(exit status, stdout, stderr) of `python -m minires *args`."""
    status = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def error_line(capsys, *args, status=2):
    """The one line that a failing command prints, after checking its exit status."""
    code, out, err = main(capsys, *args)
    assert code == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def iteration_in(folder):
    return training.load_checkpoint(folder / training.CHECKPOINT)["iteration"]


@pytest.mark.parametrize("option, value, expect", [
    ("--iters", 0, "--iters must be a whole number > 0, got 0"),
    ("--iters", -5, "--iters must be a whole number > 0, got -5"),
    ("--epochs", 0, "--epochs must be a whole number > 0, got 0"),
    ("--lr", "nan", "--lr must be a finite number > 0, got nan"),
    ("--lr", "-0.1", "--lr must be a finite number > 0"),
    ("--lr", "inf", "--lr must be a finite number > 0"),
    ("--batch", 0, "--batch must be a whole number > 0"),
    ("--batch", 5000, "--batch 5000 is larger than the training set (1000 images)"),
    ("--model", "resnet21", "N = 6n+2"),
    ("--seed", -1, "--seed must be a whole number >= 0, got -1"),
])
def test_options_out_of_range_get_one_line(tmp_path, capsys, option, value, expect):
    length = [] if option in ("--iters", "--epochs") else ["--iters", 2]
    line = error_line(capsys, "train", *SMALL, *length, option, value, "--out", tmp_path / "run")
    assert line.startswith("minires: error: ") and expect in line
    assert not (tmp_path / "run" / training.CHECKPOINT).exists()


def test_a_run_is_never_overwritten_or_resumed_with_other_options(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(capsys, "train", *SMALL, "--iters", 4, "--out", run)[0] == 0
    before = (run / training.CHECKPOINT).read_bytes()

    line = error_line(capsys, "train", *SMALL, "--iters", 2, "--out", run)
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    line = error_line(capsys, "train", *SMALL, "--out", run, "--resume", "--batch", 16,
                      "--lr", 0.05)
    assert "--batch: 32 in the checkpoint, 16 now" in line and "--lr: 0.1 in the checkpoint" in line
    assert (run / training.CHECKPOINT).read_bytes() == before  # nothing was touched

    # --resume alone continues with the run's own options; a longer run must be asked for.
    assert "--iters: 4 in the checkpoint, 8 now" in error_line(
        capsys, "train", "--out", run, "--resume", "--iters", 8, "--no-progress")
    assert main(capsys, "train", "--out", run, "--resume", "--iters", 8, "--change-config",
                "--no-progress")[0] == 0
    assert iteration_in(run) == 8
    assert main(capsys, "train", *SMALL, "--iters", 2, "--out", run, "--overwrite")[0] == 0
    assert iteration_in(run) == 2


def test_stale_temporary_files_are_removed_on_the_next_start(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(capsys, "train", *SMALL, "--iters", 2, "--out", run)[0] == 0
    (run / ".checkpoint-k1lled.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")
    assert main(capsys, "train", "--out", run, "--resume", "--no-progress")[0] == 0
    assert not (run / ".checkpoint-k1lled.tmp").exists()


def test_a_malicious_checkpoint_runs_nothing_through_eval_or_resume(tmp_path, capsys):
    marker = tmp_path / "marker"

    class WritesMarker:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    run = tmp_path / "run"
    run.mkdir()
    (run / training.CHECKPOINT).write_bytes(pickle.dumps({"config": WritesMarker()}))
    line = error_line(capsys, "eval", "--checkpoint", run / training.CHECKPOINT)
    assert f"{run / training.CHECKPOINT}: not a minires checkpoint: a pickle" in line
    line = error_line(capsys, "train", *SMALL, "--out", run, "--resume")
    assert "a pickle" in line
    assert not marker.exists()
    assert "no such file" in error_line(capsys, "eval", "--checkpoint", tmp_path / "nowhere.npz",
                                        ).lower()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow that makes it diverge
def test_divergence_says_truly_that_no_checkpoint_was_written(tmp_path, capsys):
    line = error_line(capsys, "train", *SMALL, "--iters", 4, "--lr", 1e30, "--out",
                      tmp_path / "run")
    assert "no checkpoint was written" in line and "try a lower --lr" in line
    assert not (tmp_path / "run" / training.CHECKPOINT).exists()


def test_ctrl_c_says_where_the_checkpoint_is(tmp_path, capsys, monkeypatch):
    calls = []

    def interrupt_in_the_second_epoch(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "write_metrics", interrupt_in_the_second_epoch)
    run = tmp_path / "run"
    line = error_line(capsys, "train", *SMALL, "--epochs", 3, "--out", run, status=1)
    assert line == (f"minires: interrupted at iteration 62; the checkpoint of iteration 62 is "
                    f"kept at {run / training.CHECKPOINT}; continue with --resume")
    assert iteration_in(run) == 62


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    args = ["train", *SMALL, "--iters", "0", "--out", str(tmp_path)]
    with pytest.raises(training.ConfigError):
        cli.main(args + ["--debug"])
    monkeypatch.setenv("MINIRES_DEBUG", "1")
    with pytest.raises(training.ConfigError):
        cli.main(args)


def test_demo_runs_again_but_keeps_another_run(tmp_path, capsys):
    assert main(capsys, "demo", "--epochs", 1, "--out", tmp_path / "demo")[0] == 0
    assert main(capsys, "demo", "--epochs", 1, "--out", tmp_path / "demo")[0] == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["iterations"] == 15 and np.isfinite(summary["test_accuracy"])
    line = error_line(capsys, "demo", "--epochs", 2, "--out", tmp_path / "demo")
    assert "already holds a run" in line
