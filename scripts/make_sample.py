"""Build minires/assets/cifar10_sample.npz, the small CIFAR-10 sample that ships with minires.

The sample holds the first 100 images of each class in data_batch_1 (1,000 training images) and
the first 50 of each class in test_batch (500 test images), each kept in its original order. The
source is the JPEG-lossy stand-in archive of shared/datasets/README.md; minires/assets/SAMPLE.md
records the provenance. Run from the repository root, with minires installed:

    python scripts/make_sample.py [--data PATH] [--out PATH]
"""

import argparse
from pathlib import Path

import numpy as np

from minires.cifar10 import IMAGES_PER_BATCH, load_cifar10
from minires.download import md5sum

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "cifar-10-python.tar.gz"
DEFAULT_OUT = ROOT / "minires" / "assets" / "cifar10_sample.npz"
TRAIN_PER_CLASS, TEST_PER_CLASS = 100, 50


def first_per_class(y, per_class):
    """Indices of the first `per_class` examples of each class, in their original order."""
    keep = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)])
    return np.sort(keep)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 archive")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the .npz to write")
    args = parser.parse_args()

    # The stand-in is not the official archive, so this warns about its md5; that is expected.
    x_train, y_train, x_test, y_test = load_cifar10(args.data)
    # data_batch_1 is the first 10,000 training images.
    train = first_per_class(y_train[:IMAGES_PER_BATCH], TRAIN_PER_CLASS)  # (1000,)
    test = first_per_class(y_test, TEST_PER_CLASS)  # (500,)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        x_train=x_train[train], y_train=y_train[train],  # (1000, 3, 32, 32) uint8, (1000,) int64
        x_test=x_test[test], y_test=y_test[test],  # (500, 3, 32, 32) uint8, (500,) int64
    )
    print(f"source  {args.data} (md5 {md5sum(args.data)})")
    print(f"train   data_batch_1 positions {train[0]}..{train[-1]}, {len(train)} images")
    print(f"test    test_batch positions {test[0]}..{test[-1]}, {len(test)} images")
    print(f"wrote   {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
