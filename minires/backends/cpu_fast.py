"""Fast CPU kernels compiled by numba: convolution without columns, batchnorm and ReLU in one pass.

cpu.py is the specification and stays the readable version: conv2d as im2col + GEMM. This file
computes the same results another way, for speed on a CPU; tests/test_cpu_fast.py checks every
function here against it (float32 and float64, awkward shapes). What changes:
  - no column matrix: each image is copied once into a zero-padded buffer, and every kernel tap
    reads a shifted slice of it (the columns copy each pixel KH*KW times, 75 MB for one layer of
    ResNet-20 at batch 128, and a GEMM with 16 rows cannot reuse them from cache);
  - the nine taps of a 3x3 kernel are summed in one pass over the output;
  - images run in parallel (`prange`), each one's working set small enough for the core's cache.
numba compiles a kernel on its first call (`cache=True` keeps the machine code on disk for the
next run). fastmath stays off but for FMA contraction in the convolution's inner loop: every sum
is computed in the order written here, in IEEE arithmetic; the orders differ from BLAS's, so
float32 results agree to rounding, not bit for bit.
benchmarks/PROFILE.md has the measurements behind each choice.
"""

import numba
import numpy as np
from numba import prange

PARALLEL = dict(parallel=True, cache=True, nogil=True)
SERIAL = dict(cache=True, nogil=True)
# The convolution's inner loop may fuse each multiply and add into one FMA instruction (one
# rounding instead of two; no sum is reordered): 20% faster on AVX-512 (benchmarks/PROFILE.md).
FMA = dict(SERIAL, fastmath={"contract"})
BLOCK = 8  # the vector loops' lengths are rounded up to whole 8-float AVX2 registers


# -- convolution ------------------------------------------------------------------------------
# Each image is copied into a zero-padded buffer with rows Wp = W + 2*pw long, flattened. Output
# pixel (oh, ow) of a stride-1 convolution reads the input at q + kh*Wp + kw, with q = oh*Wp + ow:
# each kernel tap (kh, kw) is one slice of the buffer, shifted by kh*Wp + kw. Computing the output
# in rows of Wp as well ("wide" rows) turns each tap into one long loop over q; the last columns of
# each wide row fall outside the image and are dropped.
# With stride s the buffer is split into s*s phases, x_pad[r::s, c::s], each flattened with rows
# Ws = ceil(Wp / s) long: tap (kh, kw) reads phase (kh % s, kw % s) at q + (kh//s)*Ws + kw//s, so a
# strided convolution is again one shifted slice per tap.


