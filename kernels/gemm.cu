/* gemm.cu: C = op(A) @ op(B) in float32, two versions side by side (lessons 4 and 10).

   What it computes (minires/backends/reference.py's gemm, the specification): op(A) is (M, K) and
   op(B) is (K, N), where op transposes when asked:
       A is stored (M, K) row-major, or (K, M) when trans_a: op(A)[m][k] = A[k*M + m]
       B is stored (K, N) row-major, or (N, K) when trans_b: op(B)[k][n] = B[n*K + k]
   C is (M, N) row-major. conv2d needs three of the four cases:
       NN  forward          y  = W @ cols        (C_out, C_in*KH*KW) @ (C_in*KH*KW, N*H_out*W_out)
       TN  input gradient   dcols = W^T @ dy     W is (C_out, C_in*KH*KW), trans_a
       NT  weight gradient  dW = dy @ cols^T     cols is (C_in*KH*KW, N*H_out*W_out), trans_b
   All arrays are contiguous float32; indices are 32-bit ints (the wrapper checks that sizes fit).
   The numbers below are for an H100 SXM: 132 SMs, each issuing 128 FP32 FMAs per clock at
   ~1.98 GHz, so an FP32 peak of 67 TFLOP/s without tensor cores; 3.35 TB/s of HBM3.

   ---------------------------------------------------------------------------------------------
   Version 1, gemm_naive: one thread per element of C, the dot product straight from global memory.

   Launch: block (32, 8) = 256 threads, grid (ceil(N / 32), ceil(M / 8)). threadIdx.x runs along
   n, so a warp reads 32 neighbouring elements of a row of op(B) (coalesced when B is not
   transposed) and one element of op(A) (a broadcast).
   Resources (ptxas -v): 32 registers on sm_80 and sm_90 (58 on sm_75), no shared memory,
   0 bytes spilled.
   On paper: every FMA needs two load instructions and nothing is reused from registers, so the
   load/store units, not the FMA units, set the pace. An SM issues four warp-wide FMAs per clock
   but serves about one warp-wide load per clock from L1: even if every load hit L1 the ceiling
   would be 1/8 of the FP32 peak. Cache misses and latency push it lower: expect 2-5% of peak
   (1-3 TFLOP/s), and far less for NT, where each thread walks a row of B (stride K) and no
   load is coalesced.

   ---------------------------------------------------------------------------------------------
   Version 2, gemm_tiled: shared-memory tiles and a 4x4 register block per thread.

   Each block computes a BM x BN = 64 x 64 tile of C. It walks K in steps of BK = 16: the 256
   threads copy a 64 x 16 tile of op(A) and a 16 x 64 tile of op(B) into shared memory (each
   element read from global memory once per block instead of once per thread), wait, then each
   thread multiplies out its own TM x TN = 4 x 4 outputs from the tiles, holding 4 values of
   op(A) and 4 of op(B) in registers for 16 FMAs. Thread (ty, tx) = (threadIdx.x / 16,
   threadIdx.x % 16) owns rows ty + 16*i and columns tx + 16*j of the tile (strided rather than
   adjacent), so that a warp's reads of Bs hit 16 consecutive banks and its writes of C are
   coalesced. The copies walk each tile in the order its matrix lies in memory (along k for A
   (M, K), along m for A (K, M), and likewise for B), so global reads are coalesced in all four
   transpose cases; rows of the tiles are padded by one float so that the transposing stores
   into shared memory meet at most 2-way bank conflicts.
   Sizes that are not multiples of the tile: out-of-range elements of op(A) and op(B) are loaded
   as 0 (contributing nothing) and out-of-range elements of C are not stored. Every thread
   reaches every __syncthreads(), including threads whose outputs fall outside C.
   Split K: blockIdx.z takes the slice [z*k_per_split, (z+1)*k_per_split) of K and writes its
   partial product to partials + z*M*N (row-major). The weight gradient needs this: its C is tiny
   (16 x 144 in ResNet-20's first stage: 3 blocks for 132 SMs) while K = N*H_out*W_out is 131072
   at batch 128. The slices are summed in the same launch, by whichever block of a tile of C
   finishes last (CUDA's threadFenceReduction sample): each thread fences its stores, the block
   meets at a barrier, and thread 0 counts the block in with an atomicAdd on the tile's counter;
   the block that brings the count to gridDim.z sums the slices z = 0, 1, ... in that fixed order
   (never "its own first"), so the result has the same bits whatever order blocks finish in, and
   resets the counter to 0 for the next launch. tile_counters (one int per tile, at least
   gridDim.x * gridDim.y) are zero before a launch and after it; the wrapper keeps one zeroed
   array per device, which is why two split-K products must not run at once on two streams.
   Without this, summing the slices was one more launch per split GEMM (25-30 a ResNet-20 step).

   Images: conv2d's channel-major matrices, (C, N*H*W) with column (n, p), are stored by the
   network as NCHW images, (N, C, H*W). With a_hw > 0 (b_hw, c_hw likewise) op(A) is read as such
   a matrix in place, element (r, c) at ((c / a_hw) * R + r) * a_hw + c % a_hw, and C is written
   so: the forward output lands in NCHW and dy is read in NCHW, with no transposing copies
   (a copy each way per convolution: 38 of a ResNet-20 step's launches). 0: plain row-major.
   Neighbouring columns stay neighbours within an image, so reads and writes stay coalesced.

   Launch: block (256), grid (ceil(N / 64), ceil(M / 64), splits), no dynamic shared memory.
   Resources (ptxas -v, before split K was summed in the kernel: re-measure):
   2 * 16 * 65 floats = 8320 bytes of static shared memory; 48 registers
   on sm_80 and sm_90 (64 on sm_75), 0 bytes spilled. At 48 registers x 256 threads an SM
   holds 5 blocks (register file: 64K), 40 warps of its 64: enough to hide the latencies.
   On paper: per step of k a warp issues 8 shared loads (4 of As, 4 of Bs) for 16 FMAs. An SM
   serves one conflict-free shared load instruction per clock but four FMA instructions, so the
   16 FMAs take 4 clocks and the 8 loads 8: shared-memory bandwidth caps this kernel at 50% of
   the FP32 peak. The tile copies, the two barriers per step and the index math take more, so
   expect 25-35% of peak (17-23 TFLOP/s) on large square products, where cuBLAS reaches 60-70%.
   On ResNet-20's conv shapes expect less: in the forward GEMM, M = C_out is 16-64 and a 64-row
   tile is 25-100% used, so the 16-channel stage lands near 10% of peak (the shape is close to
   memory-bound anyway: 8 FLOPs per byte of cols). The next steps, left as exercises, are wider
   shared loads (float4: four values per instruction), a larger 8x8 register block, and double
   buffering the tiles so that copies overlap the FMAs.
*/

