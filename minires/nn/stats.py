"""Training dynamics layer by layer: what a learner plots to see a network train (lesson 11).

For every module of the chosen kinds (convolutions by default), once per training step:
  activation_std   the standard deviation of the module's output (a forward hook records it)
  grad_norm        ||dL/dw|| of its weight
  update_ratio     ||w_after - w_before|| / ||w_before||, the size of the step relative to the
                   weight (around 1e-3 is healthy for SGD; much larger, the rate is too high)
Each is a list with one row per step; `array(name)` gives it as (steps, layers).
"""

import numpy as np

from ..backends import to_device
from .layers import Conv2d


def _host(array):
    return np.asarray(to_device(array, "cpu"), dtype=np.float64)


class LayerStats:
    """Watch model's layers of the given kinds:

        stats = LayerStats(model)
        for x, y in loader:
            with stats.step():                  # weights read before, statistics after
                loss = cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        stats.array("update_ratio")             # (steps, layers)
    """

    def __init__(self, model, kinds=(Conv2d,)):
        watched = [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]
        self.names = [name for name, _ in watched]
        self.modules = [m for _, m in watched]
        self.activation_std, self.grad_norm, self.update_ratio = [], [], []
        self._outputs = {}
        self._hooks = [m.register_forward_hook(self._record_output) for m in self.modules]

    def _record_output(self, module, inputs, output):
        self._outputs[id(module)] = float(_host(output.data).std())

    def step(self):
        return _Step(self)

    def array(self, name):
        """One of activation_std, grad_norm, update_ratio as a (steps, layers) array."""
        return np.array(getattr(self, name))

    def remove(self):
        """Take the forward hooks off the model."""
        for hook in self._hooks:
            hook.remove()


class _Step:
    """The with-block of one training step: weights copied on entry, statistics on exit."""

    def __init__(self, stats):
        self.stats = stats

    def __enter__(self):
        self.before = [_host(m.weight.data).copy() for m in self.stats.modules]
        return self.stats

    def __exit__(self, kind, error, traceback):
        if kind is not None:
            return False  # the step failed: record nothing, let the error through
        stats, modules = self.stats, self.stats.modules
        stats.activation_std.append([stats._outputs.get(id(m), np.nan) for m in modules])
        stats.grad_norm.append([np.linalg.norm(_host(m.weight.grad)) if m.weight.grad is not None
                                else np.nan for m in modules])
        stats.update_ratio.append([np.linalg.norm(_host(m.weight.data) - w) / np.linalg.norm(w)
                                   for m, w in zip(modules, self.before)])
        stats._outputs.clear()
        return False
