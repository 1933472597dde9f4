/* col2im.cu: the adjoint of im2col, folding columns back onto the image (lessons 4 and 10).

   What it computes (minires/backends/reference.py's col2im, the specification): every entry of cols
   was copied from one pixel of x by im2col; col2im adds each entry back onto that pixel,
       x[n][c][h][w] = sum over (kh, kw, oh, ow) with oh*stride_h + kh - pad_h == h
                                                and ow*stride_w + kw - pad_w == w
                       of cols[(c*KH + kh)*KW + kw][(n*H_out + oh)*W_out + ow].
   The reference's conv2d backward pass computes dx = col2im(W^T @ dy); pooling uses it for dx.

   Which one a training step uses: for conv2d, not this. This is version 1, the legible one,
   beside the reference's col2im; the CUDA backend's conv2d runs gemm.cu's conv_input_grad
   instead, the same gather (gradient_column()) done inside a GEMM's tile copies: dcols is
   never stored and no launch is spent on it (18 fewer per ResNet-20 step). Pooling's
   backward still uses this kernel.

   Index math: thread i owns pixel i of x, (n, c, h, w) with w varying fastest, and GATHERS from
   every column that touches it: for each (kh, kw), solve h = oh*stride_h + kh - pad_h for oh,
   which has a solution only when h + pad_h - kh is a multiple of stride_h and oh < H_out
   (likewise for w). Each thread writes only its own pixel, so there is no write race and no need
   for atomics. The opposite design, one thread per column entry doing x[pixel] += value, races
   whenever windows overlap: tests/gpu_broken/col2im_scatter.cu keeps it to show the emulator
   catching that race.

   Layout: cols is contiguous float32 (C*KH*KW, N*H_out*W_out); x is contiguous float32
   (N, C, H, W) and every element is written, so it need not be zeroed first.

   Launch: 1-D, one thread per pixel of x, block (256), grid (ceil(N*C*H*W / 256)).
*/

extern "C" __global__ void col2im(const float* __restrict__ cols, float* __restrict__ x,
                                  int N, int C, int H, int W, int KH, int KW,
                                  int stride_h, int stride_w, int pad_h, int pad_w,
                                  int H_out, int W_out)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C * H * W) {
        return;  // the last block overhangs the end of x
    }
    const int w = i % W;
    const int h = (i / W) % H;
    const int c = (i / (W * H)) % C;
    const int n = i / (W * H * C);
    const int n_cols = N * H_out * W_out;

    float sum = 0.0f;
    for (int kh = 0; kh < KH; ++kh) {
        const int h_scaled = h + pad_h - kh;  // = oh * stride_h when row kh of a window lands on h
        if (h_scaled < 0 || h_scaled % stride_h != 0 || h_scaled / stride_h >= H_out) {
            continue;
        }
        const int oh = h_scaled / stride_h;
        for (int kw = 0; kw < KW; ++kw) {
            const int w_scaled = w + pad_w - kw;
            if (w_scaled < 0 || w_scaled % stride_w != 0 || w_scaled / stride_w >= W_out) {
                continue;
            }
            const int ow = w_scaled / stride_w;
            const int row = (c * KH + kh) * KW + kw;
            const int col = (n * H_out + oh) * W_out + ow;
            sum += cols[row * n_cols + col];
        }
    }
    x[i] = sum;
}