// ------------------------------------------------------------------------------------------------
// Shared by both versions.

// Element (r, c) of op(X), the R x C matrix that X stores as R x C, or as C x R when trans.
__device__ __forceinline__ float op_at(const float* __restrict__ X, int r, int c, int R, int C,
                                       int trans)
{
    return trans ? X[c * R + r] : X[r * C + c];
}

// Where element (r, c) of an R x C matrix lies: row-major, or as images (C / hw, R, hw).
__device__ __forceinline__ int matrix_index(int r, int c, int R, int C, int hw)
{
    return hw > 0 ? ((c / hw) * R + r) * hw + c % hw : r * C + c;
}

// op_at for gemm_tiled: op(X) may be held as images (hw > 0; never transposed then).
__device__ __forceinline__ float tile_at(const float* __restrict__ X, int r, int c, int R, int C,
                                         int trans, int hw)
{
    return trans ? X[c * R + r] : X[matrix_index(r, c, R, C, hw)];
}

// ------------------------------------------------------------------------------------------------
// Version 1: one thread per element of C.

extern "C" __global__ void gemm_naive(const float* __restrict__ A, const float* __restrict__ B,
                                      float* __restrict__ C, int M, int N, int K,
                                      int trans_a, int trans_b)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    const int m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || n >= N) {
        return;  // the last blocks overhang C
    }
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) {
        acc += op_at(A, m, k, M, K, trans_a) * op_at(B, k, n, K, N, trans_b);
    }
    C[m * N + n] = acc;
}

// ------------------------------------------------------------------------------------------------
// Version 2: shared-memory tiles, a 4x4 register block per thread, optional split K.
// minires/backends/cuda/gpu.py repeats these sizes (a test checks that they agree).

constexpr int BM = 64;                             // rows of C per block
constexpr int BN = 64;                             // columns of C per block
constexpr int BK = 16;                             // depth of one step along K
constexpr int TM = 4;                              // rows of C per thread
constexpr int TN = 4;                              // columns of C per thread
constexpr int THREADS = (BM / TM) * (BN / TN);     // 256 threads per block

