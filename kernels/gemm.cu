/* gemm.cu: C = op(A) @ op(B) in float32, three versions side by side (lessons 4 and 10).

   What it computes (minires/backends/reference.py's gemm, the specification): op(A) is (M, K) and
   op(B) is (K, N), where op transposes when asked:
       A is stored (M, K) row-major, or (K, M) when trans_a: op(A)[m][k] = A[k*M + m]
       B is stored (K, N) row-major, or (N, K) when trans_b: op(B)[k][n] = B[n*K + k]
   C is (M, N) row-major. conv2d with im2col (the reference's) needs three of the four cases:
       NN  forward          y  = W @ cols        (C_out, C_in*KH*KW) @ (C_in*KH*KW, N*H_out*W_out)
       TN  input gradient   dcols = W^T @ dy     W is (C_out, C_in*KH*KW), trans_a
       NT  weight gradient  dW = dy @ cols^T     cols is (C_in*KH*KW, N*H_out*W_out), trans_b
   Version 3 at the end computes the same three products with cols gathered, never stored.
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
   Resources (ptxas -v, CUDA 13.0): 2 * 16 * 65 floats + the split-K flag = 8324 bytes of static
   shared memory; 64 registers on sm_75, sm_80 and sm_90, 0 bytes spilled. At 64 registers x
   256 threads an SM holds 4 blocks (register file: 64K), 32 warps of its 64: enough to hide
   the latencies.
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

   ---------------------------------------------------------------------------------------------
   Version 3, conv_forward, conv_weight_grad, conv_input_grad: implicit GEMM, the convolution's
   three products with the image matrix never stored. These are what a training step runs.

   im2col.cu and col2im.cu are version 1 of a convolution on the GPU: cols (C_in*KH*KW,
   N*H_out*W_out) is written to memory, 9x the size of x for a 3x3 kernel (75 MB for a stage-1
   layer at batch 128), read back by the GEMM, and kept for the weight gradient; the input
   gradient writes dcols, as large, and col2im folds it. Version 3 is the same tiled product
   (tiled_product below, gemm_tiled's body), but the tile copies compute each element of the
   image operand from the image itself (the gathers operand_at names, with s = the conv's sizes):
       forward          y  = w @ cols             op(B)[(c, kh, kw)][(n, oh, ow)]
                                                    = x[n][c][oh*stride_h - pad_h + kh]
                                                          [ow*stride_w - pad_w + kw], 0 outside
       weight gradient  dw = dy @ cols^T          op(B) = the same gather, transposed
       input gradient   dx = w_by_input @ dcolumns, for dx as a (C_in, N*H*W) matrix:
           op(A)[c][(k, kh, kw)] = w[k][c][kh][kw]                    (w read in place)
           op(B)[(k, kh, kw)][(n, h, w)] = dy[n][k][oh][ow] where h = oh*stride_h - pad_h + kh
                                           and w = ow*stride_w - pad_w + kw, 0 when no such
                                           (oh, ow) lies in dy (col2im's gather, as one GEMM)
   dy and y (and dx) are read and written as NCHW images as in version 2. Each element of dx
   is written by one thread: no atomics, and the same bits in any order. At stride 2 three
   quarters of the input gradient's op(B) are zeros that it multiplies anyway (a 3x3 kernel
   reaches a pixel from 1, 2 or 4 windows, not 9): 2 of ResNet-20's 19 convolutions.
   What this saves a ResNet-20 step: the 19 im2col and 18 col2im launches, and cols and dcols
   in memory (at batch 128, 75 MB each per stage-1 layer; the 19 layers' cols, kept from the
   forward pass to the backward, came to about 830 MB). What it costs: the index math of each
   gather (divisions by KW, KH, W_out, H_out: some 20-40 integer instructions per element
   copied, 4 elements of each tile per thread per step of 256 FMAs), which a faster version
   would hoist out of the loop along K (a thread copies the same columns at every step).
   Launch: as version 2, with M, N, K those of the product: forward (C_out, N*H_out*W_out,
   C_in*KH*KW), weight gradient (C_out, C_in*KH*KW, N*H_out*W_out), split K as for any product
   with few tiles, input gradient (C_in, N*H*W, C_out*KH*KW).
   Resources (ptxas -v, CUDA 13.0): as version 2, 8324 bytes of shared memory and 64 registers
   (conv_weight_grad 62 on sm_80), 0 bytes spilled.
*/

// ------------------------------------------------------------------------------------------------
// Shared by all versions.

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
// Versions 2 and 3: the operands as the tile copies see them, stored or gathered from an image.

struct ConvShape {  // a convolution's sizes: x (N, C_in, H, W), w (C_out, C_in, KH, KW)
    int N, C_in, H, W, C_out, KH, KW, stride_h, stride_w, pad_h, pad_w, H_out, W_out;
};

