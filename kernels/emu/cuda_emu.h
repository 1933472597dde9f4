/* cuda_emu.h: just enough CUDA for g++ to compile the kernels unchanged and run them on the CPU.

   minires/backends/emulator.py compiles each .cu file as C++ after this header, links it with
   emu_runtime.cpp into a shared library and launches kernels through ctypes, NumPy arrays
   standing in for device memory. That lets the tests run the very kernel text a GPU runs.

   The model (emu_runtime.cpp has the details):
   - Blocks run one after another. The threads of a block are fibers (ucontext) on one OS thread,
     switched cooperatively: a fiber runs until it reaches __syncthreads(), stores to global
     memory, or ends. __syncthreads() is a real barrier: nobody passes it until every thread of
     the block has arrived, and a thread that exits while others wait is reported.
   - __shared__ is `static`: since one block runs at a time (and one launch at a time per
     module), a static variable is exactly one copy per block, shared by the block's threads.
   - g++ instruments every load and store of the kernel code (-fsanitize=thread), and
     emu_runtime.cpp supplies the hooks it calls: out-of-bounds accesses, data races on global
     and shared memory and reads of shared memory nobody has written are reported.
   Not emulated: warps (no warp-level intrinsics), dynamic shared memory (extern __shared__),
   __constant__ memory, streams, and anything about speed.
*/
#pragma once

#include <math.h>  // expf, fmaxf, ... in the global namespace, as in CUDA device code

#include <cstddef>
#include <utility>

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
        : x(x_), y(y_), z(z_) {}
};

namespace emu {
// The running thread's coordinates and the barrier, implemented in emu_runtime.cpp (outside the
// instrumented code, so that reading threadIdx is not mistaken for a memory access).
dim3 thread_idx();
dim3 block_idx();
dim3 block_dim();
dim3 grid_dim();
void syncthreads();
float atomic_add(float* address, float value);
int atomic_add(int* address, int value);
}  // namespace emu

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())

inline void __syncthreads() { emu::syncthreads(); }
inline float atomicAdd(float* address, float value) { return emu::atomic_add(address, value); }
inline int atomicAdd(int* address, int value) { return emu::atomic_add(address, value); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// ------------------------------------------------------------------------------------------------
// Below: the glue between Python and a kernel; kernel code never uses it.

namespace emu {

constexpr int max_arrays = 16;

// One launch, filled in by minires/backends/emulator.py (its ctypes mirror must match).
struct Launch {
    unsigned int grid[3];
    unsigned int block[3];
    int detect_races;                            // 0: only bounds checks (faster, and lets
                                                 // a racy kernel show its wrong results)
    int num_arrays;                              // the array arguments: device memory
    const char* array_begin[max_arrays];
    unsigned long long array_bytes[max_arrays];
    const char* array_name[max_arrays];          // parameter names, for error messages
    char error[1024];                            // why the launch failed
};

// Runs body(args) once per CUDA thread of the grid; 0 on success, 1 with launch.error set.
int run(Launch& launch, void (*body)(void**), void** args);

// kernel(*args[0], *args[1], ...): args holds pointers to the argument values, the convention of
// CUDA's cuLaunchKernel. Not instrumented (no_sanitize_thread): reading args is not the kernel's
// memory access. GCC does not inline the instrumented kernel into it, so the kernel stays checked.
template <typename... Params, std::size_t... I>
__attribute__((no_sanitize_thread)) inline void call(void (*kernel)(Params...), void** args,
                                                     std::index_sequence<I...>)
{
    kernel(*static_cast<Params*>(args[I])...);
}

template <typename... Params>
__attribute__((no_sanitize_thread)) inline void call(void (*kernel)(Params...), void** args)
{
    call(kernel, args, std::index_sequence_for<Params...>{});
}

}  // namespace emu

// One exported launcher per kernel: emu_launch_<name>(Launch*, void** args).
#define EMU_KERNEL(name)                                                                       \
    __attribute__((no_sanitize_thread)) static void emu_body_##name(void** args)              \
    {                                                                                          \
        emu::call(name, args);                                                                 \
    }                                                                                          \
    extern "C" __attribute__((visibility("default"))) int emu_launch_##name(                  \
        emu::Launch* launch, void** args)                                                      \
    {                                                                                          \
        return emu::run(*launch, emu_body_##name, args);                                       \
    }