extern "C" __global__ void __launch_bounds__(THREADS)
gemm_tiled(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
           float* __restrict__ partials, int* __restrict__ tile_counters, int M, int N, int K,
           int trans_a, int trans_b, int k_per_split, int a_hw, int b_hw, int c_hw)
{
    __shared__ float As[BK][BM + 1];  // As[k][m] = op(A)[m0 + m][k0 + k]; +1: fewer bank conflicts
    __shared__ float Bs[BK][BN + 1];  // Bs[k][n] = op(B)[k0 + k][n0 + n]

    const int m0 = blockIdx.y * BM;  // this block's tile of C starts at (m0, n0)
    const int n0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_per_split;  // this block's slice of K
    const int k_end = min(K, k_begin + k_per_split);
    const int tx = threadIdx.x % (BN / TN);  // this thread owns rows ty + 16*i, columns tx + 16*j
    const int ty = threadIdx.x / (BN / TN);

    float acc[TM][TN];
    #pragma unroll
    for (int i = 0; i < TM; ++i) {
        #pragma unroll
        for (int j = 0; j < TN; ++j) {
            acc[i][j] = 0.0f;
        }
    }

    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
        // Copy the tiles, walking each in the order its matrix lies in memory (coalesced reads).
        for (int e = threadIdx.x; e < BM * BK; e += THREADS) {
            const int m = trans_a ? e % BM : e / BK;  // A (K, M): along m; A (M, K): along k
            const int k = trans_a ? e / BM : e % BK;
            const bool inside = m0 + m < M && k0 + k < k_end;
            As[k][m] = inside ? tile_at(A, m0 + m, k0 + k, M, K, trans_a, a_hw) : 0.0f;
        }
        for (int e = threadIdx.x; e < BK * BN; e += THREADS) {
            const int k = trans_b ? e % BK : e / BN;  // B (N, K): along k; B (K, N): along n
            const int n = trans_b ? e / BK : e % BN;
            const bool inside = k0 + k < k_end && n0 + n < N;
            Bs[k][n] = inside ? tile_at(B, k0 + k, n0 + n, K, N, trans_b, b_hw) : 0.0f;
        }
        __syncthreads();  // the tiles are complete before anyone reads them

        #pragma unroll
        for (int k = 0; k < BK; ++k) {
            float a[TM], b[TN];  // registers: each value is used TN (or TM) times below
            #pragma unroll
            for (int i = 0; i < TM; ++i) {
                a[i] = As[k][ty + i * (BM / TM)];
            }
            #pragma unroll
            for (int j = 0; j < TN; ++j) {
                b[j] = Bs[k][tx + j * (BN / TN)];
            }
            #pragma unroll
            for (int i = 0; i < TM; ++i) {
                #pragma unroll
                for (int j = 0; j < TN; ++j) {
                    acc[i][j] += a[i] * b[j];
                }
            }
        }
        __syncthreads();  // everyone has finished reading before the next copy overwrites
    }

    if (gridDim.z == 1) {  // K in one slice: the product itself
        #pragma unroll
        for (int i = 0; i < TM; ++i) {
            #pragma unroll
            for (int j = 0; j < TN; ++j) {
                const int m = m0 + ty + i * (BM / TM);
                const int n = n0 + tx + j * (BN / TN);
                if (m < M && n < N) {
                    C[matrix_index(m, n, M, N, c_hw)] = acc[i][j];
                }
            }
        }
        return;
    }

    // Split K: store this slice's partial product, then the last block of the tile sums them.
    float* slice = partials + blockIdx.z * M * N;  // (M, N) row-major
    #pragma unroll
    for (int i = 0; i < TM; ++i) {
        #pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int m = m0 + ty + i * (BM / TM);
            const int n = n0 + tx + j * (BN / TN);
            if (m < M && n < N) {
                slice[m * N + n] = acc[i][j];
            }
        }
    }
    __shared__ int is_last;  // whether this block is the tile's last to finish
    __threadfence();  // this thread's stores reach every block before the count below
    __syncthreads();  // ... for every thread of the block
    if (threadIdx.x == 0) {
        const int tile = blockIdx.y * gridDim.x + blockIdx.x;
        const int finished_before = atomicAdd(&tile_counters[tile], 1);
        is_last = finished_before == (int)gridDim.z - 1;
        if (is_last) {
            tile_counters[tile] = 0;  // every block of the tile has counted: ready for next time
        }
    }
    __syncthreads();
    if (!is_last) {
        return;
    }
    __threadfence();
    const volatile float* slices = partials;  // volatile: read memory, not a stale cache line
    #pragma unroll
    for (int i = 0; i < TM; ++i) {
        #pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int m = m0 + ty + i * (BM / TM);
            const int n = n0 + tx + j * (BN / TN);
            if (m < M && n < N) {
                float sum = 0.0f;
                for (int z = 0; z < (int)gridDim.z; ++z) {  // in order: the same bits every run
                    sum += slices[z * M * N + m * N + n];
                }
                C[matrix_index(m, n, M, N, c_hw)] = sum;
            }
        }
    }
}
