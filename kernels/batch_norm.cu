/* batch_norm.cu: batch normalisation forward and backward, per channel (lessons 5 and 10),
   with or without the ReLU that follows it in a ResNet.

   What it computes (minires/backends/reference.py's batch_norm_forward/backward, the spec):
       x_hat = (x - mean[c]) / sqrt(var[c] + eps),   y = gamma[c] * x_hat + beta[c]
       training: mean, var = the batch's mean and biased variance of channel c, over N, H, W;
                 running = (1 - momentum) * running + momentum * batch (unbiased var)
       evaluation: mean, var = the running statistics
       backward: dbeta = sum(dy), dgamma = sum(dy * x_hat) over N, H, W;
                 training dx = gamma / (m * std) * (m * dy - dbeta - x_hat * dgamma)
                 evaluation dx = gamma / std * dy                 (m = N*H*W per channel)
   With relu = 1 (reference.py's batch_norm_relu_forward/backward): the forward writes
   max(y, 0), and the backward reads dy[i] as 0 wherever that output y[i] is not > 0 (ReLU's
   gradient), so the ReLU costs no launch and no array of its own either way. With relu = 0
   the backward never reads y (the wrapper passes dy in its place).

   Layout: x, y, dy, dx contiguous float32 (N, C, HW), HW = H*W (1 for (N, C) inputs), so that
   element (n, c, p) is at (n*C + c)*HW + p; mean, var, gamma, beta, dgamma, dbeta, running_mean,
   running_var are float32 (C,). Indices are 32-bit ints: the wrapper checks that sizes fit.

   Two kinds of kernel:
   - Per-channel sums (batch_norm_stats, batch_norm_backward_sums): one block per channel,
     launch grid (C), block (SUM_THREADS = 256). Thread t adds up elements t, t + 256, ... of its
     channel, in DOUBLE accumulators, then the block adds the 256 partial sums by a tree in
     shared memory (halving the active threads each step, a barrier between steps). float32
     sums over 131072 values (a ResNet-20 channel at batch 128) lose about 1e-3 relative
     accuracy; doubles keep the gradient as exact as the CPU's. The variance is computed from
     sums of (x - shift) with shift = the channel's first value, so that sum(x^2)/m - mean^2 does
     not cancel catastrophically when the mean is large against the spread.
   - Elementwise (batch_norm_normalize, batch_norm_backward_input): one thread per element,
     launch grid (ceil(N*C*HW / 256)), block (256); c = (i / HW) % C picks the channel.
   One block per channel keeps a 16-channel layer on 16 SMs: the sums are memory-bound and each
   block streams its channel once (0.5 MB at batch 128), which a single SM does in a few us.
*/

constexpr int SUM_THREADS = 256;  // threads per block of the per-channel sums: a power of 2

// Adds the SUM_THREADS values of partial[] into partial[0]: a tree, halving each step.
// Every thread of the block must call it (it holds barriers).
__device__ void block_sum(double* partial)
{
    const int t = threadIdx.x;
    __syncthreads();  // every thread has stored its partial sum
    for (int half = SUM_THREADS / 2; half > 0; half /= 2) {
        if (t < half) {
            partial[t] += partial[t + half];
        }
        __syncthreads();  // this level is complete before the next reads it
    }
}

extern "C" __global__ void __launch_bounds__(SUM_THREADS)
batch_norm_stats(const float* __restrict__ x, float* __restrict__ mean, float* __restrict__ var,
                 float* __restrict__ running_mean, float* __restrict__ running_var,
                 int N, int C, int HW, float momentum, int update_running)
{
    __shared__ double sum[SUM_THREADS];
    __shared__ double sum_squares[SUM_THREADS];
    const int c = blockIdx.x;
    const int count = N * HW;
    const float shift = x[c * HW];  // the channel's first value (n = 0, p = 0)
    double s = 0.0, s2 = 0.0;
    for (int i = threadIdx.x; i < count; i += SUM_THREADS) {
        const int n = i / HW, p = i % HW;
        const double v = x[(n * C + c) * HW + p] - shift;
        s += v;
        s2 += v * v;
    }
    sum[threadIdx.x] = s;
    sum_squares[threadIdx.x] = s2;
    block_sum(sum);
    block_sum(sum_squares);
    if (threadIdx.x == 0) {
        const double shifted_mean = sum[0] / count;
        const double variance = fmax(sum_squares[0] / count - shifted_mean * shifted_mean, 0.0);
        mean[c] = (float)(shift + shifted_mean);
        var[c] = (float)variance;
        if (update_running) {
            const double unbiased = variance * count / (count > 1 ? count - 1 : 1);
            running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean[c];
            running_var[c] = (1.0f - momentum) * running_var[c] + momentum * (float)unbiased;
        }
    }
}

