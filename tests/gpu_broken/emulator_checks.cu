/* emulator_checks.cu: small WRONG kernels, each with one classic CUDA bug the emulator reports.

   exit_before_barrier  threads past n return early, the others then wait at __syncthreads()
                        for them: on a GPU this hangs or misbehaves.
   copy_unchecked       y[i] = x[i] with no `if (i < n)`: the last block reads and writes past
                        the ends of the arrays.
   all_write_one        every thread stores to y[0]: a write-write race between threads (and
                        between blocks, which nothing inside one launch can order).
   Layout: contiguous float32 arrays of n elements. Launch: 1-D, any block size.
*/

extern "C" __global__ void exit_before_barrier(const float* __restrict__ x, float* __restrict__ y,
                                               int n)
{
    __shared__ float tile[256];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) {
        return;  // the bug: these threads never reach the barrier below
    }
    tile[threadIdx.x] = x[i];
    __syncthreads();
    y[i] = tile[threadIdx.x];
}

extern "C" __global__ void copy_unchecked(const float* __restrict__ x, float* __restrict__ y,
                                          int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = x[i];  // the bug: no `if (i < n)`, so n goes unused
}

extern "C" __global__ void all_write_one(const float* __restrict__ x, float* __restrict__ y,
                                         int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        y[0] = x[i];  // the bug: every thread writes the same element
    }
}
