"""The torch.nn.functional names, each a thin wrapper over one op in minires/ops.

Argument names and order follow PyTorch, so code written against torch.nn.functional reads the
same here. The classes behind them (forward and backward side by side) are in minires/ops.
Two are not PyTorch's: batch_norm_relu and add_relu, a ResNet's relu(bn(x)) and relu(a + b)
as one op each, which the backends compute in fewer passes over memory than the two steps.
"""

from .ops.conv import avg_pool2d, conv2d, global_avg_pool2d, max_pool2d, pad_shortcut
from .ops.elementwise import add_relu, relu
from .ops.linear import linear
from .ops.loss import cross_entropy, log_softmax
from .ops.norm import batch_norm, batch_norm_relu
from .ops.shape import flatten

__all__ = [
    "add_relu", "avg_pool2d", "batch_norm", "batch_norm_relu", "conv2d", "cross_entropy",
    "flatten", "global_avg_pool2d", "linear", "log_softmax", "max_pool2d", "pad_shortcut", "relu",
]