extern "C" __global__ void batch_norm_normalize(const float* __restrict__ x,
                                                const float* __restrict__ mean,
                                                const float* __restrict__ var,
                                                const float* __restrict__ gamma,
                                                const float* __restrict__ beta,
                                                float* __restrict__ y, int N, int C, int HW,
                                                float eps, int relu)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C * HW) {
        return;  // the last block overhangs the end of x
    }
    const int c = (i / HW) % C;
    const float inv_std = 1.0f / sqrtf(var[c] + eps);
    const float v = gamma[c] * (x[i] - mean[c]) * inv_std + beta[c];
    y[i] = relu && v < 0.0f ? 0.0f : v;  // NaN stays NaN, as in relu.cu
}

extern "C" __global__ void __launch_bounds__(SUM_THREADS)
batch_norm_backward_sums(const float* __restrict__ dy, const float* __restrict__ y,
                         const float* __restrict__ x, const float* __restrict__ mean,
                         const float* __restrict__ var, float* __restrict__ dgamma,
                         float* __restrict__ dbeta, int N, int C, int HW, float eps, int relu)
{
    __shared__ double sum_dy[SUM_THREADS];
    __shared__ double sum_dy_x_hat[SUM_THREADS];
    const int c = blockIdx.x;
    const int count = N * HW;
    const float inv_std = 1.0f / sqrtf(var[c] + eps);
    double s = 0.0, s_x_hat = 0.0;
    for (int i = threadIdx.x; i < count; i += SUM_THREADS) {
        const int n = i / HW, p = i % HW;
        const int at = (n * C + c) * HW + p;
        const float dz = relu && !(y[at] > 0.0f) ? 0.0f : dy[at];  // through the ReLU
        s += dz;
        s_x_hat += (double)dz * ((x[at] - mean[c]) * inv_std);
    }
    sum_dy[threadIdx.x] = s;
    sum_dy_x_hat[threadIdx.x] = s_x_hat;
    block_sum(sum_dy);
    block_sum(sum_dy_x_hat);
    if (threadIdx.x == 0) {
        dbeta[c] = (float)sum_dy[0];
        dgamma[c] = (float)sum_dy_x_hat[0];
    }
}

extern "C" __global__ void batch_norm_backward_input(const float* __restrict__ dy,
                                                     const float* __restrict__ y,
                                                     const float* __restrict__ x,
                                                     const float* __restrict__ mean,
                                                     const float* __restrict__ var,
                                                     const float* __restrict__ gamma,
                                                     const float* __restrict__ dgamma,
                                                     const float* __restrict__ dbeta,
                                                     float* __restrict__ dx, int N, int C, int HW,
                                                     float eps, int training, int relu)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C * HW) {
        return;
    }
    const int c = (i / HW) % C;
    const float inv_std = 1.0f / sqrtf(var[c] + eps);
    const float dz = relu && !(y[i] > 0.0f) ? 0.0f : dy[i];  // through the ReLU
    if (training) {
        const float m = (float)(N * HW);
        const float x_hat = (x[i] - mean[c]) * inv_std;
        dx[i] = gamma[c] * inv_std / m * (m * dz - dbeta[c] - x_hat * dgamma[c]);
    } else {
        dx[i] = gamma[c] * inv_std * dz;
    }
}
