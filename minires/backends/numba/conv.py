"""Convolution, version 2: no column matrix, every GEMM on the register tile (tile.py).

Must match reference.Reference.conv2d_forward/backward (im2col + GEMM + col2im); conv_naive.py
is version 1, the same convolution as plain loops. What changes against the reference:
  - no column matrix: each image is copied once into a zero-padded buffer, and every kernel tap
    reads a shifted slice of it (the columns copy each pixel KH*KW times, 75 MB for one layer of
    ResNet-20 at batch 128, and a GEMM with 16 rows cannot reuse them from cache);
  - the GEMM runs a tile of outputs at a time, kept in registers for its whole sum; the input
    gradient is a convolution of dy too, the weight gradient the same tile on channels-last data;
  - images run in parallel (`prange`), each one's working set small enough for the core's cache.
benchmarks/PROFILE.md has the measurements behind each choice.

Each image is copied into a zero-padded buffer with rows W + 2*pw long, flattened. Output pixel
(oh, ow) of a stride-1 convolution reads the input at q + kh*row_length + kw, q = oh*row_length +
ow: each tap (kh, kw) is one slice of the buffer, shifted. Computing the output in rows of that
length too ("wide" rows) turns each tap into one long loop over q; the last columns of each wide
row fall outside the image and are dropped. With stride s the buffer is split into s*s phases,
x_pad[r::s, c::s], each flattened in rows of ceil((W + 2*pw) / s): tap (kh, kw) reads phase
(kh % s, kw % s) from (kh//s)*row_length + kw//s, so a strided convolution is again one shifted
slice per tap. So the convolution of one image is a GEMM, y[co, q] = sum over taps k of
w[co, k] * cols[k, q], whose column matrix never exists: cols[k, q] = image[tap_starts[k] + q].
"""

import numba
import numpy as np
from numba import prange

from .config import INLINE, PARALLEL, SERIAL, TILE_COLS, TILE_ROWS, round_up, vectorized
from .tile import conv_tile, weight_grad_tile


