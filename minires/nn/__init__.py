"""minires.nn: modules that hold parameters, and the layers built on them (lesson 8).

`nn.functional` is minires.functional, as in PyTorch; `nn.init` holds the initialisers and
`manual_seed`, which makes building a model reproducible.
"""

from .. import functional
from . import init
from .layers import (
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    Flatten,
    GlobalAvgPool2d,
    Identity,
    Linear,
    MaxPool2d,
    PadShortcut,
    ReLU,
    Sequential,
)
from .module import IncompatibleKeys, Module, Parameter

__all__ = [
    "AvgPool2d", "BatchNorm2d", "Conv2d", "Flatten", "GlobalAvgPool2d", "Identity",
    "IncompatibleKeys", "Linear", "MaxPool2d", "Module", "PadShortcut", "Parameter", "ReLU",
    "Sequential", "functional", "init",
]
