"""Devices: where a tensor's data lives, a NumPy array ("cpu") or a CuPy array ("gpu").

Ops never read a global device flag: they look at their arrays (`get_array_module`) and allocate
with that module. CuPy is imported only when the GPU is asked for, and a missing CuPy or GPU is
one error that says what to install.
"""

import sys

import numpy as np

DEVICES = ("cpu", "gpu")

GPU_INSTALL_HINT = (
    "the GPU backend needs CuPy and an NVIDIA GPU: install the extra that matches your CUDA "
    "driver, `pip install -e \".[gpu-cuda12]\"` (CUDA 12) or `pip install -e \".[gpu-cuda13]\"` "
    "(CUDA 13)"
)


def _cupy_if_loaded():
    # An array can only be a CuPy array if CuPy was imported, so this never imports it.
    return sys.modules.get("cupy")


def get_array_module(*arrays):
    """numpy or cupy: the array module that owns these arrays (numpy when none is a CuPy array)."""
    cupy = _cupy_if_loaded()
    if cupy is not None and any(isinstance(a, cupy.ndarray) for a in arrays):
        return cupy
    return np


def device_of(array):
    """"gpu" for a CuPy array, "cpu" for anything else."""
    return "gpu" if get_array_module(array) is not np else "cpu"


def check_device(device):
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    return device


def import_cupy():
    """Import CuPy for the GPU backend, or say what is missing: CuPy itself (install the extra),
    or, with CuPy installed, a driver or a GPU (installing more would not help)."""
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError(f"device 'gpu' is not available: {GPU_INSTALL_HINT}") from e
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy raises its own CUDARuntimeError without a driver
        raise RuntimeError(f"device 'gpu' is not available: CuPy {cupy.__version__} is installed "
                           f"but the CUDA driver could not be used ({e}); is there an NVIDIA GPU "
                           "and its driver (`nvidia-smi`)?") from e
    if count < 1:
        raise RuntimeError(f"device 'gpu' is not available: CuPy {cupy.__version__} is "
                           "installed, but the CUDA driver reports no GPU (`nvidia-smi`)")
    return cupy


def gpu_available():
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import_cupy()
    except RuntimeError:
        return False
    return True


def to_device(array, device):
    """Copy a backend array to "cpu" (NumPy) or "gpu" (CuPy); no copy when it is already there."""
    check_device(device)
    if device_of(array) == device:
        return array
    if device == "cpu":
        return array.get()
    return import_cupy().asarray(array)
