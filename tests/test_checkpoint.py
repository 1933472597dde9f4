"""Checkpoints are data: minires's .npz + JSON runs, and PyTorch files read without PyTorch."""

import io
import json
import os
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

import minires
from minires import __main__ as cli
from minires import checkpoint, cifar10, data, evaluation, models, torch_checkpoint
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


# -- PyTorch files, read without PyTorch -----------------------------------------------------------

DATA = Path(__file__).parent / "data"
SMALL_FILES = ["torch_small_legacy.pt", "torch_small_zip.pt"]


def small_file_contents():
    """What tests/data/torch_small_*.pt hold; each was written by

    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    torch.save({"epoch": 3, "best_prec1": 91.25, "state_dict": OrderedDict([
        ("module.permuted", base.permute(2, 0, 1)), ("module.row", base[1, 1]),
        ("module.every_other", base[:, :, ::2]), ("module.steps", torch.tensor([1, 2, 3])),
        ("module.flag", torch.tensor(True)),
        ("module.half", torch.tensor([0.5, -2.0], dtype=torch.float16))])}, path[, legacy])
    """
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    return {"permuted": base.transpose(2, 0, 1), "row": base[1, 1],
            "every_other": base[:, :, ::2], "steps": np.array([1, 2, 3]), "flag": np.array(True),
            "half": np.float16([0.5, -2.0])}


