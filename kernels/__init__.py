"""The CUDA kernels of minires's GPU backend, shipped inside the package as `minires.kernels`.

Each `.cu` file here is plain CUDA C++ (`extern "C" __global__` kernels) and opens with a header
that gives its index math, memory layout and launch shape. minires/backends/cuda/gpu.py compiles
them with CuPy; the tests also compile them with g++ against kernels/emu/cuda_emu.h and run them
on the CPU. Lesson 10 reads them beside the NumPy reference in minires/backends/reference.py.
"""
