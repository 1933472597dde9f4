/* sgd.cu: one SGD step for every parameter of a model at once (lessons 9 and 10).

   What it computes (minires/optim.py's SGD.step, PyTorch's rule with dampening 0), for each
   element i of the parameters laid end to end in one flat buffer:
       g      = grad[i] + weight_decay * w[i]
       buf[i] = g                          on the first step
       buf[i] = momentum * buf[i] + g      on later steps
       w[i]  -= lr * (g + momentum * buf[i])   with nesterov,   lr * buf[i] without
   (momentum 0: w[i] -= lr * g, and buf is not touched).
   Looping over the parameters, as optim.py's reference loop does, costs about six CuPy
   launches per parameter (350 for ResNet-20); this costs one for all of them, because
   optim.py keeps the weights and momentum buffers as views of one flat array each and
   gathers the gradients into a third.

   Layout: w, grad, buf contiguous float32 (n,). Launch: block (256), grid (ceil(n / 256)).
*/

extern "C" __global__ void sgd_step(float* __restrict__ w, const float* __restrict__ grad,
                                    float* __restrict__ buf, int n, float lr, float momentum,
                                    float weight_decay, int nesterov, int first_step)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) {
        return;
    }
    const float g = grad[i] + weight_decay * w[i];
    float update = g;
    if (momentum != 0.0f) {
        const float b = first_step ? g : momentum * buf[i] + g;
        buf[i] = b;
        update = nesterov ? g + momentum * b : b;
    }
    w[i] -= lr * update;
}
