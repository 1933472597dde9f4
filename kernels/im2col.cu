/* im2col.cu: unfold every KH x KW window of x into one column of cols (lessons 4 and 10).

   What it computes (minires/backends/reference.py's im2col, the specification):
       cols[(c*KH + kh)*KW + kw][(n*H_out + oh)*W_out + ow]
           = x[n][c][oh*stride_h + kh - pad_h][ow*stride_w + kw - pad_w]
   and 0 where the window hangs over the zero padding. conv2d's forward pass is then one GEMM,
   (C_out, C*KH*KW) @ cols.

   Which one a training step uses: not this. This is version 1, the legible one, which the
   reference backend mirrors and the tests and lesson 10 check; it writes cols to memory, 9x
   the size of x for a 3x3 kernel, for the GEMM to read back. The CUDA backend's conv2d runs
   gemm.cu's version 3 (conv_forward, conv_weight_grad) instead: the same index math in
   image_column(), done inside the GEMM's tile copies, so that no cols is stored and no launch
   is spent on it (19 fewer per ResNet-20 step). Pooling still uses this kernel.

   Index math: thread i owns element i of cols. Row-major cols gives row = i / (N*H_out*W_out),
   col = i % (N*H_out*W_out); the row splits into (c, kh, kw) and the column into (n, oh, ow),
   the last index of each varying fastest.

   Layout: x is contiguous float32 (N, C, H, W); cols is contiguous float32
   (C*KH*KW, N*H_out*W_out). Indices are 32-bit ints: the wrapper checks that sizes fit.

   Launch: 1-D, one thread per element of cols: block (256), grid (ceil(cols.size / 256)).
   Neighbouring threads write neighbouring elements of cols, so the stores are coalesced; their
   reads of x are neighbours too when stride_w == 1.
*/

extern "C" __global__ void im2col(const float* __restrict__ x, float* __restrict__ cols,
                                  int N, int C, int H, int W, int KH, int KW,
                                  int stride_h, int stride_w, int pad_h, int pad_w,
                                  int H_out, int W_out)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int n_cols = N * H_out * W_out;
    if (i >= C * KH * KW * n_cols) {
        return;  // the last block overhangs the end of cols
    }
    const int row = i / n_cols;
    const int col = i % n_cols;
    const int kw = row % KW;
    const int kh = (row / KW) % KH;
    const int c = row / (KW * KH);
    const int ow = col % W_out;
    const int oh = (col / W_out) % H_out;
    const int n = col / (W_out * H_out);

    const int h = oh * stride_h + kh - pad_h;  // where this window element sits in x
    const int w = ow * stride_w + kw - pad_w;
    const bool inside = 0 <= h && h < H && 0 <= w && w < W;
    cols[i] = inside ? x[((n * C + c) * H + h) * W + w] : 0.0f;
}
