"""minires: a from-scratch deep-learning engine for learning how residual networks work.

    import minires
    x = minires.tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward()          # x.grad == 2 * x

Start with lessons/README.md; minires/tensor.py and minires/ops/ are the engine itself.
"""

from . import functional, models, nn, optim
from .backends import gpu_available
from .checkpoint import CheckpointError
from .function import Function, no_grad
from .gradcheck import GradcheckError, gradcheck
from .summary import summary
from .tensor import Tensor, tensor
from .torch_checkpoint import load_torch_checkpoint

__all__ = [
    "CheckpointError", "Function", "GradcheckError", "Tensor", "functional", "gpu_available",
    "gradcheck", "load_torch_checkpoint", "no_grad", "tensor",
    "models", "nn", "optim", "summary",
]
__version__ = "0.1.0"
