"""The launch budget without a GPU: count what one training step would cost on CuPy (lesson 10).

On a GPU every kernel launch costs 5-20 us of Python and driver time, whatever the kernel does,
and every device-to-host read (`float(x)`, `bool(x)`, `x.item()`) waits for the whole queue.
A ResNet-20 step is small enough that these costs, not the arithmetic, set its speed. This file
counts both on the CPU, under the emulator:

    with counting() as count:          # NumPy arrays made with device_array() count as on CuPy
        step()
    print(count.launches, count.syncs, count.by_name.most_common(5))

What is counted as one launch: each of our kernels (launch.py calls count_launch), and, on
`CountingArray`s, each NumPy ufunc call or reduction (`a + b`, `x.sum()`, `xp.exp(x)`), each
copy (`astype`, `copy`, `ascontiguousarray` or `reshape` of a strided view, a fancy-indexed
read, any assignment into an array) and each filled allocation (`zeros_like`, `ones_like`).
CuPy launches one kernel for each of these; views (reshape, transpose, basic slices) and `empty`
launch none.
`mean` counts 1 and `var` 2, as CuPy's reduction kernels do. What is counted as one sync: each
conversion of an array to a Python value (bool, int, float, item, tolist, repr).
The count is of the code path, so it does not depend on the batch size (except where a shape
decides the path, as split-K does in gpu.gemm).
"""

import collections
import contextlib

import numpy as np

_active = None  # the Count of the counting() block in progress, or None


class Count:
    """Launches and syncs counted so far; by_name says which operation made each."""

    def __init__(self):
        self.launches, self.syncs = 0, 0
        self.by_name = collections.Counter()

    def __repr__(self):
        return f"<Count launches={self.launches} syncs={self.syncs}>"


def count_launch(name, n=1):
    """Add n launches of name to the counting() block in progress (none: do nothing)."""
    if _active is not None and n:
        _active.launches += n
        _active.by_name[name] += n


def count_sync(name):
    if _active is not None:
        _active.syncs += 1
        _active.by_name[f"sync: {name}"] += 1


@contextlib.contextmanager
def counting():
    """Count launches and syncs inside the block. NumPy's asarray and ascontiguousarray, which
    do not dispatch to array subclasses, keep CountingArrays inside it (as cupy.asarray keeps a
    CuPy array on the device), so that tensors and kernel arguments count too."""
    global _active
    previous, real_asarray, real_contiguous = _active, np.asarray, np.ascontiguousarray
    _active = Count()

    def asarray(a, dtype=None, **kwargs):
        if isinstance(a, CountingArray) and not kwargs:
            return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
        return real_asarray(a, dtype, **kwargs)

    def ascontiguousarray(a, dtype=None, **kwargs):
        if isinstance(a, CountingArray) and not kwargs:
            if dtype is not None and np.dtype(dtype) != a.dtype:
                a = a.astype(dtype)
            if a.flags.c_contiguous:
                return a
            count_launch("ascontiguousarray")  # a copy kernel
            return _wrap(real_contiguous(a.view(np.ndarray)))
        return real_contiguous(a, dtype, **kwargs)

    np.asarray, np.ascontiguousarray = asarray, ascontiguousarray
    try:
        yield _active
    finally:
        np.asarray, np.ascontiguousarray = real_asarray, real_contiguous
        _active = previous


def device_array(x):
    """x as a CountingArray: a NumPy array whose operations count as CuPy launches."""
    return np.array(x, copy=True, subok=False).view(CountingArray)


def plain(x):
    """x with every CountingArray inside (lists, tuples, dicts) turned into a plain ndarray."""
    if isinstance(x, CountingArray):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(plain(v) for v in x)
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    return x


def _wrap(result):
    """Results stay on the "device": arrays (and the scalars a full reduction gives) as
    CountingArrays, as CuPy returns 0-d device arrays rather than Python numbers."""
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    if isinstance(result, (np.ndarray, np.generic)) and not isinstance(result, CountingArray):
        return np.asanyarray(result).view(CountingArray)
    return result


# NumPy functions that make views or only look at shapes: no launch on CuPy either.
_NO_LAUNCH = {"reshape", "transpose", "swapaxes", "broadcast_to", "expand_dims", "squeeze",
              "shape", "ndim", "size", "result_type", "may_share_memory", "shares_memory",
              "empty_like", "moveaxis", "atleast_1d", "atleast_2d", "ravel"}
_LAUNCHES = {"var": 2, "std": 3}  # CuPy: mean, then one reduction (and a sqrt)


def _is_basic_index(key):
    keys = key if isinstance(key, tuple) else (key,)
    return all(k is None or k is Ellipsis or isinstance(k, (int, np.integer, slice))
               for k in keys)


class CountingArray(np.ndarray):
    """A NumPy array that counts, inside counting(), the CuPy launches and syncs its operations
    would cost. Results of its operations are CountingArrays again."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = plain(out)
        result = getattr(ufunc, method)(*plain(inputs), **kwargs)
        count_launch(ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}")
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        name = func.__name__
        count_launch(name, 0 if name in _NO_LAUNCH else _LAUNCHES.get(name, 1))
        return _wrap(func(*plain(args), **plain(kwargs)))

    # -- methods NumPy implements without going through a ufunc or __array_function__ ----------
    def mean(self, *args, **kwargs):
        count_launch("mean")
        return _wrap(self.view(np.ndarray).mean(*args, **kwargs))

    def var(self, *args, **kwargs):
        count_launch("var", _LAUNCHES["var"])
        return _wrap(self.view(np.ndarray).var(*args, **kwargs))

    def astype(self, dtype, *args, **kwargs):
        if np.dtype(dtype) == self.dtype and kwargs.get("copy", True) is False:
            return self
        count_launch("astype")
        return _wrap(self.view(np.ndarray).astype(dtype, *args, **kwargs))

    def copy(self, *args, **kwargs):
        count_launch("copy")
        return _wrap(self.view(np.ndarray).copy(*args, **kwargs))

    def reshape(self, *args, **kwargs):
        result = self.view(np.ndarray).reshape(*args, **kwargs)
        if not np.shares_memory(result, self):
            count_launch("reshape")  # a strided array cannot be reshaped in place: a copy
        return _wrap(result)

    def argmax(self, *args, **kwargs):
        count_launch("argmax")
        return _wrap(self.view(np.ndarray).argmax(*args, **kwargs))

    def fill(self, value):
        count_launch("fill")
        self.view(np.ndarray).fill(value)

    def __getitem__(self, key):
        if not _is_basic_index(plain(key)):
            count_launch("take")  # a gather: CuPy copies into a new array
        result = self.view(np.ndarray)[plain(key)]
        return _wrap(result)

    def __setitem__(self, key, value):
        count_launch("setitem")  # a copy or fill kernel, a scatter for a fancy index
        self.view(np.ndarray)[plain(key)] = plain(value)

    # -- device-to-host reads: each waits for every kernel queued before it ----------------------
    def __bool__(self):
        count_sync("bool")
        return bool(self.view(np.ndarray))

    def __float__(self):
        count_sync("float")
        return float(self.view(np.ndarray))

    def __int__(self):
        count_sync("int")
        return int(self.view(np.ndarray))

    def __index__(self):
        count_sync("index")
        return self.view(np.ndarray).__index__()

    def item(self, *args):
        count_sync("item")
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        count_sync("tolist")
        return self.view(np.ndarray).tolist()

    def __repr__(self):
        count_sync("repr")
        return repr(self.view(np.ndarray))
