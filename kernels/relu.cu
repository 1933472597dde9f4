/* relu.cu: the rectifier and its gradient, one thread per element (lessons 6 and 10); the
   residual block's sum and ReLU, y = relu(a + b), in one kernel.

   What it computes (minires/backends/reference.py's relu_forward/relu_backward, the spec):
       forward   y[i] = max(x[i], 0)             (NaN stays NaN, as numpy.maximum has it)
       backward  dx[i] = dy[i] where y[i] > 0, else 0   (y > 0 exactly where x > 0)
   One kernel each way replaces CuPy's two (`dy * (y > 0)`: a compare, then a multiply).
   add_relu_forward: y[i] = max(a[i] + b[i], 0) (reference.py's add_relu_forward), one launch
   where `relu(a + b)` takes two and a temporary; its gradient, for a and b alike, is
   relu_backward's of y.

   Layout: contiguous float32 arrays of n elements; any shape, as the op is elementwise.
   Launch: 1-D, block (256), grid (ceil(n / 256)); neighbouring threads touch neighbouring
   elements, so every load and store is coalesced.
*/

extern "C" __global__ void relu_forward(const float* __restrict__ x, float* __restrict__ y, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        y[i] = x[i] < 0.0f ? 0.0f : x[i];
    }
}

extern "C" __global__ void relu_backward(const float* __restrict__ dy, const float* __restrict__ y,
                                         float* __restrict__ dx, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    }
}

extern "C" __global__ void add_relu_forward(const float* __restrict__ a,
                                            const float* __restrict__ b, float* __restrict__ y,
                                            int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float v = a[i] + b[i];
        y[i] = v < 0.0f ? 0.0f : v;
    }
}
