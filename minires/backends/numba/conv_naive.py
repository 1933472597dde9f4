"""Convolution, version 1: the definition as plain loops, one output (or gradient) at a time.

Must match reference.Reference.conv2d_forward/backward. Short enough to check by eye against
the formula, and slow: every multiply reads its two operands from memory, and nothing is reused
from registers (conv.py, version 2, is the same sum reorganised around a register tile). Run it
inside a model with `minires.backends.using("numba-v1")`.
"""

import numba
import numpy as np
from numba import prange

from .config import PARALLEL


@numba.njit(**PARALLEL)
def _conv(x, w, sh, sw, ph, pw, y):
    """y[n, co, oh, ow] = sum over ci, kh, kw of w[co, ci, kh, kw] * x_pad[n, ci, oh*sh + kh,
    ow*sw + kw], where x_pad is x with ph rows and pw columns of zeros around it."""
    N, C, H, W = x.shape
    C_out, _, KH, KW = w.shape
    for n in prange(N):
        for co in range(C_out):
            for oh in range(y.shape[2]):
                for ow in range(y.shape[3]):
                    total = 0.0
                    for ci in range(C):
                        for kh in range(KH):
                            h = oh * sh - ph + kh
                            for kw in range(KW):
                                col = ow * sw - pw + kw
                                if 0 <= h < H and 0 <= col < W:
                                    total += w[co, ci, kh, kw] * x[n, ci, h, col]
                    y[n, co, oh, ow] = total


@numba.njit(**PARALLEL)
def _input_grad(dy, w, sh, sw, ph, pw, dx):
    """dx[n, ci, h, col] = sum of dy[n, co, oh, ow] * w[co, ci, kh, kw] over every output whose
    window covers (h, col): each output adds its gradient to the pixels it read."""
    N, C, H, W = dx.shape
    C_out, _, KH, KW = w.shape
    dx[:] = 0
    for n in prange(N):  # images are independent: no two threads add to one pixel
        for co in range(C_out):
            for oh in range(dy.shape[2]):
                for ow in range(dy.shape[3]):
                    g = dy[n, co, oh, ow]
                    for ci in range(C):
                        for kh in range(KH):
                            h = oh * sh - ph + kh
                            for kw in range(KW):
                                col = ow * sw - pw + kw
                                if 0 <= h < H and 0 <= col < W:
                                    dx[n, ci, h, col] += g * w[co, ci, kh, kw]


@numba.njit(**PARALLEL)
def _weight_grad(x, dy, sh, sw, ph, pw, dw):
    """dw[co, ci, kh, kw] = sum over n, oh, ow of dy[n, co, oh, ow] * x_pad[n, ci, oh*sh + kh,
    ow*sw + kw]."""
    N, C, H, W = x.shape
    C_out, _, KH, KW = dw.shape
    for co in prange(C_out):  # each thread owns its output channels' weights
        for ci in range(C):
            for kh in range(KH):
                for kw in range(KW):
                    total = 0.0
                    for n in range(N):
                        for oh in range(dy.shape[2]):
                            h = oh * sh - ph + kh
                            if 0 <= h < H:
                                for ow in range(dy.shape[3]):
                                    col = ow * sw - pw + kw
                                    if 0 <= col < W:
                                        total += dy[n, co, oh, ow] * x[n, ci, h, col]
                    dw[co, ci, kh, kw] = total


def conv2d(x, w, stride, padding, out_shape):
    y = np.empty(out_shape, dtype=x.dtype)
    _conv(np.ascontiguousarray(x), np.ascontiguousarray(w), *stride, *padding, y)
    return y


def conv2d_input_grad(dy, w, x_shape, stride, padding):
    dx = np.empty(x_shape, dtype=dy.dtype)
    _input_grad(np.ascontiguousarray(dy), np.ascontiguousarray(w), *stride, *padding, dx)
    return dx


def conv2d_weight_grad(x, dy, w_shape, stride, padding):
    dw = np.empty(w_shape, dtype=x.dtype)
    _weight_grad(np.ascontiguousarray(x), np.ascontiguousarray(dy), *stride, *padding, dw)
    return dw
