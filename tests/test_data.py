"""Tests for minires.cifar10, minires.data and minires.download: loading, checks, download, split,
augment, loader.

Tests that need the full CIFAR-10 archive look for the stand-in at ../shared/datasets/ beside the
repository (or at $MINIRES_CIFAR10) and skip when it is absent; the archive is read once per
session. Everything else runs on small or fake files written to tmp_path; no test downloads.
"""

import contextlib
import gzip
import io
import os
import pickle
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import minires
from minires import cifar10
from minires.cifar10 import DatasetError, load_cifar10, load_sample
from minires.data import (
    DataLoader,
    augment,
    channel_stats,
    crop_flip,
    normalize,
    train_val_split,
)
from minires.download import md5sum

REAL = Path(
    os.environ.get("MINIRES_CIFAR10")
    or Path(__file__).resolve().parents[1].parent / "shared/datasets/cifar-10-python.tar.gz"
)
STAND_IN_MD5 = "9b7b79499776c46387b8434b255edfdc"
needs_real = pytest.mark.skipif(not REAL.exists(), reason=f"CIFAR-10 archive not found at {REAL}")


@pytest.fixture(scope="module")
def real():
    """The real archive, loaded once: (arrays, what loading printed on stderr, md5 or None)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        arrays = load_cifar10(REAL)
    return arrays, stderr.getvalue(), md5sum(REAL) if REAL.is_file() else None


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """An empty cache folder, and no MINIRES_CIFAR10 to override path=None."""
    monkeypatch.delenv("MINIRES_CIFAR10", raising=False)
    monkeypatch.setenv("MINIRES_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


# -- fake archives: real-size batches of mostly zero pixels, so they gzip to almost nothing -----

def fake_batch(k):
    """Batch k (0..5) as the official files hold it; its pixels carry markers the tests read."""
    rows = np.zeros((10000, 3072), np.uint8)  # one row per image: R plane, G plane, B plane
    rows[:, 2] = k  # red plane, row 0, column 2: which batch
    # Image 0 of every batch: red plane 10, green plane 20, blue plane 30, red pixel (0, 1) = 99.
    rows[0] = np.repeat([10, 20, 30], 1024)
    rows[0, 1] = 99
    labels = [(i + k) % 10 for i in range(10000)]
    return {b"batch_label": b"fake batch", b"labels": labels, b"data": rows}


def write_batches(folder, batches):
    folder.mkdir(parents=True)
    for name, batch in batches.items():
        # Protocol 2, as the official files use.
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """A folder holding cifar-10-batches-py/ and, beside it, cifar-10-python.tar.gz of the same."""
    root = tmp_path_factory.mktemp("fake")
    names = cifar10.TRAIN_BATCHES + (cifar10.TEST_BATCH,)
    batches = {name: fake_batch(k) for k, name in enumerate(names)}
    write_batches(root / "dir" / "cifar-10-batches-py", batches)
    (root / "tar").mkdir()
    with tarfile.open(root / "tar" / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(root / "dir" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return root


def check_fake(arrays):
    x_train, y_train, x_test, y_test = arrays
    assert x_train.shape == (50000, 3, 32, 32) and x_test.shape == (10000, 3, 32, 32)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64 and y_test.dtype == np.int64
    # Each row is the R plane, then G, then B, each row-major: NCHW without a transpose.
    assert x_train[0, :, 5, 7].tolist() == [10, 20, 30]
    assert x_train[0, 0, 0, 1] == 99 and x_train[0, 0, 1, 0] == 10
    # Batches in order data_batch_1..5, then test_batch.
    assert x_train[1::10000, 0, 0, 2].tolist() == [0, 1, 2, 3, 4]
    assert x_test[1, 0, 0, 2] == 5
    assert y_train[[0, 1, 10000]].tolist() == [0, 1, 1] and y_test[0] == 5


# -- the real archive ----------------------------------------------------------------------------

@needs_real
def test_real_archive_shapes_dtypes_and_counts(real):
    (x_train, y_train, x_test, y_test), _, _ = real
    assert x_train.shape == (50000, 3, 32, 32) and x_train.dtype == np.uint8
    assert x_test.shape == (10000, 3, 32, 32) and x_test.dtype == np.uint8
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert np.bincount(y_train).tolist() == [5000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10


@needs_real
def test_real_archive_md5_note(real):
    _, note, md5 = real
    if md5 in (None, cifar10.CIFAR10_MD5):
        assert note == ""  # a folder or the official archive loads silently
        return
    assert note.startswith("minires: note: ") and note.count("\n") == 1  # one line
    assert md5 in note and cifar10.CIFAR10_MD5 in note


@needs_real
def test_channel_stats_of_real_training_set(real):
    (x_train, _, _, _), _, md5 = real
    mean, std = channel_stats(x_train)
    assert mean.dtype == np.float32 and mean.shape == (3,) and std.shape == (3,)
    # The dataset README: 125.27, 122.93, 113.86 (official 125.31, 122.95, 113.87).
    np.testing.assert_allclose(mean * 255, [125.27, 122.93, 113.86], atol=0.05)
    # JPEG smooths the stand-in slightly: 62.53, 61.91, 66.46 (official about 63.0, 62.1, 66.7).
    np.testing.assert_allclose(std * 255, [62.53, 61.91, 66.46], atol=0.6)
    if md5 == STAND_IN_MD5:
        np.testing.assert_allclose(std * 255, [62.53, 61.91, 66.46], atol=0.01)


@needs_real
def test_sample_is_the_documented_selection_of_the_stand_in(real):
    (x_train, y_train, x_test, y_test), _, md5 = real
    if md5 != STAND_IN_MD5:
        pytest.skip("the embedded sample was cut from the stand-in archive")
    train = [i for i in range(10000) if np.sum(y_train[:i] == y_train[i]) < 100]
    test = [i for i in range(10000) if np.sum(y_test[:i] == y_test[i]) < 50]
    sx_train, sy_train, sx_test, sy_test = load_sample()
    assert np.array_equal(sx_train, x_train[train]) and np.array_equal(sy_train, y_train[train])
    assert np.array_equal(sx_test, x_test[test]) and np.array_equal(sy_test, y_test[test])


@needs_real
def test_truncated_real_archive(tmp_path, capsys):
    if not REAL.is_file():
        pytest.skip("MINIRES_CIFAR10 names a folder")
    with open(REAL, "rb") as f:
        head = f.read(1 << 20)
    cut = tmp_path / "cifar-10-python.tar.gz"
    cut.write_bytes(head)
    with pytest.raises(DatasetError) as error:
        load_cifar10(cut)
    assert str(cut) in str(error.value) and "truncated or corrupt" in str(error.value)
    assert "md5" in capsys.readouterr().err  # its md5 is not the official one either


# -- layouts, structure checks, corrupt files ---------------------------------------------------

@pytest.mark.parametrize(
    "where", ["dir/cifar-10-batches-py", "dir", "tar", "tar/cifar-10-python.tar.gz"]
)
def test_folder_and_archive_layouts(fake, where, capsys):
    check_fake(load_cifar10(fake / where))
    # Only an archive has an md5 to check, and this fake one is not the official file.
    note = capsys.readouterr().err
    assert note.count("\n") == (1 if where.startswith("tar") else 0)
    if note:
        assert md5sum(fake / "tar/cifar-10-python.tar.gz") in note


def test_env_var_names_the_data(fake, monkeypatch):
    monkeypatch.setenv("MINIRES_CIFAR10", str(fake / "dir"))
    check_fake(load_cifar10())


@pytest.mark.parametrize("make", ["truncated", "random", "crc", "length"])
def test_corrupt_archive_names_the_file(fake, tmp_path, make, capsys):
    whole = (fake / "tar/cifar-10-python.tar.gz").read_bytes()
    if make == "truncated":
        content = whole[: len(whole) // 2]
    elif make == "random":
        content = np.random.default_rng(0).bytes(100_000)  # seeded, so the test repeats exactly
    else:
        # The gzip trailer: CRC-32 of the data, then its length. Every image decompresses as it
        # should; only reading the stream to its end reveals that this file is not what was
        # written (before, such an archive loaded without a word).
        content = bytearray(whole)
        content[-8 if make == "crc" else -1] ^= 0x01
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as error:
        load_cifar10(path)
    assert str(path) in str(error.value) and "truncated or corrupt" in str(error.value)
    assert "md5" in capsys.readouterr().err


def test_unreadable_archive_names_the_path(fake, monkeypatch, capsys):
    path = fake / "tar/cifar-10-python.tar.gz"

    def permission_denied(name, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(name))

    monkeypatch.setattr(tarfile, "open", permission_denied)
    with pytest.raises(DatasetError) as error:
        load_cifar10(path)
    assert str(error.value) == f"{path}: cannot read it (Permission denied)"
    assert "md5" in capsys.readouterr().err


def test_structure_errors(tmp_path):
    bad_shape = fake_batch(0) | {b"data": np.zeros((10, 3072), np.uint8)}
    write_batches(tmp_path / "a" / "cifar-10-batches-py", {"data_batch_1": bad_shape})
    with pytest.raises(DatasetError, match=r"data_batch_1.*\(10000, 3072\)"):
        load_cifar10(tmp_path / "a")

    bad_labels = fake_batch(0) | {b"labels": [10] * 10000}
    write_batches(tmp_path / "b" / "cifar-10-batches-py", {"data_batch_1": bad_labels})
    with pytest.raises(DatasetError, match=r"labels must lie in 0\.\.9"):
        load_cifar10(tmp_path / "b")

    (tmp_path / "c" / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(DatasetError, match="missing data_batch_1.*test_batch"):
        load_cifar10(tmp_path / "c" / "cifar-10-batches-py")

    with pytest.raises(DatasetError, match="no such file or folder"):
        load_cifar10(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds neither"):
        load_cifar10(tmp_path / "empty")


class CallsAFunction:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless here, but a hostile file could name os.system instead


def test_pickles_that_call_functions_are_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": CallsAFunction()}, protocol=2))
    with pytest.raises(DatasetError, match="refusing to load"):
        load_cifar10(folder)


# -- the cache folder and the download (never over the network) --------------------------------

def fake_official(monkeypatch, fake):
    """Point the official URL at the fake archive and treat its md5 as the official one."""
    archive = fake / "tar/cifar-10-python.tar.gz"
    monkeypatch.setattr(cifar10, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", md5sum(archive))


def test_download_verifies_then_moves_into_place(fake, no_env, monkeypatch, capsys):
    fake_official(monkeypatch, fake)
    check_fake(load_cifar10())
    assert "md5" not in capsys.readouterr().err  # the official archive loads without a note
    assert sorted(p.name for p in no_env.iterdir()) == ["cifar-10-python.tar.gz"]
    assert md5sum(no_env / "cifar-10-python.tar.gz") == cifar10.CIFAR10_MD5

    def no_network(*args, **kwargs):
        raise AssertionError("a verified cached archive must not be downloaded again")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    check_fake(load_cifar10())


def test_download_with_wrong_md5_leaves_nothing(fake, no_env, monkeypatch):
    archive = fake / "tar/cifar-10-python.tar.gz"
    monkeypatch.setattr(cifar10, "CIFAR10_URL", archive.as_uri())  # the official md5 stays
    with pytest.raises(DatasetError, match=f"md5 is {md5sum(archive)}"):
        load_cifar10()
    assert list(no_env.iterdir()) == []  # no archive, no partial .part file


def test_offline_says_where_to_put_the_file(no_env, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DatasetError) as error:
        load_cifar10()
    message = str(error.value)
    assert "name resolution" in message and cifar10.CIFAR10_URL in message
    assert str(no_env / "cifar-10-python.tar.gz") in message and "--data" in message
    assert list(no_env.iterdir()) == []


def test_download_cut_off_midway_leaves_nothing(no_env, monkeypatch):
    class DropsTheConnection(io.BytesIO):
        headers = {"Content-Length": "3000000"}

        def read(self, size=-1):
            if self.tell() > 0:
                raise ConnectionResetError("connection reset by peer")
            return super().read(size)

    def opener(url, timeout):
        return DropsTheConnection(b"x" * 3000000)  # the first 1 MiB arrives, then the link drops

    monkeypatch.setattr(urllib.request, "urlopen", opener)
    with pytest.raises(DatasetError, match="connection reset"):
        load_cifar10()
    assert list(no_env.iterdir()) == []  # the partial download was removed


def test_no_download_when_not_allowed(no_env):
    with pytest.raises(DatasetError, match="download=False"):
        load_cifar10(download=False)


def test_a_killed_downloads_part_file_is_removed_by_the_next(fake, no_env, monkeypatch):
    no_env.mkdir()
    (no_env / "cifar-10-python.tar.gz.k1lled.part").write_bytes(b"the first megabyte")
    fake_official(monkeypatch, fake)
    check_fake(load_cifar10())
    assert sorted(p.name for p in no_env.iterdir()) == ["cifar-10-python.tar.gz"]


def test_cached_archive_with_wrong_md5_is_refused(no_env):
    no_env.mkdir()
    cached = no_env / "cifar-10-python.tar.gz"
    cached.write_bytes(gzip.compress(b"not cifar"))
    with pytest.raises(DatasetError) as error:
        load_cifar10()
    message = str(error.value)
    assert str(cached) in message and md5sum(cached) in message
    assert "delete the file" in message and "--data" in message


# -- the embedded sample, split, statistics, normalisation ---------------------------------------

def test_sample_shapes_and_counts():
    x_train, y_train, x_test, y_test = load_sample()
    assert x_train.shape == (1000, 3, 32, 32) and x_test.shape == (500, 3, 32, 32)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert np.bincount(y_train).tolist() == [100] * 10
    assert np.bincount(y_test).tolist() == [50] * 10


def test_train_val_split():
    x = np.arange(50000) * 3  # stands in for images: the values identify the examples
    y = np.arange(50000) % 10
    x_tr, y_tr, x_val, y_val = train_val_split(x, y)
    assert len(x_tr) == len(y_tr) == 45000 and len(x_val) == len(y_val) == 5000
    assert np.array_equal(np.sort(np.concatenate([x_tr, x_val])), x)  # disjoint, and covers all
    assert np.array_equal(y_tr, x_tr // 3 % 10)  # labels travel with their examples
    assert np.array_equal(train_val_split(x, y)[2], x_val)  # same seed, same split
    assert not np.array_equal(train_val_split(x, y, seed=1)[2], x_val)
    with pytest.raises(ValueError, match="val_size"):
        train_val_split(x, y, val_size=50000)


def test_channel_stats_match_numpy():
    x = load_sample()[0]
    mean, std = channel_stats(x)
    scaled = x / 255.0
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, scaled.std(axis=(0, 2, 3)), rtol=1e-6)


def test_normalize_gives_zero_mean_unit_std():
    x = load_sample()[0]
    out = normalize(x, *channel_stats(x))
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-4)
    with pytest.raises(ValueError, match="one value per channel"):
        normalize(x, [0.5, 0.5], [0.2, 0.2])


# -- augmentation ----------------------------------------------------------------------------------

def crops_and_flips(image, padding=4):
    """{(top, left, flip): output} for every crop of one (C, H, W) image, the obvious way."""
    C, H, W = image.shape
    padded = np.pad(image, ((0, 0), (padding, padding), (padding, padding)))
    outputs = {}
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            window = padded[:, top:top + H, left:left + W]
            outputs[top, left, False], outputs[top, left, True] = window, window[:, :, ::-1]
    return outputs


def test_crop_flip_identity_shift_and_flip():
    x = np.random.default_rng(0).integers(1, 256, (4, 3, 32, 32), dtype=np.uint8)
    four, no = np.full(4, 4), np.zeros(4, bool)
    assert np.array_equal(crop_flip(x, four, four, no), x)  # offset (4, 4), no flip: identity
    assert np.array_equal(crop_flip(x, four, four, ~no), x[:, :, :, ::-1])
    out = crop_flip(x, np.zeros(4, int), np.full(4, 8), no)  # shift down 4, left 4
    assert np.array_equal(out[:, :, 4:, :28], x[:, :, :28, 4:])
    assert (out[:, :, :4, :] == 0).all() and (out[:, :, :, 28:] == 0).all()  # the zero border


def test_augment_is_a_shift_of_at_most_4_and_flips_half():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, (200, 3, 32, 32), dtype=np.uint8)  # no zeros: the border is visible
    before = x.copy()
    out = augment(x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == x.dtype and np.array_equal(x, before)
    flips, offsets = [], set()
    for image, result in zip(x, out):
        # Exactly one of the 9 x 9 offsets and 2 flips must produce this output.
        matches = [key for key, candidate in crops_and_flips(image).items()
                   if np.array_equal(candidate, result)]
        assert len(matches) == 1
        flips.append(matches[0][2])
        offsets.add(matches[0][:2])
    assert 0.4 < np.mean(flips) < 0.6
    assert len(offsets) > 60  # the offsets spread over the 81 possible ones
    assert np.array_equal(augment(x, np.random.default_rng(1)), out)  # seeded: reproducible


def test_augment_is_fast():
    x = np.random.default_rng(0).integers(0, 256, (128, 3, 32, 32), dtype=np.uint8)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        augment(x, rng)
        times.append(time.perf_counter() - start)
    assert min(times) < 0.005, f"augmenting 128 images took {min(times) * 1e3:.1f} ms"


# -- the loader ------------------------------------------------------------------------------------

def indexed_images(n):
    """n images whose first two pixels spell their index, so batches can be traced back."""
    x = np.zeros((n, 3, 32, 32), np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    return x, np.arange(n) % 10


def indices(xb):
    pixels = np.rint(xb.numpy() * 255).astype(int)  # the loader divides by 255 without mean/std
    return pixels[:, 0, 0, 0] + 256 * pixels[:, 0, 0, 1]


def test_loader_batches_in_order():
    x, y = indexed_images(1000)
    loader = DataLoader(x, y, batch_size=128)
    batches = list(loader)
    assert len(loader) == len(batches) == 8
    assert [len(yb) for _, yb in batches] == [128] * 7 + [104]
    xb, yb = batches[0]
    assert isinstance(xb, minires.Tensor) and xb.dtype == np.float32
    assert xb.shape == (128, 3, 32, 32)
    assert isinstance(yb, np.ndarray) and yb.dtype == np.int64
    np.testing.assert_allclose(xb.numpy(), x[:128] / 255, rtol=1e-6)
    assert np.array_equal(np.concatenate([yb for _, yb in batches]), y)
    dropped = DataLoader(x, y, batch_size=128, drop_last=True)
    assert len(dropped) == len(list(dropped)) == 7
    assert len(DataLoader(x, y, batch_size=100, drop_last=True)) == 10


def test_loader_shuffles_each_epoch_differently_but_reproducibly():
    x, y = indexed_images(1000)
    loader = DataLoader(x, y, batch_size=100, shuffle=True, seed=3)
    epoch0 = [(indices(xb), yb) for xb, yb in loader]
    seen = np.concatenate([i for i, _ in epoch0])
    assert sorted(seen) == list(range(1000)) and not np.array_equal(seen, np.arange(1000))
    assert all(np.array_equal(yb, y[i]) for i, yb in epoch0)  # labels stay with their images
    assert loader.epoch == 1
    epoch1 = np.concatenate([indices(xb) for xb, _ in loader])
    assert not np.array_equal(epoch1, seen)
    again = DataLoader(x, y, batch_size=100, shuffle=True, seed=3)
    assert np.array_equal(np.concatenate([indices(xb) for xb, _ in again]), seen)
    other = DataLoader(x, y, batch_size=100, shuffle=True, seed=4)
    assert not np.array_equal(np.concatenate([indices(xb) for xb, _ in other]), seen)


def test_loader_resumes_exactly():
    x, y = load_sample()[:2]
    mean, std = channel_stats(x)

    def make():
        return DataLoader(x, y, 256, shuffle=True, augment=True, mean=mean, std=std, seed=7)

    run = make()
    for _ in range(2):
        list(run)
    state = run.state_dict()
    epoch2 = [xb.numpy() for xb, _ in run]

    resumed = make()
    resumed.load_state_dict(state)
    assert all(np.array_equal(a, xb.numpy()) for a, (xb, _) in zip(epoch2, resumed, strict=True))
    assert resumed.epoch == 3

    fresh = make()
    fresh.set_epoch(2)
    assert np.array_equal(next(iter(fresh))[0].numpy(), epoch2[0])
    next(iter(fresh))  # a pass left early does not count as an epoch
    assert fresh.epoch == 2


def test_loader_pads_with_black_before_normalising():
    x = np.full((256, 3, 32, 32), 255, np.uint8)  # white images
    mean, std = np.array([0.5, 0.4, 0.3], np.float32), np.array([0.2, 0.25, 0.3], np.float32)
    xb, _ = next(iter(DataLoader(x, np.zeros(256, int), 256, augment=True, mean=mean, std=std)))
    white = ((1 - mean) / std).reshape(1, 3, 1, 1)
    black = (-mean / std).reshape(1, 3, 1, 1)  # torchvision order: pad, then normalise
    is_white, is_black = np.isclose(xb.numpy(), white), np.isclose(xb.numpy(), black)
    assert (is_white | is_black).all() and is_black.any() and is_white.any()


def test_loader_errors_name_the_problem():
    x, y = indexed_images(10)
    with pytest.raises(ValueError, match=r"\(10, 3, 32, 32\).*\(9,\)"):
        DataLoader(x, y[:9])
    with pytest.raises(ValueError, match=r"x must be .*\(10, 3072\)"):
        DataLoader(x.reshape(10, -1), y)
    with pytest.raises(ValueError, match="x must be a uint8"):
        DataLoader(x.astype(np.float32), y)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(x, y, batch_size=0)
    with pytest.raises(ValueError, match="both mean and std"):
        DataLoader(x, y, mean=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="device"):
        DataLoader(x, y, device="tpu")


@pytest.mark.skipif(not minires.gpu_available(), reason="needs CuPy and a CUDA GPU")
def test_loader_puts_batches_on_the_gpu():
    import cupy

    x, y = indexed_images(300)
    xb, yb = next(iter(DataLoader(x, y, batch_size=128, device="gpu")))
    assert xb.device == "gpu" and isinstance(yb, cupy.ndarray) and yb.dtype == np.int64
    np.testing.assert_allclose(xb.numpy(), x[:128] / 255, rtol=1e-6)

