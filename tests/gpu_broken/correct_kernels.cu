/* correct_kernels.cu: RIGHT kernels with the patterns the stricter checks look at, which the
   emulator must not flag (tests/gpu_broken/ keeps them beside the broken ones they resemble).

   tree_sum         y[blockIdx.x] = sum of the block's slice of x: a tree in shared memory,
                    strides 1, 2, 4, ... so that any blockDim.x works (48, 100, 256).
   transpose_tiled  y (W, H) = x (H, W)^T through a 32 x 33 shared tile (padded: no bank
                    conflicts); block (32, 8), grid (ceil(W / 32), ceil(H / 32)).
   histogram        counts[b] = how many x[i] have (int)x[i] == b (clamped to 0..bins-1), bins
                    <= 64: per-block bins in shared memory by atomicAdd, zeroed and read back
                    with barriers between, then added into counts with global atomics.
   last_block_sum   total[0] = sum of x: each block's thread 0 stores its block's sum in
                    partial[blockIdx.x], fences, and counts the block in with atomicAdd on
                    count[0]; the last block sums partial[] in index order and resets count[0]
                    (gemm_tiled's split K does the same per tile). count[0] is 0 before.
   Layout: contiguous float32 arrays (count: int32).
*/

extern "C" __global__ void tree_sum(const float* __restrict__ x, float* __restrict__ y, int n)
{
    __shared__ float partial[1024];
    const int t = threadIdx.x;
    const int i = blockIdx.x * blockDim.x + t;
    partial[t] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int stride = 1; stride < (int)blockDim.x; stride *= 2) {
        if (t % (2 * stride) == 0 && t + stride < (int)blockDim.x) {
            partial[t] += partial[t + stride];
        }
        __syncthreads();
    }
    if (t == 0) {
        y[blockIdx.x] = partial[0];
    }
}

extern "C" __global__ void transpose_tiled(const float* __restrict__ x, float* __restrict__ y,
                                           int H, int W)
{
    __shared__ float tile[32][33];
    const int row0 = blockIdx.y * 32, col0 = blockIdx.x * 32;
    for (int k = threadIdx.y; k < 32; k += 8) {
        if (row0 + k < H && col0 + threadIdx.x < W) {
            tile[k][threadIdx.x] = x[(row0 + k) * W + col0 + threadIdx.x];
        }
    }
    __syncthreads();
    for (int k = threadIdx.y; k < 32; k += 8) {  // row col0 + k of y holds column col0 + k of x
        if (col0 + k < W && row0 + threadIdx.x < H) {
            y[(col0 + k) * H + row0 + threadIdx.x] = tile[threadIdx.x][k];
        }
    }
}

extern "C" __global__ void histogram(const float* __restrict__ x, float* __restrict__ counts,
                                     int n, int bins)
{
    __shared__ float local[64];
    for (int b = threadIdx.x; b < bins; b += blockDim.x) {
        local[b] = 0.0f;
    }
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const int b = min(max((int)x[i], 0), bins - 1);
        atomicAdd(&local[b], 1.0f);
    }
    __syncthreads();
    for (int b = threadIdx.x; b < bins; b += blockDim.x) {
        atomicAdd(&counts[b], local[b]);
    }
}

extern "C" __global__ void last_block_sum(const float* __restrict__ x, float* __restrict__ partial,
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
        partial[blockIdx.x] = sum;
        __threadfence();  // the partial sum is visible to every block before the count says so
        is_last = atomicAdd(count, 1) == (int)gridDim.x - 1;
    }
    __syncthreads();
    if (is_last && threadIdx.x == 0) {
        __threadfence();
        const volatile float* sums = partial;
        float sum = 0.0f;
        for (int b = 0; b < (int)gridDim.x; ++b) {
            sum += sums[b];
        }
        total[0] = sum;
        count[0] = 0;
    }
}
