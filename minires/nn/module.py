"""Module and Parameter: the containers that hold a network's weights (lesson 8).

A Module owns Parameters (trained by the optimizer), buffers (state such as batchnorm's running
statistics, saved but not trained) and submodules. Assigning one to an attribute registers it,
the same mechanism as torch.nn.Module, so `named_parameters()` and `state_dict()` find every
weight by walking the tree and the keys read like the attribute paths: "layer1.0.conv1.weight".
"""

from typing import NamedTuple

import numpy as np

from ..backends import check_device, device_of, get_array_module, to_device
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that a Module trains: a leaf that always requires grad."""

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    """What load_state_dict(strict=False) could not match, as PyTorch reports it."""

    missing_keys: list
    unexpected_keys: list


class HookHandle:
    """Returned by register_forward_hook; remove() takes the hook off again."""

    def __init__(self, hooks, key):
        self.hooks, self.key = hooks, key

    def remove(self):
        self.hooks.pop(self.key, None)


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


class Module:
    """Base class of every layer and model: subclasses set attributes in __init__, define forward.

        class TwoLayer(Module):
            def __init__(self):
                super().__init__()        # creates the registries; always call it first
                self.fc1 = Linear(4, 8)   # a Module attribute: registered as a submodule
                self.fc2 = Linear(8, 2)
            def forward(self, x):
                return self.fc2(relu(self.fc1(x)))
    """

    def __init__(self):
        # object.__setattr__: our own __setattr__ below needs these dictionaries to exist.
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_forward_hooks", {})
        self.training = True

    # -- registration ----------------------------------------------------------------------------
    def __setattr__(self, name, value):
        """Parameters and Modules go to their registry; anything else is a plain attribute."""
        parameters, modules = self.__dict__.get("_parameters"), self.__dict__.get("_modules")
        if parameters is None:  # Module.__init__ has not run yet
            if isinstance(value, (Parameter, Module)):
                raise AttributeError(f"cannot assign {type(value).__name__} '{name}' before "
                                     f"Module.__init__(): call super().__init__() first in "
                                     f"{type(self).__name__}.__init__")
            object.__setattr__(self, name, value)
            return
        if name in self._buffers:
            self.register_buffer(name, value)  # a buffer stays a buffer
            return
        # Forget any earlier meaning of the name, then store the value in exactly one place.
        self.__dict__.pop(name, None)
        parameters.pop(name, None)
        modules.pop(name, None)
        if isinstance(value, Parameter):
            parameters[name] = value
        elif isinstance(value, Module):
            modules[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Python calls this only when the normal lookup fails: the name is in a registry or absent.
        for registry in ("_parameters", "_buffers", "_modules"):
            values = self.__dict__.get(registry)
            if values is not None and name in values:
                return values[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def register_buffer(self, name, array):
        """Keep a backend array (or None) as module state: saved and moved, never trained."""
        is_array = isinstance(array, np.ndarray) or get_array_module(array) is not np
        if array is not None and not is_array:
            raise TypeError(f"buffer '{name}' must be a NumPy or CuPy array (or None), "
                            f"got {type(array).__name__}")
        self._buffers[name] = array

    def add_module(self, name, module):
        """Register a submodule under a name that need not be an identifier ("0", "1", ...)."""
        if not isinstance(module, Module):
            raise TypeError(f"add_module('{name}', ...) needs a Module, "
                            f"got {type(module).__name__}")
        self._modules[name] = module

    def register_forward_hook(self, hook):
        """Call hook(module, inputs, output) after every forward; returns a handle to remove it."""
        key = object()  # a fresh key each time, so the same function can be hooked twice
        self._forward_hooks[key] = hook
        return HookHandle(self._forward_hooks, key)

    # -- running ---------------------------------------------------------------------------------
    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *inputs, **options):
        """forward(*inputs, **options), then every forward hook (which sees the inputs only)."""
        output = self.forward(*inputs, **options)
        for hook in list(self._forward_hooks.values()):
            hook(self, inputs, output)
        return output

    def train(self, mode=True):
        """Training mode (batchnorm uses batch statistics) for this module and all below it."""
        for module in self.modules():
            module.training = mode
        return self

    def eval(self):
        """Evaluation mode: batchnorm uses its running statistics. Same as train(False)."""
        return self.train(False)

    # -- walking the tree ------------------------------------------------------------------------
    def named_modules(self, prefix=""):
        """(name, module) for this module ("") and every module below it, parents first."""
        stack, seen = [(prefix, self)], set()
        while stack:  # iterative preorder: a Sequential of 1000 blocks needs no deep recursion
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(_join(name, child_name), child)
                        for child_name, child in module._modules.items() if child is not None]
            stack.extend(reversed(children))

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self):
        """(dotted name, Parameter) in registration order; a shared Parameter appears once."""
        seen = set()
        for module_name, module in self.named_modules():
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield _join(module_name, name), param

    def parameters(self):
        for _, param in self.named_parameters():
            yield param

    def named_buffers(self):
        for module_name, module in self.named_modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    yield _join(module_name, name), buffer

    def buffers(self):
        for _, buffer in self.named_buffers():
            yield buffer

    def zero_grad(self):
        """Forget every parameter's gradient (grad = None, PyTorch's default since 2.0)."""
        for param in self.parameters():
            param.grad = None

    # -- devices ---------------------------------------------------------------------------------
    def to(self, device):
        """Move every parameter (and its grad) and buffer to device, in place; returns self."""
        check_device(device)
        for param in self.parameters():
            param.data = to_device(param.data, device)
            if param.grad is not None:
                param.grad = to_device(param.grad, device)
        for module in self.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = to_device(buffer, device)
        return self

    # -- saving and loading ----------------------------------------------------------------------
    def _named_arrays(self):
        """(key, array) for every parameter and buffer, module by module: the arrays themselves."""
        for module_name, module in self.named_modules():
            for name, param in module._parameters.items():
                yield _join(module_name, name), param.data
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    yield _join(module_name, name), buffer

    def state_dict(self):
        """{key: NumPy array} of every parameter and buffer, in a fixed order.

        Unlike PyTorch, whose values are references to the live tensors, the values here are
        NumPy copies: a snapshot that later training does not change, that np.savez and pickle
        store as they are, and that is on the CPU whatever device the model is on.
        """
        return {key: np.array(to_device(array, "cpu")) for key, array in self._named_arrays()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters and buffers (in place, cast to their dtype).

        state_dict is any mapping of key -> array: a state_dict(), np.load(...) of a saved one,
        or Tensors. Keys missing here or unknown to this model are an error when strict; a key
        whose shape differs is always an error. Nothing is written unless every check passes.
        Returns IncompatibleKeys(missing_keys, unexpected_keys).
        """
        targets = dict(self._named_arrays())
        values = {key: _as_array(value) for key, value in state_dict.items()}
        missing = [key for key in targets if key not in values]
        unexpected = [key for key in values if key not in targets]
        mismatched = [f"{key}: checkpoint {tuple(values[key].shape)}, "
                      f"model {tuple(targets[key].shape)}"
                      for key in targets
                      if key in values and tuple(values[key].shape) != tuple(targets[key].shape)]
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if mismatched:
            problems.append("shape mismatches: " + "; ".join(mismatched))
        if problems:
            raise RuntimeError(f"error loading state_dict into {type(self).__name__}:\n  "
                               + "\n  ".join(problems))
        for key, target in targets.items():
            if key in values:
                target[...] = to_device(values[key], device_of(target))
        return IncompatibleKeys(missing, unexpected)

    # -- printing --------------------------------------------------------------------------------
    def extra_repr(self):
        """The settings shown inside the parentheses, e.g. "3, 16, kernel_size=(3, 3)"."""
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(module).replace("\n", "\n  ")
                 for name, module in self._modules.items()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        extra = [self.extra_repr()] if self.extra_repr() else []
        return f"{type(self).__name__}(\n  " + "\n  ".join(extra + lines) + "\n)"


def _as_array(value):
    """A state_dict value as a NumPy or CuPy array (Tensors give their data; torch CPU tensors
    and lists go through np.asarray)."""
    if isinstance(value, Tensor):
        return value.data
    return value if get_array_module(value) is not np else np.asarray(value)
