"""The CUDA backend's cross-entropy: reference.py's cross_entropy_forward/backward, one launch
each way (kernels/cross_entropy.cu), where CuPy's own kernels take about 20 for the reference's
formulas (a max, a subtraction, exp, a sum, log, a gather, a mean, ...).

The loss stays on the GPU, a one-element array: the forward never waits for the device, and
the backward reads its upstream gradient dy from device memory too. `saved` is a Saved
(x, target, log_sum_exp): the backward recomputes softmax(x) = exp(x - log_sum_exp) from x,
which the linear layer before it keeps anyway, rather than keep an (N, K) array of its own.
"""

import collections

import numpy as np

from ..devices import get_array_module
from .gpu import THREADS, _check_fits, _empty, _int32, _kernel_input
from .launch import ceil_div, launch

ROW_THREADS = 256  # cross_entropy.cu's ROW_THREADS: the forward's one block

Saved = collections.namedtuple("Saved", "x target log_sum_exp")


def cross_entropy_forward(x, target):
    """The mean cross-entropy of logits x (N, K) against int32 classes target (N,), as a
    one-element array, as reference.cross_entropy_forward."""
    x = _kernel_input("cross_entropy", x)
    if target.dtype != np.int32 or target.shape != x.shape[:1]:
        raise TypeError(f"cross_entropy: target must be int32 of shape {x.shape[:1]}, got "
                        f"{target.dtype} {target.shape}")
    target = get_array_module(target).ascontiguousarray(target)
    N, K = x.shape
    _check_fits("cross_entropy", x.size)
    log_sum_exp, loss = _empty(x, (N,)), _empty(x, ())
    launch("cross_entropy_forward", grid=(1,), block=(ROW_THREADS,),
           args=(x, target, log_sum_exp, loss, *_int32(N, K)))
    return loss, Saved(x, target, log_sum_exp)


def cross_entropy_backward(dy, saved):
    """dx = (softmax(x) - onehot(target)) * dy / N, as reference.cross_entropy_backward."""
    x, target, log_sum_exp = saved
    dy = _kernel_input("cross_entropy", dy)
    if dy.size != 1:
        raise ValueError(f"cross_entropy: the loss's gradient has one element, got {dy.shape}")
    N, K = x.shape
    dx = _empty(x, x.shape)
    launch("cross_entropy_backward", grid=(ceil_div(x.size, THREADS),), block=(THREADS,),
           args=(x, target, log_sum_exp, dy, dx, *_int32(N, K)))
    return dx
