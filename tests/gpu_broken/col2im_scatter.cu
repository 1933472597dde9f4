/* col2im_scatter.cu: a WRONG col2im, kept to show that the CUDA emulator catches its data race.

   One thread per column (n, oh, ow) of cols adds that column's entries onto the pixels they were
   copied from: x[pixel] += cols[(c*KH + kh)*KW + kw][col] for every (c, kh, kw). Where windows
   overlap (a stride smaller than the kernel), several threads add onto the same pixel, and
   `x[p] += v` is three steps: load x[p], add, store. Two threads that both load before either
   stores lose one of the two additions. kernels/col2im.cu avoids the race by gathering (one
   thread per pixel); col2im_scatter_atomic below fixes it with atomicAdd instead.

   Layout as kernels/col2im.cu, except that x must be zeroed first.
   Launch: one thread per column, block (256), grid (ceil(N*H_out*W_out / 256)).
*/

extern "C" __global__ void col2im_scatter(const float* __restrict__ cols, float* __restrict__ x,
                                          int N, int C, int H, int W, int KH, int KW,
                                          int stride_h, int stride_w, int pad_h, int pad_w,
                                          int H_out, int W_out)
{
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    const int n_cols = N * H_out * W_out;
    if (col >= n_cols) {
        return;
    }
    const int ow = col % W_out;
    const int oh = (col / W_out) % H_out;
    const int n = col / (W_out * H_out);
    for (int c = 0; c < C; ++c) {
        for (int kh = 0; kh < KH; ++kh) {
            for (int kw = 0; kw < KW; ++kw) {
                const int h = oh * stride_h + kh - pad_h;
                const int w = ow * stride_w + kw - pad_w;
                if (0 <= h && h < H && 0 <= w && w < W) {
                    const int row = (c * KH + kh) * KW + kw;
                    x[((n * C + c) * H + h) * W + w] += cols[row * n_cols + col];  // the race
                }
            }
        }
    }
}

extern "C" __global__ void col2im_scatter_atomic(const float* __restrict__ cols,
                                                 float* __restrict__ x,
                                                 int N, int C, int H, int W, int KH, int KW,
                                                 int stride_h, int stride_w, int pad_h, int pad_w,
                                                 int H_out, int W_out)
{
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    const int n_cols = N * H_out * W_out;
    if (col >= n_cols) {
        return;
    }
    const int ow = col % W_out;
    const int oh = (col / W_out) % H_out;
    const int n = col / (W_out * H_out);
    for (int c = 0; c < C; ++c) {
        for (int kh = 0; kh < KH; ++kh) {
            for (int kw = 0; kw < KW; ++kw) {
                const int h = oh * stride_h + kh - pad_h;
                const int w = ow * stride_w + kw - pad_w;
                if (0 <= h && h < H && 0 <= w && w < W) {
                    const int row = (c * KH + kh) * KW + kw;
                    atomicAdd(&x[((n * C + c) * H + h) * W + w], cols[row * n_cols + col]);
                }
            }
        }
    }
}
