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
     Each sits between guards, so that running off its end is reported.
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
constexpr int shared_guard_bytes = 256;  // the gap before (and after) each __shared__ array

// The running thread's coordinates and the barrier, implemented in emu_runtime.cpp (outside the
// instrumented code, so that reading threadIdx is not mistaken for a memory access).
dim3 thread_idx();
dim3 block_idx();
dim3 block_dim();
dim3 grid_dim();
void syncthreads(int line);
void threadfence();
float atomic_add(float* address, float value);
int atomic_add(int* address, int value);
}  // namespace emu

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Each __shared__ array goes into the section emu_shared, after a guard of its own that no
// kernel touches (__COUNTER__ names it; -fno-toplevel-reorder keeps the source order, and
// emu_runtime.cpp adds the last guard): a write past an array's end lands in a guard, which
// the runtime reports, rather than in the next array. One copy per block, as `static`.
#define EMU_CAT2(a, b) a##b
#define EMU_CAT(a, b) EMU_CAT2(a, b)
#define __shared__                                                                              \
    static char EMU_CAT(emu_shared_guard_, __COUNTER__)[::emu::shared_guard_bytes]              \
        __attribute__((section("emu_shared"), used));                                          \
    static __attribute__((section("emu_shared")))
#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())

// The line of each __syncthreads() in the kernel's source: threads of one block must all wait at
// the same one (on a GPU, two different barriers in divergent code hang or misbehave).
#define __syncthreads() ::emu::syncthreads(__LINE__)
// A fence, then an atomic, publishes the block's earlier stores to the block whose atomic on the
// same word comes later (the "last block" pattern): emu_runtime.cpp orders them, nothing else.
#define __threadfence() ::emu::threadfence()
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
constexpr int max_guards = 64;

// One launch, filled in by minires/backends/emulator.py (its ctypes mirror must match).
struct Launch {
    unsigned int grid[3];
    unsigned int block[3];
    int detect_races;                            // 0: only bounds checks (faster, and lets
                                                 // a racy kernel show its wrong results)
    int reverse;                                 // 1: run blocks and threads in reverse order
    int num_arrays;                              // the array arguments: device memory
    const char* array_begin[max_arrays];
    unsigned long long array_bytes[max_arrays];
    const char* array_name[max_arrays];          // parameter names, for error messages
    int num_guards;                              // the guards between __shared__ arrays, as
    unsigned long long guard_begin[max_guards];  // offsets in section emu_shared (from the
    unsigned long long guard_end[max_guards];    // module's symbol table: emulator.py)
    const char* guard_after[max_guards];         // the array just before each guard
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
