"""Winograd convolution for 3x3 kernels with stride 1: F(2x2, 3x3) and F(4x4, 3x3).

Must match reference.winograd_conv2d (Lavin & Gray 2016; lesson 4), and so the im2col + GEMM
convolution. The images go in groups (one parallel task each) small enough for the core's cache:
  1. pad the group's images, channels last: image[h, w, c];
  2. the input transform, 16 channels at a time: V[tile, pos, c] = (B^T d B)[pos];
  3. one GEMM per tile position pos, on the register tile: M[pos] = V[pos] @ U[pos], where
     U[pos] = (G w G^T)[pos] is (C_in, C_out), transformed once per call;
  4. the output transform, 16 output channels at a time: y_tile = A^T M A, back to NCHW.
The transforms of one tile (steps 2 and 4, and dM below) are in winograd_transforms.py.
The input gradient (stride 1) is the same convolution of dy with the kernel flipped; the weight
gradient runs the formula backwards: dM = A dy_tile A^T, dU[pos] = V[pos]^T @ dM[pos] summed
over tiles, dw = G^T dU G (exact: the formula equals the convolution for every w).
F(4x4) multiplies 4x less than a direct convolution, F(2x2) 2.25x, but F(4x4) rounds worse:
float32 training gets F(2x2); float64, and float32 inference, F(4x4) (choose_tile says why).
The speeds behind the rule, from one core's CPU time in ms at batch 128 (forward / input
gradient / weight gradient; Intel Xeon, AVX-512; benchmarks/PROFILE.md has the 2-thread
figures):
                         conv.py          F(2x2)          F(4x4)
  3->16 32x32 (first)   3.8 / - / 10.6    6.9 / - / 7.1   5.6 / - / 5.3
  16->16 32x32         12.7 / 12.7 / 13.0  9.1 / 9.1 / 7.7  7.2 / 7.0 / 5.8
  32->32 16x16         11.7 / 11.7 / 10.1  5.2 / 5.2 / 4.6  3.9 / 3.9 / 3.4
  64->64 8x8           12.3 / 12.2 / 10.7  4.2 / 4.3 / 4.0  3.4 / 3.4 / 3.6"""

import numba
import numpy as np
from numba import prange

from ..reference import WINOGRAD_MATRICES
from .config import FMA, INLINE, PARALLEL, SERIAL, TILE_COLS, TILE_ROWS, round_up, vectorized
from .conv import copy_strided
from .tile import gemm_tile, weight_grad_tile
from .winograd_transforms import (
    input_tile_f2,
    input_tile_f4,
    output_grad_tile_f2,
    output_grad_tile_f4,
    output_tile_f2,
    output_tile_f4,
)

# -- the kernels ----------------------------------------------------------------------------------

