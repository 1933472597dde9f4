/* stricter_checks.cu: WRONG kernels, each with a bug that a simpler emulator let through.

   different_barriers   threads below 32 wait at one __syncthreads(), the others at another:
                        on a GPU, undefined (a hang, or barriers that match up wrongly).
   last_reader_writes   every thread reads `total`, then the last one overwrites it: a race
                        with every other reader, which a detector that remembers only the last
                        reader of a word misses (the last reader is the writer itself).
   store_races_atomic   thread 0 resets y[0] with a plain store while the others atomicAdd to
                        it: an atomic does not order a plain access.
   compact_unordered    each positive x[i] goes to slot atomicAdd(count, 1) of y: no access
                        races, but the order of y depends on which thread ran first.
   tree_sum_power_of_two  a tree sum that halves blockDim.x: wrong unless blockDim.x is a power
                        of 2 (with 48 threads, partial[2] is never added).
   shared_overflow      tile[threadIdx.x + 1] = ...: the last thread writes one past the end of a
                        __shared__ array, into whatever the compiler placed after it.
   last_block_unfenced  correct_kernels.cu's last_block_sum without its __threadfence(): the
                        last block may read partial sums still on their way to memory.
   Layout: contiguous float32 arrays; n elements. Launch: 1-D, one block unless said otherwise.
*/

extern "C" __global__ void different_barriers(const float* __restrict__ x, float* __restrict__ y,
                                              int n)
{
    __shared__ float tile[256];
    const int t = threadIdx.x;
    tile[t] = t < n ? x[t] : 0.0f;
    if (t < 32) {
        __syncthreads();  // the bug: a barrier inside a branch that splits the block
        y[t] = tile[(t + 1) % blockDim.x];
    } else {
        __syncthreads();
        if (t < n) {
            y[t] = tile[t];
        }
    }
}

extern "C" __global__ void last_reader_writes(const float* __restrict__ x, float* __restrict__ y,
                                              int n)
{
    __shared__ float total;
    if (threadIdx.x == 0) {
        total = x[0];
    }
    __syncthreads();
    const float seen = total;  // every thread reads total ...
    if (threadIdx.x == blockDim.x - 1) {
        total = seen + 1.0f;  // ... the bug: and one overwrites it with no barrier between
    }
    __syncthreads();
    if (threadIdx.x < n) {
        y[threadIdx.x] = seen;
    }
}

extern "C" __global__ void store_races_atomic(const float* __restrict__ x, float* __restrict__ y,
                                              int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) {
        return;
    }
    if (i == 0) {
        y[0] = 0.0f;  // the bug: a plain store to the word the other threads add to
    } else {
        atomicAdd(&y[0], x[i]);
    }
}

extern "C" __global__ void compact_unordered(const float* __restrict__ x, float* __restrict__ y,
                                             float* __restrict__ count, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && x[i] > 0.0f) {
        const int slot = (int)atomicAdd(&count[0], 1.0f);  // the bug, if y's order matters
        y[slot] = x[i];
    }
}

extern "C" __global__ void tree_sum_power_of_two(const float* __restrict__ x,
                                                 float* __restrict__ y, int n)
{
    __shared__ float partial[1024];
    const int t = threadIdx.x;
    partial[t] = t < n ? x[t] : 0.0f;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {  // the bug: 48 -> 24, 12, 6, 3, 1
        if (t < half) {
            partial[t] += partial[t + half];
        }
        __syncthreads();
    }
    if (t == 0) {
        y[0] = partial[0];
    }
}

extern "C" __global__ void shared_overflow(const float* __restrict__ x, float* __restrict__ y,
                                           int n)
{
    __shared__ float tile[64];
    __shared__ float neighbour[64];
    const int t = threadIdx.x;
    neighbour[t] = 0.0f;
    tile[t + 1] = t < n ? x[t] : 0.0f;  // the bug: thread 63 writes tile[64]
    __syncthreads();
    if (t < n) {
        y[t] = tile[t] + neighbour[t];
    }
}

extern "C" __global__ void last_block_unfenced(const float* __restrict__ x,
                                               float* __restrict__ partial,
                                               int* __restrict__ count, float* __restrict__ total,
                                               int n)
{
    __shared__ int is_last;
    if (threadIdx.x == 0) {
        float sum = 0.0f;
        for (int i = blockIdx.x * blockDim.x; i < min(n, (int)((blockIdx.x + 1) * blockDim.x));
             ++i) {
            sum += x[i];
        }
        partial[blockIdx.x] = sum;  // BUG: no __threadfence() before the count
        is_last = atomicAdd(count, 1) == (int)gridDim.x - 1;
    }
    __syncthreads();
    if (is_last && threadIdx.x == 0) {
        float sum = 0.0f;
        for (int b = 0; b < (int)gridDim.x; ++b) {
            sum += partial[b];
        }
        total[0] = sum;
        count[0] = 0;
    }
}