@pytest.mark.parametrize("name", SMALL_FILES)
def test_committed_torch_files_load_without_torch(name, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` would now fail
    loaded = torch_checkpoint.load_torch_checkpoint(DATA / name)
    assert loaded["epoch"] == 3 and loaded["best_prec1"] == 91.25
    state_dict = loaded["state_dict"]
    assert list(state_dict) == ["module." + key for key in small_file_contents()]
    for key, expected in small_file_contents().items():
        got = state_dict["module." + key]
        assert got.dtype == expected.dtype and got.shape == expected.shape, key
        np.testing.assert_array_equal(got, expected, err_msg=key)
    # The views keep PyTorch's strides and share the one storage they came from.
    assert state_dict["module.permuted"].strides == (4, 48, 16)
    assert np.shares_memory(state_dict["module.row"], state_dict["module.permuted"])


def torch_save(obj, path, legacy):
    torch = pytest.importorskip("torch")
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_tensors_of_every_kind_match_pytorch(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    base = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(0))
    tensors = {
        "float32": base, "float64": base.double(), "transposed": base.transpose(0, 2),
        "sliced": base[1:, ::2, 3], "shared": base[2], "int64": torch.arange(-3, 3),
        "uint8": torch.arange(250, 256, dtype=torch.uint8), "bool": base > 0,
        "bfloat16": base[0].bfloat16(), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3),
        "parameter": torch.nn.Parameter(base[0, 0].clone()),
    }
    obj = {"tensors": tensors, "nested": [(base[0, 0], 7), {"text": "ok", "none": None}]}
    loaded = torch_checkpoint.load_torch_checkpoint(torch_save(obj, tmp_path / "t.pt", legacy))
    for key, tensor in tensors.items():
        expected = tensor.detach().float().numpy() if key == "bfloat16" else tensor.detach().numpy()
        got = loaded["tensors"][key]
        assert got.dtype == expected.dtype and got.shape == expected.shape, key
        np.testing.assert_array_equal(got, expected, err_msg=key)
        if key != "bfloat16":  # widened to float32, so a copy
            assert got.strides == tuple(s * got.itemsize for s in tensor.stride()), key
    assert np.shares_memory(loaded["tensors"]["shared"], loaded["tensors"]["transposed"])
    np.testing.assert_array_equal(loaded["nested"][0][0], base[0, 0].numpy())
    assert loaded["nested"][0][1] == 7 and loaded["nested"][1] == {"text": "ok", "none": None}


def akamaster_checkpoint(tmp_path, legacy, depth=20):
    """A ResNet with random weights and BN statistics, saved as akamaster's trainer saves it:
    DataParallel's "module." prefix, {"epoch", "best_prec1", "state_dict"}. Returns
    (path, the PyTorch model)."""
    torch = pytest.importorskip("torch")
    from test_models import torch_resnet

    torch.manual_seed(depth)
    theirs = torch_resnet((depth - 2) // 6, "A")
    with torch.no_grad():  # BN as after training: no longer the identity
        for module in theirs.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    theirs.eval()
    # An OrderedDict with PyTorch's _metadata, every key prefixed "module.", as akamaster's are.
    state_dict = torch.nn.DataParallel(theirs).state_dict()
    path = tmp_path / f"resnet{depth}.{'th' if legacy else 'pt'}"
    return torch_save({"epoch": 180, "best_prec1": 91.7, "state_dict": state_dict}, path,
                      legacy), theirs


@pytest.mark.parametrize("depth", [20, 56])
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_resnets_from_pytorch_files_give_pytorchs_logits(tmp_path, legacy, depth):
    torch = pytest.importorskip("torch")
    path, theirs = akamaster_checkpoint(tmp_path, legacy, depth)
    loaded = torch_checkpoint.load_torch_checkpoint(path)
    assert loaded["epoch"] == 180 and loaded["best_prec1"] == 91.7
    mine = models.resnet_cifar(depth)
    result = models.load_torch_state_dict(mine, loaded["state_dict"])
    assert result.missing_keys == [] and result.unexpected_keys == []
    x_test = cifar10.load_sample()[2][:64]
    x = data.normalize(x_test, evaluation.TORCH_MEAN, evaluation.TORCH_STD)  # (64, 3, 32, 32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    got = mine.eval()(minires.tensor(x)).data
    print(f"resnet{depth}: max |dlogit| {np.abs(got - expected).max():.2e}, "
          f"logits up to {np.abs(expected).max():.1f}")
    assert np.abs(got - expected).max() < 1e-3


PUBLIC = os.environ.get("MINIRES_TORCH_CHECKPOINTS")  # a folder of akamaster's .th files


@pytest.mark.skipif(not PUBLIC, reason="MINIRES_TORCH_CHECKPOINTS names no folder of akamaster's "
                                       "published resnetN-*.th files (no download in tests)")
def test_the_published_akamaster_checkpoints_give_pytorchs_logits():
    """The issue's check on the real files (resnet20-12fca82f.th, resnet56-4bfd9763.th, ...,
    from github.com/akamaster/pytorch_resnet_cifar10): minires's reader against torch.load."""
    torch = pytest.importorskip("torch")
    from test_models import torch_resnet

    files = sorted(Path(PUBLIC).glob("resnet*-*.th"))
    assert files, f"no resnetN-*.th file in {PUBLIC}"
    x = data.normalize(cifar10.load_sample()[2][:64], evaluation.TORCH_MEAN, evaluation.TORCH_STD)
    for path in files:
        depth = int(path.name[len("resnet"):].split("-")[0])
        theirs = torch_resnet((depth - 2) // 6, "A")
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        theirs.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
        with torch.no_grad():
            expected = theirs.eval()(torch.from_numpy(x)).numpy()
        mine = models.resnet_cifar(depth)
        models.load_torch_state_dict(
            mine, torch_checkpoint.load_torch_checkpoint(path)["state_dict"])
        got = mine.eval()(minires.tensor(x)).data
        print(f"{path.name}: max |dlogit| {np.abs(got - expected).max():.2e}")
        assert np.abs(got - expected).max() < 1e-3, path.name


def test_eval_accepts_a_pytorch_checkpoint(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    path, theirs = akamaster_checkpoint(tmp_path, legacy=True)
    x_test, y_test = cifar10.load_sample()[2:]
    x = data.normalize(x_test, evaluation.TORCH_MEAN, evaluation.TORCH_STD)
    with torch.no_grad():
        accuracy = (theirs(torch.from_numpy(x)).numpy().argmax(axis=1) == y_test).mean()
    assert cli.main(["eval", "--checkpoint", str(path), "--data", "sample"]) == 0
    assert capsys.readouterr().out.startswith(f"test accuracy {accuracy:.4f} ")
    # A ResNet-20 file read as a ResNet-32: one line that names the file and suggests --model.
    assert cli.main(["eval", "--checkpoint", str(path), "--data", "sample", "--model",
                     "resnet32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"minires: error: {path}: its weights do not fit a resnet32")
    assert "missing keys: layer1.3.conv1.weight" in err and err.count("\n") == 1


def legacy_bytes(obj, pickler=pickle.Pickler, storages=()):
    """A legacy torch.save() file holding obj, written without PyTorch: the magic number, the
    protocol version, the system info, obj, the storage keys, then each storage's elements."""
    info = {"protocol_version": 1001, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out = io.BytesIO()
    for item in (checkpoint.TORCH_MAGIC, 1001, info):
        pickle.dump(item, out, protocol=2)
    pickler(out, protocol=2).dump(obj)
    pickle.dump([key for key, elements in storages], out, protocol=2)
    for key, elements in storages:
        out.write(np.int64(len(elements)).tobytes() + elements.tobytes())
    return out.getvalue()


def test_a_file_as_pytorch_0_3_saved_a_gpu_model(tmp_path, monkeypatch):
    """akamaster's published files date from PyTorch 0.3/0.4: tensors rebuilt by
    torch._utils._rebuild_tensor from torch.cuda.FloatStorage. This writes one without torch."""
    fake = {name: types.ModuleType(name) for name in ("torch", "torch.cuda", "torch._utils")}
    for name, module in fake.items():
        monkeypatch.setitem(sys.modules, name, module)
    FloatStorage = type("FloatStorage", (), {"__module__": "torch.cuda"})
    fake["torch.cuda"].FloatStorage = FloatStorage

    def _rebuild_tensor(storage, offset, size, stride):
        raise AssertionError("never called: only pickled")

    _rebuild_tensor.__module__, _rebuild_tensor.__qualname__ = "torch._utils", "_rebuild_tensor"
    fake["torch._utils"]._rebuild_tensor = _rebuild_tensor

    class Tensor:
        def __init__(self, *args):
            self.args = args

        def __reduce__(self):
            return _rebuild_tensor, self.args

    storage = object()  # stands for the one storage of 6 floats on the GPU

    class OldPickler(pickle.Pickler):
        def persistent_id(self, obj):  # ("storage", type, key, location, elements, view)
            return ("storage", FloatStorage, "s0", "cuda:0", 6, None) if obj is storage else None

    obj = {"state_dict": {"module.w": Tensor(storage, 2, (2, 2), (1, 2))},
           "best_prec1": Tensor(storage, 5, (), ())}
    path = tmp_path / "old.th"
    path.write_bytes(legacy_bytes(obj, OldPickler, [("s0", np.arange(6, dtype=np.float32))]))
    monkeypatch.undo()  # the real modules again; the reader must not need them anyway
    loaded = torch_checkpoint.load_torch_checkpoint(path)
    np.testing.assert_array_equal(loaded["state_dict"]["module.w"], [[2, 4], [3, 5]])
    assert loaded["best_prec1"] == 5.0


def test_malicious_pytorch_files_are_refused_and_run_nothing(tmp_path):
    marker = tmp_path / "marker"
    legacy = tmp_path / "evil.th"
    legacy.write_bytes(legacy_bytes({"state_dict": WritesMarker(marker)}))
    archive = tmp_path / "evil.pt"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"state_dict": WritesMarker(marker)}))
        z.writestr("archive/version", "3\n")
    for path in (legacy, archive):
        with pytest.raises(CheckpointError) as error:
            torch_checkpoint.load_torch_checkpoint(path)
        assert "refusing to load io.open" in one_line_naming(error, path)
        with pytest.raises(CheckpointError):
            evaluation.evaluate_checkpoint(path, data_path="sample")
    assert not marker.exists()


def test_damaged_pytorch_files_get_one_line(tmp_path):
    good = (DATA / "torch_small_legacy.pt").read_bytes()
    for name, content, expect in [
        ("cut.th", good[:len(good) - 10], "cut short"),
        ("cut_pickle.th", good[:200], "truncated or damaged"),
        ("cut.pt", (DATA / "torch_small_zip.pt").read_bytes()[:1500], "truncated or damaged"),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as error:
            torch_checkpoint.load_torch_checkpoint(path)
        assert expect in one_line_naming(error, path)
    # A tensor whose strides reach outside its storage would read foreign memory: refused.
    storage = ("storage", torch_checkpoint.StorageType("FloatStorage"), "0", "cpu", 4)
    with pytest.raises(CheckpointError, match="does not fit in its storage of 4 elements"):
        torch_checkpoint._resolve(torch_checkpoint.TensorRef(
            torch_checkpoint.StorageRef("0", 0, "FloatStorage"), 0, (3,), (2,)),
            {"0": np.zeros(storage[4], np.float32)}, "x.pt")
