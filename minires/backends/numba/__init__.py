"""The numba backend: the reference's results from compiled CPU kernels (the default on the CPU).

Each kernel here must match backends/reference.py's of the same name; the tests run every op
through both and compare. The files, by concern:
  config.py        how the kernels are compiled; the register tile's size for this CPU
  tile.py          the register tile, the GEMM micro-kernel the fast convolution runs on
  conv_naive.py    convolution version 1: the definition as plain loops ("numba-v1")
  conv.py          convolution version 2: no column matrix, every GEMM on the tile
  winograd.py      3x3 stride-1 convolution by Winograd's F(2x2, 3x3) or F(4x4, 3x3), on the tile
  winograd_transforms.py  its transforms of one tile, 16 channels at a time
  norm.py          batchnorm in four passes over memory, with or without a ReLU after it
  elementwise.py   ReLU in one pass each way; the residual sum and its ReLU in one pass
The kernels are compiled for float32 and float64; other dtypes, and what no kernel here covers
(pooling, batchnorm on (N, C) inputs), run the reference's code, which this class inherits.
"""

import numpy as np

from ...function import is_grad_enabled
from .. import memory
from ..reference import Reference, conv_output_size, update_running_stats
from . import config, conv, conv_naive, elementwise, norm, winograd

COMPILED_DTYPES = (np.float32, np.float64)


