"""The training loop and the CLI: exact resume, divergence stop, checkpoints, a real short run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minires
from minires import checkpoint, cifar10, report
from minires import train as training

SHARED_CIFAR = Path(os.environ.get(
    "MINIRES_CIFAR10",
    Path(__file__).resolve().parents[1].parent / "shared/datasets/cifar-10-python.tar.gz"))


@pytest.fixture
def tiny_data(monkeypatch):
    """64 training and 32 test images of the embedded sample: 4 iterations per epoch at batch 16."""
    x_train, y_train, x_test, y_test = cifar10.load_sample()
    subset = (x_train[:64], y_train[:64], x_test[:32], y_test[:32])
    monkeypatch.setattr(training, "load_data", lambda config: subset)


def tiny_config(out, **kw):
    settings = dict(model="resnet8", iters=8, batch=16, lr=0.05, data="sample", out=str(out))
    settings.update(kw)
    return training.TrainConfig(**settings)


def weights(path):
    return training.load_checkpoint(path)["model"]


def test_interrupted_and_resumed_run_ends_bit_for_bit_equal(tmp_path, tiny_data):
    straight = training.train(tiny_config(tmp_path / "a"), progress=False)
    assert straight["iterations"] == 8 and straight["epochs"] == 2

    def interrupt_after_first_epoch(run):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(tiny_config(tmp_path / "b"), progress=False,
                       on_epoch_end=interrupt_after_first_epoch)
    assert training.load_checkpoint(tmp_path / "b/checkpoint.npz")["iteration"] == 4
    training.train(tiny_config(tmp_path / "b"), resume=True, progress=False)

    a, b = weights(tmp_path / "a/checkpoint.npz"), weights(tmp_path / "b/checkpoint.npz")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # ...and the metrics and momentum buffers agree too.
    state_a = training.load_checkpoint(tmp_path / "a/checkpoint.npz")
    state_b = training.load_checkpoint(tmp_path / "b/checkpoint.npz")
    assert state_a["history"][-1]["train_loss"] == state_b["history"][-1]["train_loss"]


def test_an_extension_is_the_run_whose_schedule_was_laid_over_the_original_length(tmp_path,
                                                                                     tiny_data):
    training.train(tiny_config(tmp_path / "a", iters=4), progress=False)
    training.train(tiny_config(tmp_path / "a", iters=12), resume=True, progress=False)
    assert training.saved_config(tmp_path / "a")["schedule_iters"] == 4
    # The same run, started with its schedule laid over 4 iterations, ends bit for bit equal.
    training.train(tiny_config(tmp_path / "b", iters=12, schedule_iters=4), progress=False)
    a, b = weights(tmp_path / "a/checkpoint.npz"), weights(tmp_path / "b/checkpoint.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # A length given as epochs (4 iterations each here) that equals the run's is no change.
    training.train(tiny_config(tmp_path / "a", iters=None, epochs=3, schedule_iters=None),
                   resume=True, progress=False)
    assert training.saved_config(tmp_path / "a")["iters"] == 12
    with pytest.raises(training.ConfigError, match="does not shorten it to 8"):
        training.train(tiny_config(tmp_path / "a", iters=None, epochs=2, schedule_iters=None),
                       resume=True, progress=False)


def test_outputs_of_a_run(tmp_path, tiny_data):
    summary = training.train(tiny_config(tmp_path, schedule="cosine"), progress=False)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,iteration,lr,train_loss,train_error,test_loss,test_error")
    assert len(rows) == 3
    steps = (tmp_path / "steps.csv").read_text().splitlines()
    assert steps[0] == "iteration,lr,loss,error" and len(steps) == 9
    np.testing.assert_allclose(training.smooth([1.0, 3.0, 5.0, 7.0], 2), [1, 2, 4, 6])
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["iterations"] == 8 and 0 <= summary["test_accuracy"] <= 1
    for name in ("test_accuracy", "train_accuracy", "images_per_s"):
        assert len(repr(saved[name])) <= 8, saved[name]  # 0.41, not 0.41000000000000003
    assert saved["test_accuracy"] == round(1 - training.load_checkpoint(
        tmp_path / "checkpoint.npz")["history"][-1]["test_error"], 6)


def test_the_plot_says_the_recipe_and_marks_the_learning_rate_drops(tmp_path, tiny_data,
                                                                    monkeypatch):
    plotted = {}
    monkeypatch.setattr(training, "plot_curves", lambda history, steps, path, title:
                        plotted.update(steps=steps, title=title) or path)
    training.train(tiny_config(tmp_path, iters=8, seed=5), progress=False)
    assert plotted["title"] == ("resnet8, shortcut A, batch 16, seed 5\n"
                                "SGD lr 0.05, paper schedule, 8 iterations")
    # Drops at 50% and 75%: the rates of iterations 5 and 7 (counted from 1) are new.
    assert report.lr_changes(plotted["steps"]) == [(5, pytest.approx(0.005)),
                                                            (7, pytest.approx(0.0005))]
    cosine = [{"iteration": i + 1, "lr": 0.5 * (1 + math.cos(math.pi * i / 50))}
              for i in range(50)]
    assert report.lr_changes(cosine) == []  # no drops to mark


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data,
                                                                  monkeypatch):
    real_cross_entropy = training.cross_entropy
    calls = {"train": 0}

    def poisoned_after_five_steps(logits, y):
        loss = real_cross_entropy(logits, y)
        if minires.function.is_grad_enabled():
            calls["train"] += 1
            if calls["train"] > 5:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(training, "cross_entropy", poisoned_after_five_steps)
    with pytest.raises(training.TrainingDiverged, match=r"nan at iteration 5 \(learning rate "
                                                        r"0.005\).*the checkpoint of iteration 4 "
                                                        r"is kept at .*checkpoint\.npz"):
        training.train(tiny_config(tmp_path), progress=False)
    kept = training.load_checkpoint(tmp_path / "checkpoint.npz")
    assert kept["iteration"] == 4
    assert all(np.isfinite(v).all() for v in kept["model"].values())


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"
    state = {key: 0 for key in checkpoint.RUN_KEYS} | {"model": {"w": np.arange(3)}}
    training.save_checkpoint(path, state)

    def savez_then_fail(f, **arrays):
        f.write(b"PK\x03\x04 the first bytes")
        raise OSError("disk full halfway")

    monkeypatch.setattr(checkpoint.np, "savez", savez_then_fail)
    with pytest.raises(OSError, match="disk full"):
        training.save_checkpoint(path, state | {"model": {"w": np.arange(4)}})
    np.testing.assert_array_equal(training.load_checkpoint(path)["model"]["w"], np.arange(3))
    assert os.listdir(tmp_path) == ["checkpoint.npz"]  # no temporary file left behind


def test_paper_schedule_scales_to_the_run_and_model_names():
    schedule = training.make_schedule("paper", 0.1, 64000)
    assert [schedule.lr(i) for i in (0, 31999, 32000, 48000)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001])
    assert training.make_schedule("paper", 0.1, 100).lr(75) == pytest.approx(0.001)
    extended = training.make_schedule("paper", 0.1, 128000, schedule_iters=64000)
    assert extended.milestones == (32000, 48000) and extended.lr(100000) == pytest.approx(0.001)
    assert training.parse_model_name("plain56") == ("plain", 56)
    assert training.parse_model_name("preact_resnet110") == ("preact_resnet", 110)
    with pytest.raises(ValueError, match="resnetN, plainN or preact_resnetN"):
        training.parse_model_name("vgg16")


@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason="the shared CIFAR-10 tarball is absent")
def test_short_run_on_real_cifar10_lowers_the_loss(tmp_path, monkeypatch):
    x_train, y_train, x_test, y_test = cifar10.load_cifar10(SHARED_CIFAR)  # a note on its md5
    subset = (x_train[:4096], y_train[:4096], x_test[:256], y_test[:256])
    monkeypatch.setattr(training, "load_data", lambda config: subset)
    run = training.Run(tiny_config(tmp_path, iters=60, batch=64, lr=0.1, schedule="cosine"))
    run.fit(progress=False)
    last = run.history[-1]
    assert last["iteration"] == 60
    # An untrained 10-way classifier has loss about log(10) = 2.30 and error about 0.9.
    assert last["test_loss"] < math.log(10) - 0.2
    assert last["test_error"] < 0.8


def run_cli(*args, cwd):
    done = subprocess.run([sys.executable, "-m", "minires", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_cli_train_eval_and_demo(tmp_path):
    out = run_cli("train", "--model", "resnet8", "--data", "sample", "--iters", "3", "--batch",
                  "32", "--out", "run", "--no-progress", cwd=tmp_path)
    assert "accuracy" in out and "curves.png" in out
    out = run_cli("eval", "--checkpoint", "run/checkpoint.npz", cwd=tmp_path)
    assert out.startswith("test accuracy ")
    out = run_cli("demo", "--epochs", "1", "--out", "demo", cwd=tmp_path)
    assert "test accuracy" in out and (tmp_path / "demo/curves.png").exists()


def test_cli_errors_are_clear(tmp_path):
    done = subprocess.run([sys.executable, "-m", "minires", "train", "--model", "resnet21",
                           "--data", "sample", "--out", "r"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert done.returncode != 0 and "6n+2" in done.stderr


def test_running_statistics_that_overflowed_stop_the_run(tmp_path, tiny_data):
    """The loss stays finite when running_var overflows (x_hat is 0 in training), so the loop
    checks the batchnorm buffers at the end of each epoch, before evaluating and saving."""
    def poison(run):
        if run.epoch == 1:
            run.model.bn1.running_var[0] = np.inf  # as inputs of 1e20 in float32 would leave it

    with pytest.raises(training.TrainingDiverged, match=r"bn1.running_var is no longer finite.*"
                                                        r"the checkpoint of iteration 4 is kept"):
        training.train(tiny_config(tmp_path), progress=False, on_epoch_end=poison)
    assert training.load_checkpoint(tmp_path / "checkpoint.npz")["iteration"] == 4
