"""Shared fixtures: `backend` runs a test once per backend, never through a copied test file.

"cpu" is the NumPy backend. "gpu-emu" runs the GPU backend's own code (launch maths, argument
marshalling, the very .cu kernels) on the CPU under the CUDA emulator (kernels/emu), with NumPy
arrays standing in for device memory. "gpu" runs on a real GPU when CuPy sees one.
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


def _emulator_context():
    if shutil.which("g++") is None:
        pytest.skip("the CUDA emulator needs g++ to build the kernels")
    return backends.emulated_gpu()


@pytest.fixture(params=["cpu", "gpu-emu", "gpu"])
def backend(request):
    """Yields the backend's name; arrays are made with `backend_array(x, backend)`."""
    name = request.param
    if name == "gpu" and not minires.gpu_available():
        pytest.skip("no CUDA GPU (or no CuPy) on this machine")
    context = _emulator_context() if name == "gpu-emu" else contextlib.nullcontext()
    with context:
        yield name


def backend_array(x, backend):
    """x (NumPy) moved to where the backend keeps its arrays (the GPU only for "gpu")."""
    x = np.ascontiguousarray(x)
    return backends.to_device(x, "gpu") if backend == "gpu" else x
