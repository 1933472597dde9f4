"""CIFAR-10 for minires: load it, split it, normalise it, augment it, and serve it in minibatches.

load_cifar10() reads the official "python version" archive (or its extracted folder) into uint8
NCHW arrays; load_sample() returns 1,500 images shipped inside the package. augment() is the
training augmentation of He et al. 2015, "Deep Residual Learning for Image Recognition", sec. 4.2:
pad 4 pixels, crop 32x32 at random, flip half the images. Lesson 9 shows the augmentation.
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
from numpy.lib.stride_tricks import sliding_window_view

from .backends import check_device, to_device
from .download import CHUNK, DownloadError, cache_dir, cached_file, md5sum
from .tensor import Tensor

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


# -- preparing the arrays --------------------------------------------------------------------------

def _check_images(x):
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype != np.uint8:
        raise ValueError(
            f"x must be a uint8 array of images (N, C, H, W), got "
            f"{getattr(x, 'dtype', type(x).__name__)} with shape {np.shape(x)}"
        )


def _check_labels(x, y):
    if np.ndim(y) != 1 or len(y) != len(x):
        raise ValueError(
            f"x and y must hold the same number of examples, got x of shape {np.shape(x)} and y "
            f"of shape {np.shape(y)}"
        )


def train_val_split(x, y, val_size=5000, seed=0):
    """(x_train, y_train, x_val, y_val): hold out val_size random examples for validation.

    He et al. 2015 (sec. 4.2) train on 45k images and validate on the other 5k. The same seed
    always gives the same split; each part keeps the original order (the loader shuffles).
    """
    _check_labels(x, y)
    n = len(x)
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be between 1 and {n - 1} (len(x) - 1), got {val_size}")
    order = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(order[:val_size]), np.sort(order[val_size:])
    return x[train], y[train], x[val], y[val]


def channel_stats(x):
    """Per-channel mean and std (each float32, shape (C,)) of uint8 images, on the 0..1 scale.

    Compute them on the training set only. Counting how often each of the 256 pixel levels occurs
    gives exact statistics without a float copy of the data (1.2 GB in float64 for 50k images).
    """
    _check_images(x)
    levels = np.arange(256) / 255.0  # (256,) the 0..1 value of each pixel level
    mean, std = [], []
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].ravel(), minlength=256)  # (256,) pixels at each level
        p = counts / counts.sum()
        m = p @ levels
        mean.append(m)
        std.append(np.sqrt(p @ (levels - m) ** 2))  # population std, as np.std computes it
    return np.array(mean, np.float32), np.array(std, np.float32)


def normalize(x, mean, std):
    """(x / 255 - mean) / std per channel: uint8 (N, C, H, W) -> float32 (N, C, H, W)."""
    _check_images(x)
    mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)  # (C, 1, 1) broadcasts over N, H, W
    std = np.asarray(std, np.float32).reshape(-1, 1, 1)  # (C, 1, 1)
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise ValueError(
            f"mean and std need one value per channel ({x.shape[1]} for x of shape {x.shape}), "
            f"got {len(mean)} and {len(std)}"
        )
    out = x.astype(np.float32)
    out /= 255  # in place, to avoid a second full-size temporary
    out -= mean
    out /= std
    return out


def crop_flip(x, top, left, flip, padding=4):
    """Pad images with zeros, cut an H x W window at (top, left), mirror those with flip set.

    x: images (N, C, H, W) of any dtype; top, left: (N,) offsets in 0..2*padding into the padded
    image; flip: (N,) booleans. top = left = padding without a flip returns the image unchanged.
    This is the deterministic half of augment(); x is not modified.
    """
    N, C, H, W = x.shape
    padded = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=x.dtype)
    padded[:, :, padding:padding + H, padding:padding + W] = x
    # Every H x W window of every padded image, as a view (no copy):
    windows = sliding_window_view(padded, (H, W), axis=(2, 3))  # (N, C, 2p+1, 2p+1, H, W)
    # Window (top[n], left[n]) of image n. The index arrays on axes 0, 2, 3 are split by the
    # channel slice, so numpy puts their common axis N first.
    out = windows[np.arange(N), :, top, left]  # (N, C, H, W), a copy
    flip = np.asarray(flip, dtype=bool)
    out[flip] = out[flip, :, :, ::-1]  # mirror the chosen images along W
    return out


def augment(x, rng, padding=4):
    """Random crop after zero padding, then a random horizontal flip (He et al. 2015, sec. 4.2).

    x holds images (N, C, H, W) of any dtype; rng is a numpy Generator (or a seed). Each image is
    padded with `padding` zeros on every side and a random H x W window is cut from it, so the
    image moves by up to `padding` pixels each way; with probability 1/2 it is mirrored left-right.

    The border is zero in x's own units. The DataLoader augments the uint8 pixels *before*
    normalising, the order of torchvision's RandomCrop(32, padding=4) then ToTensor/Normalize, so
    the border is black and becomes -mean/std after normalisation (not 0).
    """
    rng = np.random.default_rng(rng)
    top, left = rng.integers(0, 2 * padding + 1, size=(2, len(x)))  # (N,) each: crop offsets
    flip = rng.random(len(x)) < 0.5  # (N,) which images to mirror
    return crop_flip(x, top, left, flip, padding)


# -- minibatches -----------------------------------------------------------------------------------

class DataLoader:
    """Minibatches (xb, yb): xb a float32 Tensor (B, C, H, W), yb an int64 array (B,).

    x holds uint8 images (N, C, H, W), y their labels (N,). Each batch is augmented (if asked),
    normalised with mean and std (per channel, 0..1 scale) or else just divided by 255, and put on
    `device`. Epoch e shuffles and augments with np.random.default_rng([seed, e]), so epoch e gives
    the same batches however the run got there: a run resumed between epochs with load_state_dict()
    (or set_epoch()) continues exactly as the uninterrupted run would have.
    """

    def __init__(self, x, y, batch_size=128, shuffle=False, drop_last=False, augment=False,
                 mean=None, std=None, seed=0, device="cpu"):
        _check_images(x)
        _check_labels(x, y)
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (from channel_stats), or neither")
        C = x.shape[1]
        self.x, self.y = x, np.asarray(y, dtype=np.int64)
        self.mean = np.zeros(C, np.float32) if mean is None else np.asarray(mean, np.float32)
        self.std = np.ones(C, np.float32) if std is None else np.asarray(std, np.float32)
        normalize(x[:1], self.mean, self.std)  # fail now, not mid-epoch, if mean or std is off
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.augment, self.seed, self.device = augment, seed, check_device(device)
        self.epoch = 0  # the epoch the next full pass will serve

    def __len__(self):
        """The number of batches in one epoch."""
        full, rest = divmod(len(self.x), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.x)) if self.shuffle else np.arange(len(self.x))
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]  # (B,)
            xb = self.x[idx]  # (B, C, H, W) uint8
            if self.augment:
                xb = augment(xb, rng)  # the module's augment(), on pixels: the border is black
            xb = normalize(xb, self.mean, self.std)  # (B, C, H, W) float32
            yield Tensor(xb).to(self.device), to_device(self.y[idx], self.device)
        self.epoch += 1  # only after a full pass: a loop left early repeats this epoch

    def set_epoch(self, epoch):
        """Make the next pass serve epoch `epoch` (its shuffle and augmentation)."""
        self.epoch = int(epoch)

    def state_dict(self):
        """What a checkpoint needs to resume the same sequence of batches."""
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state):
        """Resume from a state_dict(): the next pass serves the saved epoch with the saved seed."""
        self.epoch = int(state["epoch"])
        self.seed = state.get("seed", self.seed)
