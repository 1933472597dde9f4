"""The CUDA backend's batchnorm: reference.py's batch_norm_forward/backward, kernels/batch_norm.cu.

Same signatures and results as reference.py (the specification), in one launch each way,
where CuPy's own kernels take about 25 for the reference's formulas: one block per channel sums
the channel (double accumulators, a tree sum per block), then normalises it (forward) or
computes its dx (backward), as batch_norm.cu's header explains. Evaluation's forward is the
elementwise affine map (batch_norm_normalize). `saved` is a Saved (x, mean, var, gamma, ...):
backward recomputes x_hat from x rather than keep a second array the size of x. With relu=True
the same launches compute relu(batchnorm(x)) and its gradient (reference.py's
batch_norm_relu_forward/backward): the kernels' relu flag, and the output y kept in Saved.
"""

import collections

import numpy as np

from ..devices import get_array_module
from .gpu import THREADS, _check_fits, _empty, _int32, _kernel_input
from .launch import ceil_div, launch

CHANNEL_THREADS = 1024  # batch_norm.cu's CHANNEL_THREADS: one block of this many per channel

# What the forward keeps for the backward: x_hat is recomputed from these; y is the output
# when a ReLU followed (its gradient flows where y > 0), else None.
Saved = collections.namedtuple("Saved", "x mean var gamma eps has_gamma y")


def _layout(x):
    """(N, C, HW) of an (N, C) or (N, C, H, W) input: the kernels see (N, C, HW)."""
    N, C = x.shape[:2]
    return N, C, x.size // max(N * C, 1)


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                       relu=False):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, as reference.batch_norm_forward; with
    relu, y = max(that, 0), as reference.batch_norm_relu_forward."""
    x = _kernel_input("batch_norm", x)
    N, C, HW = _layout(x)
    _check_fits("batch_norm", x.size)
    has_gamma = gamma is not None
    gamma = _ones(x, C) if gamma is None else _kernel_input("batch_norm", gamma)
    beta = _zeros(x, C) if beta is None else _kernel_input("batch_norm", beta)
    y = _empty(x, x.shape)
    if training:
        mean, var = _empty(x, (C,)), _empty(x, (C,))
        update = running_mean is not None
        # Without running statistics the kernel gets arrays it never touches (update_running 0).
        stats = (running_mean, running_var) if update else (_empty(x, (C,)), _empty(x, (C,)))
        launch("batch_norm_forward_training", grid=(C,), block=(CHANNEL_THREADS,),
               args=(x, gamma, beta, y, mean, var, *stats, *_int32(N, C, HW),
                     np.float32(momentum), np.float32(eps), np.int32(update), np.int32(relu)))
    else:
        mean = _kernel_input("batch_norm", running_mean)
        var = _kernel_input("batch_norm", running_var)
        launch("batch_norm_normalize", grid=(ceil_div(x.size, THREADS),), block=(THREADS,),
               args=(x, mean, var, gamma, beta, y, *_int32(N, C, HW), np.float32(eps),
                     np.int32(relu)))
    return y, Saved(x, mean, var, gamma, eps, has_gamma, y if relu else None)


def batch_norm_backward(dy, saved, training):
    """dx, dgamma (None without gamma), dbeta, as reference.batch_norm_backward, or as
    batch_norm_relu_backward when the forward had relu (dy then counts only where y > 0)."""
    x, mean, var, gamma, eps, has_gamma, y = saved
    dy = _kernel_input("batch_norm", dy)
    relu = y is not None
    y = y if relu else dy  # the kernels read y only under relu
    N, C, HW = _layout(x)
    dgamma, dbeta, dx = _empty(x, (C,)), _empty(x, (C,)), _empty(x, x.shape)
    launch("batch_norm_backward", grid=(C,), block=(CHANNEL_THREADS,),
           args=(dy, y, x, mean, var, gamma, dgamma, dbeta, dx, *_int32(N, C, HW),
                 np.float32(eps), np.int32(training), np.int32(relu)))
    return dx, dgamma if has_gamma else None, dbeta


def _ones(like, C):
    return get_array_module(like).ones(C, dtype=np.float32)


def _zeros(like, C):
    return get_array_module(like).zeros(C, dtype=np.float32)
