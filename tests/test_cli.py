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
    assert main(capsys, "train", *SMALL, "--iters", 4, "--seed", 3, "--out", run)[0] == 0
    before = (run / training.CHECKPOINT).read_bytes()

    line = error_line(capsys, "train", *SMALL, "--iters", 2, "--out", run)
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    line = error_line(capsys, "train", *SMALL, "--out", run, "--resume", "--batch", 16,
                      "--lr", 0.05)
    assert "--batch: 32 in the checkpoint, 16 now" in line and "--lr: 0.1 in the checkpoint" in line
    line = error_line(capsys, "train", "--out", run, "--resume", "--model", "plain8", "--data",
                      tmp_path / "elsewhere", "--seed", 0, "--schedule", "cosine")
    for expect in ("--model: 'resnet8' in the checkpoint, 'plain8' now", "--data: 'sample'",
                   "--seed: 3 in the checkpoint, 0 now", "--schedule: 'paper'"):
        assert expect in line
    assert "does not shorten it to 2" in error_line(capsys, "train", "--out", run, "--resume",
                                                    "--iters", 2)
    assert (run / training.CHECKPOINT).read_bytes() == before  # nothing was touched

    assert main(capsys, "train", *SMALL, "--iters", 2, "--out", run, "--overwrite")[0] == 0
    assert iteration_in(run) == 2


def test_resume_takes_model_data_batch_schedule_and_seed_from_the_checkpoint(tmp_path, capsys,
                                                                             monkeypatch):
    options = ["--model", "resnet8", "--shortcut", "B", "--data", "sample", "--batch", 48,
               "--lr", 0.05, "--schedule", "cosine", "--seed", 7, "--epochs", 2, "--no-progress"]
    assert main(capsys, "train", *options, "--out", tmp_path / "straight")[0] == 0

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "write_metrics", interrupt)
    assert main(capsys, "train", *options, "--out", tmp_path / "run")[0] == 1
    monkeypatch.undo()
    # No --data: were it not the checkpoint's, this would look for CIFAR-10 and fail.
    status, out, err = main(capsys, "train", "--out", tmp_path / "run", "--resume",
                            "--no-progress")
    assert status == 0, err
    assert f"resuming {tmp_path / 'run'} at iteration 20 of 40" in out
    straight = training.load_checkpoint(tmp_path / "straight" / training.CHECKPOINT)
    resumed = training.load_checkpoint(tmp_path / "run" / training.CHECKPOINT)
    assert {**resumed["config"], "out": None} == {**straight["config"], "out": None}
    assert resumed["steps"] == straight["steps"]  # the same lr, loss and error at every step
    for key, value in straight["model"].items():
        np.testing.assert_array_equal(resumed["model"][key], value, err_msg=key)


def learning_rates(folder):
    return [round(step["lr"], 6) for step in
            training.load_checkpoint(folder / training.CHECKPOINT)["steps"]]


def test_an_extension_keeps_the_paper_schedules_drops_where_they_were(tmp_path, capsys):
    first = [0.1, 0.1, 0.01, 0.001]  # a run of 4: drops at 50% and 75%, iterations 2 and 3
    for name in ("kept", "stretched"):
        assert main(capsys, "train", *SMALL, "--iters", 4, "--out", tmp_path / name)[0] == 0
        assert learning_rates(tmp_path / name) == first

    status, out, _ = main(capsys, "train", "--out", tmp_path / "kept", "--resume", "--iters", 8,
                          "--no-progress")
    assert status == 0
    assert ("at iteration 4 of 8 (extending the original 4: the learning rate keeps its drops at "
            "iterations 2 and 3 and trains on at 0.001)") in out
    assert learning_rates(tmp_path / "kept") == first + [0.001] * 4
    # Extending again (by epochs now: 31 iterations each) still keeps the original drops.
    assert main(capsys, "train", "--out", tmp_path / "kept", "--resume", "--epochs", 1,
                "--no-progress")[0] == 0
    assert learning_rates(tmp_path / "kept") == first + [0.001] * 27
    saved = training.saved_config(tmp_path / "kept")
    assert (saved["epochs"], saved["iters"], saved["schedule_iters"]) == (1, None, 4)

    # --change-config lays the schedule over the new length instead: drops at 4 and 6.
    assert main(capsys, "train", "--out", tmp_path / "stretched", "--resume", "--iters", 8,
                "--change-config", "--no-progress")[0] == 0
    assert learning_rates(tmp_path / "stretched") == first + [0.01, 0.01, 0.001, 0.001]
    assert training.saved_config(tmp_path / "stretched")["schedule_iters"] is None


