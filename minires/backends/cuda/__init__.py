"""The CUDA backend: the reference's kernels, with im2col, col2im and gemm as our own CUDA kernels.

  gpu.py       the wrappers: check arrays, allocate, work out each launch's grid
  launch.py    compiles kernels/*.cu once (CuPy's RawModule) and launches them, checking arguments
  emulator.py  runs the same .cu files on the CPU (g++, kernels/emu) for NumPy arrays
CuPy arrays always come here; NumPy arrays come here inside `backends.using("cuda")`, and then
every launch runs under the emulator. Everything else (batchnorm, ReLU, the pooling's argmax) is
the reference's code, which runs as CuPy's own kernels on CuPy arrays.
"""

from ..reference import Reference
from . import gpu


class CUDA(Reference):
    name = "cuda"
    im2col = staticmethod(gpu.im2col)
    col2im = staticmethod(gpu.col2im)
    gemm = staticmethod(gpu.gemm)
