"""Winograd convolution for 3x3 kernels with stride 1: F(2x2, 3x3) and F(4x4, 3x3).

Must match reference.winograd_conv2d (Lavin & Gray 2016; lesson 4), and so the im2col + GEMM
convolution. The images go in groups (one parallel task each) small enough for the core's cache:
  1. pad the group's images, channels last: image[h, w, c];
  2. the input transform, vectorised over channels: V[pos, tile, c] = (B^T d B)[pos];
  3. one GEMM per tile position pos, on the register tile: M[pos] = V[pos] @ U[pos], where
     U[pos] = (G w G^T)[pos] is (C_in, C_out), transformed once per call;
  4. the output transform, vectorised over output channels: y_tile = A^T M A, back to NCHW.
The input gradient (stride 1) is the same convolution of dy with the kernel flipped; the weight
gradient runs the formula backwards: dM = A dy_tile A^T, dU[pos] = V[pos]^T @ dM[pos] summed
over tiles, dw = G^T dU G.
"""

import numba
import numpy as np
from numba import prange

from ..reference import WINOGRAD_MATRICES
from .config import INLINE, PARALLEL, TILE_COLS, TILE_ROWS, round_up, vectorized
from .tile import gemm_tile, weight_grad_tile

# -- the 1-D transforms, one row of each matrix of reference.WINOGRAD_MATRICES per value ---------


