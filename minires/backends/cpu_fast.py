"""Fast CPU kernels compiled by numba: convolution without columns, batchnorm and ReLU in one pass.

cpu.py is the specification and stays the readable version: conv2d as im2col + GEMM. This file
computes the same results another way, for speed on a CPU; tests/test_cpu_fast.py checks every
function here against it (float32 and float64, awkward shapes). What changes:
  - no column matrix: each image is copied once into a zero-padded buffer, and every kernel tap
    reads a shifted slice of it (the columns copy each pixel KH*KW times, 75 MB for one layer of
    ResNet-20 at batch 128, and a GEMM with 16 rows cannot reuse them from cache);
  - the GEMM runs a tile of outputs at a time, kept in vector registers for its whole sum (a
    micro-kernel, as in BLAS); the input gradient is a convolution of dy too, and the weight
    gradient the same micro-kernel with the images laid out channels last;
  - images run in parallel (`prange`), each one's working set small enough for the core's cache.
numba compiles a kernel on its first call (`cache=True` keeps the machine code on disk for the
next run). fastmath stays off but for FMA contraction in the convolution's inner loop: every sum
is computed in the order written here, in IEEE arithmetic; the orders differ from BLAS's, so
float32 results agree to rounding, not bit for bit.
benchmarks/PROFILE.md has the measurements behind each choice.
"""

import contextlib
import os
import threading

import llvmlite.binding
import numba
import numpy as np
from numba import prange

PARALLEL = dict(parallel=True, cache=True, nogil=True)
SERIAL = dict(cache=True, nogil=True)
# The convolution's inner loop may fuse each multiply and add into one FMA instruction (one
# rounding instead of two; no sum is reordered): twice the arithmetic per instruction.
FMA = dict(SERIAL, fastmath={"contract"})
TILE = dict(inline="always", fastmath={"contract"})  # pieces of the kernels, compiled into them
V = 16  # the convolutions compute R x V outputs at a time (the register tile, below)


# -- convolution ------------------------------------------------------------------------------
# Each image is copied into a zero-padded buffer with rows Wp = W + 2*pw long, flattened. Output
# pixel (oh, ow) of a stride-1 convolution reads the input at q + kh*Wp + kw, with q = oh*Wp + ow:
# each kernel tap (kh, kw) is one slice of the buffer, shifted by kh*Wp + kw. Computing the output
# in rows of Wp as well ("wide" rows) turns each tap into one long loop over q; the last columns of
# each wide row fall outside the image and are dropped.
# With stride s the buffer is split into s*s phases, x_pad[r::s, c::s], each flattened with rows
# Ws = ceil(Wp / s) long: tap (kh, kw) reads phase (kh % s, kw % s) at q + (kh//s)*Ws + kw//s, so a
# strided convolution is again one shifted slice per tap.
#
# So the convolution of one image is a GEMM, y[co, q] = sum over taps k of w[co, k] * cols[k, q],
# whose column matrix never exists: cols[k, q] = xf[offs[k] + q], with xf the image's phases
# flattened and offs[k] where tap k = (ci, kh, kw) starts in it (_tap_offsets).


