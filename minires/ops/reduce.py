"""Reductions: sum and mean over axes (lesson 1).

Their backward is a broadcast: every input element contributed to its output element once.
"""

from ..backends import get_array_module
from ..function import Function


def _axes(axis, ndim):
    """axis (None, int or tuple) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axis = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(a % ndim for a in axis))


class Sum(Function):
    """y = sum of x over axes;  dx = dy broadcast back to x's shape."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x_shape = x.shape
        self.axes = _axes(self.axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, dy):
        xp = get_array_module(dy)
        if not self.keepdims:
            dy = xp.expand_dims(dy, self.axes)
        return xp.broadcast_to(dy, self.x_shape)


def sum(x, axis=None, keepdims=False):
    return Sum(axis, keepdims)(x)


class Mean(Sum):
    """y = mean of x over axes;  dx = dy / count, broadcast back to x's shape."""

    def forward(self, x):
        y = super().forward(x)
        self.count = x.size // max(y.size, 1) if x.size else 1
        return y / self.count

    def backward(self, dy):
        return super().backward(dy / self.count)


def mean(x, axis=None, keepdims=False):
    return Mean(axis, keepdims)(x)
