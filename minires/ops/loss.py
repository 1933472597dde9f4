"""log-softmax and cross-entropy, computed stably by subtracting the row maximum (lesson 3).

log_softmax(x)_i = x_i - max(x) - log(sum_j exp(x_j - max(x))), exact for logits of +-1000.
The cross-entropy's arithmetic is the backend's (backends/reference.py spells it out; the CUDA
backend computes it in one launch each way, the loss staying on the GPU); the checks are here.
"""

import numpy as np

from ..backends import get_array_module, get_backend, to_device
from ..function import Function
from ..tensor import Tensor, as_tensor


class LogSoftmax(Function):
    """y = log_softmax(x) along axis 1;  dx = dy - softmax(x) * sum(dy)."""

    def forward(self, x):
        self.y = get_backend(x).log_softmax(x)
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
    """loss = -mean_n log_softmax(x)[n, t_n];  dx = dy * (softmax(x) - onehot(t)) / N.
    The backend computes both (reference.py spells them out; CUDA: one launch each way)."""

    def __init__(self, target):
        self.target = target

    def forward(self, x):
        self.backend = get_backend(x)
        loss, self.saved = self.backend.cross_entropy_forward(x, self.target)
        return loss

    def backward(self, dy):
        return self.backend.cross_entropy_backward(dy, self.saved)


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
    # int32 indices (the classes were checked to fit): converted on the host, the copy to the
    # GPU is all a label costs; a GPU array already int32 is used as it is.
    target = np.asarray(target, np.int32) if on_host else target.astype(np.int32, copy=False)
    target = to_device(target, input.device)  # to the GPU when the logits are there
    return CrossEntropy(target)(input)
