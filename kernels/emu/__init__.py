"""The CUDA emulator's C++ sources, shipped inside the package as `minires.kernels.emu`.

cuda_emu.h lets g++ compile kernels/*.cu unchanged; emu_runtime.cpp runs each CUDA thread as a
fiber with a real __syncthreads() barrier and checks every memory access for out-of-bounds
accesses and data races. minires/backends/cuda/emulator.py builds them and launches kernels on NumPy
arrays, so that the tests (and lesson 10) run the GPU backend without a GPU.
"""