// How the tile copies find element (r, c) of op(X).
enum Gather {
    STORED,            // a matrix in memory, row-major, transposed or as images: tile_at
    IMAGE_COLUMNS,     // im2col(x) from x itself: row (c, kh, kw), column (n, oh, ow)
    IMAGE_ROWS,        // its transpose: row (n, oh, ow), column (c, kh, kw)
    GRADIENT_COLUMNS,  // the input gradient's columns of dy: row (k, kh, kw), column (n, h, w)
    WEIGHTS_BY_INPUT,  // w (C_out, C_in, KH, KW) as (C_in, C_out*KH*KW): row c, col (k, kh, kw)
};

struct Operand {
    const float* data;
    int rows, cols;    // op(X) is rows x cols
    int trans;         // the order to copy a tile in: 1 when memory runs along a column of op(X)
    int hw;            // STORED only: images of hw pixels (tile_at)
    Gather gather;
    ConvShape conv;    // the gathers only
};

// im2col(x)[row][col] read from x: row = (c, kh, kw), col = (n, oh, ow) (im2col.cu's index math).
__device__ __forceinline__ float image_column(const float* x, int row, int col, const ConvShape& s)
{
    const int kw = row % s.KW;
    const int kh = (row / s.KW) % s.KH;
    const int c = row / (s.KW * s.KH);
    const int ow = col % s.W_out;
    const int oh = (col / s.W_out) % s.H_out;
    const int n = col / (s.W_out * s.H_out);
    const int h = oh * s.stride_h + kh - s.pad_h;  // where this window element sits in x
    const int w = ow * s.stride_w + kw - s.pad_w;
    const bool inside = 0 <= h && h < s.H && 0 <= w && w < s.W;
    return inside ? x[((n * s.C_in + c) * s.H + h) * s.W + w] : 0.0f;
}

// The element of dy that weight (k, c, kh, kw) carries back to pixel (n, c, h, w) of dx:
// row = (k, kh, kw), col = (n, h, w); 0 when no window (oh, ow) puts its (kh, kw) on (h, w)
// (col2im.cu's gather: oh*stride_h = h + pad_h - kh must have a whole solution in 0..H_out-1).
__device__ __forceinline__ float gradient_column(const float* dy, int row, int col,
                                                 const ConvShape& s)
{
    const int kw = row % s.KW;
    const int kh = (row / s.KW) % s.KH;
    const int k = row / (s.KW * s.KH);
    const int w = col % s.W;
    const int h = (col / s.W) % s.H;
    const int n = col / (s.W * s.H);
    const int h_scaled = h + s.pad_h - kh;  // = oh * stride_h when row kh of window oh lands on h
    const int w_scaled = w + s.pad_w - kw;
    const bool inside = h_scaled >= 0 && h_scaled % s.stride_h == 0
                        && h_scaled / s.stride_h < s.H_out
                        && w_scaled >= 0 && w_scaled % s.stride_w == 0
                        && w_scaled / s.stride_w < s.W_out;
    const int oh = h_scaled / s.stride_h;
    const int ow = w_scaled / s.stride_w;
    return inside ? dy[((n * s.C_out + k) * s.H_out + oh) * s.W_out + ow] : 0.0f;
}