class Layout:
    """The sizes for a KH x KW kernel with this stride and padding: the output (H_out, W_out);
    each padded image's sh*sw phases, rows of Ws, `length` long with the zero tail that lets
    every tap read L entries; and the wide output, L = H_out rows of Ws rounded up to a BLOCK."""

    def __init__(self, x_shape, KH, KW, stride, padding):
        N, C, H, W = x_shape
        (sh, sw), (ph, pw) = stride, padding
        self.stride, self.padding = stride, padding
        self.H_out = (H + 2 * ph - KH) // sh + 1
        self.W_out = (W + 2 * pw - KW) // sw + 1
        self.Hs = -(-(H + 2 * ph) // sh)  # rows of a phase
        self.Ws = -(-(W + 2 * pw) // sw)  # its row length, also the output's wide row length
        self.L = -(-self.H_out * self.Ws // BLOCK) * BLOCK
        last_tap = (KH - 1) // sh * self.Ws + (KW - 1) // sw
        self.length = max(self.Hs * self.Ws, last_tap + self.L)  # of a phase, with its tail

    @property
    def args(self):
        """What the kernels take: sh, sw, ph, pw, Ws, length, L."""
        return (*self.stride, *self.padding, self.Ws, self.length, self.L)


@numba.njit(**SERIAL)
def _split_image(x, sh, sw, ph, pw, Ws, xph):
    """xph[c, r*sw + k] = x_pad[c, r::sh, k::sw], flattened in rows of Ws, zero around x:
    pixel (h, w) goes to phase ((h+ph) % sh, (w+pw) % sw), row (h+ph) // sh, column (w+pw) // sw."""
    C, H, W = x.shape
    xph[:] = 0
    if sh == 1 and sw == 1:  # one phase: the padded image, copied a row at a time
        for c in range(C):
            for h in range(H):
                start = (h + ph) * Ws + pw
                xph[c, 0, start:start + W] = x[c, h]
        return
    for c in range(C):
        for h in range(H):
            r, row = (h + ph) % sh, (h + ph) // sh
            k, col = pw % sw, pw // sw  # the phase and column of w = 0; counted up along the row
            for w in range(W):
                xph[c, r * sw + k, row * Ws + col] = x[c, h, w]
                k += 1
                if k == sw:
                    k, col = 0, col + 1


@numba.njit(**SERIAL)
def _merge_image(xph, sh, sw, ph, pw, Ws, x):
    """The inverse of _split_image: x[c] = the phases' pixels that are not padding."""
    C, H, W = x.shape
    for c in range(C):
        for h in range(H):
            r, row = (h + ph) % sh, (h + ph) // sh
            k, col = pw % sw, pw // sw
            for w in range(W):
                x[c, h, w] = xph[c, r * sw + k, row * Ws + col]
                k += 1
                if k == sw:
                    k, col = 0, col + 1


@numba.njit(**SERIAL)
def _tap(xc, kh, kw, sh, sw, Ws, L):
    """The L inputs that tap (kh, kw) multiplies, for every wide output position q."""
    start = kh // sh * Ws + kw // sw
    return xc[kh % sh * sw + kw % sw, start:start + L]


@numba.njit(**SERIAL)
def _taps3x3(k):
    """The nine weights of one 3x3 kernel k[kh, kw], row by row."""
    return k[0, 0], k[0, 1], k[0, 2], k[1, 0], k[1, 1], k[1, 2], k[2, 0], k[2, 1], k[2, 2]


@numba.njit(**FMA)
def _sum3x3(k, v):
    """sum of k[t] * v[t] over the nine taps t, row by row: one output of a 3x3 kernel."""
    return ((k[0] * v[0] + k[1] * v[1] + k[2] * v[2]) + (k[3] * v[3] + k[4] * v[4] + k[5] * v[5])
            + (k[6] * v[6] + k[7] * v[7] + k[8] * v[8]))


@numba.njit(**FMA)
def _add_taps(acc, xc, w, ci, sh, sw, Ws):
    """acc[co, q] += sum over (kh, kw) of w[co, ci, kh, kw] * tap(kh, kw)[q], for every co."""
    C_out, L = acc.shape
    KH, KW = w.shape[2], w.shape[3]
    if KH == 3 and KW == 3:
        # The network's kernel: all nine taps in one pass, two output channels at a time, so
        # each input loaded feeds two multiply-adds and each acc row is loaded and stored once.
        at = (sh, sw, Ws, L)
        a, b, c = _tap(xc, 0, 0, *at), _tap(xc, 0, 1, *at), _tap(xc, 0, 2, *at)
        d, e, f = _tap(xc, 1, 0, *at), _tap(xc, 1, 1, *at), _tap(xc, 1, 2, *at)
        g, h, i = _tap(xc, 2, 0, *at), _tap(xc, 2, 1, *at), _tap(xc, 2, 2, *at)
        for co in range(0, C_out - 1, 2):
            k, m = _taps3x3(w[co, ci]), _taps3x3(w[co + 1, ci])
            out, out1 = acc[co], acc[co + 1]
            for q in range(L):
                v = (a[q], b[q], c[q], d[q], e[q], f[q], g[q], h[q], i[q])
                out[q] += _sum3x3(k, v)
                out1[q] += _sum3x3(m, v)
        if C_out % 2:  # the last channel of an odd count
            k = _taps3x3(w[C_out - 1, ci])
            out = acc[C_out - 1]
            for q in range(L):
                out[q] += _sum3x3(k, (a[q], b[q], c[q], d[q], e[q], f[q], g[q], h[q], i[q]))
    else:
        for kh in range(KH):
            for kw in range(KW):
                s = _tap(xc, kh, kw, sh, sw, Ws, L)
                for co in range(C_out):
                    wv = w[co, ci, kh, kw]
                    out = acc[co]
                    for q in range(L):
                        out[q] += wv * s[q]


@numba.njit(**PARALLEL)
def _conv(x, w, sh, sw, ph, pw, Ws, length, L, y):
    N, C = x.shape[:2]
    C_out, H_out, W_out = y.shape[1], y.shape[2], y.shape[3]
    for n in prange(N):
        xph = np.empty((C, sh * sw, length), dtype=x.dtype)  # (C, phases, padded phase)
        _split_image(x[n], sh, sw, ph, pw, Ws, xph)
        acc = np.zeros((C_out, L), dtype=y.dtype)  # (C_out, wide output rows)
        for ci in range(C):
            _add_taps(acc, xph[ci], w, ci, sh, sw, Ws)
        for co in range(C_out):
            for oh in range(H_out):
                y[n, co, oh] = acc[co, oh * Ws:oh * Ws + W_out]


def conv2d(x, w, stride, padding):
    """cpu.im2col + cpu.gemm's convolution, y = w (*) x: (N, C_in, H, W) -> (N, C_out, H', W')."""
    C_out, _, KH, KW = w.shape
    layout = Layout(x.shape, KH, KW, stride, padding)
    y = np.empty((x.shape[0], C_out, layout.H_out, layout.W_out), dtype=x.dtype)
    _conv(np.ascontiguousarray(x), np.ascontiguousarray(w), *layout.args, y)
    return y


@numba.njit(**PARALLEL)
def _conv_input_grad(dy, w, sh, sw, ph, pw, Ws, length, L, dx):
    N, C_out, H_out, W_out = dy.shape
    C, KH, KW = w.shape[1], w.shape[2], w.shape[3]
    for n in prange(N):
        dxph = np.zeros((C, sh * sw, length), dtype=dy.dtype)
        dy_wide = np.zeros((C_out, L), dtype=dy.dtype)  # zero in the dropped columns
        for co in range(C_out):
            for oh in range(H_out):
                dy_wide[co, oh * Ws:oh * Ws + W_out] = dy[n, co, oh]
        for ci in range(C):
            for kh in range(KH):
                for kw in range(KW):
                    # Tap (kh, kw) took its input from this slice: send the gradient back there,
                    # summed over the output channels, four of them per pass.
                    s = _tap(dxph[ci], kh, kw, sh, sw, Ws, L)
                    co = 0
                    while co + 4 <= C_out:
                        w0, w1 = w[co, ci, kh, kw], w[co + 1, ci, kh, kw]
                        w2, w3 = w[co + 2, ci, kh, kw], w[co + 3, ci, kh, kw]
                        d0, d1 = dy_wide[co], dy_wide[co + 1]
                        d2, d3 = dy_wide[co + 2], dy_wide[co + 3]
                        for q in range(L):
                            s[q] += (w0 * d0[q] + w1 * d1[q]) + (w2 * d2[q] + w3 * d3[q])
                        co += 4
                    for c in range(co, C_out):
                        wv, d = w[c, ci, kh, kw], dy_wide[c]
                        for q in range(L):
                            s[q] += wv * d[q]
        _merge_image(dxph, sh, sw, ph, pw, Ws, dx[n])


def conv2d_input_grad(dy, w, x_shape, stride, padding):
    """dx = cpu.col2im(w2^T @ dy2): each input pixel gets the gradient of every output whose
    window covers it, times the weight that joined them."""
    C_out, C, KH, KW = w.shape
    (ph, pw) = padding
    if stride == (1, 1) and ph < KH and pw < KW:
        # Stride 1: a convolution of dy, padded by KH-1-ph, with the kernel flipped (and its
        # channels swapped) reads exactly the outputs that each pixel fed.
        return conv2d(dy, _flip(w), (1, 1), (KH - 1 - ph, KW - 1 - pw))
    layout = Layout(x_shape, KH, KW, stride, padding)
    dx = np.empty(x_shape, dtype=dy.dtype)
    _conv_input_grad(np.ascontiguousarray(dy), np.ascontiguousarray(w), *layout.args, dx)
    return dx


def _flip(w):
    """(C_out, C_in, KH, KW) -> (C_in, C_out, KH, KW), each kernel rotated by 180 degrees."""
    return np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])


# The weight gradient sums over every output pixel. With fastmath off, numba does not vectorise a
# running sum (that would reorder its additions), so the sum is turned around: the padded image
# goes channels-last, where the inputs of one kernel row (kw, ci) of a pixel are KW*C contiguous
# numbers, and each pixel adds dy[co, pixel] times them into KW*C independent sums of dw, a
# vectorised update. Four neighbouring pixels share each update. Each thread sums its own images.

@numba.njit(**SERIAL)
def _pad_image_channels_last(x, ph, pw, Wp, xT):
    """xT[(h+ph)*Wp + w+pw, c] = x[c, h, w], zero elsewhere: the padded image, channels last."""
    C, H, W = x.shape
    xT[:] = 0
    for h in range(H):
        for w in range(W):
            row = xT[(h + ph) * Wp + w + pw]
            for c in range(C):
                row[c] = x[c, h, w]


@numba.njit(**PARALLEL)
def _conv_s1_weight_grad(x, dy, KH, KW, ph, pw, dwT_parts):
    N, C, H, W = x.shape
    C_out, H_out, W_out = dy.shape[1], dy.shape[2], dy.shape[3]
    Wp = W + 2 * pw
    J = KW * C  # one kernel row (kw, ci) of dw, contiguous in the channels-last image
    parts = dwT_parts.shape[0]
    for part in prange(parts):  # each part sums its own images into its own dwT_parts[part]
        dwT = dwT_parts[part]  # (C_out, KH, KW*C)
        dwT[:] = 0
        xT = np.empty(((H + 2 * ph) * Wp + 4, C), dtype=x.dtype)
        xf = xT.reshape(-1)
        for n in range(part * N // parts, (part + 1) * N // parts):
            _pad_image_channels_last(x[n], ph, pw, Wp, xT)
            for oh in range(H_out):
                # Four neighbouring output pixels per pass: four products per store into dwT.
                for ow in range(0, W_out - 3, 4):
                    for kh in range(KH):
                        base = ((oh + kh) * Wp + ow) * C  # their windows start C apart
                        s0, s1 = xf[base:base + J], xf[base + C:base + C + J]
                        s2 = xf[base + 2 * C:base + 2 * C + J]
                        s3 = xf[base + 3 * C:base + 3 * C + J]
                        for co in range(C_out):
                            d = dy[n, co, oh]
                            d0, d1, d2, d3 = d[ow], d[ow + 1], d[ow + 2], d[ow + 3]
                            out = dwT[co, kh]
                            for j in range(J):
                                out[j] += (d0 * s0[j] + d1 * s1[j]) + (d2 * s2[j] + d3 * s3[j])
                for ow in range(W_out - W_out % 4, W_out):
                    for kh in range(KH):
                        base = ((oh + kh) * Wp + ow) * C
                        s0 = xf[base:base + J]
                        for co in range(C_out):
                            d0 = dy[n, co, oh, ow]
                            out = dwT[co, kh]
                            for j in range(J):
                                out[j] += d0 * s0[j]


def _conv_s1_weight_grad_sum(x, dy, KH, KW, padding):
    C, C_out = x.shape[1], dy.shape[1]
    parts = min(numba.get_num_threads(), x.shape[0])
    dwT_parts = np.empty((parts, C_out, KH, KW * C), dtype=x.dtype)  # dwT: (co, kh, (kw, ci))
    _conv_s1_weight_grad(np.ascontiguousarray(x), np.ascontiguousarray(dy), KH, KW, *padding,
                         dwT_parts)
    dwT = dwT_parts.sum(axis=0, dtype=np.float64).astype(x.dtype)
    return dwT.reshape(C_out, KH, KW, C).transpose(0, 3, 1, 2)


def conv2d_weight_grad(x, dy, KH, KW, stride, padding):
    """dw = dy2 @ cols^T: dw[co, ci, kh, kw] = sum over n, oh, ow of
    dy[n, co, oh, ow] * x_pad[n, ci, oh*sh + kh, ow*sw + kw]."""
    if stride == (1, 1):
        return np.ascontiguousarray(_conv_s1_weight_grad_sum(x, dy, KH, KW, padding))
    # Stride s: the taps of each phase x_pad[:, :, r::sh, c::sw] form a stride-1 kernel.
    (sh, sw), (ph, pw) = stride, padding
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dw = np.empty((dy.shape[1], x.shape[1], KH, KW), dtype=x.dtype)
    for r in range(min(sh, KH)):
        for c in range(min(sw, KW)):
            phase = np.ascontiguousarray(x_pad[:, :, r::sh, c::sw])
            dw[:, :, r::sh, c::sw] = _conv_s1_weight_grad_sum(
                phase, dy, len(range(r, KH, sh)), len(range(c, KW, sw)), (0, 0))
    return dw


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
