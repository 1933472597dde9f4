"""Winograd's transforms of one tile, TILE_COLS channels at a time, for winograd.py's kernels.

The matrices are reference.WINOGRAD_MATRICES' (lesson 4 derives them): for an input tile d,
V = B^T d B; for a tile of the GEMM's products M, the output tile A^T M A; for the weight
gradient, the output gradient's tile dM = A dy A^T. F(2x2, 3x3) works on 4x4 tiles, F(4x4, 3x3)
on 6x6 ones. Each function here is one tile at one place: winograd.py loops over the tiles, in
functions of their own that these are compiled into.

The arrays keep their channels in blocks of TILE_COLS, a last axis of its own: image[h, w, cb]
is channels cb*TILE_COLS .. +TILE_COLS of pixel (h, w). So each row of channels is read or
written through plain indices: a slice [c:c + TILE_COLS] costs numba a clamp and a sign test
on each bound, and with 32 of them a tile, F(2x2)'s input transform ran 1.3-1.8x slower.
"""

import numba
import numpy as np

from .config import INLINE, LLVM_INLINE
from .tile import _fma_row, _load_row, _store_row

# -- the 1-D transforms, one row of each matrix of reference.WINOGRAD_MATRICES per value ---------
# Each value is a row of TILE_COLS channels, a tuple: LLVM keeps tuples in registers and its SLP
# vectorizer turns each lane-by-lane operation below into one vector instruction (as in tile.py).
# A loop over the channels, one number at a time, stayed scalar: the loop vectorizer gave up on
# it ("too many memory checks needed": it cannot tell that V and the image do not overlap).

@numba.njit(**LLVM_INLINE)
def _add(x, y):
    """x + y, lane by lane."""
    return (x[0] + y[0], x[1] + y[1], x[2] + y[2], x[3] + y[3], x[4] + y[4], x[5] + y[5],
            x[6] + y[6], x[7] + y[7], x[8] + y[8], x[9] + y[9], x[10] + y[10], x[11] + y[11],
            x[12] + y[12], x[13] + y[13], x[14] + y[14], x[15] + y[15])


@numba.njit(**LLVM_INLINE)
def _sub(x, y):
    """x - y, lane by lane."""
    return (x[0] - y[0], x[1] - y[1], x[2] - y[2], x[3] - y[3], x[4] - y[4], x[5] - y[5],
            x[6] - y[6], x[7] - y[7], x[8] - y[8], x[9] - y[9], x[10] - y[10], x[11] - y[11],
            x[12] - y[12], x[13] - y[13], x[14] - y[14], x[15] - y[15])


@numba.njit(**LLVM_INLINE)
def _axpy(a, x, y):
    """a * x + y, lane by lane, for a number a."""
    return _fma_row(y, a, x)


# The constants as float32 (all exact): an int or a Python float would make numba compute a
# float32 tile in float64; float32 times float64 data is float64, as it should be.
TWO, FOUR, FIVE, EIGHT = np.float32(2), np.float32(4), np.float32(5), np.float32(8)


@numba.njit(**INLINE)
def _f2_input(values):
    """B^T d for F(2, 3): d0 - d2, d1 + d2, d2 - d1, d1 - d3."""
    d0, d1, d2, d3 = values
    return _sub(d0, d2), _add(d1, d2), _sub(d2, d1), _sub(d1, d3)


@numba.njit(**INLINE)
def _f2_output(values):
    """A^T m for F(2, 3): m0 + m1 + m2, m1 - m2 - m3."""
    m0, m1, m2, m3 = values
    return _add(_add(m0, m1), m2), _sub(_sub(m1, m2), m3)


@numba.njit(**INLINE)
def _f2_output_grad(values):
    """A dy for F(2, 3), the adjoint of A^T m: y0, y0 + y1, y0 - y1, -y1."""
    y0, y1 = values
    return y0, _add(y0, y1), _sub(y0, y1), _sub(_sub(y0, y0), y1)


