"""CIFAR-10's files: find them, read them without running code, check them, or use the sample.

load_cifar10() reads the official "python version" archive (or its extracted folder) into uint8
NCHW arrays, checking the layout of every batch and the md5 of the archive; load_sample() returns
1,500 images shipped inside the package. data.py splits, normalises, augments and batches what
these return (and re-exports load_cifar10, load_sample, CLASSES and DatasetError).
Dataset: A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009.
"""

import gzip
import importlib.resources
import os
import pickle
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np

from .download import CHUNK, DownloadError, cache_dir, cached_file, md5sum

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # md5 of the official archive
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
TEST_BATCH = "test_batch"
IMAGES_PER_BATCH = 10000
CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")


class DatasetError(ValueError):
    """A dataset file that is missing, truncated, corrupt, or not laid out like CIFAR-10."""


# -- reading the archive ---------------------------------------------------------------------------

class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch and refuses anything else.

    A pickle may name any Python function to call while loading, so a hostile file could run code.
    A batch only needs numpy's array reconstruction (and _codecs.encode, which Python 3 uses for
    bytes in protocol 2), so every other name is refused.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),  # how numpy 1 (and the official files) name it
        ("numpy._core.multiarray", "_reconstruct"),  # how numpy 2 names it
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a batch")
        return super().find_class(module, name)


def _read_batch(f, where):
    """Images (10000, 3, 32, 32) uint8 and labels (10000,) int64 from one open batch file."""
    # encoding="bytes" keeps the Python 2 strings of the official files as bytes: keys are b"data".
    batch = _BatchUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DatasetError(f"{where}: expected a dict with keys b'data' and b'labels', got {found}")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    shape = (IMAGES_PER_BATCH, 3 * 32 * 32)  # one row of 3072 values per image
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != shape:
        raise DatasetError(
            f"{where}: b'data' must be a uint8 array of shape (10000, 3072), got "
            f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}"
        )
    if labels.shape != (IMAGES_PER_BATCH,) or labels.dtype.kind not in "iu":
        raise DatasetError(f"{where}: b'labels' must be 10000 integers, got {labels.shape}")
    if labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"{where}: labels must lie in 0..9, got {labels.min()}..{labels.max()}")
    # A row is 1024 red values, then 1024 green, then 1024 blue, each plane 32 rows of 32 pixels,
    # so a plain reshape (no transpose) gives channel-first images.
    x = data.reshape(IMAGES_PER_BATCH, 3, 32, 32)  # (10000, 3, 32, 32)
    return x, labels.astype(np.int64)


def _read_tarball(path):
    """{batch name: (x, y)} read straight from the archive, without extracting it to disk."""
    batches = {}
    with tarfile.open(path, "r:*") as archive:
        # Walking the members in stored order decompresses the gzip stream once; asking for
        # members by name would rewind the stream and decompress it again for each one.
        for member in archive:
            name = member.name.rsplit("/", 1)[-1]
            if member.isfile() and name in TRAIN_BATCHES + (TEST_BATCH,):
                batches[name] = _read_batch(archive.extractfile(member), f"{path}:{member.name}")
        # tarfile stops at the archive's end marker, before the gzip trailer, so gzip would
        # never compare its CRC-32: reading on to the end makes it, and a flipped byte anywhere
        # becomes a BadGzipFile here instead of a wrong pixel.
        while archive.fileobj.read(CHUNK):
            pass
    return batches


def _read_folder(folder):
    """{batch name: (x, y)} for the batch files present in an extracted cifar-10-batches-py/."""
    batches = {}
    for name in TRAIN_BATCHES + (TEST_BATCH,):
        if (folder / name).is_file():
            with open(folder / name, "rb") as f:
                batches[name] = _read_batch(f, folder / name)
    return batches


# What a truncated or damaged gzip, tar or pickle raises (the pickle module can raise many kinds).
_CORRUPT = (tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError, pickle.UnpicklingError,
            ValueError, KeyError, IndexError, TypeError, AttributeError)


