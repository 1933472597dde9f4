"""Tensor: an array that remembers how it was made, so that backward() can differentiate it.

Each tensor made by an op points to that op (`creator`); each op points to its inputs. backward()
sorts the ops topologically and runs their backward methods from the output back to the leaves,
summing gradients where a tensor was used twice (the residual block relies on this).
Lesson 1 builds this engine for scalars first, then reads this file.
"""

import numpy as np

from . import backends
from .backends import get_array_module
from .function import no_grad  # noqa: F401  (re-exported for `from minires.tensor import no_grad`)


def _is_array(data):
    return isinstance(data, (np.ndarray, np.generic)) or get_array_module(data) is not np


def _as_array(data, dtype=None):
    """Backend array for data: arrays keep their dtype, Python numbers and lists become float32."""
    if isinstance(data, Tensor):
        data = data.data
    if _is_array(data):
        xp = get_array_module(data)
        return xp.asarray(data) if dtype is None else xp.asarray(data, dtype=dtype)
    array = np.asarray(data, dtype=dtype)
    if dtype is None and array.dtype == np.float64:
        array = array.astype(np.float32)  # Python floats: float32, the dtype networks train in
    return array


class Tensor:
    """An n-dimensional array with a gradient: `data` and `grad` are NumPy or CuPy arrays."""

    __array_priority__ = 1000  # numpy_array + tensor calls Tensor.__radd__, not numpy's add

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(
                f"requires_grad=True needs floating-point data, got dtype {self.data.dtype} "
                f"(shape {self.data.shape}); convert it, e.g. tensor(x, dtype=np.float32)"
            )
        self.requires_grad = requires_grad
        self.grad = None
        self.creator = None  # the Function that produced this tensor; None for a leaf

    # -- what the tensor is ----------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backends.device_of(self.data))

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        """As PyTorch prints a tensor: `tensor(2.3079, requires_grad=True)`, four decimals (none
        for whole numbers), arrays of more than 1,000 elements summarised with `...`, and the
        dtype named when it is not float32, the default."""
        x = self.numpy()
        whole = x.dtype.kind != "f" or bool(np.all(np.mod(x[np.isfinite(x)], 1) == 0))
        text = np.array2string(x, precision=4, separator=", ", prefix="tensor(", threshold=1000,
                               edgeitems=3, floatmode="maxprec_equal" if whole else "fixed")
        extras = [f"dtype={x.dtype}"] if x.dtype != np.float32 else []
        extras += ["device='gpu'"] if self.device == "gpu" else []
        extras += ["requires_grad=True"] if self.requires_grad else []
        return f"tensor({', '.join([text, *extras])})"

    def numpy(self):
        """The data as a NumPy array (copied from the GPU when needed)."""
        return backends.to_device(self.data, "cpu")

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def detach(self):
        """The same data as a new leaf that does not require grad (no graph behind it)."""
        return Tensor(self.data)

    def to(self, device):
        """A copy on device ("cpu" or "gpu"); self when it is there already. Result is a leaf."""
        if device == self.device:
            return self
        return Tensor(backends.to_device(self.data, device), requires_grad=self.requires_grad)

    # -- backward --------------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Add d(self)/d(leaf) * grad into every leaf's .grad that requires grad.

        grad defaults to 1 for a one-element tensor (a loss). Unless retain_graph is True, each
        op's saved arrays are freed once used, so a second backward through the same graph fails.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of the computation "
                "had requires_grad=True (or it ran under no_grad())"
            )
        xp = get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a one-element tensor, got shape "
                    f"{self.shape}; pass grad= of that shape (or reduce the tensor to a scalar)"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = _as_array(grad, self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward(grad=...): grad has shape {grad.shape}, "
                                 f"the tensor has shape {self.shape}")
        if self.creator is None:
            _accumulate(self, grad, owned=False)  # grad may be the caller's array
            return
        grads = {id(self.creator): grad}  # gradient of each op's output, until the op is done
        for fn in reversed(_topological_order(self.creator)):
            dy = grads.pop(id(fn), None)
            if dy is None:
                continue
            dxs = fn.backward(dy)
            if not isinstance(dxs, tuple):
                dxs = (dxs,)
            for i, (x, dx) in enumerate(zip(fn.inputs, dxs)):
                if x is None or dx is None or not x.requires_grad:
                    continue
                if dx.shape != x.shape:
                    raise RuntimeError(f"{type(fn).__name__}.backward returned a gradient of "
                                       f"shape {dx.shape} for an input of shape {x.shape}")
                if dx.dtype != x.dtype:  # float32 * float64 gives float64: not for x's gradient
                    dx = dx.astype(x.dtype)
                if x.creator is None:
                    others = dxs[:i] + dxs[i + 1:]  # fn's other gradients (perhaps dx itself)
                    _accumulate(x, dx, owned=_is_plain(dx) and not _shares_memory(dx, dy, others,
                                                                                  fn))
                else:
                    key = id(x.creator)
                    grads[key] = dx if key not in grads else grads[key] + dx
            if not retain_graph:
                fn.release()

    # -- operators (each one a Function in minires/ops) ------------------------------------------
    def _lift(self, other):
        """Python numbers become tensors of self's dtype on self's device."""
        if isinstance(other, Tensor):
            return other
        xp = get_array_module(self.data)
        return Tensor(xp.asarray(other, dtype=self.dtype))

    def __add__(self, other):
        return elementwise.add(self, self._lift(other))

    def __radd__(self, other):
        return elementwise.add(self._lift(other), self)

    def __sub__(self, other):
        return elementwise.sub(self, self._lift(other))

    def __rsub__(self, other):
        return elementwise.sub(self._lift(other), self)

    def __mul__(self, other):
        return elementwise.mul(self, self._lift(other))

    def __rmul__(self, other):
        return elementwise.mul(self._lift(other), self)

    def __truediv__(self, other):
        return elementwise.div(self, self._lift(other))

    def __rtruediv__(self, other):
        return elementwise.div(self._lift(other), self)

    def __neg__(self):
        return elementwise.neg(self)

    def __pow__(self, exponent):
        return elementwise.pow(self, exponent)

    def __matmul__(self, other):
        return elementwise.matmul(self, other)

    def exp(self):
        return elementwise.exp(self)

    def log(self):
        return elementwise.log(self)

    def relu(self):
        return elementwise.relu(self)

    def sum(self, axis=None, keepdims=False):
        return reduce.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return reduce.mean(self, axis, keepdims)

    def reshape(self, *shape):
        return shape_op.reshape(self, *shape)

    def transpose(self, *axes):
        return shape_op.transpose(self, *axes)

    @property
    def T(self):
        return shape_op.transpose(self)

    def flatten(self, start_dim=0):
        return shape_op.flatten(self, start_dim)

    def __getitem__(self, key):
        return shape_op.getitem(self, key)