@numba.njit(**INLINE)
def _f4_input(values):
    """B^T d for F(4, 3): 4 d0 - 5 d2 + d4, d3 + d4 - 4 (d1 + d2), 4 (d1 - d2) - d3 + d4,
    2 (d3 - d1) - d2 + d4, 2 (d1 - d3) - d2 + d4, 4 d1 - 5 d3 + d5."""
    d0, d1, d2, d3, d4, d5 = values
    return (_axpy(FOUR, d0, _axpy(-FIVE, d2, d4)), _axpy(-FOUR, _add(d1, d2), _add(d3, d4)),
            _axpy(FOUR, _sub(d1, d2), _sub(d4, d3)), _axpy(TWO, _sub(d3, d1), _sub(d4, d2)),
            _axpy(TWO, _sub(d1, d3), _sub(d4, d2)), _axpy(FOUR, d1, _axpy(-FIVE, d3, d5)))


@numba.njit(**INLINE)
def _f4_output(values):
    """A^T m for F(4, 3): m0 + m1 + m2 + m3 + m4, m1 - m2 + 2 (m3 - m4),
    m1 + m2 + 4 (m3 + m4), m1 - m2 + 8 (m3 - m4) + m5."""
    m0, m1, m2, m3, m4, m5 = values
    sum12, difference12 = _add(m1, m2), _sub(m1, m2)
    sum34, difference34 = _add(m3, m4), _sub(m3, m4)
    return (_add(_add(m0, sum12), sum34), _axpy(TWO, difference34, difference12),
            _axpy(FOUR, sum34, sum12), _axpy(EIGHT, difference34, _add(difference12, m5)))


@numba.njit(**INLINE)
def _f4_output_grad(values):
    """A dy for F(4, 3), the adjoint of A^T m: y0, y0 + y1 + y2 + y3, y0 - y1 + y2 - y3,
    y0 + 2 y1 + 4 y2 + 8 y3, y0 - 2 y1 + 4 y2 - 8 y3, y3."""
    y0, y1, y2, y3 = values
    even, odd = _add(y0, y2), _add(y1, y3)
    even_scaled, odd_scaled = _axpy(FOUR, y2, y0), _axpy(TWO, y1, _axpy(EIGHT, y3, _sub(y3, y3)))
    return (y0, _add(even, odd), _sub(even, odd), _add(even_scaled, odd_scaled),
            _sub(even_scaled, odd_scaled), y3)


# -- the 2-D transforms of one tile, TILE_COLS channels at a time: rows first, then columns ------

@numba.njit(**INLINE)
def _row4(a, h, w, cb):
    """a[h, w + s, cb] for s < 4: TILE_COLS channels of 4 neighbouring pixels."""
    return (_load_row(a[h, w, cb]), _load_row(a[h, w + 1, cb]), _load_row(a[h, w + 2, cb]),
            _load_row(a[h, w + 3, cb]))


@numba.njit(**INLINE)
def _row6(a, h, w, cb):
    """a[h, w + s, cb] for s < 6."""
    return _row4(a, h, w, cb) + (_load_row(a[h, w + 4, cb]), _load_row(a[h, w + 5, cb]))


@numba.njit(**INLINE)
def input_tile_f2(image, h, w, V, t):
    """V[t, 4*k + l, cb, i] = sum over r, s of B^T[k, r] * image[h + r, w + s, cb, i] *
    B^T[l, s], for every block cb of TILE_COLS channels i."""
    for cb in range(V.shape[2]):
        r0 = _f2_input(_row4(image, h, w, cb))
        r1 = _f2_input(_row4(image, h + 1, w, cb))
        r2 = _f2_input(_row4(image, h + 2, w, cb))
        r3 = _f2_input(_row4(image, h + 3, w, cb))
        for col in range(4):
            column = _f2_input((r0[col], r1[col], r2[col], r3[col]))
            for row in range(4):
                _store_row(V[t, 4 * row + col, cb], column[row])


@numba.njit(**INLINE)
def input_tile_f4(image, h, w, V, t):
    """V[t, 6*k + l, cb, i] = sum over r, s of B^T[k, r] * image[h + r, w + s, cb, i] *
    B^T[l, s], for every block cb of TILE_COLS channels i."""
    for cb in range(V.shape[2]):
        r0 = _f4_input(_row6(image, h, w, cb))
        r1 = _f4_input(_row6(image, h + 1, w, cb))
        r2 = _f4_input(_row6(image, h + 2, w, cb))
        r3 = _f4_input(_row6(image, h + 3, w, cb))
        r4 = _f4_input(_row6(image, h + 4, w, cb))
        r5 = _f4_input(_row6(image, h + 5, w, cb))
        for col in range(6):
            column = _f4_input((r0[col], r1[col], r2[col], r3[col], r4[col], r5[col]))
            for row in range(6):
                _store_row(V[t, 6 * row + col, cb], column[row])


