"""Shape ops: reshape, transpose, flatten and indexing (lesson 1).

They move elements without changing them, so backward moves the gradient back the same way.
"""

from ..backends import get_array_module
from ..function import Function
from ..tensor import Tensor


class Reshape(Function):
    """y = x viewed with a new shape;  dx = dy reshaped to x's shape."""

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, dy):
        return dy.reshape(self.x_shape)


def reshape(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape(shape)(x)


def flatten(input, start_dim=1):
    """Merge the axes from start_dim on: (N, C, H, W) -> (N, C*H*W) with the default."""
    return Reshape(tuple(input.shape[:start_dim]) + (-1,))(input)


class Transpose(Function):
    """y = x with its axes permuted;  dx = dy with the inverse permutation."""

    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        self.axes = self.axes or tuple(reversed(range(x.ndim)))
        return x.transpose(self.axes)

    def backward(self, dy):
        inverse = [0] * len(self.axes)
        for i, axis in enumerate(self.axes):
            inverse[axis] = i
        return dy.transpose(inverse)


def transpose(x, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return Transpose(axes or None)(x)


class GetItem(Function):
    """y = x[key];  dx = zeros with dy added at x[key] (repeated indices add up)."""

    def __init__(self, key):
        self.key = key

    def forward(self, x):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        return x[self.key]

    def backward(self, dy):
        xp = get_array_module(dy)
        dx = xp.zeros(self.x_shape, dtype=self.x_dtype)
        xp.add.at(dx, self.key, dy)
        return dx


def getitem(x, key):
    # Index arrays given as tensors are used through their data.
    if isinstance(key, tuple):
        key = tuple(k.data if isinstance(k, Tensor) else k for k in key)
    elif isinstance(key, Tensor):
        key = key.data
    return GetItem(key)(x)
