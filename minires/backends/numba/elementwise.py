"""ReLU in one pass each way (np.maximum is several times slower on float32, and dy * (y > 0)
makes a mask array first), and the residual sum with its ReLU in one pass. Must match
reference.Reference.relu_forward/relu_backward and add_relu_forward/backward.

Flat loops over the array, in blocks of CHUNK elements, one block per parallel iteration.
"""

import numba
import numpy as np
from numba import prange

from .config import PARALLEL

CHUNK = 1 << 16


@numba.njit(**PARALLEL)
def _relu(x, y):
    for block in prange(-(-x.size // CHUNK)):
        start = block * CHUNK
        xb, yb = x[start:start + CHUNK], y[start:start + CHUNK]
        for i in range(xb.size):
            v = xb[i]
            yb[i] = 0 if v < 0 else v  # NaN passes through, as in np.maximum(x, 0)


def relu(x):
    """y = max(x, 0)."""
    y = np.empty(x.shape, x.dtype)  # C order, whatever the layout of x
    _relu(np.ascontiguousarray(x).reshape(-1), y.reshape(-1))
    return y


@numba.njit(**PARALLEL)
def _relu_grad(dy, y, dx):
    for block in prange(-(-y.size // CHUNK)):
        start = block * CHUNK
        dyb, yb, dxb = dy[start:start + CHUNK], y[start:start + CHUNK], dx[start:start + CHUNK]
        for i in range(yb.size):
            dxb[i] = dyb[i] * (yb[i] > 0)


def relu_grad(dy, y):
    """dx = dy * (y > 0), from ReLU's output y = max(x, 0): positive exactly where x is."""
    dx = np.empty(dy.shape, dy.dtype)
    _relu_grad(np.ascontiguousarray(dy).reshape(-1), np.ascontiguousarray(y).reshape(-1),
               dx.reshape(-1))
    return dx


@numba.njit(**PARALLEL)
def _add_relu(a, b, y):
    for block in prange(-(-y.size // CHUNK)):
        start = block * CHUNK
        ab, bb, yb = a[start:start + CHUNK], b[start:start + CHUNK], y[start:start + CHUNK]
        for i in range(yb.size):
            v = ab[i] + bb[i]
            yb[i] = 0 if v < 0 else v


def add_relu(a, b):
    """y = max(a + b, 0) for a and b of one shape, in one pass: the loop
        for i: y[i] = max(a[i] + b[i], 0)
    where NumPy's np.maximum(a + b, 0) makes the sum first. Its gradient is relu_grad's."""
    y = np.empty(a.shape, a.dtype)
    _add_relu(np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1),
              y.reshape(-1))
    return y
