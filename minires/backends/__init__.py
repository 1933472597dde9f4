"""Backends: which code computes the ops, chosen in one place, `get_backend(x)` (lesson 10).

Every op asks `get_backend(x)` for the backend of its input array and calls that backend's
kernel (`conv2d_forward`, `batch_norm_backward`, `relu_forward`, ...). Each backend provides the
same kernels with the same signatures (reference.Reference lists them all):
  reference  NumPy: im2col + GEMM, the specification that every other backend must match
  numba      the same results by compiled CPU kernels: the default for NumPy arrays
  cuda       our CUDA kernels (kernels/*.cu) through CuPy: always, for CuPy arrays
`using(name)` picks the backend for NumPy arrays inside a with-block:

    with minires.backends.using("reference"):
        loss = cross_entropy(model(x), y)   # every op here runs the NumPy specification

`using("cuda")` runs the CUDA backend on NumPy arrays: its kernels run under the CUDA emulator
(kernels/emu), which is how the tests check the GPU path without a GPU.
"""

import contextlib

import numpy as np

from .devices import (
    DEVICES,
    GPU_INSTALL_HINT,
    check_device,
    device_of,
    get_array_module,
    gpu_available,
    import_cupy,
    to_device,
)

__all__ = [  # the device helpers, then the backends
    "DEVICES", "GPU_INSTALL_HINT", "check_device", "device_of", "get_array_module",
    "gpu_available", "import_cupy", "to_device",
    "BACKENDS", "backend", "conv_output_size", "emulated_gpu", "get_backend", "using",
]


def conv_output_size(size, kernel, stride, padding):
    """Output length of a sliding window: floor((size + 2*padding - kernel) / stride) + 1. The
    ops check shapes with it, and every backend sizes its outputs with it."""
    return (size + 2 * padding - kernel) // stride + 1


BACKENDS = ("reference", "numba", "numba-v1", "cuda")
_loaded = {}  # name -> backend object, made on first use
_cpu_backend = "numba"  # what NumPy arrays get; using() changes it inside a with-block


def backend(name):
    """The backend object called name (see BACKENDS), made on first use."""
    if name not in _loaded:
        if name == "reference":
            from .reference import Reference as Backend
        elif name == "numba":
            from .numba import Numba as Backend
        elif name == "numba-v1":  # the numba backend with its naive convolution, version 1
            from .numba import NumbaV1 as Backend
        elif name == "cuda":
            from .cuda import CUDA as Backend
        else:
            raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
        _loaded[name] = Backend()
    return _loaded[name]


def get_backend(*arrays):
    """The backend for these arrays: cuda for CuPy arrays; for NumPy arrays, numba, or the one
    a surrounding `using(...)` names."""
    if get_array_module(*arrays) is not np:
        return backend("cuda")
    return backend(_cpu_backend)


@contextlib.contextmanager
def using(name):
    """Inside this with-block every op on NumPy arrays runs on backend name: "reference" (the
    NumPy specification), "numba" (the default) or "cuda" (the CUDA kernels, emulated on the CPU;
    needs g++). CuPy arrays always use "cuda". Blocks nest; the previous choice comes back after."""
    global _cpu_backend
    if name == "cuda":
        from .cuda import emulator

        emulator.compiler()  # fail now, saying what to install, rather than in the first op
    backend(name)  # an unknown name fails here, before the block runs
    previous, _cpu_backend = _cpu_backend, name
    try:
        yield backend(name)
    finally:
        _cpu_backend = previous


def emulated_gpu():
    """`using("cuda")`: NumPy arrays through the GPU backend's wrappers, launch code and CUDA
    kernels, run on the CPU by the emulator. Results must match the reference backend."""
    return using("cuda")
