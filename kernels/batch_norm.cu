/* batch_norm.cu: batch normalisation forward and backward, per channel (lessons 5 and 10),
   with or without the ReLU that follows it in a ResNet: one launch each way.

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
   - One block per channel, two passes (batch_norm_forward_training, batch_norm_backward):
     launch grid (C), block (CHANNEL_THREADS = 1024). Pass 1: thread t adds up elements t,
     t + 1024, ... of its channel, in DOUBLE accumulators, and the block adds the 1024 partial
     sums by a tree in shared memory (halving the active threads each step, a barrier between
     steps). Every thread then reads the channel's sums from shared memory (mean and var
     forward, dbeta and dgamma backward), and pass 2 walks the same elements again, writing y
     (forward) or dx (backward). Thread 0 alone writes the per-channel results to memory.
     Why one launch can do both passes: a channel's statistics need all N*H*W of its values,
     and one block holds that whole channel, so the barrier that ends the sum is all the
     waiting pass 2 needs; no other block's result is ever read. Pass 2 rereads data that
     pass 1 just read, which mostly comes from L2 (a ResNet-20 layer at batch 128 is 8 MB; an
     H100's L2 is 50 MB). Why doubles: float32 sums over 131072 values (a ResNet-20 channel at
     batch 128) lose about 1e-3 relative accuracy; doubles keep the gradient as exact as the
     CPU's. The variance is computed from sums of (x - shift) with shift = the channel's first
     value, so that sum(x^2)/m - mean^2 does not cancel when the mean is large against the
     spread.
     What it costs: only C blocks run (16, 32 or 64 in ResNet-20, of an H100's 132 SMs), so
     the elementwise pass 2 runs on those SMs alone where a kernel of its own would spread
     over all of them; a block of 1024 threads (the most a block may have) keeps as many
     loads in flight on its SM as it can. For ResNet-20 the launch saved (5-20 us each) is
     worth more than that: each pass streams 0.5 MB per channel at batch 128.
   - Elementwise (batch_norm_normalize, evaluation only: the running statistics are known
     before the launch, so nothing needs summing): one thread per element, launch grid
     (ceil(N*C*HW / 256)), block (256); c = (i / HW) % C picks the channel.
*/

constexpr int CHANNEL_THREADS = 1024;  // threads per block of the per-channel kernels: a power of 2

// Adds the CHANNEL_THREADS values of partial[] into partial[0]: a tree, halving each step.
// Every thread of the block must call it (it holds barriers); when it returns, every thread
// may read partial[0].
__device__ void block_sum(double* partial)
{
    const int t = threadIdx.x;
    __syncthreads();  // every thread has stored its partial sum
    for (int half = CHANNEL_THREADS / 2; half > 0; half /= 2) {
        if (t < half) {
            partial[t] += partial[t + half];
        }
        __syncthreads();  // this level is complete before the next (or the caller) reads it
    }
}

