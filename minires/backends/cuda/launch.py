"""Launching kernels/*.cu: the module cache, grid arithmetic and argument checks (lesson 10).

gpu.py calls `launch(kernel_name, grid, block, args)` and nothing else. Here the kernel's .cu
file is read from the installed package and compiled once per process, and the arguments are
checked against the kernel's C signature: a raw CUDA launch checks nothing, it copies bytes.
CuPy arrays run on the GPU (`cupy.RawModule`); NumPy arrays run under the CUDA emulator
(emulator.py, kernels/emu), which is how the tests run every line of this file without a GPU.
Every launch is counted (counting.py): launches are a budget, and the count needs no GPU.
"""

import functools
import re
from importlib import resources

import numpy as np

from ..devices import get_array_module, import_cupy
from .counting import count_launch

# Which file holds each kernel (one compiled module per file, as CuPy's RawModule has it).
KERNEL_FILES = {
    "im2col": "im2col.cu",
    "col2im": "col2im.cu",
    "gemm_naive": "gemm.cu",
    "gemm_tiled": "gemm.cu",
    "conv_forward": "gemm.cu",
    "conv_weight_grad": "gemm.cu",
    "conv_input_grad": "gemm.cu",
    "batch_norm_forward_training": "batch_norm.cu",
    "batch_norm_normalize": "batch_norm.cu",
    "batch_norm_backward": "batch_norm.cu",
    "relu_forward": "relu.cu",
    "relu_backward": "relu.cu",
    "add_relu_forward": "relu.cu",
    "sgd_step": "sgd.cu",
    "cross_entropy_forward": "cross_entropy.cu",
    "cross_entropy_backward": "cross_entropy.cu",
}

# The C parameter types the kernels use, and what a Python argument must be for each.
PARAM_TYPES = {"float*": "a contiguous float32 array", "int*": "a contiguous int32 array",
               "int": "numpy.int32", "float": "numpy.float32"}
POINTER_DTYPES = {"float*": np.float32, "int*": np.int32}


def ceil_div(n, d):
    """ceil(n / d) for non-negative ints: how many blocks of d threads cover n items."""
    return -(-n // d)


def launch(kernel_name, grid, block, args, shared_mem=0):
    """Run kernel_name on a grid of blocks, block threads each: the CUDA `kernel<<<grid, block,
    shared_mem>>>(args...)`. grid and block are tuples of 1 to 3 ints; args follow the kernel's
    signature (arrays for pointers, numpy.int32 for int). An empty grid launches nothing."""
    if 0 in tuple(grid):
        return  # nothing to compute (CUDA would reject a zero-sized grid)
    code = kernel_source(KERNEL_FILES[kernel_name])
    check_args(kernel_name, kernel_signature(code, kernel_name), args)
    function = get_function(code, kernel_name, emulated=get_array_module(*args) is np)
    count_launch(kernel_name)
    function(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)


@functools.cache
def get_function(code, kernel_name, emulated):
    """The kernel, looked up once: a lookup per launch would cost as much as the launch."""
    return compile_module(code, emulated).get_function(kernel_name)


@functools.cache
def kernel_source(file_name):
    """The CUDA source of kernels/<file_name>, wherever the package is installed."""
    return resources.files("minires.kernels").joinpath(file_name).read_text()


@functools.cache
def compile_module(code, emulated):
    """The compiled module for this source: once per process (CuPy also caches it on disk)."""
    if emulated:
        from . import emulator

        return emulator.RawModule(code=code)
    cupy = import_cupy()
    return cupy.RawModule(code=code, options=("-std=c++17",))


def _without_comments(code):
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", code, flags=re.DOTALL)


_KERNEL = re.compile(
    r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)'
)


def kernel_names(code):
    """The names of the `extern "C" __global__` kernels defined in a CUDA source."""
    return [match.group(1) for match in _KERNEL.finditer(_without_comments(code))]


@functools.cache
def kernel_signature(code, kernel_name):
    """The kernel's parameters as (type, name) pairs, e.g. ("float*", "x"), ("int", "N")."""
    for match in _KERNEL.finditer(_without_comments(code)):
        if match.group(1) == kernel_name:
            params = []
            for param in match.group(2).split(","):
                words = param.replace("*", " * ").split()
                ctype = "".join(w for w in words[:-1] if w not in ("const", "__restrict__"))
                params.append((ctype, words[-1]))
            return tuple(params)
    raise ValueError(f"no kernel named {kernel_name!r} in this source "
                     f"(it defines {kernel_names(code)})")


def check_args(kernel_name, params, args):
    """Raise TypeError unless args match the kernel's parameters one for one."""
    if len(args) != len(params):
        names = ", ".join(name for _, name in params)
        raise TypeError(f"{kernel_name} takes {len(params)} arguments ({names}), got {len(args)}")
    modules = {get_array_module(arg) for arg in args
               if hasattr(arg, "flags") and not isinstance(arg, np.generic)}
    if len(modules) > 1:  # a host pointer on a GPU (or the reverse) is a crash, or garbage
        raise TypeError(f"{kernel_name}: the array arguments mix NumPy and CuPy arrays; a kernel "
                        "runs on one device: move them with to_device() (NumPy arrays run under "
                        "the emulator, CuPy arrays on the GPU)")
    for i, ((ctype, name), arg) in enumerate(zip(params, args)):
        if ctype not in PARAM_TYPES:
            raise TypeError(f"{kernel_name}: parameter {name} has type {ctype}, which launch() "
                            f"does not marshal (it knows {sorted(PARAM_TYPES)})")
        if ctype in POINTER_DTYPES:
            is_array = isinstance(arg, np.ndarray) or get_array_module(arg) is not np
            ok = is_array and arg.dtype == POINTER_DTYPES[ctype] and arg.flags.c_contiguous
        else:
            ok = isinstance(arg, np.int32 if ctype == "int" else np.float32)
        if not ok:
            raise TypeError(f"{kernel_name}: argument {i} ({ctype} {name}) must be "
                            f"{PARAM_TYPES[ctype]}, got {_describe(arg)} (a kernel reads raw "
                            "memory: a Python int would arrive as 64 bits, a strided view as the "
                            "wrong elements)")


def _describe(arg):
    if hasattr(arg, "flags") and not isinstance(arg, np.generic):
        layout = "contiguous" if arg.flags.c_contiguous else "non-contiguous"
        return f"a {layout} {type(arg).__name__} of dtype {arg.dtype}"
    return f"{type(arg).__name__} {arg!r}"
