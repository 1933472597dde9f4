"""log-softmax and cross-entropy, computed stably by subtracting the row maximum (lesson 3).

log_softmax(x)_i = x_i - max(x) - log(sum_j exp(x_j - max(x))), exact for logits of +-1000.
"""

import numpy as np

from ..backends import get_array_module, to_device
from ..function import Function
from ..tensor import Tensor, as_tensor


def _log_softmax(x):
    xp = get_array_module(x)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


class LogSoftmax(Function):
    """y = log_softmax(x) along axis 1;  dx = dy - softmax(x) * sum(dy)."""

    def forward(self, x):
        self.y = _log_softmax(x)
        return self.y

    def backward(self, dy):
        xp = get_array_module(dy)
        return dy - xp.exp(self.y) * dy.sum(axis=1, keepdims=True)


def log_softmax(input):
    """log-softmax over the classes of an (N, K) input."""
    input = as_tensor(input)
    if input.ndim != 2:
        raise ValueError(f"log_softmax: input must be (N, K), got shape {input.shape}")
    return LogSoftmax()(input)


class CrossEntropy(Function):
    """loss = -mean_n log_softmax(x)[n, t_n];  dx = dy * (softmax(x) - onehot(t)) / N."""

    def __init__(self, target):
        self.target = target

    def forward(self, x):
        xp = get_array_module(x)
        N = x.shape[0]
        self.log_p = _log_softmax(x)
        return -self.log_p[xp.arange(N), self.target].mean()

    def backward(self, dy):
        xp = get_array_module(self.log_p)
        N = self.log_p.shape[0]
        dx = xp.exp(self.log_p)  # softmax
        dx[xp.arange(N), self.target] -= 1
        return dx * (dy / N)


def cross_entropy(input, target):
    """Mean cross-entropy of logits input (N, K) against integer class targets (N,)."""
    input = as_tensor(input)
    target = target.data if isinstance(target, Tensor) else target
    if input.ndim != 2 or 0 in input.shape:
        raise ValueError(f"cross_entropy: input must be logits of shape (N, K) with N, K >= 1 "
                         f"(the mean over an empty batch is undefined), got {input.shape}")
    on_host = get_array_module(target) is np
    if on_host:
        target = np.asarray(target)  # lists and NumPy arrays
    if target.ndim != 1 or target.shape[0] != input.shape[0]:
        raise ValueError(f"cross_entropy: target must have shape ({input.shape[0]},) for input "
                         f"{input.shape}, got {tuple(target.shape)}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class indices, got dtype "
                        f"{target.dtype}")
    # The classes are checked where they are on the host. A GPU array's range would cost a wait
    # for the device every step; the labels a loader puts there were checked when it loaded them.
    if on_host and len(target):
        low, high, K = int(target.min()), int(target.max()), input.shape[1]
        if low < 0 or high >= K:
            bad = low if low < 0 else high
            raise ValueError(f"cross_entropy: target holds class {bad}, outside 0..{K - 1} for "
                             f"input {input.shape}")
    target = to_device(target, input.device)  # to the GPU when the logits are there
    return CrossEntropy(target.astype(np.int64))(input)
