"""Batch normalisation (Ioffe & Szegedy 2015, Algorithm 1 and sec. 3; lesson 5).

Training mode normalises with the batch's own mean and biased variance and updates the running
statistics in place (PyTorch's rule: the unbiased variance goes into running_var). Evaluation
mode uses the running statistics, which makes it a fixed per-channel affine map.
"""

import numpy as np

from ..backends import cpu, cpu_fast, get_array_module, get_backend
from ..function import Function


class BatchNormalization(Function):
    """y = gamma * x_hat + beta,  x_hat = (x - mean) / sqrt(var + eps), per channel.

    Training: dx = gamma / (m * std) * (m * dy - sum(dy) - x_hat * sum(dy * x_hat)), with m the
    count per channel; dgamma = sum(dy * x_hat), dbeta = sum(dy). Evaluation: dx = dy * gamma / std.
    """

    def __init__(self, running_mean, running_var, training, momentum, eps):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        # Statistics per channel: over N for (N, C), over N, H, W for (N, C, H, W).
        self.axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)  # broadcasts a (C,) vector against x
        # On the CPU, images go to numba kernels (backends/cpu_fast.py): same maths, fewer passes.
        self.fast = get_backend(x) is cpu and x.ndim == 4 and x.dtype in (np.float32, np.float64)
        if self.training:
            if self.fast:
                mean, var = cpu_fast.channel_mean_var(x)
            else:
                mean = x.mean(axis=self.axes)
                var = x.var(axis=self.axes)  # biased: what normalises the batch
            m = x.size // x.shape[1]
            if self.running_mean is not None:
                momentum = self.momentum
                self.running_mean *= 1 - momentum
                self.running_mean += momentum * mean
                self.running_var *= 1 - momentum
                self.running_var += momentum * var * m / max(m - 1, 1)  # unbiased
        else:
            mean, var = self.running_mean, self.running_var
        if self.fast:
            self.x, self.mean, self.gamma = x, mean, gamma
            self.inv_std = 1 / np.sqrt(var + self.eps)  # (C,), float64 in training
            return cpu_fast.batch_norm(x, mean, self.inv_std, gamma, beta)
        self.inv_std = (1 / xp.sqrt(var + self.eps)).reshape(shape)
        self.x_hat = (x - mean.reshape(shape)) * self.inv_std
        self.gamma = gamma.reshape(shape) if gamma is not None else None
        y = self.x_hat if gamma is None else self.x_hat * self.gamma
        return y if beta is None else y + beta.reshape(shape)

    def backward(self, dy):
        if self.fast:
            return cpu_fast.batch_norm_grads(dy, self.x, self.mean, self.inv_std, self.gamma,
                                             self.training)
        dx_hat = dy if self.gamma is None else dy * self.gamma
        if self.training:
            m = dy.size // dy.shape[1]
            sum_dx_hat = dx_hat.sum(axis=self.axes, keepdims=True)
            sum_dx_hat_x_hat = (dx_hat * self.x_hat).sum(axis=self.axes, keepdims=True)
            dx = self.inv_std / m * (m * dx_hat - sum_dx_hat - self.x_hat * sum_dx_hat_x_hat)
        else:
            dx = dx_hat * self.inv_std
        dgamma = None if self.gamma is None else (dy * self.x_hat).sum(axis=self.axes)
        dbeta = dy.sum(axis=self.axes)
        return dx, dgamma, dbeta


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Normalise each channel of an (N, C) or (N, C, H, W) input.

    running_mean and running_var are backend arrays of shape (C,) (or tensors; their .data is
    used), updated in place when training. They may be None when training.
    """
    from ..tensor import Tensor, as_tensor

    input = as_tensor(input)
    if input.ndim not in (2, 4):
        raise ValueError(f"batch_norm: input must be (N, C) or (N, C, H, W), "
                         f"got shape {input.shape}")
    C = input.shape[1]
    stats = [s.data if isinstance(s, Tensor) else s for s in (running_mean, running_var)]
    for name, value in zip(("running_mean", "running_var", "weight", "bias"),
                           stats + [weight, bias]):
        if value is not None and tuple(value.shape) != (C,):
            raise ValueError(f"batch_norm: {name} must have shape ({C},) for input of shape "
                             f"{input.shape}, got {tuple(value.shape)}")
    if not training and (stats[0] is None or stats[1] is None):
        raise ValueError("batch_norm: evaluation mode (training=False) needs running_mean and "
                         "running_var")
    if training and input.size // C < 2:
        raise ValueError(f"batch_norm: training needs more than one value per channel, got "
                         f"input of shape {input.shape}")
    return BatchNormalization(*stats, training, momentum, eps)(input, weight, bias)