class Layout:
    """The sizes for a KH x KW kernel with this stride and padding: the output (H_out, W_out);
    each padded image's sh*sw phases, rows of Ws, `length` long with the zero tail that lets
    every tap read L entries; and the wide output, L = H_out rows of Ws rounded up to a tile."""

    def __init__(self, x_shape, KH, KW, stride, padding):
        N, C, H, W = x_shape
        (sh, sw), (ph, pw) = stride, padding
        self.stride, self.padding = stride, padding
        self.H_out = (H + 2 * ph - KH) // sh + 1
        self.W_out = (W + 2 * pw - KW) // sw + 1
        self.Hs = -(-(H + 2 * ph) // sh)  # rows of a phase
        self.Ws = -(-(W + 2 * pw) // sw)  # its row length, also the output's wide row length
        self.L = _round_up(self.H_out * self.Ws, V)
        last_tap = (KH - 1) // sh * self.Ws + (KW - 1) // sw
        self.length = max(self.Hs * self.Ws, last_tap + self.L)  # of a phase, with its tail

    @property
    def args(self):
        """What the kernels take: sh, sw, ph, pw, Ws, length, L."""
        return (*self.stride, *self.padding, self.Ws, self.length, self.L)


def _tap_offsets(C, KH, KW, layout):
    """offs[(ci*KH + kh)*KW + kw]: where tap (kh, kw) of input channel ci starts in an image's
    flattened phases, (ci, phase, position in the phase)."""
    (sh, sw), Ws, length = layout.stride, layout.Ws, layout.length
    ci, kh, kw = np.meshgrid(np.arange(C), np.arange(KH), np.arange(KW), indexing="ij")
    phase = kh % sh * sw + kw % sw
    return ((ci * sh * sw + phase) * length + kh // sh * Ws + kw // sw).reshape(-1)


@numba.njit(**SERIAL)
def _split_channel(xc, sh, sw, ph, pw, Ws, phases):
    """phases[r*sw + k] = x_pad[r::sh, k::sw] for one channel xc, flattened in rows of Ws:
    pixel (h, w) goes to phase ((h+ph) % sh, (w+pw) % sw), row (h+ph) // sh, column (w+pw) // sw.
    Writes only the pixels of xc; the padding keeps what phases held (zero)."""
    H, W = xc.shape
    for h in range(H):
        r, row = (h + ph) % sh, (h + ph) // sh
        for k in range(sw):  # phase (r, k) gets every sw-th pixel of the row, from w0
            w0 = (k - pw) % sw
            start, n = row * Ws + (w0 + pw) // sw, len(range(w0, W, sw))
            phases[r * sw + k, start:start + n] = xc[h, w0::sw]


@numba.njit(**SERIAL)
def _split_image(x, sh, sw, ph, pw, Ws, xph):
    """xph[c] = the phases of channel c (_split_channel), zero around x."""
    xph[:] = 0
    for c in range(x.shape[0]):
        _split_channel(x[c], sh, sw, ph, pw, Ws, xph[c])


# -- the register tile ------------------------------------------------------------------------
# Both GEMMs of a convolution (y = w @ cols and dw = dy @ cols^T) run R x V outputs at a time,
# held in registers for the whole sum over the shared dimension: each step adds the outer
# product of R numbers s and V numbers v, R multiply-adds of a whole vector v, so R + 1 loads
# feed R*V multiply-adds. A tile is a tuple of R rows, each a tuple of V numbers; tuples are
# values, which LLVM keeps in registers, and its SLP vectorizer turns each row's V operations
# into vector instructions. V = 16 float32s fill one AVX-512 register, and 16 rows take 16 of
# its 32 registers; AVX2 has 16 registers of 8 float32s, so there a tile has 4 rows (8 registers)
# and the rest hold the operands (16 rows would not fit: 10x slower). numba leaves the SLP
# vectorizer off by default since it once miscompiled some code (numba#8852, LLVM 14), so only
# these kernels are compiled with it on (_vectorized), and tests/test_cpu_fast.py checks them
# against cpu.py, with either tile. Dimensions that are not a multiple of the tile's are padded
# with zeros; the padded results are dropped.


def _compiles_for_avx512():
    """Whether numba generates AVX-512 code here: for this CPU, or what NUMBA_CPU_FEATURES says."""
    features = numba.core.config.CPU_FEATURES
    if features is None:
        features = llvmlite.binding.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


R = 16 if _compiles_for_avx512() else 4


_vectorizing = threading.Lock()
_vectorizing_calls = 0  # calls inside _vectorized, in any thread
_saved_setting = None  # NUMBA_SLP_VECTORIZE as it was before the first of them


@contextlib.contextmanager
def _vectorized():
    """Whatever numba compiles in this block gets LLVM's SLP vectorizer. numba rereads its
    settings (config.SLP_VECTORIZE among them) from the environment when it compiles. The
    setting is the process's: the first call in sets it, the last one out restores it."""
    global _vectorizing_calls, _saved_setting
    with _vectorizing:
        if _vectorizing_calls == 0:
            _saved_setting = os.environ.get("NUMBA_SLP_VECTORIZE")
            os.environ["NUMBA_SLP_VECTORIZE"] = "1"
            numba.core.config.SLP_VECTORIZE = 1
        _vectorizing_calls += 1
    try:
        yield
    finally:
        with _vectorizing:
            _vectorizing_calls -= 1
            if _vectorizing_calls == 0:
                if _saved_setting is None:
                    del os.environ["NUMBA_SLP_VECTORIZE"]
                else:
                    os.environ["NUMBA_SLP_VECTORIZE"] = _saved_setting
                numba.core.config.reload_config()


@numba.njit(**TILE)
def _fma_row(a, s, v):
    """a + s * v: a is a tile row, s a number, v any V numbers."""
    return (a[0] + s * v[0], a[1] + s * v[1], a[2] + s * v[2], a[3] + s * v[3],
            a[4] + s * v[4], a[5] + s * v[5], a[6] + s * v[6], a[7] + s * v[7],
            a[8] + s * v[8], a[9] + s * v[9], a[10] + s * v[10], a[11] + s * v[11],
            a[12] + s * v[12], a[13] + s * v[13], a[14] + s * v[14], a[15] + s * v[15])


@numba.njit(**TILE)
def _load_row(v):
    return (v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7],
            v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15])


@numba.njit(**TILE)
def _store_row(v, a):
    v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7] = a[:8]
    v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15] = a[8:]


