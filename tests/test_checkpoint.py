"""Checkpoints are data: minires's .npz + JSON runs, and PyTorch files read without PyTorch."""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from minires import checkpoint
from minires.checkpoint import CheckpointError


class WritesMarker:
    """A pickle that, when loaded, creates the file `marker` (what os.system could do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def one_line_naming(error, path):
    message = str(error.value)
    assert str(path) in message and "\n" not in message, message
    return message


def run_state(**changes):
    """A small state with every key a run checkpoint has."""
    state = {
        "config": {"model": "resnet8", "lr": 0.1}, "model": {"conv1.weight": np.ones((2, 3))},
        "optimizer": {"lr": 0.1, "momentum_buffer.0": np.zeros((2, 3), np.float32)},
        "schedule": {"iteration": 7}, "loader": {"epoch": 1, "seed": 0}, "iteration": 7,
        "epoch": 1, "history": [{"epoch": 1, "train_loss": 2.302585092994046}],
        "steps": [{"iteration": 7, "loss": 0.1 + 0.2}], "mean": np.float32([0.5, 0.4, 0.3]),
        "std": np.float32([0.2, 0.2, 0.2]),
    }
    return state | changes


def test_round_trip_keeps_arrays_dtypes_and_floats_exactly(tmp_path):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save_run(path, run_state())
    loaded = checkpoint.load_run(path)
    assert loaded["steps"][0]["loss"] == 0.1 + 0.2  # JSON keeps every bit of a float
    assert loaded["optimizer"]["momentum_buffer.0"].dtype == np.float32
    np.testing.assert_array_equal(loaded["model"]["conv1.weight"], np.ones((2, 3)))
    assert loaded["iteration"] == 7 and loaded["config"] == {"model": "resnet8", "lr": 0.1}
    assert checkpoint.load_run_config(path) == {"model": "resnet8", "lr": 0.1}
    with np.load(path, allow_pickle=False) as npz:  # an ordinary .npz that NumPy reads alone
        assert "model/conv1.weight" in npz.files


def test_a_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    for name in ("checkpoint.npz", "checkpoint.pkl"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps({"model": WritesMarker(marker)}, protocol=4))
        with pytest.raises(CheckpointError) as error:
            checkpoint.load_run(path)
        assert "a pickle" in one_line_naming(error, path)
    assert not marker.exists()


def test_an_npz_with_a_pickled_member_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoint.npz"
    checkpoint.save_run(path, run_state())
    evil = io.BytesIO()
    np.save(evil, np.array([WritesMarker(marker)], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr("model/conv1.weight.npy", evil.getvalue())  # the later member wins
    with pytest.raises(CheckpointError) as error:
        checkpoint.load_run(path)
    assert "damaged" in one_line_naming(error, path)
    assert not marker.exists()


@pytest.mark.parametrize("what, make, expect", [
    ("empty", lambda good: b"", "empty"),
    ("truncated", lambda good: good[:len(good) // 2], "truncated or damaged"),
    ("random", lambda good: np.random.default_rng(0).bytes(4000), "neither a minires"),
    ("zip of something else", None, "neither a minires nor a PyTorch"),
])
def test_damaged_and_foreign_files_get_one_line(tmp_path, what, make, expect):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save_run(path, run_state())
    if make is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "hello")
    else:
        path.write_bytes(make(path.read_bytes()))
    with pytest.raises(CheckpointError) as error:
        checkpoint.load_run(path)
    assert expect in one_line_naming(error, path)


def test_missing_keys_newer_versions_and_missing_files(tmp_path):
    path = tmp_path / "checkpoint.npz"
    state = run_state()
    del state["mean"]
    checkpoint.save_run(path, state)
    with pytest.raises(CheckpointError) as error:
        checkpoint.load_run(path)
    assert "no mean" in one_line_naming(error, path)

    document = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION + 1, "state": {}}
    np.savez(path, **{checkpoint.META: np.frombuffer(json.dumps(document).encode(), np.uint8)})
    with pytest.raises(CheckpointError) as error:
        checkpoint.load_run(path)
    assert "newer minires" in one_line_naming(error, path)

    with pytest.raises(CheckpointError) as error:
        checkpoint.load_run(tmp_path / "nowhere.npz")
    one_line_naming(error, tmp_path / "nowhere.npz")


def test_stale_temporary_files_are_removed(tmp_path):
    (tmp_path / ".checkpoint-abc123.tmp").write_bytes(b"PK half a checkpoint")
    (tmp_path / "metrics.csv").write_text("keep me")
    assert [p.name for p in checkpoint.remove_stale_temp_files(tmp_path)] == [
        ".checkpoint-abc123.tmp"]
    assert os.listdir(tmp_path) == ["metrics.csv"]