@numba.njit(**INLINE)
def output_tile_f2(M, ti, out, h, w):
    """out[h + p, w + q, cb, i] = sum over k, l of A^T[p, k] * M[cb, 4*k + l, ti, i] *
    A^T[q, l], for every block cb of TILE_COLS output channels i."""
    for cb in range(M.shape[0]):
        m = M[cb]
        r0 = _f2_output(_rows4(m, 0, ti))
        r1 = _f2_output(_rows4(m, 4, ti))
        r2 = _f2_output(_rows4(m, 8, ti))
        r3 = _f2_output(_rows4(m, 12, ti))
        for q in range(2):
            column = _f2_output((r0[q], r1[q], r2[q], r3[q]))
            for p in range(2):
                _store_row(out[h + p, w + q, cb], column[p])


@numba.njit(**INLINE)
def _rows4(m, first, ti):
    """m[first + l, ti] for l < 4: one row of a tile's positions."""
    return (_load_row(m[first, ti]), _load_row(m[first + 1, ti]), _load_row(m[first + 2, ti]),
            _load_row(m[first + 3, ti]))


@numba.njit(**INLINE)
def _rows6(m, first, ti):
    """m[first + l, ti] for l < 6: one row of a tile's positions."""
    return (_load_row(m[first, ti]), _load_row(m[first + 1, ti]), _load_row(m[first + 2, ti]),
            _load_row(m[first + 3, ti]), _load_row(m[first + 4, ti]),
            _load_row(m[first + 5, ti]))


@numba.njit(**INLINE)
def output_tile_f4(M, ti, out, h, w):
    """out[h + p, w + q, cb, i] = sum over k, l of A^T[p, k] * M[cb, 6*k + l, ti, i] *
    A^T[q, l], for every block cb of TILE_COLS output channels i."""
    for cb in range(M.shape[0]):
        m = M[cb]
        r0 = _f4_output(_rows6(m, 0, ti))
        r1 = _f4_output(_rows6(m, 6, ti))
        r2 = _f4_output(_rows6(m, 12, ti))
        r3 = _f4_output(_rows6(m, 18, ti))
        r4 = _f4_output(_rows6(m, 24, ti))
        r5 = _f4_output(_rows6(m, 30, ti))
        for q in range(4):
            column = _f4_output((r0[q], r1[q], r2[q], r3[q], r4[q], r5[q]))
            for p in range(4):
                _store_row(out[h + p, w + q, cb], column[p])


@numba.njit(**INLINE)
def output_grad_tile_f2(dy, h, w, dM, t):
    """dM[cb, 4*k + l, t, i] = sum over p, q of A^T[p, k] * dy[h + p, w + q, cb, i] * A^T[q, l],
    for every block cb of TILE_COLS output channels i."""
    for cb in range(dM.shape[0]):
        r0 = _f2_output_grad((_load_row(dy[h, w, cb]), _load_row(dy[h, w + 1, cb])))
        r1 = _f2_output_grad((_load_row(dy[h + 1, w, cb]), _load_row(dy[h + 1, w + 1, cb])))
        for col in range(4):
            column = _f2_output_grad((r0[col], r1[col]))
            for row in range(4):
                _store_row(dM[cb, 4 * row + col, t], column[row])


@numba.njit(**INLINE)
def output_grad_tile_f4(dy, h, w, dM, t):
    """dM[cb, 6*k + l, t, i] = sum over p, q of A^T[p, k] * dy[h + p, w + q, cb, i] * A^T[q, l],
    for every block cb of TILE_COLS output channels i."""
    for cb in range(dM.shape[0]):
        r0 = _f4_output_grad(_row4(dy, h, w, cb))
        r1 = _f4_output_grad(_row4(dy, h + 1, w, cb))
        r2 = _f4_output_grad(_row4(dy, h + 2, w, cb))
        r3 = _f4_output_grad(_row4(dy, h + 3, w, cb))
        for col in range(6):
            column = _f4_output_grad((r0[col], r1[col], r2[col], r3[col]))
            for row in range(6):
                _store_row(dM[cb, 6 * row + col, t], column[row])
