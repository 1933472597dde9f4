"""Batch normalisation in four passes over memory, where NumPy's expressions take about twelve.

Must match reference.Reference.batch_norm_forward/backward on (N, C, H, W) inputs, and
batch_norm_relu_forward/backward: a ReLU after batchnorm costs no pass of its own, as the output
pass clips at 0 and the backward's passes read dy as 0 where the output y is 0. Training
batchnorm reads its input twice (statistics, then the output) and its backward reads dy and x
twice (two sums, then dx). They are bound by memory; running them on every core still pays on a
quiet machine (each core has its own path to the caches). A sum over a channel's N planes goes
into a float64 vector one plane long (that loop vectorises; a single running sum would not, with
fastmath off), and that vector is summed at the end. The per-channel coefficients stay float64
too, so each output is rounded to float32 only once.
"""

import numba
import numpy as np
from numba import prange

from .config import PARALLEL


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
def _normalize(x, mean, scale, beta, relu, y):
    N, C, P = x.shape
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        xc, yc = x[n, c], y[n, c]
        m, s, b = mean[c], scale[c], beta[c]
        for j in range(P):
            v = (xc[j] - m) * s + b
            yc[j] = 0 if relu and v < 0 else v  # NaN passes through, as in np.maximum(v, 0)


def batch_norm(x, mean, inv_std, gamma, beta, relu=False):
    """y = gamma * (x - mean) * inv_std + beta, per channel of an (N, C, H, W) x; with relu,
    y = max(that, 0) in the same pass. The loop, per channel c and element i of it:
        y[i] = (x[i] - mean[c]) * scale[c] + beta[c],  scale = gamma * inv_std
        if relu and y[i] < 0: y[i] = 0
    """
    N, C = x.shape[:2]
    scale = inv_std if gamma is None else gamma * inv_std
    beta = np.zeros(C) if beta is None else beta
    y = np.empty(x.shape, x.dtype)  # C order, whatever the layout of x
    _normalize(np.ascontiguousarray(x).reshape(N, C, -1),
               *[np.asarray(v, np.float64) for v in (mean, scale, beta)], relu,
               y.reshape(N, C, -1))
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


@numba.njit(**PARALLEL)
def _relu_channel_sums(dy, y, x, mean, sums):
    N, C, P = x.shape  # (N, C, H*W)
    for c in prange(C):
        s = np.zeros(P)
        sx = np.zeros(P)
        for n in range(N):
            dyc, yc, xc = dy[n, c], y[n, c], x[n, c]
            for j in range(P):
                dz = dyc[j] if yc[j] > 0 else 0  # where y = 0 the ReLU passed no gradient
                s[j] += dz
                sx[j] += dz * (xc[j] - mean[c])
        sums[0, c] = s.sum()
        sums[1, c] = sx.sum()


@numba.njit(**PARALLEL)
def _bn_relu_input_grad(dy, y, x, mean, a, b, k, dx):
    N, C, P = x.shape
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        dyc, yc, xc, dxc = dy[n, c], y[n, c], x[n, c], dx[n, c]
        m, ac, bc, kc = mean[c], a[c], b[c], k[c]
        for j in range(P):
            dz = dyc[j] if yc[j] > 0 else 0
            dxc[j] = ac * dz + bc * (xc[j] - m) + kc


def batch_norm_grads(dy, x, mean, inv_std, gamma, training, y=None):
    """batchnorm's (dx, dgamma, dbeta) for an (N, C, H, W) x: in training
    dx = gamma*inv_std/m * (m*dy - sum(dy) - x_hat*sum(dy*x_hat)), x_hat = (x - mean)*inv_std,
    computed as a*dy + b*(x - mean) + k with per-channel a, b, k; in evaluation dx = a*dy.

    y, when given, is the output of a ReLU that followed batchnorm, and dy is the gradient of
    that: every read of dy[i] then reads dz[i] = dy[i] if y[i] > 0 else 0, the ReLU's gradient,
    which is never stored. Two passes either way, per channel c and element i of it:
        sum_dz[c] += dz[i];  sum_dz_xc[c] += dz[i] * (x[i] - mean[c])     (dbeta, dgamma)
        dx[i] = a[c] * dz[i] + b[c] * (x[i] - mean[c]) + k[c]             (then a, b, k)
    """
    N, C = x.shape[:2]
    m = x.size // C

    def planes(array):  # (N, C, H*W), contiguous
        return np.ascontiguousarray(array).reshape(N, C, -1)

    if y is None:
        sum_dy, sum_dy_xc = channel_sums(dy, np.zeros(C), x, mean)  # xc: x - mean
    else:
        sums = np.empty((2, C))
        _relu_channel_sums(planes(dy), planes(y), planes(x), np.asarray(mean, np.float64), sums)
        sum_dy, sum_dy_xc = sums
    sum_dy_xhat = sum_dy_xc * inv_std
    a = inv_std if gamma is None else gamma * inv_std
    b = -a * inv_std * sum_dy_xhat / m if training else np.zeros(C)
    k = -a * sum_dy / m if training else np.zeros(C)
    dx = np.empty(x.shape, x.dtype)
    coefficients = [np.asarray(v, np.float64) for v in (mean, a, b, k)]
    if y is None:
        _bn_input_grad(planes(dy), planes(x), *coefficients, dx.reshape(N, C, -1))
    else:
        _bn_relu_input_grad(planes(dy), planes(y), planes(x), *coefficients, dx.reshape(N, C, -1))
    return dx, None if gamma is None else sum_dy_xhat.astype(x.dtype), sum_dy.astype(x.dtype)