class Numba(Reference):
    name = "numba"

    def __init__(self):
        # Keep freed memory for the next array of the same size (memory.py says why): the
        # kernels here stream through memory, and each fresh page costs them a page fault.
        memory.keep_freed_memory()
        # Never run kernels compiled from older sources (config.py says how that can happen).
        if config.CACHE:
            config.drop_stale_compiled_kernels(conv._conv._cache.cache_path)

    def conv2d_forward(self, x, w, b, stride, padding):
        """saved: (x, w), no columns."""
        if x.dtype not in COMPILED_DTYPES:
            return super().conv2d_forward(x, w, b, stride, padding)
        y = self._conv(x, w, stride, padding)
        if b is not None:
            y += b[:, None, None]
        return y, (x, w)

    def conv2d_backward(self, dy, saved, stride, padding, input_grad=True, bias_grad=True):
        if dy.dtype not in COMPILED_DTYPES:
            return super().conv2d_backward(dy, saved, stride, padding, input_grad, bias_grad)
        x, w = saved
        dx = self._conv_input_grad(dy, w, x.shape, stride, padding) if input_grad else None
        dw = self._conv_weight_grad(x, dy, w.shape, stride, padding)
        db = dy.sum(axis=(0, 2, 3)) if bias_grad else None
        return dx, dw, db

    # Convolution version 2 (conv.py), and Winograd's (winograd.py) for the 3x3 stride-1 layers
    # where its rule says it is faster; NumbaV1 swaps in version 1. winograd = False (an
    # instance's or a subclass's) keeps every layer on conv.py, to compare.
    winograd = True

    def _winograd_tile(self, x_shape, w_shape, stride, padding, dtype, training=True):
        """2 or 4: the tile of F(tile x tile, 3x3) for this layer; None: conv.py."""
        if not self.winograd or w_shape[2:] != (3, 3) or stride != (1, 1) or max(padding) > 1:
            return None
        return winograd.choose_tile(x_shape[1], w_shape[0], *x_shape[2:], dtype=dtype,
                                    training=training)

    def _conv(self, x, w, stride, padding):
        # Under no_grad() no gradient will follow this forward: inference, which may round a
        # little more for speed (choose_tile). A forward that builds a graph keeps the tile
        # its backward will use.
        tile = self._winograd_tile(x.shape, w.shape, stride, padding, x.dtype,
                                   training=is_grad_enabled())
        if tile:
            return winograd.conv2d(x, w, padding, tile)
        return conv.conv2d(x, w, stride, padding)

    def _conv_input_grad(self, dy, w, x_shape, stride, padding):
        tile = self._winograd_tile(x_shape, w.shape, stride, padding, dy.dtype)
        if tile:
            return winograd.conv2d_input_grad(dy, w, padding, tile)
        return conv.conv2d_input_grad(dy, w, x_shape, stride, padding)

    def _conv_weight_grad(self, x, dy, w_shape, stride, padding):
        tile = self._winograd_tile(x.shape, w_shape, stride, padding, x.dtype)
        if tile:
            return winograd.conv2d_weight_grad(x, dy, padding, tile)
        return conv.conv2d_weight_grad(x, dy, *w_shape[2:], stride, padding)

    def batch_norm_forward(self, x, gamma, beta, running_mean, running_var, training, momentum,
                           eps):
        """saved: (x, mean, inv_std, gamma), the statistics float64 (C,) vectors."""
        if x.ndim != 4 or x.dtype not in COMPILED_DTYPES:
            return super().batch_norm_forward(x, gamma, beta, running_mean, running_var,
                                              training, momentum, eps)
        mean, inv_std = self._statistics(x, running_mean, running_var, training, momentum, eps)
        return norm.batch_norm(x, mean, inv_std, gamma, beta), (x, mean, inv_std, gamma)

    def batch_norm_backward(self, dy, saved, training):
        if dy.ndim != 4 or dy.dtype not in COMPILED_DTYPES:
            return super().batch_norm_backward(dy, saved, training)
        return norm.batch_norm_grads(dy, *saved, training)

    def batch_norm_relu_forward(self, x, gamma, beta, running_mean, running_var, training,
                                momentum, eps):
        """The ReLU inside batchnorm's output pass. saved: (x, mean, inv_std, gamma, y)."""
        if x.ndim != 4 or x.dtype not in COMPILED_DTYPES:
            return super().batch_norm_relu_forward(x, gamma, beta, running_mean, running_var,
                                                   training, momentum, eps)
        mean, inv_std = self._statistics(x, running_mean, running_var, training, momentum, eps)
        y = norm.batch_norm(x, mean, inv_std, gamma, beta, relu=True)
        return y, (x, mean, inv_std, gamma, y)

    def batch_norm_relu_backward(self, dy, saved, training):
        """The ReLU's gradient applied as batchnorm's backward reads dy (y > 0), never stored."""
        if dy.ndim != 4 or dy.dtype not in COMPILED_DTYPES:
            return super().batch_norm_relu_backward(dy, saved, training)
        x, mean, inv_std, gamma, y = saved
        return norm.batch_norm_grads(dy, x, mean, inv_std, gamma, training, y=y)

    def _statistics(self, x, running_mean, running_var, training, momentum, eps):
        """(mean, inv_std) for batchnorm, float64 (C,): the batch's in training (updating the
        running statistics when given), the running statistics in evaluation."""
        if training:
            mean, var = norm.channel_mean_var(x)
            if running_mean is not None:
                update_running_stats(running_mean, running_var, mean, var,
                                     x.size // x.shape[1], momentum)
        else:
            mean, var = running_mean, running_var
        return mean, 1 / np.sqrt(var + eps)

    def relu_forward(self, x):
        if x.dtype not in COMPILED_DTYPES:
            return super().relu_forward(x)
        return elementwise.relu(x)

    def relu_backward(self, dy, y):
        if dy.dtype not in COMPILED_DTYPES:
            return super().relu_backward(dy, y)
        return elementwise.relu_grad(dy, y)

    def add_relu_forward(self, a, b):
        """One pass for a and b of one shape and dtype; add_relu_backward is relu_backward's."""
        if a.shape != b.shape or a.dtype != b.dtype or a.dtype not in COMPILED_DTYPES:
            return super().add_relu_forward(a, b)
        return elementwise.add_relu(a, b)


class NumbaDirect(Numba):
    """The numba backend without Winograd: every convolution on conv.py, to compare."""

    name = "numba-direct"
    winograd = False


class NumbaV1(Numba):
    """The numba backend with convolution version 1 (conv_naive.py): to read, and to compare."""

    name = "numba-v1"

    def _conv(self, x, w, stride, padding):
        N, _, H, W = x.shape
        C_out, _, KH, KW = w.shape
        out_shape = (N, C_out, conv_output_size(H, KH, stride[0], padding[0]),
                     conv_output_size(W, KW, stride[1], padding[1]))
        return conv_naive.conv2d(x, w, stride, padding, out_shape)

    def _conv_input_grad(self, dy, w, x_shape, stride, padding):
        return conv_naive.conv2d_input_grad(dy, w, x_shape, stride, padding)

    def _conv_weight_grad(self, x, dy, w_shape, stride, padding):
        return conv_naive.conv2d_weight_grad(x, dy, w_shape, stride, padding)
