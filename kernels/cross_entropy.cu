/* cross_entropy.cu: the mean softmax cross-entropy of a batch of logits, and its gradient
   (lessons 3 and 10), one launch each way.

   What it computes (minires/backends/reference.py's cross_entropy_forward/backward, the spec):
       log_sum_exp[n] = max_k x[n, k] + log(sum_k exp(x[n, k] - max_k x[n, k]))
       loss = mean over n of (log_sum_exp[n] - x[n, target[n]])    (= -log softmax(x)[n, t_n])
       dx[n, k] = (exp(x[n, k] - log_sum_exp[n]) - (k == target[n])) * dy / N
   Subtracting the row's maximum keeps every exp() at most 1, so logits of +-1000 give exact
   results instead of inf / inf. A target outside 0..K-1 gives a NaN loss (and NaN gradients)
   rather than a read outside its row: labels already on the GPU are not checked on the host.

   Layout: x, dx contiguous float32 (N, K): element (n, k) at n*K + k; target int32 (N,);
   log_sum_exp float32 (N,), written by the forward for the backward; loss and dy float32
   arrays of one element, which stay on the GPU (reading the loss back would make the host wait
   for every kernel queued before it).

   Launch shapes:
   - cross_entropy_forward: ONE block, grid (1), block (ROW_THREADS = 256). Thread t computes
     rows t, t + 256, ..., one row at a time (a CIFAR row is 10 logits, 40 bytes: a thread
     reads it faster than threads could share it), and adds up its rows' losses in a double;
     the block adds the 256 partial sums by a tree in shared memory, and thread 0 writes their
     mean. One block because the mean over the batch is one sum: inside one block a barrier
     orders it, where blocks of their own would need atomics or a second launch. For the
     batches of a classifier (N*K of a few thousand) the kernel is as cheap as a launch can be;
     for thousands of classes, one warp per row would read the rows coalesced.
   - cross_entropy_backward: one thread per element, grid (ceil(N*K / 256)), block (256).
*/

constexpr int ROW_THREADS = 256;  // threads of the forward's one block: a power of 2

extern "C" __global__ void __launch_bounds__(ROW_THREADS)
cross_entropy_forward(const float* __restrict__ x, const int* __restrict__ target,
                      float* __restrict__ log_sum_exp, float* __restrict__ loss, int N, int K)
{
    __shared__ double row_losses[ROW_THREADS];
    const int t = threadIdx.x;
    double my_loss = 0.0;  // the sum of this thread's rows' losses
    for (int n = t; n < N; n += ROW_THREADS) {
        const float* row = x + n * K;
        float largest = row[0];
        for (int k = 1; k < K; ++k) {
            largest = fmaxf(largest, row[k]);
        }
        float sum_exp = 0.0f;
        for (int k = 0; k < K; ++k) {
            sum_exp += expf(row[k] - largest);  // each term in (0, 1]; the largest is 1
        }
        const float row_log_sum_exp = largest + logf(sum_exp);
        log_sum_exp[n] = row_log_sum_exp;
        const int label = target[n];
        my_loss += label >= 0 && label < K ? row_log_sum_exp - row[label] : nanf("");
    }
    row_losses[t] = my_loss;
    __syncthreads();  // every thread has stored its partial sum
    for (int half = ROW_THREADS / 2; half > 0; half /= 2) {  // the tree: halving each step
        if (t < half) {
            row_losses[t] += row_losses[t + half];
        }
        __syncthreads();  // this level is complete before the next reads it
    }
    if (t == 0) {
        loss[0] = (float)(row_losses[0] / N);
    }
}

extern "C" __global__ void cross_entropy_backward(const float* __restrict__ x,
                                                  const int* __restrict__ target,
                                                  const float* __restrict__ log_sum_exp,
                                                  const float* __restrict__ dy,
                                                  float* __restrict__ dx, int N, int K)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * K) {
        return;  // the last block overhangs the end of x
    }
    const int n = i / K, k = i % K;
    const int label = target[n];
    const float softmax = expf(x[i] - log_sum_exp[n]);
    const float onehot = k == label ? 1.0f : 0.0f;
    const float valid = label >= 0 && label < K ? 1.0f : nanf("");  // as the forward's loss
    dx[i] = (softmax - onehot) * valid * dy[0] / N;
}