@numba.njit(**INLINE)
def _pad_channels_last(x, n0, ph, pw, images):
    """images[b, ph + h, pw + w, c] = x[n0 + b, c, h, w]; zero around x and past its channels."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    for b in range(images.shape[0]):
        image = images[b]
        image[:ph] = 0  # the rows above x and below it
        image[ph + H:] = 0
        for h in range(H):
            row = image[ph + h]
            row[:pw] = 0  # left and right of x, and its padded channels
            row[pw + W:] = 0
            row[pw:pw + W, C:] = 0
            for c in range(C):  # row h of channel c, to every C_padded-th number of the row
                copy_strided(row[pw:, c], 1, x[n0 + b, c, h], 1, W)


# The loops over the tiles are functions of their own (FMA: serial, compiled once), the
# transforms of one tile compiled into them: numba cannot compile them into the parallel
# kernels (its array analysis of a prange loop fails on them).

@numba.njit(**FMA)
def _input_transform(images, m, V):
    """V[t] for every tile t = (b*tiles_h + i)*tiles_w + j: the transform of the (m+2)x(m+2)
    input tile at (i*m, j*m) of images[b]. Both in blocks of TILE_COLS channels:
    images[b, h, w, cb, i], V[t, pos, cb, i]."""
    tiles_h, tiles_w = (images.shape[1] - 2) // m, (images.shape[2] - 2) // m
    for b in range(images.shape[0]):
        for i in range(tiles_h):
            for j in range(tiles_w):
                t = (b * tiles_h + i) * tiles_w + j
                if m == 2:
                    input_tile_f2(images[b], 2 * i, 2 * j, V, t)
                else:
                    input_tile_f4(images[b], 4 * i, 4 * j, V, t)


@numba.njit(**FMA)
def _output_transform(M, m, tiles_h, tiles_w, out):
    """out[b] for every image b: each tile t = (b*tiles_h + i)*tiles_w + j of the products,
    M[t // TILE_ROWS, cb, pos, t % TILE_ROWS], transformed to the m x m outputs at (i*m, j*m):
    out[b, h, w, cb, i] is output channel cb*TILE_COLS + i."""
    for b in range(out.shape[0]):
        for i in range(tiles_h):
            for j in range(tiles_w):
                t = (b * tiles_h + i) * tiles_w + j
                tb, ti = t // TILE_ROWS, t % TILE_ROWS
                if m == 2:
                    output_tile_f2(M[tb], ti, out[b], 2 * i, 2 * j)
                else:
                    output_tile_f4(M[tb], ti, out[b], 4 * i, 4 * j)


@numba.njit(**FMA)
def _output_grad_transform(dy_images, m, tiles_h, tiles_w, dM):
    """dM[cb, pos, t] for every tile t = (b*tiles_h + i)*tiles_w + j: A dy A^T of the m x m
    output gradients at (i*m, j*m) of dy_images[b, h, w, cb]."""
    for b in range(dy_images.shape[0]):
        for i in range(tiles_h):
            for j in range(tiles_w):
                t = (b * tiles_h + i) * tiles_w + j
                if m == 2:
                    output_grad_tile_f2(dy_images[b], 2 * i, 2 * j, dM, t)
                else:
                    output_grad_tile_f4(dy_images[b], 4 * i, 4 * j, dM, t)


# Every array below keeps the 16 or 36 tile positions of one tile close together: laid out
# position-major, positions sit a power of two apart and their 16 or 36 loads or stores all fall
# in the same few cache sets, which made the input transform 9x slower (measured).

@numba.njit(**SERIAL)
def _rows_per_tile(positions, C_padded):
    """The rows of C_padded numbers that V keeps for each tile: its positions, and one unused
    row more where they would put the tiles 512 numbers apart or a larger power of two (F(2x2)
    with 32 or 64 channels). The GEMMs read one position of many tiles, and tiles 2 KB apart or
    4 KB fall in 2 or 1 of the 64 sets of an 8-way L1 cache. Measured, the weight gradient with
    the extra row: 64 channels 13-16% faster (one core, batch 32, and two, batch 128), 32
    channels 9% on one core and within noise on two; at 16 channels (1 KB apart) 2-3% slower,
    so none there."""
    size = positions * C_padded
    return positions + 1 if size >= 512 and size & (size - 1) == 0 else positions


@numba.njit(**PARALLEL)
def _conv(x, U, ph, pw, m, group_size, tiles_h, tiles_w, y):
    N, C = x.shape[:2]
    C_out, H_out, W_out = y.shape[1], y.shape[2], y.shape[3]
    out_blocks, positions = U.shape[0], U.shape[1]
    tile_blocks = -(-group_size * tiles_h * tiles_w // TILE_ROWS)
    C_padded = -(-C // TILE_COLS) * TILE_COLS  # V[tile, pos, c], zero past C
    for group in prange(-(-N // group_size)):
        n0 = group * group_size
        count = min(group_size, N - n0)
        H_pad, W_pad = m * tiles_h + 2, m * tiles_w + 2
        images = np.empty((count, H_pad, W_pad, C_padded), dtype=x.dtype)
        _pad_channels_last(x, n0, ph, pw, images)
        rows = _rows_per_tile(positions, C_padded)
        V = np.empty((tile_blocks * TILE_ROWS, rows, C_padded), dtype=x.dtype)
        _input_transform(images.reshape(count, H_pad, W_pad, -1, TILE_COLS), m,
                         V.reshape(tile_blocks * TILE_ROWS, rows, -1, TILE_COLS))
        V[count * tiles_h * tiles_w:] = 0  # spare rows: their M is unread, but no NaN in the GEMM
        # M[t // TILE_ROWS, co // TILE_COLS, pos, t % TILE_ROWS, co % TILE_COLS]
        M = np.empty((tile_blocks, out_blocks, positions, TILE_ROWS, TILE_COLS), dtype=x.dtype)
        for tb in range(tile_blocks):
            for cb in range(out_blocks):
                for pos in range(positions):  # M[pos] = V[pos] @ U[pos], a tile at a time
                    gemm_tile(V[tb * TILE_ROWS:(tb + 1) * TILE_ROWS, pos], U[cb, pos],
                              M[tb, cb, pos])
        out = np.empty((count, m * tiles_h, m * tiles_w, out_blocks * TILE_COLS), dtype=x.dtype)
        _output_transform(M, m, tiles_h, tiles_w,
                          out.reshape(count, m * tiles_h, m * tiles_w, out_blocks, TILE_COLS))
        for b in range(count):  # back to NCHW, a row of out at a time: it stays in L1 while
            for oh in range(H_out):  # each channel's numbers are picked from it (channel by
                for co in range(C_out):  # channel over all of out[b], 2x slower at 32x32)
                    copy_strided(y[n0 + b, co, oh], 1, out[b, oh, :, co], 1, W_out)


@numba.njit(**PARALLEL)
def _weight_grad(x, dy, ph, pw, m, group_size, tiles_h, tiles_w, dU_parts):
    N, C = x.shape[:2]
    parts, positions = dU_parts.shape[0], dU_parts.shape[1]
    in_blocks, out_blocks = dU_parts.shape[2], dU_parts.shape[3]
    C_padded = in_blocks * TILE_ROWS  # a multiple of TILE_COLS
    groups = -(-N // group_size)
    for part in prange(parts):  # each part sums its own groups into its own dU_parts[part]
        dU = dU_parts[part]  # (pos, ci // TILE_ROWS, co // TILE_COLS, ci % .., co % ..)
        dU[:] = 0
        for group in range(part * groups // parts, (part + 1) * groups // parts):
            n0 = group * group_size
            count = min(group_size, N - n0)
            tiles = count * tiles_h * tiles_w
            H_pad, W_pad = m * tiles_h + 2, m * tiles_w + 2
            images = np.empty((count, H_pad, W_pad, C_padded), dtype=x.dtype)
            _pad_channels_last(x, n0, ph, pw, images)
            rows = _rows_per_tile(positions, C_padded)
            V = np.empty((tiles, rows, C_padded), dtype=x.dtype)
            _input_transform(images.reshape(count, H_pad, W_pad, -1, TILE_COLS), m,
                             V.reshape(tiles, rows, -1, TILE_COLS))
            # dy, channels last, zero past the output (the tiles' last rows and columns)
            dy_images = np.empty((count, m * tiles_h, m * tiles_w, out_blocks * TILE_COLS),
                                 dtype=dy.dtype)
            _pad_channels_last(dy, n0, 0, 0, dy_images)
            # dM[co // TILE_COLS, pos, t, co % TILE_COLS], one spare tile (see above)
            dM = np.empty((out_blocks, positions, tiles + 1, TILE_COLS), dtype=dy.dtype)
            _output_grad_transform(dy_images.reshape(count, m * tiles_h, m * tiles_w, out_blocks,
                                                     TILE_COLS), m, tiles_h, tiles_w, dM)
            for pos in range(positions):  # dU[pos] += V[pos]^T @ dM[pos], a tile at a time
                for ib in range(in_blocks):
                    for cb in range(out_blocks):
                        weight_grad_tile(V[:, pos, ib * TILE_ROWS:(ib + 1) * TILE_ROWS],
                                         dM[cb, pos, :tiles], dU[pos, ib, cb])


def group_size(tiles_per_image, target=64):
    """Images per parallel task: about `target` tiles (V and M a few hundred KB: the core's L2)."""
    return max(1, round(target / tiles_per_image))


@numba.njit(**SERIAL)
def _matmul_kernel(a, b, out):
    for i in range(a.shape[0]):
        for k in range(a.shape[1]):
            for j in range(b.shape[1]):
                out[i, j] += a[i, k] * b[k, j]


def _matmul(a, b):
    """a @ b in float64 for a small a, in numba: out[i, j] = sum over k of a[i, k] * b[k, j]."""
    out = np.zeros((a.shape[0], b.shape[1]))
    _matmul_kernel(np.ascontiguousarray(a, np.float64), np.ascontiguousarray(b, np.float64), out)
    return out


@numba.njit(**SERIAL)
def _transform_weights(kernels, G, U):
    """U[co // TILE_COLS, k*(m+2) + col, c, co % TILE_COLS] = (G w[co, c] G^T)[k, col] for every
    kernel w[co, c] = kernels[c, :, :, co], in float64, stored in U's dtype; U is zero past
    C_out. Straight into the layout the GEMM reads (as a (positions x 9) @ (9 x C_out*C)
    product plus the transposes into this layout it took 0.9 ms a call for 64 channels with
    F(4x4), a third of the layer), TILE_COLS output channels side by side: with them in the
    innermost loops, each a contiguous row of kernels and of U, those loops run on vectors
    (a kernel at a time, the loop took 0.55 ms a call for 64 channels with F(4x4), now 0.1)."""
    C, C_out = kernels.shape[0], kernels.shape[3]
    P = G.shape[0]  # m + 2
    t0, t1, t2 = np.empty(TILE_COLS), np.empty(TILE_COLS), np.empty(TILE_COLS)
    for block in range(U.shape[0]):
        first = block * TILE_COLS
        count = min(TILE_COLS, C_out - first)
        for c in range(C):
            w = kernels[c]  # w[r, s, co]
            for k in range(P):
                # row k of G w: (G w)[k, s] = sum over r of G[k, r] * w[r, s]
                g0, g1, g2 = G[k, 0], G[k, 1], G[k, 2]
                for j in range(count):
                    co = first + j
                    t0[j] = g0 * w[0, 0, co] + g1 * w[1, 0, co] + g2 * w[2, 0, co]
                    t1[j] = g0 * w[0, 1, co] + g1 * w[1, 1, co] + g2 * w[2, 1, co]
                    t2[j] = g0 * w[0, 2, co] + g1 * w[1, 2, co] + g2 * w[2, 2, co]
                for col in range(P):  # column col of (G w) G^T
                    h0, h1, h2 = G[col, 0], G[col, 1], G[col, 2]
                    row = U[block, k * P + col, c]
                    for j in range(count):
                        row[j] = t0[j] * h0 + t1[j] * h1 + t2[j] * h2


def _kron_G(tile):
    """kron(G, G) of F(tile x tile, 3x3): ((tile+2)^2, 9), G[k, r] * G[l, s] at
    [k*(tile+2) + l, r*3 + s]."""
    _, G, _ = WINOGRAD_MATRICES[tile]
    return np.kron(G, G)


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
    # U_tiles[co // TILE_COLS, pos, c, co % TILE_COLS] = (G w[co, c] G^T)[pos]. (np.einsum
    # took 3x as long as all the rest; with BLAS's threads, spinning after the call, stage 3's
    # forward took 6x as long.)
    out_blocks = round_up(C_out, TILE_COLS) // TILE_COLS
    U_tiles = np.zeros((out_blocks, (tile + 2) ** 2, C, TILE_COLS), dtype=x.dtype)
    _, G, _ = WINOGRAD_MATRICES[tile]
    _transform_weights(np.ascontiguousarray(w.transpose(1, 2, 3, 0)),  # (C, 3, 3, C_out)
                       np.ascontiguousarray(G, np.float64), U_tiles)
    y = np.empty((N, C_out, H_out, W_out), dtype=x.dtype)
    with vectorized():
        _conv(np.ascontiguousarray(x), U_tiles, *padding, tile, group_size(tiles_h * tiles_w),
              tiles_h, tiles_w, y)
    return y


def conv2d_input_grad(dy, w, padding, tile):
    """dx = col2im(w2^T @ dy2) for a 3x3 kernel, stride 1: dy convolved with the kernel rotated
    by 180 degrees and its channels swapped, padded by 2 - padding (conv.conv2d_input_grad)."""
    flipped = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]  # a view: conv2d copies it, once
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
    in_blocks = round_up(C, TILE_COLS) // TILE_ROWS  # the transforms take TILE_COLS channels
    out_blocks = round_up(C_out, TILE_COLS) // TILE_COLS
    dU_parts = np.empty((parts, (tile + 2) ** 2, in_blocks, out_blocks, TILE_ROWS, TILE_COLS),
                        dtype=x.dtype)
    with vectorized():
        _weight_grad(np.ascontiguousarray(x), np.ascontiguousarray(dy), *padding, tile, size,
                     tiles_h, tiles_w, dU_parts)
    dU = dU_parts.sum(axis=0, dtype=np.float64).transpose(0, 1, 3, 2, 4)
    # (positions, C, C_out), then (m+2, m+2, C, C_out)
    dU = dU.reshape(-1, in_blocks * TILE_ROWS, out_blocks * TILE_COLS)[:, :C, :C_out]
    # dw[co, c, r, s] = sum over k, l of G[k, r] * dU[k*(m+2) + l, c, co] * G[l, s]
    dw = _matmul(_kron_G(tile).T, dU.reshape(-1, C * C_out))  # (9, C*C_out)
    dw = dw.reshape(3, 3, C, C_out).transpose(3, 2, 0, 1)
    return np.ascontiguousarray(dw.astype(x.dtype))


def choose_tile(C, C_out, H, W, dtype=np.float32, training=True):
    """The tile for a 3x3 stride-1 layer with C -> C_out channels on H x W images of dtype: 4,
    2, or None (conv.py). F(4x4) measured fastest on every such layer of ResNet-20 (the header's
    figures) but the first, whose 3 input channels fill a sixth of the transforms' 16 lanes:
    conv.py is faster there. In float32, training gets F(2x2): F(4x4)'s rounding (5x a direct
    sum's) took a 150-step training curve (tests/test_training_curves.py) 20x past float32's own
    noise at some step (its mean distance: 1.3x), and on the first layer flipped two ReLU inputs
    of tests/test_backends.py's network; F(2x2) stays nearer the float64 curve than conv.py.
    F(4x4) on the 32- and 64-channel layers alone would train ResNet-20 1.08x as fast, but its
    rounding moves ReLU inputs across 0 sooner: over the first 6 steps its loss strayed 4-6x as
    far from the float64 curve as the float32 reference's (F(4x4) everywhere 5-9x, F(2x2)
    0.7-1.1x; geometric means over 12 seeds of bench_accuracy.py --depth 8 --batch 8 --steps 6,
    1 or 2 threads). Over 150 steps every float32 curve ends up about as far from the exact one
    (training is chaotic), so that comparison cannot tell the tiles apart.
    Inference (training=False: no gradient will follow, so no curve to drift) gets F(4x4): its
    logits stay within about 1e-5 of float64's, below float32's own noise in a decision
    (tests/test_winograd.py), and a ResNet-20 evaluation runs about 10% faster."""
    if C < 16:
        return None
    return 2 if dtype == np.float32 and training else 4
