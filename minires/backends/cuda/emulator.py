"""The CUDA emulator: kernels/*.cu built by g++ and run on the CPU, NumPy arrays as device memory.

`RawModule(code)` stands in for `cupy.RawModule`: it compiles the CUDA source with g++ after
kernels/emu/cuda_emu.h into a shared library (cached on disk, rebuilt when any source changes),
and its functions are called like CuPy's, `kernel(grid, block, args)`. launch.py uses it for
NumPy arrays, so the tests run the GPU backend's own code without a GPU. How threads, barriers
and the memory checks work: kernels/emu/emu_runtime.cpp (lesson 10).
"""

import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from .launch import check_args, kernel_names, kernel_signature

MAX_ARRAYS = 16  # emu::max_arrays in cuda_emu.h
MAX_GUARDS = 64  # emu::max_guards
MAX_BLOCK = (1024, 1024, 64)  # CUDA's limits, with at most 1024 threads per block
MAX_GRID = (2**31 - 1, 65535, 65535)
# The kernel code is instrumented (-fsanitize=thread: a hook call around every load and store);
# the runtime is not. Hidden visibility and -fno-gnu-unique keep every module's statics (its
# __shared__ memory) and hooks its own when several modules are loaded at once.
# -fno-toplevel-reorder keeps the __shared__ arrays in source order, each after its guard.
CXXFLAGS = ("-std=c++17", "-O1", "-fPIC", "-fvisibility=hidden", "-fno-gnu-unique", "-Wall",
            "-Wno-unknown-pragmas", "-fno-toplevel-reorder")
KERNEL_FLAGS = ("-fsanitize=thread",)
RUNTIME_FLAGS = ("-O2",)  # its hooks run at every access: inlining their helpers pays


class EmulatorError(RuntimeError):
    """A kernel did what would be a bug on a GPU: an out-of-bounds access, a data race, a thread
    skipping a __syncthreads() that others wait at, a read of unwritten shared memory."""


_detect_races = True


@contextlib.contextmanager
def race_detection(enabled):
    """Turn the race detector off (or on) inside a with-block; it is on by default. Bounds checks
    stay on. Without it a racy kernel runs to the end, and its wrong results show instead."""
    global _detect_races
    previous, _detect_races = _detect_races, enabled
    try:
        yield
    finally:
        _detect_races = previous


class RawModule:
    """The emulated counterpart of `cupy.RawModule(code=...)`: compiled once, on construction."""

    def __init__(self, code):
        self.code = code
        path = build(code)
        self.library = ctypes.CDLL(str(path))
        self.shared_guards = shared_guards(path)

    def get_function(self, name):
        if name not in kernel_names(self.code):
            raise ValueError(f"no kernel named {name!r} in this module "
                             f"(it has {kernel_names(self.code)})")
        return Kernel(self, name)


class _Launch(ctypes.Structure):
    """Mirror of emu::Launch in cuda_emu.h, field for field."""

    _fields_ = [
        ("grid", ctypes.c_uint * 3),
        ("block", ctypes.c_uint * 3),
        ("detect_races", ctypes.c_int),
        ("reverse", ctypes.c_int),
        ("num_arrays", ctypes.c_int),
        ("array_begin", ctypes.c_void_p * MAX_ARRAYS),
        ("array_bytes", ctypes.c_ulonglong * MAX_ARRAYS),
        ("array_name", ctypes.c_char_p * MAX_ARRAYS),
        ("num_guards", ctypes.c_int),
        ("guard_begin", ctypes.c_ulonglong * MAX_GUARDS),
        ("guard_end", ctypes.c_ulonglong * MAX_GUARDS),
        ("guard_after", ctypes.c_char_p * MAX_GUARDS),
        ("error", ctypes.c_char * 1024),
    ]