if R == 16:
    @numba.njit(**TILE)
    def _tile_fma(t, s, v):
        """t[i][j] + s[i] * v[j]: the R x V tile t plus the outer product of s and v."""
        return (_fma_row(t[0], s[0], v), _fma_row(t[1], s[1], v), _fma_row(t[2], s[2], v),
                _fma_row(t[3], s[3], v), _fma_row(t[4], s[4], v), _fma_row(t[5], s[5], v),
                _fma_row(t[6], s[6], v), _fma_row(t[7], s[7], v), _fma_row(t[8], s[8], v),
                _fma_row(t[9], s[9], v), _fma_row(t[10], s[10], v), _fma_row(t[11], s[11], v),
                _fma_row(t[12], s[12], v), _fma_row(t[13], s[13], v), _fma_row(t[14], s[14], v),
                _fma_row(t[15], s[15], v))

    @numba.njit(**TILE)
    def _load_tile(a):
        """The R x V array a as a tile."""
        return (_load_row(a[0]), _load_row(a[1]), _load_row(a[2]), _load_row(a[3]),
                _load_row(a[4]), _load_row(a[5]), _load_row(a[6]), _load_row(a[7]),
                _load_row(a[8]), _load_row(a[9]), _load_row(a[10]), _load_row(a[11]),
                _load_row(a[12]), _load_row(a[13]), _load_row(a[14]), _load_row(a[15]))

    @numba.njit(**TILE)
    def _store_tile(a, t):
        """a[:] = the tile t."""
        _store_row(a[0], t[0])
        _store_row(a[1], t[1])
        _store_row(a[2], t[2])
        _store_row(a[3], t[3])
        _store_row(a[4], t[4])
        _store_row(a[5], t[5])
        _store_row(a[6], t[6])
        _store_row(a[7], t[7])
        _store_row(a[8], t[8])
        _store_row(a[9], t[9])
        _store_row(a[10], t[10])
        _store_row(a[11], t[11])
        _store_row(a[12], t[12])
        _store_row(a[13], t[13])
        _store_row(a[14], t[14])
        _store_row(a[15], t[15])