class Layout:
    """The sizes for a KH x KW kernel with this stride and padding: the output (H_out, W_out);
    each padded image's sh*sw phases, phase_rows rows of row_length, phase_length long with the
    zero tail that lets every tap read wide_size entries; the wide output, H_out rows of
    row_length rounded up to a tile: wide_size."""

    def __init__(self, x_shape, KH, KW, stride, padding):
        N, C, H, W = x_shape
        (sh, sw), (ph, pw) = stride, padding
        self.stride, self.padding = stride, padding
        self.H_out = (H + 2 * ph - KH) // sh + 1
        self.W_out = (W + 2 * pw - KW) // sw + 1
        self.phase_rows = -(-(H + 2 * ph) // sh)
        self.row_length = -(-(W + 2 * pw) // sw)
        self.wide_size = round_up(self.H_out * self.row_length, TILE_COLS)
        last_tap = (KH - 1) // sh * self.row_length + (KW - 1) // sw
        self.phase_length = max(self.phase_rows * self.row_length, last_tap + self.wide_size)

    @property
    def args(self):
        """What the kernels take: sh, sw, ph, pw, row_length, phase_length, wide_size."""
        return (*self.stride, *self.padding, self.row_length, self.phase_length, self.wide_size)


def tap_starts(C, KH, KW, layout):
    """starts[(ci*KH + kh)*KW + kw]: where tap (kh, kw) of input channel ci starts in an image's
    flattened phases, (ci, phase, position in the phase)."""
    (sh, sw), row_length, phase_length = layout.stride, layout.row_length, layout.phase_length
    ci, kh, kw = np.meshgrid(np.arange(C), np.arange(KH), np.arange(KW), indexing="ij")
    phase = kh % sh * sw + kw % sw
    return ((ci * sh * sw + phase) * phase_length + kh // sh * row_length + kw // sw).reshape(-1)


@numba.njit(**INLINE)
def copy_strided(dst, dst_step, src, src_step, count):
    """dst[j * dst_step] = src[j * src_step] for j < count, dst and src 1-D views. Every copy of
    this backend that is not a slice of one array into another goes through here: numba wraps
    negative indices around, a test on each access that LLVM drops only where it sees that the
    index cannot be negative, as here, where it counts up from 0 (an index such as start + j
    kept the copies 2-4x slower). A slice assignment would not do: numba copies through a
    temporary array whenever it cannot rule out that the two overlap."""
    for j in range(count):
        dst[j * dst_step] = src[j * src_step]


@numba.njit(**SERIAL)
def phase_span(r, s, pad, size):
    """Along one axis of x (size pixels, padding pad, stride s), the pixels of x in phase r of
    the padded axis, x_pad[r::s]: (first, at, count): pixels first, first + s, ... (count of
    them) sit at positions at, at + 1, ... of the phase."""
    first = (r - pad) % s
    return first, (first + pad) // s, len(range(first, size, s))


@numba.njit(**SERIAL)
def split_channel(xc, sh, sw, ph, pw, row_length, phases):
    """phases[r*sw + k] = x_pad[r::sh, k::sw] for one channel xc, flattened in rows: pixel (h, w)
    goes to phase ((h+ph) % sh, (w+pw) % sw), row (h+ph) // sh, column (w+pw) // sw.
    Writes only the pixels of xc; the padding keeps what phases held (zero)."""
    H, W = xc.shape
    for r in range(sh):
        h0, row0, rows = phase_span(r, sh, ph, H)  # row h0 + i*sh goes to row row0 + i
        for k in range(sw):  # and column w0 + j*sw to column column0 + j
            w0, column0, columns = phase_span(k, sw, pw, W)
            phase = phases[r * sw + k]
            for i in range(rows):  # no division in this loop: each costs tens of cycles
                start = (row0 + i) * row_length + column0
                copy_strided(phase[start:], 1, xc[h0 + i * sh, w0:], sw, columns)


@numba.njit(**SERIAL)
def split_image(x, sh, sw, ph, pw, row_length, phases):
    """phases[c] = the phases of channel c (split_channel), zero around x."""
    phases[:] = 0
    for c in range(x.shape[0]):
        split_channel(x[c], sh, sw, ph, pw, row_length, phases[c])


def channel_groups(weights):
    """tiles[g, k, i] = weights[k, g*TILE_ROWS + i] for a (taps, channels) matrix, zero past its
    channels: the TILE_ROWS weights that a tile's rows take at each tap, side by side."""
    taps, channels = weights.shape
    padded = np.zeros((taps, round_up(channels, TILE_ROWS)), dtype=weights.dtype)
    padded[:, :channels] = weights
    return np.ascontiguousarray(padded.reshape(taps, -1, TILE_ROWS).transpose(1, 0, 2))


@numba.njit(**PARALLEL)
def _conv(x, weight_tiles, starts, sh, sw, ph, pw, row_length, phase_length, wide_size, y):
    N, C = x.shape[:2]
    C_out, H_out, W_out = y.shape[1], y.shape[2], y.shape[3]
    groups = weight_tiles.shape[0]  # of TILE_ROWS output channels
    for n in prange(N):
        phases = np.empty((C, sh * sw, phase_length), dtype=x.dtype)
        split_image(x[n], sh, sw, ph, pw, row_length, phases)
        image = phases.reshape(-1)
        # wide[co // TILE_ROWS, co % TILE_ROWS, q]: output channel co at wide position q
        wide = np.empty((groups, TILE_ROWS, wide_size), dtype=y.dtype)
        for p in range(0, wide_size, TILE_COLS):
            for g in range(groups):  # the inputs of each tap stay in cache for every group
                conv_tile(image, starts, p, weight_tiles[g], wide[g])
        for co in range(C_out):  # each output row: the first W_out columns of a wide row
            g, i = co // TILE_ROWS, co % TILE_ROWS
            for oh in range(H_out):
                copy_strided(y[n, co, oh], 1, wide[g, i, oh * row_length:], 1, W_out)


def conv2d(x, w, stride, padding):
    """y = w (*) x: (N, C_in, H, W) -> (N, C_out, H_out, W_out), as im2col + gemm compute it."""
    C_out, C, KH, KW = w.shape
    layout = Layout(x.shape, KH, KW, stride, padding)
    weight_tiles = channel_groups(w.reshape(C_out, -1).T)  # (groups, taps, TILE_ROWS)
    y = np.empty((x.shape[0], C_out, layout.H_out, layout.W_out), dtype=x.dtype)
    with vectorized():
        _conv(np.ascontiguousarray(x), weight_tiles, tap_starts(C, KH, KW, layout),
              *layout.args, y)
    return y


def conv2d_input_grad(dy, w, x_shape, stride, padding):
    """dx = col2im(w2^T @ dy2): each input pixel gets the gradient of every output whose window
    covers it, times the weight that joined them. That is a convolution of dy too."""
    C_out, C, KH, KW = w.shape
    ph, pw = padding
    if stride == (1, 1) and ph < KH and pw < KW:
        # Stride 1: a convolution of dy, padded by KH-1-ph, with the kernel flipped (and its
        # channels swapped) reads exactly the outputs that each pixel fed.
        return conv2d(dy, _flip(w), (1, 1), (KH - 1 - ph, KW - 1 - pw))
    return _strided_input_grad(dy, w, x_shape, stride, padding)


def _flip(w):
    """(C_out, C_in, KH, KW) -> (C_in, C_out, KH, KW), each kernel rotated by 180 degrees."""
    return np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])


# With stride s, pixel (i*sh + r, j*sw + c) of the padded input fed output (i - a, j - b) through
# tap (a*sh + r, b*sw + c). So phase (r, c) of dx_pad gets a stride-1 convolution of dy with the
# taps of that phase, w[:, :, r::sh, c::sw], flipped; all phases read dy padded the same way,
# each with its own taps (a phase that no tap reads, r >= KH, gets no gradient). Each phase's
# wide output covers only its rows that are pixels of x, not padding (phase_span); at 8x8, a
# quarter less work than every row.

@numba.njit(**PARALLEL)
def _conv_strided_input_grad(dy, weight_tiles, starts, bounds, sh, sw, ph, pw, taps_down,
                             taps_across, dy_row_length, dy_length, wide_size, dx):
    N, C_out = dy.shape[:2]
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    groups = weight_tiles.shape[0]  # of TILE_ROWS input channels
    for n in prange(N):
        # dy[n] with taps_down-1 rows and taps_across-1 columns of zeros before, more after
        dy_padded = np.empty((C_out, 1, dy_length), dtype=dy.dtype)
        split_image(dy[n], 1, 1, taps_down - 1, taps_across - 1, dy_row_length, dy_padded)
        image = dy_padded.reshape(-1)
        wide = np.empty((groups, TILE_ROWS, wide_size), dtype=dx.dtype)
        for r in range(sh):
            h0, row0, rows = phase_span(r, sh, ph, H)
            # wide position q is the phase's row row0 + q // dy_row_length: each tap's inputs
            # start row0 rows further into image
            first = image[row0 * dy_row_length:]
            size = -(-rows * dy_row_length // TILE_COLS) * TILE_COLS
            for c in range(sw):
                taps = slice(bounds[r * sw + c], bounds[r * sw + c + 1])
                if taps.start == taps.stop:  # no tap reaches this phase: kernel < stride
                    wide[:] = 0
                else:
                    for p in range(0, size, TILE_COLS):
                        for g in range(groups):
                            conv_tile(first, starts[taps], p, weight_tiles[g, taps], wide[g])
                # The phase's pixels: rows h0 + a*sh, columns w0 + b*sw of dx, at row a and
                # column column0 + b of the wide output (no division inside the loops)
                w0, column0, columns = phase_span(c, sw, pw, W)
                for ci in range(C):
                    g, i = ci // TILE_ROWS, ci % TILE_ROWS
                    for a in range(rows):
                        q = a * dy_row_length + column0
                        copy_strided(dx[n, ci, h0 + a * sh, w0:], sw, wide[g, i, q:], 1, columns)


def _strided_input_grad(dy, w, x_shape, stride, padding):
    C_out, C, KH, KW = w.shape
    (sh, sw), (ph, pw) = stride, padding
    N, _, H, W = x_shape
    H_out, W_out = dy.shape[2:]
    taps_down, taps_across = -(-KH // sh), -(-KW // sw)  # the most taps a phase has
    phase_row_length = -(-(W + 2 * pw) // sw)
    # padded dy's row length, also that of each phase's wide rows
    dy_row_length = max(phase_row_length, W_out) + taps_across - 1
    wide_size = round_up(-(-H // sh) * dy_row_length, TILE_COLS)  # a phase has <= that many rows
    # Every tap's inputs must lie in padded dy: the last row a phase reads starts at row
    # row0 + taps_down - 1 (tap a = 0), and its wide output ends after its rows of x.
    dy_length = (H_out + taps_down - 1) * dy_row_length
    for r in range(sh):
        _, row0, rows = phase_span(r, sh, ph, H)
        dy_length = max(dy_length, (row0 + taps_down - 1) * dy_row_length + taps_across - 1
                        + round_up(rows * dy_row_length, TILE_COLS))
    starts, weights, bounds = [], [], [0]
    for r in range(sh):
        for c in range(sw):
            co, a, b = np.meshgrid(np.arange(C_out), np.arange(len(range(r, KH, sh))),
                                   np.arange(len(range(c, KW, sw))), indexing="ij")
            starts.append((co * dy_length + (taps_down - 1 - a) * dy_row_length
                           + (taps_across - 1 - b)).reshape(-1))
            weights.append(w[co, :, a * sh + r, b * sw + c].reshape(-1, C))  # (taps, C)
            bounds.append(bounds[-1] + co.size)
    weight_tiles = channel_groups(np.concatenate(weights))  # (groups, taps, TILE_ROWS)
    dx = np.empty(x_shape, dtype=dy.dtype)
    with vectorized():
        _conv_strided_input_grad(np.ascontiguousarray(dy), weight_tiles, np.concatenate(starts),
                                 np.array(bounds), sh, sw, ph, pw, taps_down, taps_across,
                                 dy_row_length, dy_length, wide_size, dx)
    return dx


# The weight gradient sums over the positions q, which are contiguous in neither operand as the
# forward lays them out; so here both go channels last, in blocks: the inputs of one tap for
# TILE_ROWS channels at q are contiguous, and so are TILE_COLS channels of dy.

@numba.njit(**SERIAL)
def _split_image_channels_last(x, sh, sw, ph, pw, row_length, phases):
    """phases[c // TILE_ROWS, phase, position, c % TILE_ROWS] = what split_image puts at
    [c, phase, position]. Writes only the pixels of x: the padding and the channels past C stay
    as they were (zero). A row of a phase at a time, every channel's numbers in it, so the row
    stays in L1: in split_channel's order each channel passed over the whole block (16 channels
    at 32x32: 74 KB), and the split alone took up to 1.4x as long with the 4-row tile, 1.3-1.8x
    with 16 rows. (split_image's layout is the other way round: there a channel at a time is
    faster.)"""
    C, H, W = x.shape
    for r in range(sh):
        h0, row0, rows = phase_span(r, sh, ph, H)  # as in split_channel
        for k in range(sw):
            w0, column0, columns = phase_span(k, sw, pw, W)
            for i in range(rows):
                start = (row0 + i) * row_length + column0
                for c in range(C):
                    copy_strided(phases[c // TILE_ROWS, r * sw + k, start:, c % TILE_ROWS], 1,
                                 x[c, h0 + i * sh, w0:], sw, columns)


@numba.njit(**PARALLEL)
def _conv_weight_grad(x, dy, KH, KW, sh, sw, ph, pw, row_length, phase_length, wide_size,
                      dw_parts):
    N, C = x.shape[:2]
    C_out, H_out, W_out = dy.shape[1], dy.shape[2], dy.shape[3]
    parts, C_blocks, C_out_blocks = dw_parts.shape[0], dw_parts.shape[2], dw_parts.shape[3]
    for part in prange(parts):  # each part sums its own images into its own dw_parts[part]
        # dw_tiles[tap, ci // TILE_ROWS, co // TILE_COLS, ci % TILE_ROWS, co % TILE_COLS]
        dw_tiles = dw_parts[part]
        dw_tiles[:] = 0
        phases = np.zeros((C_blocks, sh * sw, phase_length, TILE_ROWS), dtype=x.dtype)
        dy_wide = np.zeros((C_out_blocks, wide_size, TILE_COLS), dtype=dy.dtype)  # 0 if dropped
        for n in range(part * N // parts, (part + 1) * N // parts):
            _split_image_channels_last(x[n], sh, sw, ph, pw, row_length, phases)
            for co in range(C_out):
                block, j = co // TILE_COLS, co % TILE_COLS
                for oh in range(H_out):
                    copy_strided(dy_wide[block, oh * row_length:, j], 1, dy[n, co, oh], 1, W_out)
            for kh in range(KH):
                for kw in range(KW):
                    phase, start = kh % sh * sw + kw % sw, kh // sh * row_length + kw // sw
                    for cb in range(C_blocks):
                        inputs = phases[cb, phase, start:start + wide_size]  # the tap's inputs
                        for g in range(C_out_blocks):
                            weight_grad_tile(inputs, dy_wide[g], dw_tiles[kh * KW + kw, cb, g])


def conv2d_weight_grad(x, dy, KH, KW, stride, padding):
    """dw = dy2 @ cols^T: dw[co, ci, kh, kw] = sum over n, oh, ow of
    dy[n, co, oh, ow] * x_pad[n, ci, oh*sh + kh, ow*sw + kw]."""
    C, C_out = x.shape[1], dy.shape[1]
    layout = Layout(x.shape, KH, KW, stride, padding)
    parts = min(numba.get_num_threads(), x.shape[0])
    C_blocks = round_up(C, TILE_ROWS) // TILE_ROWS
    C_out_blocks = round_up(C_out, TILE_COLS) // TILE_COLS
    dw_parts = np.empty((parts, KH * KW, C_blocks, C_out_blocks, TILE_ROWS, TILE_COLS),
                        dtype=x.dtype)
    with vectorized():
        _conv_weight_grad(np.ascontiguousarray(x), np.ascontiguousarray(dy), KH, KW,
                          *layout.args, dw_parts)
    dw = dw_parts.sum(axis=0, dtype=np.float64).transpose(0, 1, 3, 2, 4)
    dw = dw.reshape(KH * KW, C_blocks * TILE_ROWS, C_out_blocks * TILE_COLS)[:, :C, :C_out]
    # (taps, C, C_out) -> (C_out, C, KH, KW)
    return np.ascontiguousarray(dw.transpose(2, 1, 0).reshape(C_out, C, KH, KW).astype(x.dtype))