class Kernel:
    """One kernel of a RawModule; call it as `f(grid, block, args, shared_mem=0)`."""

    def __init__(self, module, name):
        self.name = name
        self.params = kernel_signature(module.code, name)
        self.guards = module.shared_guards[:MAX_GUARDS]
        self._launch = getattr(module.library, f"emu_launch_{name}")
        self._launch.argtypes = [ctypes.POINTER(_Launch), ctypes.POINTER(ctypes.c_void_p)]
        self._launch.restype = ctypes.c_int

    def __call__(self, grid, block, args, shared_mem=0):
        grid, block = _dims("grid", grid, MAX_GRID), _dims("block", block, MAX_BLOCK)
        if block[0] * block[1] * block[2] > 1024:
            raise ValueError(f"{self.name}: block {block} has more than 1024 threads")
        if grid[0] * grid[1] * grid[2] * block[0] * block[1] * block[2] >= 2**31:
            raise ValueError(f"{self.name}: grid {grid} x block {block} is too large to emulate")
        if shared_mem:
            raise NotImplementedError("dynamic shared memory (extern __shared__) is not emulated")
        check_args(self.name, self.params, args)
        launch = _Launch(grid=grid, block=block, detect_races=_detect_races)
        launch.num_guards = len(self.guards)
        for i, (begin, end, after) in enumerate(self.guards):
            launch.guard_begin[i], launch.guard_end[i], launch.guard_after[i] = begin, end, after
        values = []  # the argument values; args_pointer points at each (cuLaunchKernel's way)
        device_copies = []  # (host array, its copy in "device memory")
        for (_, name), arg in zip(self.params, args):
            if isinstance(arg, np.ndarray):
                arg = arg.view(np.ndarray)  # a CountingArray's copies are not the kernel's own
                if launch.num_arrays == MAX_ARRAYS:
                    raise ValueError(f"{self.name}: more than {MAX_ARRAYS} array arguments")
                device = _device_copy(arg)
                device_copies.append((arg, device))
                i = launch.num_arrays
                launch.array_begin[i] = device.ctypes.data
                launch.array_bytes[i] = device.nbytes
                launch.array_name[i] = name.encode()
                launch.num_arrays += 1
                values.append(ctypes.c_void_p(device.ctypes.data))
            elif isinstance(arg, np.int32):
                values.append(ctypes.c_int32(arg))
            else:
                values.append(ctypes.c_float(arg))
        args_pointer = (ctypes.c_void_p * len(values))(*map(ctypes.addressof, values))
        self._run(launch, args_pointer, grid, block)
        if _detect_races:
            # Again with blocks and threads in reverse order, from the same inputs: a result that
            # changes is a race that the detector cannot see (an atomic's value used as an index).
            first = [device.copy() for _, device in device_copies]
            for host, device in device_copies:
                device[:] = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
            launch.reverse = 1
            self._run(launch, args_pointer, grid, block)
            for (host, device), before in zip(device_copies, first):
                _compare_orders(self.name, grid, block, host.dtype, before, device)
        for host, device in device_copies:
            if host.flags.writeable:
                host.reshape(-1).view(np.uint8)[:] = device  # copy back what the kernel wrote


    def _run(self, launch, args_pointer, grid, block):
        if self._launch(ctypes.byref(launch), args_pointer) != 0:
            order = " (threads in reverse order)" if launch.reverse else ""
            raise EmulatorError(f"kernel {self.name}, grid {grid}, block {block}{order}: "
                                f"{launch.error.decode()}")


def _compare_orders(name, grid, block, dtype, forward, reverse):
    """Raise EmulatorError if an array came out differently in the two thread orders (float32
    sums in a different order may differ in their last bits: that is rounding, not a race)."""
    if np.array_equal(forward, reverse):
        return
    a, b = forward.view(dtype), reverse.view(dtype)
    if dtype.kind == "f":
        scale = float(np.max(np.abs(a), initial=0.0))
        if np.allclose(a, b, rtol=1e-5, atol=1e-6 * scale, equal_nan=True):
            return
    i = int(np.flatnonzero(a != b)[0])
    raise EmulatorError(f"kernel {name}, grid {grid}, block {block}: the result depends on the "
                        f"order threads run: element {i} of an output is {a[i]} with threads in "
                        f"index order and {b[i]} in reverse order (a data race, e.g. through the "
                        "value an atomic returns, or a read of a word another thread writes)")


def _device_copy(array):
    """array's bytes in an allocation of their own, between two guard zones as large as the
    array: like cudaMalloc'd buffers, no two arguments ever touch, so an access that runs off
    an array lands in a guard and is reported as out of bounds, never as a hit on a neighbour
    that NumPy's allocator happened to place next to it."""
    nbytes = array.nbytes
    guard = max(nbytes, 4096)
    memory = np.zeros(guard + nbytes + guard, dtype=np.uint8)
    device = memory[guard:guard + nbytes]
    device[:] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return device