else:
    @numba.njit(**TILE)
    def _tile_fma(t, s, v):
        """t[i][j] + s[i] * v[j]: the R x V tile t plus the outer product of s and v."""
        return (_fma_row(t[0], s[0], v), _fma_row(t[1], s[1], v), _fma_row(t[2], s[2], v),
                _fma_row(t[3], s[3], v))

    @numba.njit(**TILE)
    def _load_tile(a):
        """The R x V array a as a tile."""
        return _load_row(a[0]), _load_row(a[1]), _load_row(a[2]), _load_row(a[3])

    @numba.njit(**TILE)
    def _store_tile(a, t):
        """a[:] = the tile t."""
        _store_row(a[0], t[0])
        _store_row(a[1], t[1])
        _store_row(a[2], t[2])
        _store_row(a[3], t[3])


@numba.njit(**FMA)
def _conv_tile(xf, offs, p, wT, out):
    """out[i, j] += sum over taps k of wT[k, i] * cols[k, p + j]: R output channels i by V wide
    output positions from p. Each tap: R weights (broadcast) times V neighbouring inputs."""
    t = _load_tile(out)
    for k in range(offs.size):
        o = offs[k] + p
        t = _tile_fma(t, wT[k], xf[o:o + V])
    _store_tile(out, t)


@numba.njit(**FMA)
def _weight_grad_tile(xs, dyT, out):
    """out[i, j] += sum over positions q of xs[q, i] * dyT[q, j]: R input channels of one tap
    by V output channels. Each position: R inputs (broadcast) times V channels of dy."""
    t = _load_tile(out)
    for q in range(dyT.shape[0]):
        t = _tile_fma(t, xs[q], dyT[q])
    _store_tile(out, t)