def test_a_cosine_run_is_not_extended_without_change_config(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(capsys, "train", *SMALL, "--iters", 4, "--schedule", "cosine", "--out", run)[0] == 0
    line = error_line(capsys, "train", "--out", run, "--resume", "--iters", 8)
    assert "a cosine schedule cannot be extended" in line and "--change-config" in line
    assert main(capsys, "train", "--out", run, "--resume", "--iters", 8, "--change-config",
                "--no-progress")[0] == 0
    rates = learning_rates(run)
    assert rates[4] > rates[3] and rates[-1] < rates[4]  # a new cosine over 8 iterations


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
    # A demo saved before TrainConfig had schedule_iters is the same demo.
    path = tmp_path / "demo" / training.CHECKPOINT
    state = training.load_checkpoint(path)
    del state["config"]["schedule_iters"]
    training.save_checkpoint(path, state)
    assert main(capsys, "demo", "--epochs", 1, "--out", tmp_path / "demo")[0] == 0
    line = error_line(capsys, "demo", "--epochs", 2, "--out", tmp_path / "demo")
    assert "already holds a run" in line


# -- a CLI that explains itself -------------------------------------------------------------------

def subcommands():
    parser = cli.build_parser()
    choices = next(a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction))
    return parser, choices.choices


def test_every_option_has_help_and_those_with_a_value_show_their_default():
    parser, commands = subcommands()
    assert set(commands) == {"train", "eval", "demo"}
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
            takes_value = action.nargs != 0 and not action.required
            if takes_value:
                assert "(default: " in action.help, f"{name} {action.option_strings}"
        assert "(default: " in command.format_help()
    train_help = " ".join(commands["train"].format_help().split())
    for shown in ("(default: resnet20)", "(default: 128)", "(default: 0.1)", "(default: 0)",
                  "(default: runs/run)", "(default: paper)", "(default: on for depth 110",
                  "--no-warmup", "ResNet-110", "extend"):
        assert shown in train_help
    assert "PyTorch" in " ".join(commands["eval"].format_help().split())


def test_version(capsys):
    import minires

    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"minires {minires.__version__}"


def test_the_minires_console_script_is_declared_and_points_at_main():
    import configparser
    import importlib
    from pathlib import Path

    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    scripts = setup["options.entry_points"]["console_scripts"].split("\n")
    (target,) = [line.split("=")[1].strip() for line in scripts if line.startswith("minires")]
    module, function = target.split(":")
    assert getattr(importlib.import_module(module), function) is cli.main


@pytest.mark.parametrize("flag, depth, expect", [
    ([], 110, True), (["--no-warmup"], 110, False), ([], 20, False), (["--warmup"], 20, True)])
def test_the_warmup_flag_turns_resnet110s_warmup_on_and_off(tmp_path, flag, depth, expect):
    args = cli.build_parser().parse_args(["train", "--model", f"resnet{depth}", "--data",
                                          "sample", "--out", str(tmp_path), *flag])
    run = training.Run(cli.train_config(args))
    assert run.schedule.warming_up is expect
    assert run.schedule.lr(0) == pytest.approx(0.01 if expect else 0.1)


def test_cuda_graph_trains_the_same_steps(tmp_path, capsys, monkeypatch):
    """--cuda-graph on the CPU runs GraphedStep without capture (tests/test_cuda_backend.py runs
    it under the emulated GPU): the run's losses are those of a run without it, learning-rate
    drops included (--iters 4: the paper schedule drops at iterations 2 and 3)."""
    from minires.backends.cuda import graph

    replays = []
    real_replay = graph.GraphedStep._replay
    monkeypatch.setattr(graph.GraphedStep, "_replay",
                        lambda self: (replays.append(1), real_replay(self)))
    steps = {}
    for flag in ([], ["--cuda-graph"]):
        out = tmp_path / ("graph" if flag else "eager")
        assert main(capsys, "train", *SMALL, "--iters", 4, "--out", out, *flag)[0] == 0
        steps[bool(flag)] = training.load_checkpoint(out / training.CHECKPOINT)["steps"]
    assert len(replays) == 3  # iterations 2-4; the first runs eagerly
    assert [s["lr"] for s in steps[True]] == [s["lr"] for s in steps[False]]
    assert len({s["lr"] for s in steps[True]}) == 3
    np.testing.assert_allclose([s["loss"] for s in steps[True]],
                               [s["loss"] for s in steps[False]], rtol=1e-6)