def _dims(what, dims, limits):
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    if len(dims) != 3 or not all(1 <= d <= limit for d, limit in zip(dims, limits)):
        raise ValueError(f"{what} {dims} must have 1 to 3 dimensions within {limits}")
    return dims


# -- building ----------------------------------------------------------------------------------

def cache_dir():
    """Where built modules are kept: $MINIRES_EMU_CACHE, else ~/.cache/minires/emu (a temporary
    folder when that cannot be written)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minires" / "emu"
    path = Path(os.environ.get("MINIRES_EMU_CACHE", default))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = Path(tempfile.gettempdir()) / f"minires-emu-{os.getuid()}"
        path.mkdir(exist_ok=True)
    return path


def compiler():
    """The C++ compiler ($CXX, else g++), or a RuntimeError that says what to install."""
    path = shutil.which(os.environ.get("CXX", "g++"))
    if path is None:
        raise RuntimeError("the CUDA emulator compiles kernels with g++, which was not found: "
                           "install it (e.g. `apt install g++`) or point $CXX at it")
    return path


def build(code):
    """Path of the shared library that runs this CUDA source, compiling it on first use."""
    cxx = compiler()
    emu = resources.files("minires.kernels.emu")
    header = emu.joinpath("cuda_emu.h").read_text()
    runtime = emu.joinpath("emu_runtime.cpp").read_text()
    glue = '#include "cuda_emu.h"\n#include "kernel.cu"\n' + "".join(
        f"EMU_KERNEL({name})\n" for name in kernel_names(code))
    flags = (*CXXFLAGS, *KERNEL_FLAGS, *RUNTIME_FLAGS)
    key = hashlib.sha256("\0".join((cxx, *flags, header, runtime, code)).encode()).hexdigest()
    library = cache_dir() / key[:20] / "module.so"
    if library.exists():
        return library
    work = Path(tempfile.mkdtemp(prefix="build-", dir=cache_dir()))
    try:
        for name, text in [("cuda_emu.h", header), ("emu_runtime.cpp", runtime),
                           ("kernel.cu", code), ("module.cpp", glue)]:
            (work / name).write_text(text)
        _run(work, cxx, *CXXFLAGS, *RUNTIME_FLAGS, "-c", "emu_runtime.cpp", "-o", "runtime.o")
        _run(work, cxx, *CXXFLAGS, *KERNEL_FLAGS, "-c", "module.cpp", "-o", "module.o")
        _run(work, cxx, "-shared", "-Wl,--no-undefined", "module.o", "runtime.o", "-o", "module.so")
        library.parent.mkdir(exist_ok=True)
        os.replace(work / "module.so", library)  # atomic: a concurrent build just wins or loses
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return library


def shared_guards(library):
    """[(begin, end, array before it)] of every guard between __shared__ arrays (cuda_emu.h),
    offsets into the section emu_shared, read from the library's symbol table with nm."""
    nm = shutil.which("nm")
    if nm is None:
        return []  # binutils come with g++; without nm the guards are simply not checked
    listing = subprocess.run([nm, "-S", "-C", str(library)], capture_output=True, text=True)
    symbols, start = [], None
    for line in listing.stdout.splitlines():
        fields = line.split(maxsplit=3)
        if len(fields) == 3 and fields[2] == "__start_emu_shared":
            start = int(fields[0], 16)
        elif len(fields) == 4 and fields[2] in "dDbB":
            symbols.append((int(fields[0], 16), int(fields[1], 16), fields[3]))
    if start is None:
        return []
    guards, before = [], "(none: the first)"
    for address, size, name in sorted(s for s in symbols if s[0] >= start):
        if "emu_shared_guard_" in name:
            guards.append((address - start, address - start + size, before.encode()))
        else:
            before = name.split("::")[-1]  # "gemm_tiled(...)::As" -> "As"
    return guards


def _run(cwd, *command):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building the emulated kernels failed: {' '.join(command)}\n"
                           f"{result.stderr}")
