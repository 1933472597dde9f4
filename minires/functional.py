"""The torch.nn.functional names, each a thin wrapper over one op in minires/ops.

Argument names and order follow PyTorch, so code written against torch.nn.functional reads the
same here. The classes behind them (forward and backward side by side) are in minires/ops.
"""

from .ops.conv import avg_pool2d, conv2d, global_avg_pool2d, max_pool2d, pad_shortcut
from .ops.elementwise import relu
from .ops.linear import linear
from .ops.loss import cross_entropy, log_softmax
from .ops.norm import batch_norm
from .ops.shape import flatten

__all__ = [
    "avg_pool2d", "batch_norm", "conv2d", "cross_entropy", "flatten", "global_avg_pool2d",
    "linear", "log_softmax", "max_pool2d", "pad_shortcut", "relu",
]
