"""CIFAR-10 for minires, once read: split it, normalise it, augment it, serve it in minibatches.

augment() is the training augmentation of He et al. 2015, "Deep Residual Learning for Image
Recognition", sec. 4.2: pad 4 pixels, crop 32x32 at random, flip half the images. Lesson 9 shows
the augmentation. Reading the dataset's files (load_cifar10, load_sample) is in cifar10.py; they
are imported here too, so that `from minires.data import load_sample, DataLoader` works.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .backends import check_device, to_device
from .cifar10 import CLASSES, DatasetError, load_cifar10, load_sample  # noqa: F401 (lessons' names)
from .tensor import Tensor

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