@numba.njit(**INLINE)
def _f2_input(d0, d1, d2, d3):
    """B^T d for F(2, 3)."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@numba.njit(**INLINE)
def _f2_output(m0, m1, m2, m3):
    """A^T m for F(2, 3)."""
    return m0 + m1 + m2, m1 - m2 - m3


@numba.njit(**INLINE)
def _f2_output_grad(y0, y1):
    """A dy for F(2, 3): the adjoint of A^T m."""
    return y0, y0 + y1, y0 - y1, -y1


# The constants as float32 (all exact): an int or a Python float would make numba compute a
# float32 tile in float64; float32 times float64 data is float64, as it should be.
TWO, FOUR, FIVE, EIGHT = np.float32(2), np.float32(4), np.float32(5), np.float32(8)


@numba.njit(**INLINE)
def _f4_input(d0, d1, d2, d3, d4, d5):
    """B^T d for F(4, 3)."""
    return (FOUR * d0 - FIVE * d2 + d4, d3 + d4 - FOUR * (d1 + d2), FOUR * (d1 - d2) - d3 + d4,
            TWO * (d3 - d1) - d2 + d4, TWO * (d1 - d3) - d2 + d4, FOUR * d1 - FIVE * d3 + d5)


@numba.njit(**INLINE)
def _f4_output(m0, m1, m2, m3, m4, m5):
    """A^T m for F(4, 3)."""
    return (m0 + m1 + m2 + m3 + m4, m1 - m2 + TWO * (m3 - m4), m1 + m2 + FOUR * (m3 + m4),
            m1 - m2 + EIGHT * (m3 - m4) + m5)


@numba.njit(**INLINE)
def _f4_output_grad(y0, y1, y2, y3):
    """A dy for F(4, 3): the adjoint of A^T m."""
    return (y0, y0 + y1 + y2 + y3, y0 - y1 + y2 - y3, y0 + TWO * y1 + FOUR * y2 + EIGHT * y3,
            y0 - TWO * y1 + FOUR * y2 - EIGHT * y3, y3)


# -- the 2-D transforms of one tile, every channel: rows first, then columns ---------------------

@numba.njit(**INLINE)
def _input_tile_f2(image, h, w, V, t):
    """V[t, 4*k + l, c] = sum over r, s of B^T[k, r] * image[h + r, w + s, c] * B^T[l, s]."""
    for c in range(V.shape[2]):
        r0 = _f2_input(image[h, w, c], image[h, w + 1, c], image[h, w + 2, c],
                       image[h, w + 3, c])
        r1 = _f2_input(image[h + 1, w, c], image[h + 1, w + 1, c], image[h + 1, w + 2, c],
                       image[h + 1, w + 3, c])
        r2 = _f2_input(image[h + 2, w, c], image[h + 2, w + 1, c], image[h + 2, w + 2, c],
                       image[h + 2, w + 3, c])
        r3 = _f2_input(image[h + 3, w, c], image[h + 3, w + 1, c], image[h + 3, w + 2, c],
                       image[h + 3, w + 3, c])
        for col in range(4):
            column = _f2_input(r0[col], r1[col], r2[col], r3[col])
            for row in range(4):
                V[t, 4 * row + col, c] = column[row]


@numba.njit(**INLINE)
def _input_tile_f4(image, h, w, V, t):
    """V[t, 6*k + l, c] = sum over r, s of B^T[k, r] * image[h + r, w + s, c] * B^T[l, s]."""
    for c in range(V.shape[2]):
        r0 = _f4_input(image[h, w, c], image[h, w + 1, c], image[h, w + 2, c],
                       image[h, w + 3, c], image[h, w + 4, c], image[h, w + 5, c])
        r1 = _f4_input(image[h + 1, w, c], image[h + 1, w + 1, c], image[h + 1, w + 2, c],
                       image[h + 1, w + 3, c], image[h + 1, w + 4, c], image[h + 1, w + 5, c])
        r2 = _f4_input(image[h + 2, w, c], image[h + 2, w + 1, c], image[h + 2, w + 2, c],
                       image[h + 2, w + 3, c], image[h + 2, w + 4, c], image[h + 2, w + 5, c])
        r3 = _f4_input(image[h + 3, w, c], image[h + 3, w + 1, c], image[h + 3, w + 2, c],
                       image[h + 3, w + 3, c], image[h + 3, w + 4, c], image[h + 3, w + 5, c])
        r4 = _f4_input(image[h + 4, w, c], image[h + 4, w + 1, c], image[h + 4, w + 2, c],
                       image[h + 4, w + 3, c], image[h + 4, w + 4, c], image[h + 4, w + 5, c])
        r5 = _f4_input(image[h + 5, w, c], image[h + 5, w + 1, c], image[h + 5, w + 2, c],
                       image[h + 5, w + 3, c], image[h + 5, w + 4, c], image[h + 5, w + 5, c])
        for col in range(6):
            column = _f4_input(r0[col], r1[col], r2[col], r3[col], r4[col], r5[col])
            for row in range(6):
                V[t, 6 * row + col, c] = column[row]


@numba.njit(**INLINE)
def _output_tile_f2(M, ti, out, h, w):
    """out[h + p, w + q, co] = sum over k, l of A^T[p, k] * M[co // TILE_COLS, 4*k + l, ti,
    co % TILE_COLS] * A^T[q, l], for every (padded) output channel co."""
    for cb in range(M.shape[0]):
        for j in range(TILE_COLS):
            co = cb * TILE_COLS + j
            r0 = _f2_output(M[cb, 0, ti, j], M[cb, 1, ti, j], M[cb, 2, ti, j],
                            M[cb, 3, ti, j])
            r1 = _f2_output(M[cb, 4, ti, j], M[cb, 5, ti, j], M[cb, 6, ti, j],
                            M[cb, 7, ti, j])
            r2 = _f2_output(M[cb, 8, ti, j], M[cb, 9, ti, j], M[cb, 10, ti, j],
                            M[cb, 11, ti, j])
            r3 = _f2_output(M[cb, 12, ti, j], M[cb, 13, ti, j], M[cb, 14, ti, j],
                            M[cb, 15, ti, j])
            for q in range(2):
                column = _f2_output(r0[q], r1[q], r2[q], r3[q])
                for p in range(2):
                    out[h + p, w + q, co] = column[p]


@numba.njit(**INLINE)
def _output_tile_f4(M, ti, out, h, w):
    """out[h + p, w + q, co] = sum over k, l of A^T[p, k] * M[co // TILE_COLS, 6*k + l, ti,
    co % TILE_COLS] * A^T[q, l], for every (padded) output channel co."""
    for cb in range(M.shape[0]):
        for j in range(TILE_COLS):
            co = cb * TILE_COLS + j
            r0 = _f4_output(M[cb, 0, ti, j], M[cb, 1, ti, j], M[cb, 2, ti, j],
                            M[cb, 3, ti, j], M[cb, 4, ti, j], M[cb, 5, ti, j])
            r1 = _f4_output(M[cb, 6, ti, j], M[cb, 7, ti, j], M[cb, 8, ti, j],
                            M[cb, 9, ti, j], M[cb, 10, ti, j], M[cb, 11, ti, j])
            r2 = _f4_output(M[cb, 12, ti, j], M[cb, 13, ti, j], M[cb, 14, ti, j],
                            M[cb, 15, ti, j], M[cb, 16, ti, j], M[cb, 17, ti, j])
            r3 = _f4_output(M[cb, 18, ti, j], M[cb, 19, ti, j], M[cb, 20, ti, j],
                            M[cb, 21, ti, j], M[cb, 22, ti, j], M[cb, 23, ti, j])
            r4 = _f4_output(M[cb, 24, ti, j], M[cb, 25, ti, j], M[cb, 26, ti, j],
                            M[cb, 27, ti, j], M[cb, 28, ti, j], M[cb, 29, ti, j])
            r5 = _f4_output(M[cb, 30, ti, j], M[cb, 31, ti, j], M[cb, 32, ti, j],
                            M[cb, 33, ti, j], M[cb, 34, ti, j], M[cb, 35, ti, j])
            for q in range(4):
                column = _f4_output(r0[q], r1[q], r2[q], r3[q], r4[q], r5[q])
                for p in range(4):
                    out[h + p, w + q, co] = column[p]


@numba.njit(**INLINE)
def _output_grad_tile_f2(dy, h, w, dM, t):
    """dM[co // TILE_COLS, 4*k + l, t, co % TILE_COLS] = sum over p, q of A^T[p, k] *
    dy[h + p, w + q, co] * A^T[q, l], for every (padded) output channel co."""
    for cb in range(dM.shape[0]):
        for j in range(TILE_COLS):
            co = cb * TILE_COLS + j
            r0 = _f2_output_grad(dy[h, w, co], dy[h, w + 1, co])
            r1 = _f2_output_grad(dy[h + 1, w, co], dy[h + 1, w + 1, co])
            for col in range(4):
                column = _f2_output_grad(r0[col], r1[col])
                for row in range(4):
                    dM[cb, 4 * row + col, t, j] = column[row]


@numba.njit(**INLINE)
def _output_grad_tile_f4(dy, h, w, dM, t):
    """dM[co // TILE_COLS, 6*k + l, t, co % TILE_COLS] = sum over p, q of A^T[p, k] *
    dy[h + p, w + q, co] * A^T[q, l], for every (padded) output channel co."""
    for cb in range(dM.shape[0]):
        for j in range(TILE_COLS):
            co = cb * TILE_COLS + j
            r0 = _f4_output_grad(dy[h, w, co], dy[h, w + 1, co], dy[h, w + 2, co],
                                 dy[h, w + 3, co])
            r1 = _f4_output_grad(dy[h + 1, w, co], dy[h + 1, w + 1, co], dy[h + 1, w + 2, co],
                                 dy[h + 1, w + 3, co])
            r2 = _f4_output_grad(dy[h + 2, w, co], dy[h + 2, w + 1, co], dy[h + 2, w + 2, co],
                                 dy[h + 2, w + 3, co])
            r3 = _f4_output_grad(dy[h + 3, w, co], dy[h + 3, w + 1, co], dy[h + 3, w + 2, co],
                                 dy[h + 3, w + 3, co])
            for col in range(6):
                column = _f4_output_grad(r0[col], r1[col], r2[col], r3[col])
                for row in range(6):
                    dM[cb, 6 * row + col, t, j] = column[row]


# -- the kernels ----------------------------------------------------------------------------------

@numba.njit(**INLINE)
def _pad_channels_last(x, n0, ph, pw, images):
    """images[b, ph + h, pw + w, c] = x[n0 + b, c, h, w]; zero around x and past its channels."""
    images[:] = 0
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    for b in range(images.shape[0]):
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    images[b, ph + h, pw + w, c] = x[n0 + b, c, h, w]


@numba.njit(**INLINE)
def _input_transform(images, m, V):
    """V[t] for every tile t = (b*tiles_h + i)*tiles_w + j: the transform of the (m+2)x(m+2)
    input tile at (i*m, j*m) of images[b]."""
    tiles_h, tiles_w = (images.shape[1] - 2) // m, (images.shape[2] - 2) // m
    for b in range(images.shape[0]):
        for i in range(tiles_h):
            for j in range(tiles_w):
                t = (b * tiles_h + i) * tiles_w + j
                if m == 2:
                    _input_tile_f2(images[b], 2 * i, 2 * j, V, t)
                else:
                    _input_tile_f4(images[b], 4 * i, 4 * j, V, t)


# Every array below keeps the 16 or 36 tile positions of one tile close together: laid out
# position-major, positions sit a power of two apart and their 16 or 36 loads or stores all fall
# in the same few cache sets, which made the input transform 9x slower (measured).

@numba.njit(**PARALLEL)
def _conv(x, U, ph, pw, m, group_size, tiles_h, tiles_w, y):
    N, C = x.shape[:2]
    C_out, H_out, W_out = y.shape[1], y.shape[2], y.shape[3]
    out_blocks, positions = U.shape[0], U.shape[1]
    tile_blocks = -(-group_size * tiles_h * tiles_w // TILE_ROWS)
    for group in prange(-(-N // group_size)):
        n0 = group * group_size
        count = min(group_size, N - n0)
        images = np.empty((count, m * tiles_h + 2, m * tiles_w + 2, C), dtype=x.dtype)
        _pad_channels_last(x, n0, ph, pw, images)
        V = np.zeros((tile_blocks * TILE_ROWS, positions, C), dtype=x.dtype)  # (tile, pos, c)
        _input_transform(images, m, V)
        # M[t // TILE_ROWS, co // TILE_COLS, pos, t % TILE_ROWS, co % TILE_COLS]
        M = np.zeros((tile_blocks, out_blocks, positions, TILE_ROWS, TILE_COLS), dtype=x.dtype)
        for tb in range(tile_blocks):
            for cb in range(out_blocks):
                for pos in range(positions):  # M[pos] = V[pos] @ U[pos], a tile at a time
                    gemm_tile(V[tb * TILE_ROWS:(tb + 1) * TILE_ROWS, pos], U[cb, pos],
                              M[tb, cb, pos])
        out = np.empty((count, m * tiles_h, m * tiles_w, out_blocks * TILE_COLS), dtype=x.dtype)
        for b in range(count):
            for i in range(tiles_h):
                for j in range(tiles_w):
                    t = (b * tiles_h + i) * tiles_w + j
                    tb, ti = t // TILE_ROWS, t % TILE_ROWS
                    if m == 2:
                        _output_tile_f2(M[tb], ti, out[b], 2 * i, 2 * j)
                    else:
                        _output_tile_f4(M[tb], ti, out[b], 4 * i, 4 * j)
        for b in range(count):
            for co in range(C_out):
                for oh in range(H_out):
                    for ow in range(W_out):
                        y[n0 + b, co, oh, ow] = out[b, oh, ow, co]


@numba.njit(**PARALLEL)
def _weight_grad(x, dy, ph, pw, m, group_size, tiles_h, tiles_w, dU_parts):
    N, C = x.shape[:2]
    parts, positions = dU_parts.shape[0], dU_parts.shape[1]
    in_blocks, out_blocks = dU_parts.shape[2], dU_parts.shape[3]
    groups = -(-N // group_size)
    for part in prange(parts):  # each part sums its own groups into its own dU_parts[part]
        dU = dU_parts[part]  # (pos, ci // TILE_ROWS, co // TILE_COLS, ci % .., co % ..)
        dU[:] = 0
        for group in range(part * groups // parts, (part + 1) * groups // parts):
            n0 = group * group_size
            count = min(group_size, N - n0)
            tiles = count * tiles_h * tiles_w
            images = np.empty((count, m * tiles_h + 2, m * tiles_w + 2, in_blocks * TILE_ROWS),
                              dtype=x.dtype)
            _pad_channels_last(x, n0, ph, pw, images)
            V = np.empty((tiles, positions, in_blocks * TILE_ROWS), dtype=x.dtype)
            _input_transform(images, m, V)
            # dy, channels last, zero past the output (the tiles' last rows and columns)
            dy_images = np.empty((count, m * tiles_h, m * tiles_w, out_blocks * TILE_COLS),
                                 dtype=dy.dtype)
            _pad_channels_last(dy, n0, 0, 0, dy_images)
            # dM[co // TILE_COLS, pos, t, co % TILE_COLS], one spare tile (see above)
            dM = np.empty((out_blocks, positions, tiles + 1, TILE_COLS), dtype=dy.dtype)
            for b in range(count):
                for i in range(tiles_h):
                    for j in range(tiles_w):
                        t = (b * tiles_h + i) * tiles_w + j
                        if m == 2:
                            _output_grad_tile_f2(dy_images[b], 2 * i, 2 * j, dM, t)
                        else:
                            _output_grad_tile_f4(dy_images[b], 4 * i, 4 * j, dM, t)
            for pos in range(positions):  # dU[pos] += V[pos]^T @ dM[pos], a tile at a time
                for ib in range(in_blocks):
                    for cb in range(out_blocks):
                        weight_grad_tile(V[:, pos, ib * TILE_ROWS:(ib + 1) * TILE_ROWS],
                                         dM[cb, pos, :tiles], dU[pos, ib, cb])


def group_size(tiles_per_image, target=64):
    """Images per parallel task: about `target` tiles (V and M a few hundred KB: the core's L2)."""
    return max(1, round(target / tiles_per_image))


def _sizes(x_shape, padding, tile):
    """(H_out, W_out, tiles_h, tiles_w) of a 3x3 stride-1 convolution in tile x tile tiles."""
    H_out, W_out = x_shape[2] + 2 * padding[0] - 2, x_shape[3] + 2 * padding[1] - 2
    return H_out, W_out, -(-H_out // tile), -(-W_out // tile)


def conv2d(x, w, padding, tile):
    """y = w (*) x for a 3x3 kernel, stride 1: y[n, co, oh, ow] = sum over c, kh, kw of
    w[co, c, kh, kw] * x_pad[n, c, oh + kh, ow + kw], as reference.winograd_conv2d computes it
    with F(tile x tile, 3x3), tile 2 or 4."""
    N, C = x.shape[:2]
    C_out = w.shape[0]
    H_out, W_out, tiles_h, tiles_w = _sizes(x.shape, padding, tile)
    _, G, _ = WINOGRAD_MATRICES[tile]
    U = np.einsum("kr,oirs,ls->klio", G, w, G)  # (m+2, m+2, C, C_out), in float64
    out_blocks = round_up(C_out, TILE_COLS) // TILE_COLS
    U_tiles = np.zeros(((tile + 2) ** 2, C, out_blocks * TILE_COLS), dtype=x.dtype)
    U_tiles[:, :, :C_out] = U.reshape(-1, C, C_out)
    # (positions, C, out_blocks*TILE_COLS) -> (out_blocks, positions, C, TILE_COLS)
    U_tiles = np.ascontiguousarray(
        U_tiles.reshape(-1, C, out_blocks, TILE_COLS).transpose(2, 0, 1, 3))
    y = np.empty((N, C_out, H_out, W_out), dtype=x.dtype)
    with vectorized():
        _conv(np.ascontiguousarray(x), U_tiles, *padding, tile, group_size(tiles_h * tiles_w),
              tiles_h, tiles_w, y)
    return y


def conv2d_input_grad(dy, w, padding, tile):
    """dx = col2im(w2^T @ dy2) for a 3x3 kernel, stride 1: dy convolved with the kernel rotated
    by 180 degrees and its channels swapped, padded by 2 - padding (conv.conv2d_input_grad)."""
    flipped = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    return conv2d(dy, flipped, (2 - padding[0], 2 - padding[1]), tile)


def conv2d_weight_grad(x, dy, padding, tile):
    """dw = dy2 @ cols^T for a 3x3 kernel, stride 1: dw[co, c, kh, kw] = sum over n, oh, ow of
    dy[n, co, oh, ow] * x_pad[n, c, oh + kh, ow + kw]. By the formula run backwards, exact
    because it equals the convolution for every w: dU[pos] = sum over tiles of
    V[pos]^T (A dy_tile A^T)[pos], then dw = G^T dU G."""
    N, C = x.shape[:2]
    C_out = dy.shape[1]
    _, _, tiles_h, tiles_w = _sizes(x.shape, padding, tile)
    size = group_size(tiles_h * tiles_w)
    parts = min(numba.get_num_threads(), -(-N // size))
    in_blocks = round_up(C, TILE_ROWS) // TILE_ROWS
    out_blocks = round_up(C_out, TILE_COLS) // TILE_COLS
    dU_parts = np.empty((parts, (tile + 2) ** 2, in_blocks, out_blocks, TILE_ROWS, TILE_COLS),
                        dtype=x.dtype)
    with vectorized():
        _weight_grad(np.ascontiguousarray(x), np.ascontiguousarray(dy), *padding, tile, size,
                     tiles_h, tiles_w, dU_parts)
    dU = dU_parts.sum(axis=0, dtype=np.float64).transpose(0, 1, 3, 2, 4)
    # (positions, C, C_out), then (m+2, m+2, C, C_out)
    dU = dU.reshape(-1, in_blocks * TILE_ROWS, out_blocks * TILE_COLS)[:, :C, :C_out]
    _, G, _ = WINOGRAD_MATRICES[tile]
    dw = np.einsum("kr,klio,ls->oirs", G, dU.reshape(tile + 2, tile + 2, C, C_out), G)
    return np.ascontiguousarray(dw.astype(x.dtype))


def choose_tile(C, C_out, H, W):
    """The tile for a 3x3 stride-1 layer: 4, 2, or None (conv.py is faster): the figures in the
    header."""
    return 4 if min(C, C_out) >= 32 else None
