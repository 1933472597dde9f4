"""The layers a CIFAR ResNet is built from, each a Module around one op of minires.functional.

A layer owns its parameters and settings and calls the functional op in forward; the maths and
the gradients live in minires/ops. Parameters are float32. Initialisation follows He et al. 2015
(see init.py): conv and linear weights ~ N(0, 2 / fan_in), as the ResNet paper (sec. 3.4) and
the common PyTorch reproduction do; biases start at zero (PyTorch draws them from
U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the ResNet convs have no bias at all).
"""

import numpy as np

from .. import functional as F
from . import init
from .module import Module, Parameter


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _zeros(*shape):
    return Parameter(np.zeros(shape, dtype=np.float32))


class Conv2d(Module):
    """2-D convolution: weight (C_out, C_in, KH, KW), bias (C_out,) or None."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding = _pair(padding)
        self.weight = init.kaiming_normal_(_zeros(out_channels, in_channels, *self.kernel_size))
        self.bias = _zeros(out_channels) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class BatchNorm2d(Module):
    """Batch normalisation per channel: weight (gamma) = 1, bias (beta) = 0; running statistics
    (mean 0, var 1) are buffers, updated in place by every forward in training mode."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = init.ones_(_zeros(num_features))
        self.bias = _zeros(num_features)
        self.register_buffer("running_mean", np.zeros(num_features, dtype=np.float32))
        self.register_buffer("running_var", np.ones(num_features, dtype=np.float32))

    def forward(self, x, relu=False):
        """bn(x); with relu=True, relu(bn(x)) as one op (F.batch_norm_relu), which the backends
        compute in batchnorm's passes alone. A forward hook then sees relu(bn(x)), the output."""
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d expects (N, C, H, W) input, got shape {x.shape}")
        norm = F.batch_norm_relu if relu else F.batch_norm
        return norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                    training=self.training, momentum=self.momentum, eps=self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class Linear(Module):
    """Fully connected layer y = x @ weight^T + bias: weight (out, in), bias (out,) or None."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = init.kaiming_normal_(_zeros(out_features, in_features))
        self.bias = _zeros(out_features) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class MaxPool2d(Module):
    """Max pooling over kernel_size windows; stride defaults to kernel_size (windows side by
    side), as in PyTorch, and the repr shows the stride it uses."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.padding = kernel_size, padding
        self.stride = kernel_size if stride is None else stride

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    """Average pooling; the same settings as MaxPool2d (zero padding counts in the mean)."""

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class GlobalAvgPool2d(Module):
    """(N, C, H, W) -> (N, C): each channel's mean, as before ResNet's classifier."""

    def forward(self, x):
        return F.global_avg_pool2d(x)


class Flatten(Module):
    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim)


class Identity(Module):
    """y = x: the shortcut of a residual block whose input and output shapes agree."""

    def forward(self, x):
        return x


class PadShortcut(Module):
    """Option A shortcut of He et al. (sec. 4.2): subsample by stride, pad channels with zeros."""

    def __init__(self, out_channels, stride):
        super().__init__()
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x):
        return F.pad_shortcut(x, self.out_channels, self.stride)

    def extra_repr(self):
        return f"out_channels={self.out_channels}, stride={self.stride}"


class Sequential(Module):
    """Modules applied in order; children are named "0", "1", ... as in PyTorch."""

    def __init__(self, *modules):
        super().__init__()
        for index, module in enumerate(modules):
            self.add_module(str(index), module)

    def __getitem__(self, index):
        if isinstance(index, slice):  # a Sequential of the slice, keeping the children's names
            part = Sequential()
            for name, module in list(self._modules.items())[index]:
                part.add_module(name, module)
            return part
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x
