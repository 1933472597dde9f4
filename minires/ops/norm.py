"""Batch normalisation (Ioffe & Szegedy 2015, Algorithm 1 and sec. 3; lesson 5).

Training mode normalises with the batch's own mean and biased variance and updates the running
statistics in place (PyTorch's rule: the unbiased variance goes into running_var). Evaluation
mode uses the running statistics, which makes it a fixed per-channel affine map. The arithmetic
is the backend's (backends/reference.py spells it out); the checks are here. BatchNormReLU is
batchnorm with the ReLU that follows it in a ResNet, one op so that the backends fuse them.
"""

from ..backends import get_backend
from ..function import Function
from ..tensor import Tensor, as_tensor


class BatchNormalization(Function):
    """y = gamma * x_hat + beta,  x_hat = (x - mean) / sqrt(var + eps), per channel.

    Training: dx = gamma / (m * std) * (m * dy - sum(dy) - x_hat * sum(dy * x_hat)), with m the
    count per channel; dgamma = sum(dy * x_hat), dbeta = sum(dy). Evaluation: dx = dy * gamma / std.
    """

    def __init__(self, running_mean, running_var, training, momentum, eps):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, gamma, beta):
        self.backend = get_backend(x)
        y, self.saved = self.backend.batch_norm_forward(
            x, gamma, beta, self.running_mean, self.running_var, self.training, self.momentum,
            self.eps)
        return y

    def backward(self, dy):
        return self.backend.batch_norm_backward(dy, self.saved, self.training)


class BatchNormReLU(BatchNormalization):
    """y = relu(gamma * x_hat + beta): batchnorm, then ReLU, as one op (a ResNet's relu(bn(x))).

    Backward is BatchNormalization's for the gradient dy where y > 0, else 0 (ReLU's). The
    backend computes both steps in the passes of batchnorm alone (numba), or in its launches
    (CUDA): the ReLU costs no extra trip through memory either way.
    """

    def forward(self, x, gamma, beta):
        self.backend = get_backend(x)
        y, self.saved = self.backend.batch_norm_relu_forward(
            x, gamma, beta, self.running_mean, self.running_var, self.training, self.momentum,
            self.eps)
        return y

    def backward(self, dy):
        return self.backend.batch_norm_relu_backward(dy, self.saved, self.training)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Normalise each channel of an (N, C) or (N, C, H, W) input.

    running_mean and running_var are backend arrays of shape (C,) (or tensors; their .data is
    used), updated in place when training. They may be None when training.
    """
    input = as_tensor(input)
    stats = _check("batch_norm", input, running_mean, running_var, weight, bias, training)
    return BatchNormalization(*stats, training, momentum, eps)(input, weight, bias)


def batch_norm_relu(input, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.1, eps=1e-5):
    """relu(batch_norm(input, ...)) with batch_norm's arguments, computed as one op."""
    input = as_tensor(input)
    stats = _check("batch_norm_relu", input, running_mean, running_var, weight, bias, training)
    return BatchNormReLU(*stats, training, momentum, eps)(input, weight, bias)


def _check(op, input, running_mean, running_var, weight, bias, training):
    """The running statistics' arrays, once the shapes and the mode are checked."""
    if input.ndim not in (2, 4):
        raise ValueError(f"{op}: input must be (N, C) or (N, C, H, W), got shape {input.shape}")
    C = input.shape[1]
    stats = [s.data if isinstance(s, Tensor) else s for s in (running_mean, running_var)]
    for name, value in zip(("running_mean", "running_var", "weight", "bias"),
                           stats + [weight, bias]):
        if value is not None and tuple(value.shape) != (C,):
            raise ValueError(f"{op}: {name} must have shape ({C},) for input of shape "
                             f"{input.shape}, got {tuple(value.shape)}")
    if not training and (stats[0] is None or stats[1] is None):
        raise ValueError(f"{op}: evaluation mode (training=False) needs running_mean and "
                         "running_var")
    if training and input.size // C < 2:
        raise ValueError(f"{op}: training needs more than one value per channel, got "
                         f"input of shape {input.shape}")
    return stats
