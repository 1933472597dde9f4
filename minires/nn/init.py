"""Weight initialisation, drawn from one seeded module-level generator (lesson 6).

He et al. 2015, "Delving Deep into Rectifiers", eq. 10: a ReLU halves the second moment of what
passes through it, so weights with std = sqrt(2 / fan_in) keep the activations' variance the same
from layer to layer. The ResNet paper (sec. 3.4) initialises with exactly this.
Layers draw from `manual_seed`'s generator, never from their own, so that

    manual_seed(0); a = resnet20()
    manual_seed(0); b = resnet20()      # a and b hold identical weights
"""

import math

import numpy as np

from ..backends import to_device

_generator = np.random.default_rng()  # unseeded until manual_seed is called, like NumPy's


def manual_seed(seed):
    """Restart the generator that every layer's initialisation draws from."""
    global _generator
    _generator = np.random.default_rng(seed)


def get_generator():
    """The generator initialisers use when none is passed."""
    return _generator


def fan_in(tensor):
    """Inputs that feed one output: C_in*KH*KW for a conv weight, `in` for a linear one."""
    return math.prod(tensor.shape[1:])


def _fill(tensor, values):
    """Write NumPy values into the tensor's array in place, on whatever device it lives."""
    tensor.data[...] = to_device(values.astype(tensor.dtype), tensor.device)
    return tensor


def kaiming_normal_(tensor, rng=None):
    """Fill with N(0, 2 / fan_in): He initialisation for layers followed by a ReLU."""
    rng = _generator if rng is None else rng
    std = math.sqrt(2.0 / fan_in(tensor))
    return _fill(tensor, rng.standard_normal(tensor.shape) * std)


def zeros_(tensor):
    return _fill(tensor, np.zeros(tensor.shape))


def ones_(tensor):
    return _fill(tensor, np.ones(tensor.shape))