def _accumulate(leaf, grad, owned):
    """Add grad into leaf.grad. The first gradient is kept as it is when nothing else holds its
    memory (owned), and copied otherwise: a leaf's .grad outlives backward and may be changed in
    place (`p.grad *= scale`), so it must never alias an array another op or leaf still uses.
    Keeping it saves a copy kernel per parameter on the GPU (59 launches of a ResNet-20 step)."""
    if leaf.grad is None:
        leaf.grad = grad if owned else grad.copy()
    else:
        leaf.grad = leaf.grad + grad  # a new array: never in place into one that may be shared


def _is_plain(a):
    """Contiguous and writable: not a broadcast view (mean's backward returns one, of stride 0,
    read-only), which a .grad must not be."""
    return a.flags.c_contiguous and getattr(a.flags, "writeable", True)  # CuPy: no such flag


def _shares_memory(dx, dy, other_grads, fn):
    """Whether dx may share memory with what else fn.backward saw or returned: its upstream dy
    (Add passes dy through as is, reshape returns a view of it), fn's gradients for its other
    inputs (one array may be returned for two), the arrays fn saved and its inputs' data.
    Otherwise backward made dx for this input alone."""
    xp = get_array_module(dx)
    others = [dy, *other_grads, *(x.data for x in fn.inputs if x is not None)]
    for value in vars(fn).values():  # what forward saved: arrays, or tuples of them
        others += value if isinstance(value, (tuple, list)) else [value]
    return any(xp.may_share_memory(dx, other) for other in others
               if _is_array(other) and get_array_module(other) is xp)


def _topological_order(root):
    """Ops reachable from root, each after every op that produced one of its inputs.

    Iterative depth-first search: ResNet-1202's graph is far deeper than Python's recursion limit.
    """
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        fn, inputs_done = stack.pop()
        if inputs_done:
            order.append(fn)
            continue
        if id(fn) in seen:
            continue
        if fn.released:
            raise RuntimeError(
                f"backward() through {type(fn).__name__} a second time: its saved arrays were "
                "freed by the first backward(); call the first one with retain_graph=True"
            )
        seen.add(id(fn))
        stack.append((fn, True))
        for x in fn.inputs:
            if x is not None and x.creator is not None and id(x.creator) not in seen:
                stack.append((x.creator, False))
    return order


def as_tensor(data):
    """data as a Tensor (returned as is when it already is one)."""
    return data if isinstance(data, Tensor) else Tensor(data)


def tensor(data, requires_grad=False, dtype=None):
    """A new leaf tensor. Python numbers and lists become float32; arrays keep their dtype."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


# The operators above call the ops, and the ops' wrappers call as_tensor: imported here, after
# Tensor and as_tensor exist, each op module can import this one at its top (it finds them
# defined), and the operators look the ops up only when they run.
from .ops import elementwise, reduce  # noqa: E402
from .ops import shape as shape_op  # noqa: E402