extern "C" __global__ void __launch_bounds__(CHANNEL_THREADS)
batch_norm_forward_training(const float* __restrict__ x, const float* __restrict__ gamma,
                            const float* __restrict__ beta, float* __restrict__ y,
                            float* __restrict__ mean, float* __restrict__ var,
                            float* __restrict__ running_mean, float* __restrict__ running_var,
                            int N, int C, int HW, float momentum, float eps, int update_running,
                            int relu)
{
    __shared__ double sum[CHANNEL_THREADS];
    __shared__ double sum_squares[CHANNEL_THREADS];
    const int c = blockIdx.x;
    const int count = N * HW;
    // Pass 1: the channel's sum and sum of squares, shifted by its first value (n = 0, p = 0).
    const float shift = x[c * HW];
    double s = 0.0, s2 = 0.0;
    for (int i = threadIdx.x; i < count; i += CHANNEL_THREADS) {
        const int n = i / HW, p = i % HW;
        const double v = x[(n * C + c) * HW + p] - shift;
        s += v;
        s2 += v * v;
    }
    sum[threadIdx.x] = s;
    sum_squares[threadIdx.x] = s2;
    block_sum(sum);
    block_sum(sum_squares);
    // Every thread reads the two totals (a broadcast from shared memory) and computes the same
    // mean and variance: the statistics in float32, as the evaluation kernel and the backward
    // read them back.
    const double shifted_mean = sum[0] / count;
    const double variance = fmax(sum_squares[0] / count - shifted_mean * shifted_mean, 0.0);
    const float channel_mean = (float)(shift + shifted_mean);
    const float channel_var = (float)variance;
    if (threadIdx.x == 0) {
        mean[c] = channel_mean;
        var[c] = channel_var;
        if (update_running) {
            const double unbiased = variance * count / (count > 1 ? count - 1 : 1);
            running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * channel_mean;
            running_var[c] = (1.0f - momentum) * running_var[c] + momentum * (float)unbiased;
        }
    }
    // Pass 2: normalise the same elements (now mostly in L2) and write y.
    const float inv_std = 1.0f / sqrtf(channel_var + eps);
    const float scale = gamma[c] * inv_std, offset = beta[c];
    for (int i = threadIdx.x; i < count; i += CHANNEL_THREADS) {
        const int n = i / HW, p = i % HW;
        const int at = (n * C + c) * HW + p;
        const float v = scale * (x[at] - channel_mean) + offset;
        y[at] = relu && v < 0.0f ? 0.0f : v;  // NaN stays NaN, as in relu.cu
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

extern "C" __global__ void __launch_bounds__(CHANNEL_THREADS)
batch_norm_backward(const float* __restrict__ dy, const float* __restrict__ y,
                    const float* __restrict__ x, const float* __restrict__ mean,
                    const float* __restrict__ var, const float* __restrict__ gamma,
                    float* __restrict__ dgamma, float* __restrict__ dbeta,
                    float* __restrict__ dx, int N, int C, int HW, float eps, int training,
                    int relu)
{
    __shared__ double sum_dy[CHANNEL_THREADS];
    __shared__ double sum_dy_x_hat[CHANNEL_THREADS];
    const int c = blockIdx.x;
    const int count = N * HW;
    const float channel_mean = mean[c];
    const float inv_std = 1.0f / sqrtf(var[c] + eps);
    // Pass 1: dbeta = sum(dz) and dgamma = sum(dz * x_hat), dz being dy through the ReLU.
    double s = 0.0, s_x_hat = 0.0;
    for (int i = threadIdx.x; i < count; i += CHANNEL_THREADS) {
        const int n = i / HW, p = i % HW;
        const int at = (n * C + c) * HW + p;
        const float dz = relu && !(y[at] > 0.0f) ? 0.0f : dy[at];
        s += dz;
        s_x_hat += (double)dz * ((x[at] - channel_mean) * inv_std);
    }
    sum_dy[threadIdx.x] = s;
    sum_dy_x_hat[threadIdx.x] = s_x_hat;
    block_sum(sum_dy);
    block_sum(sum_dy_x_hat);
    const float channel_dbeta = (float)sum_dy[0];  // every thread reads the totals
    const float channel_dgamma = (float)sum_dy_x_hat[0];
    if (threadIdx.x == 0) {
        dbeta[c] = channel_dbeta;
        dgamma[c] = channel_dgamma;
    }
    // Pass 2: dx of the same elements (now mostly in L2).
    const float m = (float)count;
    const float scale = gamma[c] * inv_std;
    for (int i = threadIdx.x; i < count; i += CHANNEL_THREADS) {
        const int n = i / HW, p = i % HW;
        const int at = (n * C + c) * HW + p;
        const float dz = relu && !(y[at] > 0.0f) ? 0.0f : dy[at];
        if (training) {
            const float x_hat = (x[at] - channel_mean) * inv_std;
            dx[at] = scale / m * (m * dz - channel_dbeta - x_hat * channel_dgamma);
        } else {
            dx[at] = scale * dz;  // the running statistics do not depend on x
        }
    }
}