def _read(source):
    """(x_train, y_train, x_test, y_test) from an archive file or an extracted folder."""
    try:
        batches = _read_tarball(source) if source.is_file() else _read_folder(source)
    except DatasetError:
        raise
    except _CORRUPT as e:
        raise DatasetError(
            f"{source}: truncated or corrupt ({type(e).__name__}: {e}); delete it and download "
            "or copy it again"
        ) from e
    except OSError as e:  # a file or folder we may not read, a disk error
        raise DatasetError(f"{e.filename or source}: cannot read it ({e.strerror or e})") from e
    missing = [name for name in TRAIN_BATCHES + (TEST_BATCH,) if name not in batches]
    if missing:
        raise DatasetError(
            f"{source}: missing {', '.join(missing)} (a truncated or incomplete copy?); expected "
            f"{FOLDER}/data_batch_1..5 and {FOLDER}/test_batch"
        )
    x_train = np.concatenate([batches[name][0] for name in TRAIN_BATCHES])  # (50000, 3, 32, 32)
    y_train = np.concatenate([batches[name][1] for name in TRAIN_BATCHES])  # (50000,)
    x_test, y_test = batches[TEST_BATCH]  # (10000, 3, 32, 32), (10000,)
    return x_train, y_train, x_test, y_test


def _locate(path):
    """The archive file or extracted folder that a user-given path points to."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if path.name == FOLDER or (path / TRAIN_BATCHES[0]).is_file():
            return path
        if (path / FOLDER).is_dir():
            return path / FOLDER
        if (path / ARCHIVE).is_file():
            return path / ARCHIVE
        raise DatasetError(f"{path}: this folder holds neither {ARCHIVE} nor {FOLDER}/")
    raise DatasetError(
        f"{path}: no such file or folder; expected {ARCHIVE}, an extracted {FOLDER}/ folder, "
        "or a folder that holds one of them"
    )


def load_cifar10(path=None, download=True):
    """CIFAR-10 as (x_train, y_train, x_test, y_test): uint8 (N, 3, 32, 32) and int64 (N,).

    N is 50,000 for training and 10,000 for testing. path may be the cifar-10-python.tar.gz
    archive, its extracted cifar-10-batches-py/ folder, or a folder that holds either; when it is
    None the environment variable MINIRES_CIFAR10 is used. A path you name is checked for
    structure; an archive whose md5 is not the official one is loaded with a one-line note
    on stderr.

    With no path at all the official archive is taken from the cache folder ($MINIRES_DATA, else
    ~/.cache/minires) and must match the official md5; when it is not there and download is True
    it is downloaded first. Raises DatasetError when a file is missing, corrupt or mislaid.
    """
    if path is None:
        path = os.environ.get("MINIRES_CIFAR10") or None
    if path is None:
        try:
            return _read(cached_file(ARCHIVE, CIFAR10_URL, CIFAR10_MD5, download))
        except DownloadError as e:
            raise DatasetError(
                f"{e}. Without network access, download {CIFAR10_URL} elsewhere and put it at "
                f"{cache_dir() / ARCHIVE}; to use a copy that is not the official file (a "
                "stand-in, say), pass it with --data PATH or MINIRES_CIFAR10=PATH"
            ) from e
    source = _locate(path)
    if source.is_file():
        md5 = md5sum(source)
        if md5 != CIFAR10_MD5:
            # One line on stderr, not a warning with a source line: the file still loads.
            print(f"minires: note: {source.name}: md5 {md5} is not the official {CIFAR10_MD5}; "
                  "loading it anyway (a stand-in or modified copy)", file=sys.stderr)
    return _read(source)


def load_sample():
    """1,000 training and 500 test images shipped with minires, as load_cifar10() returns them.

    100 training and 50 test images per class, from the JPEG-lossy stand-in copy of CIFAR-10;
    minires/assets/SAMPLE.md tells where they come from. Enough for tests and quick lessons.
    """
    # importlib.resources finds the file inside an installed wheel as well as in a checkout.
    resource = importlib.resources.files("minires") / "assets" / "cifar10_sample.npz"
    with resource.open("rb") as f, np.load(f) as npz:
        return npz["x_train"], npz["y_train"], npz["x_test"], npz["y_test"]