def _round_up(n, m):
    return -(-n // m) * m


def _channel_groups(wk):
    """wT[g, k, i] = wk[k, g*R + i] for a (taps, channels) matrix wk, zero past its channels:
    the R weights that a tile's rows take at each tap, contiguous."""
    K, C = wk.shape
    wT = np.zeros((K, _round_up(C, R)), dtype=wk.dtype)
    wT[:, :C] = wk
    return np.ascontiguousarray(wT.reshape(K, -1, R).transpose(1, 0, 2))


@numba.njit(**PARALLEL)
def _conv(x, wT, offs, sh, sw, ph, pw, Ws, length, L, y):
    N, C = x.shape[:2]
    C_out, H_out, W_out = y.shape[1], y.shape[2], y.shape[3]
    groups = wT.shape[0]  # of R output channels: wT[g, k, i] = w[g*R + i, k], zero past C_out
    for n in prange(N):
        xph = np.empty((C, sh * sw, length), dtype=x.dtype)  # (C, phases, padded phase)
        _split_image(x[n], sh, sw, ph, pw, Ws, xph)
        xf = xph.reshape(-1)
        # acc[q // V, co // R, co % R, q % V]: output channel co at wide position q, in tiles
        acc = np.zeros((L // V, groups, R, V), dtype=y.dtype)
        for p in range(0, L, V):
            for g in range(groups):  # the V inputs of each tap stay in cache for every group
                _conv_tile(xf, offs, p, wT[g], acc[p // V, g])
        for co in range(C_out):
            g, i = co // R, co % R
            for oh in range(H_out):
                for ow in range(W_out):
                    q = oh * Ws + ow
                    y[n, co, oh, ow] = acc[q // V, g, i, q % V]


def conv2d(x, w, stride, padding):
    """cpu.im2col + cpu.gemm's convolution, y = w (*) x: (N, C_in, H, W) -> (N, C_out, H', W')."""
    C_out, C, KH, KW = w.shape
    layout = Layout(x.shape, KH, KW, stride, padding)
    wT = _channel_groups(w.reshape(C_out, -1).T)  # (groups of output channels, tap, R)
    y = np.empty((x.shape[0], C_out, layout.H_out, layout.W_out), dtype=x.dtype)
    with _vectorized():
        _conv(np.ascontiguousarray(x), wT, _tap_offsets(C, KH, KW, layout), *layout.args, y)
    return y


def conv2d_input_grad(dy, w, x_shape, stride, padding):
    """dx = cpu.col2im(w2^T @ dy2): each input pixel gets the gradient of every output whose
    window covers it, times the weight that joined them. That is a convolution of dy too."""
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
# each with its own taps (a phase that no tap reads, r >= KH, gets no gradient).

@numba.njit(**PARALLEL)
def _conv_strided_input_grad(dy, wT, offs, bounds, sh, sw, ph, pw, A, B, Wd, length, L, dx):
    N, C_out = dy.shape[:2]
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    groups = wT.shape[0]  # wT[g, k, i]: tap k's weight for input channel g*R + i
    for n in prange(N):
        dyp = np.empty((C_out, 1, length), dtype=dy.dtype)  # dy[n], A-1 rows and B-1 columns
        _split_image(dy[n], 1, 1, A - 1, B - 1, Wd, dyp)  # of zeros before, more after
        dyf = dyp.reshape(-1)
        acc = np.empty((L // V, groups, R, V), dtype=dx.dtype)  # one phase, as in _conv
        for r in range(sh):
            for c in range(sw):
                taps = slice(bounds[r * sw + c], bounds[r * sw + c + 1])
                acc[:] = 0
                for p in range(0, L, V):
                    for g in range(groups):
                        _conv_tile(dyf, offs[taps], p, wT[g, taps], acc[p // V, g])
                for ci in range(C):  # the phase's pixels that are not padding
                    g, i = ci // R, ci % R
                    for h in range((r - ph) % sh, H, sh):
                        for w in range((c - pw) % sw, W, sw):
                            q = (h + ph) // sh * Wd + (w + pw) // sw  # in wide rows of Wd
                            dx[n, ci, h, w] = acc[q // V, g, i, q % V]


def _strided_input_grad(dy, w, x_shape, stride, padding):
    C_out, C, KH, KW = w.shape
    (sh, sw), (ph, pw) = stride, padding
    N, _, H, W = x_shape
    H_out, W_out = dy.shape[2:]
    A, B = -(-KH // sh), -(-KW // sw)  # the most taps a phase has, down and across
    Hs, Ws = -(-(H + 2 * ph) // sh), -(-(W + 2 * pw) // sw)  # a phase's rows and columns
    Wd = max(Ws, W_out) + B - 1  # the row length of padded dy, and of each phase's wide rows
    L = _round_up(Hs * Wd, V)
    length = max((H_out + A - 1) * Wd, (A - 1) * Wd + B - 1 + L)
    offs, weights, bounds = [], [], [0]
    for r in range(sh):
        for c in range(sw):
            co, a, b = np.meshgrid(np.arange(C_out), np.arange(len(range(r, KH, sh))),
                                   np.arange(len(range(c, KW, sw))), indexing="ij")
            offs.append((co * length + (A - 1 - a) * Wd + (B - 1 - b)).reshape(-1))
            weights.append(w[co, :, a * sh + r, b * sw + c].reshape(-1, C))  # (taps, C)
            bounds.append(bounds[-1] + co.size)
    wT = _channel_groups(np.concatenate(weights))  # (groups of input channels, tap, R)
    dx = np.empty(x_shape, dtype=dy.dtype)
    with _vectorized():
        _conv_strided_input_grad(np.ascontiguousarray(dy), wT, np.concatenate(offs),
                                 np.array(bounds), sh, sw, ph, pw, A, B, Wd, length, L, dx)
    return dx


# The weight gradient sums over the positions q, which are contiguous in neither operand as the
# forward lays them out; so here both go channels last, in blocks: the inputs of one tap for R
# channels at q are R contiguous numbers, and V channels of dy are V contiguous numbers.

@numba.njit(**SERIAL)
def _split_image_channels_last(x, sh, sw, ph, pw, Ws, xT):
    """xT[c // R, phase, position, c % R] = what _split_image puts at xph[c, phase, position].
    Writes only the pixels of x: the padding and the channels past C stay as they were (zero)."""
    for c in range(x.shape[0]):
        _split_channel(x[c], sh, sw, ph, pw, Ws, xT[c // R, :, :, c % R])


@numba.njit(**PARALLEL)
def _conv_weight_grad(x, dy, KH, KW, sh, sw, ph, pw, Ws, length, L, dwT_parts):
    N, C = x.shape[:2]
    C_out, H_out, W_out = dy.shape[1], dy.shape[2], dy.shape[3]
    parts, C_blocks, Co_blocks = dwT_parts.shape[0], dwT_parts.shape[2], dwT_parts.shape[3]
    for part in prange(parts):  # each part sums its own images into its own dwT_parts[part]
        # dwT[tap, ci // R, co // V, ci % R, co % V]: dw for (co, ci, tap), in tiles
        dwT = dwT_parts[part]
        dwT[:] = 0
        xT = np.zeros((C_blocks, sh * sw, length, R), dtype=x.dtype)
        dyT = np.zeros((Co_blocks, L, V), dtype=dy.dtype)  # wide; zero where dropped
        for n in range(part * N // parts, (part + 1) * N // parts):
            _split_image_channels_last(x[n], sh, sw, ph, pw, Ws, xT)
            for co in range(C_out):
                block, j = co // V, co % V
                for oh in range(H_out):
                    for ow in range(W_out):
                        dyT[block, oh * Ws + ow, j] = dy[n, co, oh, ow]
            for kh in range(KH):
                for kw in range(KW):
                    phase, start = kh % sh * sw + kw % sw, kh // sh * Ws + kw // sw
                    for cb in range(C_blocks):
                        xs = xT[cb, phase, start:start + L]  # (L, R): the tap's inputs
                        for g in range(Co_blocks):
                            _weight_grad_tile(xs, dyT[g], dwT[kh * KW + kw, cb, g])


def conv2d_weight_grad(x, dy, KH, KW, stride, padding):
    """dw = dy2 @ cols^T: dw[co, ci, kh, kw] = sum over n, oh, ow of
    dy[n, co, oh, ow] * x_pad[n, ci, oh*sh + kh, ow*sw + kw]."""
    C, C_out = x.shape[1], dy.shape[1]
    layout = Layout(x.shape, KH, KW, stride, padding)
    parts = min(numba.get_num_threads(), x.shape[0])
    C_blocks, Co_blocks = _round_up(C, R) // R, _round_up(C_out, V) // V
    dwT_parts = np.empty((parts, KH * KW, C_blocks, Co_blocks, R, V), dtype=x.dtype)
    with _vectorized():
        _conv_weight_grad(np.ascontiguousarray(x), np.ascontiguousarray(dy), KH, KW,
                          *layout.args, dwT_parts)
    dwT = dwT_parts.sum(axis=0, dtype=np.float64).transpose(0, 1, 3, 2, 4)
    dwT = dwT.reshape(KH * KW, C_blocks * R, Co_blocks * V)[:, :C, :C_out]  # (tap, ci, co)
    return np.ascontiguousarray(dwT.transpose(2, 1, 0).reshape(C_out, C, KH, KW).astype(x.dtype))


# -- batch normalisation ----------------------------------------------------------------------
# Training batchnorm reads its input twice (statistics, then the output) and its backward reads
# dy and x twice (two sums, then dx): four passes where NumPy's expressions take about twelve.
# They are bound by memory; running them on every core still pays on a quiet machine (each core
# has its own path to the caches), though on a busy one waking the other threads can cost more.
# A sum over a channel's N planes goes into a float64 vector one plane long (that loop vectorises;
# a single running sum would not, with fastmath off), and that vector is summed at the end. The
# per-channel coefficients stay float64 too, so each output is rounded to float32 only once.

@numba.njit(**PARALLEL)
def _channel_sums(u, a, v, b, sums):
    N, C, P = u.shape  # (N, C, H*W)
    for c in prange(C):
        su = np.zeros(P)
        suv = np.zeros(P)
        for n in range(N):
            uc, vc = u[n, c], v[n, c]
            for j in range(P):
                du = uc[j] - a[c]
                su[j] += du
                suv[j] += du * (vc[j] - b[c])
        sums[0, c] = su.sum()
        sums[1, c] = suv.sum()


def channel_sums(u, a, v, b):
    """Per channel of (N, C, H, W) arrays, in float64: the sums of (u - a[c]) and of
    (u - a[c]) * (v - b[c]), with a and b of shape (C,)."""
    N, C = u.shape[:2]
    sums = np.empty((2, C))
    u, v = np.ascontiguousarray(u).reshape(N, C, -1), np.ascontiguousarray(v).reshape(N, C, -1)
    _channel_sums(u, np.asarray(a, np.float64), v, np.asarray(b, np.float64), sums)
    return sums


def channel_mean_var(x):
    """x.mean(axis=(0, 2, 3)) and x.var(axis=(0, 2, 3)) in float64, in one pass over x.
    Summing x - x[0, c, 0, 0] instead of x keeps E[x^2] - E[x]^2 from cancelling."""
    m = x.size // x.shape[1]
    shift = x[0, :, 0, 0].astype(np.float64)
    s1, s2 = channel_sums(x, shift, x, shift) / m
    return shift + s1, np.maximum(s2 - s1 * s1, 0)


@numba.njit(**PARALLEL)
def _normalize(x, mean, scale, beta, y):
    N, C, P = x.shape
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        xc, yc = x[n, c], y[n, c]
        m, s, b = mean[c], scale[c], beta[c]
        for j in range(P):
            yc[j] = (xc[j] - m) * s + b


def batch_norm(x, mean, inv_std, gamma, beta):
    """y = gamma * (x - mean) * inv_std + beta, per channel of an (N, C, H, W) x."""
    N, C = x.shape[:2]
    scale = inv_std if gamma is None else gamma * inv_std
    beta = np.zeros(C) if beta is None else beta
    y = np.empty(x.shape, x.dtype)  # C order, whatever the layout of x
    _normalize(np.ascontiguousarray(x).reshape(N, C, -1),
               *[np.asarray(v, np.float64) for v in (mean, scale, beta)], y.reshape(N, C, -1))
    return y


@numba.njit(**PARALLEL)
def _bn_input_grad(dy, x, mean, a, b, k, dx):
    N, C, P = x.shape
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        dyc, xc, dxc = dy[n, c], x[n, c], dx[n, c]
        m, ac, bc, kc = mean[c], a[c], b[c], k[c]
        for j in range(P):
            dxc[j] = ac * dyc[j] + bc * (xc[j] - m) + kc


def batch_norm_grads(dy, x, mean, inv_std, gamma, training):
    """batchnorm's (dx, dgamma, dbeta) for an (N, C, H, W) x, as in ops/norm.py: in training
    dx = gamma*inv_std/m * (m*dy - sum(dy) - x_hat*sum(dy*x_hat)), x_hat = (x - mean)*inv_std,
    computed as a*dy + b*(x - mean) + k with per-channel a, b, k; in evaluation dx = a*dy."""
    N, C = x.shape[:2]
    m = x.size // C
    sum_dy, sum_dy_xc = channel_sums(dy, np.zeros(C), x, mean)  # xc: x - mean
    sum_dy_xhat = sum_dy_xc * inv_std
    a = inv_std if gamma is None else gamma * inv_std
    b = -a * inv_std * sum_dy_xhat / m if training else np.zeros(C)
    k = -a * sum_dy / m if training else np.zeros(C)
    dx = np.empty(x.shape, x.dtype)
    _bn_input_grad(np.ascontiguousarray(dy).reshape(N, C, -1),
                   np.ascontiguousarray(x).reshape(N, C, -1),
                   *[np.asarray(v, np.float64) for v in (mean, a, b, k)], dx.reshape(N, C, -1))
    return dx, None if gamma is None else sum_dy_xhat.astype(x.dtype), sum_dy.astype(x.dtype)


# -- ReLU -------------------------------------------------------------------------------------
# Flat loops over the array, in blocks of CHUNK elements, one block per parallel iteration.

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
    """y = max(x, 0) in one pass (np.maximum is several times slower on float32)."""
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
    _relu_grad(np.ascontiguousarray(dy).reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx
