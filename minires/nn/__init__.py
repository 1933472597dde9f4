"""minires.nn: modules that hold parameters, and the layers built on them (lesson 6).

`nn.functional` is minires.functional, as in PyTorch; `nn.init` holds the initialisers and
`manual_seed`, which makes building a model reproducible; `nn.LayerStats` records training
dynamics layer by layer (lesson 11).
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
from .stats import LayerStats

__all__ = [
    "AvgPool2d", "BatchNorm2d", "Conv2d", "Flatten", "GlobalAvgPool2d", "Identity",
    "IncompatibleKeys", "LayerStats", "Linear", "MaxPool2d", "Module", "PadShortcut",
    "Parameter", "ReLU", "Sequential", "functional", "init",
]
