"""The CUDA backend's ReLU and the multi-tensor SGD step: kernels/relu.cu and kernels/sgd.cu.

relu_forward/relu_backward have reference.py's signatures and results, one launch each;
add_relu_forward is reference.py's too, one launch for y = relu(a + b) (its backward is
relu_backward's).
sgd_step updates every parameter of a model in one launch, over flat buffers that
minires/optim.py keeps (its per-parameter loop is the specification).
"""

import numpy as np

from .gpu import THREADS, _check_fits, _empty, _kernel_input
from .launch import ceil_div, launch


def relu_forward(x):
    """y = max(x, 0)."""
    x = _kernel_input("relu", x)
    _check_fits("relu", x.size)
    y = _empty(x, x.shape)
    launch("relu_forward", grid=(ceil_div(x.size, THREADS),), block=(THREADS,),
           args=(x, y, np.int32(x.size)))
    return y


def add_relu_forward(a, b):
    """y = max(a + b, 0), for a and b of one shape."""
    a, b = _kernel_input("add_relu", a), _kernel_input("add_relu", b)
    if a.shape != b.shape:
        raise ValueError(f"add_relu_forward: a has shape {a.shape} but b has {b.shape}")
    _check_fits("add_relu", a.size)
    y = _empty(a, a.shape)
    launch("add_relu_forward", grid=(ceil_div(a.size, THREADS),), block=(THREADS,),
           args=(a, b, y, np.int32(a.size)))
    return y


def relu_backward(dy, y):
    """dx = dy where y > 0, else 0."""
    dy, y = _kernel_input("relu", dy), _kernel_input("relu", y)
    if dy.shape != y.shape:
        raise ValueError(f"relu_backward: dy has shape {dy.shape} but y has {y.shape}")
    dx = _empty(dy, dy.shape)
    launch("relu_backward", grid=(ceil_div(dy.size, THREADS),), block=(THREADS,),
           args=(dy, y, dx, np.int32(dy.size)))
    return dx


def sgd_step(w, grad, buf, lr, momentum, weight_decay, nesterov, first_step):
    """One SGD step, in place, on flat float32 buffers w, grad, buf of one size (optim.SGD's
    rule; buf is not read on the first step, nor touched when momentum is 0)."""
    for name, a in (("w", w), ("grad", grad), ("buf", buf)):
        if a.dtype != np.float32 or a.ndim != 1 or not a.flags.c_contiguous or a.size != w.size:
            raise ValueError(f"sgd_step: {name} must be a flat contiguous float32 array of "
                             f"{w.size} elements, got {a.dtype} {a.shape}")
    _check_fits("sgd_step", w.size)
    launch("sgd_step", grid=(ceil_div(w.size, THREADS),), block=(THREADS,),
           args=(w, grad, buf, np.int32(w.size), np.float32(lr), np.float32(momentum),
                 np.float32(weight_decay), np.int32(nesterov), np.int32(first_step)))
