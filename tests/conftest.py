"""Shared fixtures: `backend` runs a test once per backend, never through a copied test file.

"reference" is the NumPy specification, "numba" the compiled CPU kernels (the default), each
picked with `minires.backends.using(...)`. "cuda-emu" runs the CUDA backend's own code (launch
maths, argument marshalling, the very .cu kernels) on the CPU under the CUDA emulator
(kernels/emu), with NumPy arrays standing in for device memory. "gpu" runs on a real GPU when
CuPy sees one.
"""

import contextlib
import os
import shutil

# Tests check results, not speed: one BLAS (and numba) thread keeps their small GEMMs from
# spinning idle threads, which costs several times the runtime on a busy 2-core machine. Set
# before NumPy loads (subprocesses, such as the CLI tests, inherit it). Benchmarks do not go
# through here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import minires  # noqa: E402
from minires import backends  # noqa: E402


def _backend_context(name):
    if name == "gpu":
        if not minires.gpu_available():
            pytest.skip("no CUDA GPU (or no CuPy) on this machine")
        return contextlib.nullcontext()  # CuPy arrays always run on the CUDA backend
    if name == "cuda-emu":
        if shutil.which("g++") is None:
            pytest.skip("the CUDA emulator needs g++ to build the kernels")
        return backends.using("cuda")
    return backends.using(name)


@pytest.fixture(params=["reference", "numba", "cuda-emu", "gpu"])
def backend(request):
    """Yields the backend's name; arrays are made with `backend_array(x, backend)`."""
    with _backend_context(request.param):
        yield request.param


def backend_array(x, backend):
    """x (NumPy) moved to where the backend keeps its arrays (the GPU only for "gpu")."""
    x = np.ascontiguousarray(x)
    return backends.to_device(x, "gpu") if backend == "gpu" else x
