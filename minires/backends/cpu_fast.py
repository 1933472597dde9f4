"""Fast CPU kernels, compiled by numba: the same results as cpu.py's NumPy code, in fewer passes.

cpu.py is the specification (read it first); each function here computes what its namesake there
does, in one parallel pass over memory, and tests/test_cpu_fast.py checks them against it. numba
compiles each kernel on its first call (`cache=True` keeps the machine code on disk for the next
run). fastmath stays off, so every kernel rounds as plain IEEE arithmetic does; sums of many
float32 values accumulate in float64.
"""

import numba
import numpy as np
from numba import prange

from .cpu import conv_output_size

JIT = dict(parallel=True, cache=True, nogil=True)


@numba.njit(cache=True)
def _valid_range(size_out, size_in, k, s, p):
    """The outputs o in [lo, hi) whose input o*s + k - p lies inside [0, size_in): the rest read
    padding."""
    lo = max(0, -((k - p) // s))  # ceil((p - k) / s)
    hi = min(size_out, (size_in - 1 + p - k) // s + 1)
    return lo, max(lo, hi)


@numba.njit(**JIT)
def _im2col(x, KH, KW, sh, sw, ph, pw, cols):
    N, C, H, W = x.shape
    H_out, W_out = cols.shape[2], cols.shape[3]
    for r in prange(C * KH * KW):  # one row of cols, i.e. one (c, kh, kw), per iteration
        c, kh, kw = r // (KH * KW), r // KW % KH, r % KW
        oh_lo, oh_hi = _valid_range(H_out, H, kh, sh, ph)
        ow_lo, ow_hi = _valid_range(W_out, W, kw, sw, pw)
        iw_lo = ow_lo * sw + kw - pw  # the first input column read
        for n in range(N):
            out = cols[r, n]  # (H_out, W_out)
            out[:oh_lo] = 0
            out[oh_hi:] = 0
            for oh in range(oh_lo, oh_hi):
                row = out[oh]
                row[:ow_lo] = 0
                row[ow_hi:] = 0
                row[ow_lo:ow_hi] = x[n, c, oh * sh + kh - ph, iw_lo:iw_lo + (ow_hi - ow_lo) * sw:sw]


def im2col(x, KH, KW, stride, padding):
    """cpu.im2col: cols[(c,kh,kw), (n,oh,ow)] = x_padded[n, c, oh*sh + kh, ow*sw + kw]."""
    N, C, H, W = x.shape
    (sh, sw), (ph, pw) = stride, padding
    H_out = conv_output_size(H, KH, sh, ph)
    W_out = conv_output_size(W, KW, sw, pw)
    cols = np.empty((C * KH * KW, N, H_out, W_out), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x), KH, KW, sh, sw, ph, pw, cols)
    return cols.reshape(C * KH * KW, N * H_out * W_out)


@numba.njit(**JIT)
def _col2im(cols, KH, KW, sh, sw, ph, pw, x):
    N, C, H, W = x.shape
    H_out, W_out = cols.shape[4], cols.shape[5]
    for p in prange(N * C):  # one (n, c) plane of x per iteration: no two write the same pixel
        n, c = p // C, p % C
        plane = x[n, c]  # (H, W)
        plane[:] = 0
        # The same order of additions as cpu.col2im: kernel offsets (kh, kw) in row-major order.
        for kh in range(KH):
            oh_lo, oh_hi = _valid_range(H_out, H, kh, sh, ph)
            for kw in range(KW):
                ow_lo, ow_hi = _valid_range(W_out, W, kw, sw, pw)
                iw_lo = ow_lo * sw + kw - pw
                iw_hi = iw_lo + (ow_hi - ow_lo) * sw
                for oh in range(oh_lo, oh_hi):
                    plane[oh * sh + kh - ph, iw_lo:iw_hi:sw] += cols[c, kh, kw, n, oh, ow_lo:ow_hi]


def col2im(cols, x_shape, KH, KW, stride, padding):
    """cpu.col2im: add every column entry back onto the pixel it was copied from."""
    N, C, H, W = x_shape
    (sh, sw), (ph, pw) = stride, padding
    H_out = conv_output_size(H, KH, sh, ph)
    W_out = conv_output_size(W, KW, sw, pw)
    cols = np.ascontiguousarray(cols).reshape(C, KH, KW, N, H_out, W_out)
    x = np.empty((N, C, H, W), dtype=cols.dtype)
    _col2im(cols, KH, KW, sh, sw, ph, pw, x)
    return x
