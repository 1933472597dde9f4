"""Convolution and pooling on top of the backend's im2col, col2im and GEMM (lessons 4 and 6).

conv2d is one GEMM over im2col columns; pooling reuses im2col on each channel alone, so every
op here runs on any backend that provides those three functions. On the CPU backend conv2d
takes a faster route to the same numbers (backends/cpu_fast.py: no column matrix, numba
kernels). Also the option-A shortcut of He et al. 2015 (sec. 4.2): subsample, then pad the new
channels with zeros.
"""

import numpy as np

from ..backends import cpu, cpu_fast, get_array_module, get_backend
from ..backends.cpu import conv_output_size
from ..function import Function


def _pair(value, name):
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair


def _check_4d(op, name, x):
    if x.ndim != 4:
        raise ValueError(f"{op}: {name} must be 4-D (N, C, H, W), got shape {x.shape}")


def _check_window(op, x_shape, kernel, stride, padding):
    """Positive stride, padding >= 0, and a window that fits the padded input."""
    if min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"{op}: stride must be >= 1 and padding >= 0, "
                         f"got stride={stride}, padding={padding}")
    H, W = x_shape[2:]
    H_out = conv_output_size(H, kernel[0], stride[0], padding[0])
    W_out = conv_output_size(W, kernel[1], stride[1], padding[1])
    if H_out < 1 or W_out < 1:
        raise ValueError(f"{op}: kernel {kernel} is larger than the padded input "
                         f"(input shape {x_shape}, padding {padding})")
    return H_out, W_out


class Convolution2D(Function):
    """y = w (*) x + b as a GEMM, y = w2 @ im2col(x);
    dw = dy2 @ cols^T,  dx = col2im(w2^T @ dy2),  db = sum of dy over N, H, W."""

    def __init__(self, stride, padding):
        self.stride, self.padding = stride, padding

    def forward(self, x, w, b):
        backend = get_backend(x)
        N = x.shape[0]
        C_out, _, KH, KW = w.shape
        H_out, W_out = _check_window("conv2d", x.shape, (KH, KW), self.stride, self.padding)
        self.x_shape, self.w, self.has_bias = x.shape, w, b is not None
        # On the CPU: the same convolution without the column matrix, by numba kernels.
        self.fast = backend is cpu and x.dtype in (np.float32, np.float64)
        if self.fast:
            self.x = x
            y = cpu_fast.conv2d(x, w, self.stride, self.padding)  # (N, C_out, H_out, W_out)
            if b is not None:
                y += b[:, None, None]
            return y
        cols = backend.im2col(x, KH, KW, self.stride, self.padding)  # (C_in*KH*KW, N*H_out*W_out)
        w2 = w.reshape(C_out, -1)  # (C_out, C_in*KH*KW)
        y = backend.gemm(w2, cols)  # (C_out, N*H_out*W_out)
        if b is not None:
            y += b[:, None]
        self.cols = cols
        y = y.reshape(C_out, N, H_out, W_out).transpose(1, 0, 2, 3)  # (N, C_out, H_out, W_out)
        return get_array_module(y).ascontiguousarray(y)

    def backward(self, dy):
        backend = get_backend(dy)
        w = self.w
        C_out, _, KH, KW = w.shape
        if self.fast:
            # The network's first conv reads the images, which want no gradient: skip it. (An
            # op called by hand, forward then backward as in the exercises, has no inputs.)
            inputs = getattr(self, "inputs", None)
            dx = (cpu_fast.conv2d_input_grad(dy, w, self.x_shape, self.stride, self.padding)
                  if inputs is None or inputs[0].requires_grad else None)
            dw = cpu_fast.conv2d_weight_grad(self.x, dy, KH, KW, self.stride, self.padding)
            db = dy.sum(axis=(0, 2, 3)) if self.has_bias else None
            return dx, dw, db
        dy2 = dy.transpose(1, 0, 2, 3).reshape(C_out, -1)  # (C_out, N*H_out*W_out)
        dw = backend.gemm(dy2, self.cols, trans_b=True).reshape(w.shape)
        dcols = backend.gemm(w.reshape(C_out, -1), dy2, trans_a=True)  # (C_in*KH*KW, N*H_out*W_out)
        dx = backend.col2im(dcols, self.x_shape, KH, KW, self.stride, self.padding)
        db = dy2.sum(axis=1) if self.has_bias else None
        return dx, dw, db


