"""Convolution and pooling (lessons 4 and 6): each op's forward and backward call its backend.

The backend is `get_backend(x)`: the NumPy reference (im2col + GEMM, backends/reference.py),
the numba kernels or the CUDA kernels, which all compute the same thing; the checks of shapes
and settings are here, once for all of them. Also the option-A shortcut of He et al. 2015
(sec. 4.2): subsample, then pad the new channels with zeros.
"""

import numbers

from ..backends import conv_output_size, get_array_module, get_backend
from ..function import Function
from ..tensor import as_tensor
from . import check_floating


def _pair(value, name):
    """(value, value) for an int, the pair itself for a pair of ints; anything else is an error
    (a float stride would slice by a fraction)."""
    pair = (value, value) if isinstance(value, numbers.Integral) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair)):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


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


class Convolution2D(Function):
    """y = w (*) x + b, which the reference computes as one GEMM, y2 = w2 @ im2col(x);
    dw = dy2 @ cols^T,  dx = col2im(w2^T @ dy2),  db = sum of dy over N, H, W."""

    def __init__(self, stride, padding):
        self.stride, self.padding = stride, padding

    def forward(self, x, w, b):
        _check_window("conv2d", x.shape, w.shape[2:], self.stride, self.padding)
        self.backend, self.has_bias = get_backend(x), b is not None
        y, self.saved = self.backend.conv2d_forward(x, w, b, self.stride, self.padding)
        return y

    def backward(self, dy):
        # The network's first conv reads the images, which want no gradient: skip that one.
        return self.backend.conv2d_backward(dy, self.saved, self.stride, self.padding,
                                            input_grad=self.needs_input_grad(0),
                                            bias_grad=self.has_bias)


def conv2d(input, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation of input (N, C_in, H, W) with weight (C_out, C_in, KH, KW)."""
    input, weight = as_tensor(input), as_tensor(weight)
    _check_4d("conv2d", "input", input)
    _check_4d("conv2d", "weight", weight)
    if input.shape[1] != weight.shape[1]:
        raise ValueError(f"conv2d: input has {input.shape[1]} channels (shape {input.shape}) but "
                         f"weight expects {weight.shape[1]} (shape {weight.shape})")
    check_floating("conv2d", input=input, weight=weight)
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
        _check_window("max_pool2d", x.shape, self.kernel, self.stride, self.padding)
        self.backend = get_backend(x)
        y, self.saved = self.backend.max_pool2d_forward(x, self.kernel, self.stride, self.padding)
        return y

    def backward(self, dy):
        return self.backend.max_pool2d_backward(dy, self.saved, self.kernel, self.stride,
                                                self.padding)


def _pool_args(op, input, kernel_size, stride, padding):
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
    dx = dy / (KH*KW) added to every position of its window."""

    def __init__(self, kernel, stride, padding):
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x):
        _check_window("avg_pool2d", x.shape, self.kernel, self.stride, self.padding)
        self.backend, self.x_shape = get_backend(x), x.shape
        return self.backend.avg_pool2d_forward(x, self.kernel, self.stride, self.padding)

    def backward(self, dy):
        return self.backend.avg_pool2d_backward(dy, self.x_shape, self.kernel, self.stride,
                                                self.padding)


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
        # zeros_like(x, shape=...) rather than zeros(...): the same array, but under the GPU
        # launch counter (backends/cuda/counting.py) it counts, as each of these two lines
        # launches a kernel on CuPy
        y = xp.zeros_like(x, shape=(N, self.out_channels) + sub.shape[2:])
        y[:, self.before:self.before + C] = sub
        return y

    def backward(self, dy):
        xp = get_array_module(dy)
        C, s = self.x_shape[1], self.stride
        dx = xp.zeros_like(dy, shape=self.x_shape)
        dx[:, :, ::s, ::s] = dy[:, self.before:self.before + C]
        return dx


def pad_shortcut(x, out_channels, stride):
    """The parameter-free option-A shortcut: (N, C, H, W) -> (N, out_channels, H/s, W/s)."""
    x = as_tensor(x)
    _check_4d("pad_shortcut", "x", x)
    if out_channels < x.shape[1] or stride < 1:
        raise ValueError(f"pad_shortcut: out_channels ({out_channels}) must be >= the input's "
                         f"channels (shape {x.shape}) and stride ({stride}) >= 1")
    return PadShortcut(out_channels, stride)(x)