// Element (r, c) of op(X), stored or gathered.
__device__ __forceinline__ float operand_at(const Operand& X, int r, int c)
{
    const int window = X.conv.KH * X.conv.KW;
    switch (X.gather) {
    case IMAGE_COLUMNS:
        return image_column(X.data, r, c, X.conv);
    case IMAGE_ROWS:
        return image_column(X.data, c, r, X.conv);
    case GRADIENT_COLUMNS:
        return gradient_column(X.data, r, c, X.conv);
    case WEIGHTS_BY_INPUT:  // w[k][r][kh][kw] with c = (k, kh, kw)
        return X.data[((c / window) * X.conv.C_in + r) * window + c % window];
    default:
        return tile_at(X.data, r, c, X.rows, X.cols, X.trans, X.hw);
    }
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

// C (M, N) = op(A) (M, K) @ op(B) (K, N), as one block of gemm_tiled (or of version 3) computes
// it: the tile (blockIdx.y, blockIdx.x) of C, the slice blockIdx.z of K. C is written in c_hw's
// layout (matrix_index).
__device__ __forceinline__ void tiled_product(const Operand& A, const Operand& B,
                                              float* __restrict__ C, float* __restrict__ partials,
                                              int* __restrict__ tile_counters, int M, int N, int K,
                                              int k_per_split, int c_hw)
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
            const int m = A.trans ? e % BM : e / BK;  // A (K, M): along m; A (M, K): along k
            const int k = A.trans ? e / BM : e % BK;
            const bool inside = m0 + m < M && k0 + k < k_end;
            As[k][m] = inside ? operand_at(A, m0 + m, k0 + k) : 0.0f;
        }
        for (int e = threadIdx.x; e < BK * BN; e += THREADS) {
            const int k = B.trans ? e % BK : e / BN;  // B (N, K): along k; B (K, N): along n
            const int n = B.trans ? e / BK : e % BN;
            const bool inside = k0 + k < k_end && n0 + n < N;
            Bs[k][n] = inside ? operand_at(B, k0 + k, n0 + n) : 0.0f;
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

extern "C" __global__ void __launch_bounds__(THREADS)
gemm_tiled(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
           float* __restrict__ partials, int* __restrict__ tile_counters, int M, int N, int K,
           int trans_a, int trans_b, int k_per_split, int a_hw, int b_hw, int c_hw)
{
    const Operand a{A, M, K, trans_a, a_hw, STORED, {}};
    const Operand b{B, K, N, trans_b, b_hw, STORED, {}};
    tiled_product(a, b, C, partials, tile_counters, M, N, K, k_per_split, c_hw);
}

// ------------------------------------------------------------------------------------------------
// Version 3: implicit GEMM. tiled_product with the image operand gathered (operand_at), so that
// no cols is ever stored. Arguments: op(A), op(B), C, split K's partials and counters (as
// gemm_tiled), the convolution's sizes, then k_per_split.

// y (N, C_out, H_out, W_out) = w (C_out, C_in*KH*KW) @ im2col(x)
extern "C" __global__ void __launch_bounds__(THREADS)
conv_forward(const float* __restrict__ w, const float* __restrict__ x, float* __restrict__ y,
             float* __restrict__ partials, int* __restrict__ tile_counters,
             int N, int C_in, int H, int W, int C_out, int KH, int KW, int stride_h, int stride_w,
             int pad_h, int pad_w, int H_out, int W_out, int k_per_split)
{
    const ConvShape s{N, C_in, H, W, C_out, KH, KW, stride_h, stride_w, pad_h, pad_w, H_out, W_out};
    const int rows = C_out, cols = N * H_out * W_out, depth = C_in * KH * KW;
    const Operand weights{w, rows, depth, 0, 0, STORED, s};
    const Operand columns{x, depth, cols, 0, 0, IMAGE_COLUMNS, s};  // along ow: coalesced
    tiled_product(weights, columns, y, partials, tile_counters, rows, cols, depth, k_per_split,
                  H_out * W_out);
}

// dw (C_out, C_in*KH*KW) = dy (C_out, N*H_out*W_out) @ im2col(x)^T, dy read as images
extern "C" __global__ void __launch_bounds__(THREADS)
conv_weight_grad(const float* __restrict__ dy, const float* __restrict__ x,
                 float* __restrict__ dw, float* __restrict__ partials,
                 int* __restrict__ tile_counters, int N, int C_in, int H, int W, int C_out,
                 int KH, int KW, int stride_h, int stride_w, int pad_h, int pad_w, int H_out,
                 int W_out, int k_per_split)
{
    const ConvShape s{N, C_in, H, W, C_out, KH, KW, stride_h, stride_w, pad_h, pad_w, H_out, W_out};
    const int rows = C_out, cols = C_in * KH * KW, depth = N * H_out * W_out;
    const Operand gradient{dy, rows, depth, 0, H_out * W_out, STORED, s};
    const Operand rows_of_x{x, depth, cols, 1, 0, IMAGE_ROWS, s};  // copied along (n, oh, ow)
    tiled_product(gradient, rows_of_x, dw, partials, tile_counters, rows, cols, depth,
                  k_per_split, 0);
}

// dx (N, C_in, H, W) = w read as (C_in, C_out*KH*KW) @ the gradient columns of dy
extern "C" __global__ void __launch_bounds__(THREADS)
conv_input_grad(const float* __restrict__ w, const float* __restrict__ dy,
                float* __restrict__ dx, float* __restrict__ partials,
                int* __restrict__ tile_counters, int N, int C_in, int H, int W, int C_out,
                int KH, int KW, int stride_h, int stride_w, int pad_h, int pad_w, int H_out,
                int W_out, int k_per_split)
{
    const ConvShape s{N, C_in, H, W, C_out, KH, KW, stride_h, stride_w, pad_h, pad_w, H_out, W_out};
    const int rows = C_in, cols = N * H * W, depth = C_out * KH * KW;
    const Operand weights{w, rows, depth, 0, 0, WEIGHTS_BY_INPUT, s};  // along (kh, kw)
    const Operand columns{dy, depth, cols, 0, 0, GRADIENT_COLUMNS, s};  // along w
    tiled_product(weights, columns, dx, partials, tile_counters, rows, cols, depth, k_per_split,
                  H * W);
}