def conv2d(input, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation of input (N, C_in, H, W) with weight (C_out, C_in, KH, KW)."""
    from ..tensor import as_tensor

    input, weight = as_tensor(input), as_tensor(weight)
    _check_4d("conv2d", "input", input)
    _check_4d("conv2d", "weight", weight)
    if input.shape[1] != weight.shape[1]:
        raise ValueError(f"conv2d: input has {input.shape[1]} channels (shape {input.shape}) but "
                         f"weight expects {weight.shape[1]} (shape {weight.shape})")
    if input.dtype != weight.dtype:
        raise TypeError(f"conv2d: input is {input.dtype} but weight is {weight.dtype}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"conv2d: bias must have shape ({weight.shape[0]},) for weight "
                         f"{weight.shape}, got {tuple(bias.shape)}")
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    return Convolution2D(stride, padding)(input, weight, bias)


class MaxPooling2D(Function):
    """y = max over each window (padding counts as -inf);
    dx = dy routed to the argmax of its window (summed where windows overlap)."""

    def __init__(self, kernel, stride, padding):
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x):
        backend, xp = get_backend(x), get_array_module(x)
        N, C, H, W = x.shape
        (KH, KW), (ph, pw) = self.kernel, self.padding
        H_out, W_out = _check_window("max_pool2d", x.shape, self.kernel, self.stride, self.padding)
        x_pad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-xp.inf)
        # Each channel alone, as if it were an image of one channel: (N*C, 1, H+2ph, W+2pw).
        self.pad_shape = (N * C, 1) + x_pad.shape[2:]
        cols = backend.im2col(x_pad.reshape(self.pad_shape), KH, KW, self.stride, (0, 0))
        self.argmax = cols.argmax(axis=0)  # (N*C*H_out*W_out,)
        self.x_shape, self.dtype = x.shape, x.dtype
        y = cols[self.argmax, xp.arange(cols.shape[1])]
        return y.reshape(N, C, H_out, W_out)

    def backward(self, dy):
        backend, xp = get_backend(dy), get_array_module(dy)
        (KH, KW), (ph, pw) = self.kernel, self.padding
        N, C, H, W = self.x_shape
        dcols = xp.zeros((KH * KW, dy.size), dtype=self.dtype)  # (KH*KW, N*C*H_out*W_out)
        dcols[self.argmax, xp.arange(dy.size)] = dy.ravel()
        dx_pad = backend.col2im(dcols, self.pad_shape, KH, KW, self.stride, (0, 0))
        return dx_pad.reshape(N, C, H + 2 * ph, W + 2 * pw)[:, :, ph:ph + H, pw:pw + W]


def _pool_args(op, input, kernel_size, stride, padding):
    from ..tensor import as_tensor

    input = as_tensor(input)
    _check_4d(op, "input", input)
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _pair(stride, "stride")
    padding = _pair(padding, "padding")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {padding} must be at most half of kernel_size {kernel}")
    return input, kernel, stride, padding


def max_pool2d(input, kernel_size, stride=None, padding=0):
    """Max over kernel_size windows of each channel; stride defaults to kernel_size."""
    input, kernel, stride, padding = _pool_args("max_pool2d", input, kernel_size, stride, padding)
    return MaxPooling2D(kernel, stride, padding)(input)


class AveragePooling2D(Function):
    """y = mean over each window, zero padding included in the count (PyTorch's default);
    dx = col2im of dy / (KH*KW) copied to every window position."""

    def __init__(self, kernel, stride, padding):
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x):
        backend = get_backend(x)
        N, C, H, W = x.shape
        KH, KW = self.kernel
        H_out, W_out = _check_window("avg_pool2d", x.shape, self.kernel, self.stride, self.padding)
        self.x_shape = x.shape
        cols = backend.im2col(x.reshape(N * C, 1, H, W), KH, KW, self.stride, self.padding)
        return cols.mean(axis=0).reshape(N, C, H_out, W_out)  # cols: (KH*KW, N*C*H_out*W_out)

    def backward(self, dy):
        backend, xp = get_backend(dy), get_array_module(dy)
        N, C, H, W = self.x_shape
        KH, KW = self.kernel
        dcols = xp.broadcast_to(dy.reshape(1, -1) / (KH * KW), (KH * KW, dy.size))
        dx = backend.col2im(xp.ascontiguousarray(dcols), (N * C, 1, H, W), KH, KW,
                            self.stride, self.padding)
        return dx.reshape(self.x_shape)


def avg_pool2d(input, kernel_size, stride=None, padding=0):
    """Mean over kernel_size windows of each channel; stride defaults to kernel_size."""
    input, kernel, stride, padding = _pool_args("avg_pool2d", input, kernel_size, stride, padding)
    return AveragePooling2D(kernel, stride, padding)(input)


class GlobalAveragePooling2D(Function):
    """y[n, c] = mean of x[n, c] over H and W;  dx = dy / (H*W) at every position."""

    def forward(self, x):
        self.x_shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dy):
        xp = get_array_module(dy)
        H, W = self.x_shape[2:]
        return xp.broadcast_to((dy / (H * W))[:, :, None, None], self.x_shape)


def global_avg_pool2d(input):
    """(N, C, H, W) -> (N, C): the mean of each channel, as before ResNet's classifier."""
    from ..tensor import as_tensor

    input = as_tensor(input)
    _check_4d("global_avg_pool2d", "input", input)
    return GlobalAveragePooling2D()(input)


class PadShortcut(Function):
    """Option A of He et al.: y = x[:, :, ::s, ::s] with zero channels added, half before and
    half after (as the common PyTorch reproductions do);  dx = the matching slice of dy."""

    def __init__(self, out_channels, stride):
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x):
        xp = get_array_module(x)
        N, C, H, W = x.shape
        s = self.stride
        sub = x[:, :, ::s, ::s]
        self.before = (self.out_channels - C) // 2
        self.x_shape = x.shape
        y = xp.zeros((N, self.out_channels) + sub.shape[2:], dtype=x.dtype)
        y[:, self.before:self.before + C] = sub
        return y

    def backward(self, dy):
        xp = get_array_module(dy)
        C, s = self.x_shape[1], self.stride
        dx = xp.zeros(self.x_shape, dtype=dy.dtype)
        dx[:, :, ::s, ::s] = dy[:, self.before:self.before + C]
        return dx


def pad_shortcut(x, out_channels, stride):
    """The parameter-free option-A shortcut: (N, C, H, W) -> (N, out_channels, H/s, W/s)."""
    from ..tensor import as_tensor

    x = as_tensor(x)
    _check_4d("pad_shortcut", "x", x)
    if out_channels < x.shape[1] or stride < 1:
        raise ValueError(f"pad_shortcut: out_channels ({out_channels}) must be >= the input's "
                         f"channels (shape {x.shape}) and stride ({stride}) >= 1")
    return PadShortcut(out_channels, stride)(x)
