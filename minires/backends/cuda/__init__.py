"""The CUDA backend: the reference's kernels, computed by our own CUDA kernels where they matter.

  gpu.py            gemm, and the convolution as implicit GEMMs (kernels/gemm.cu); im2col and
                    col2im (kernels/im2col.cu, col2im.cu), the explicit version to read first
  normalization.py  batchnorm forward and backward, with or without a ReLU after it
                    (kernels/batch_norm.cu)
  elementwise.py    ReLU both ways, relu(a + b), and the multi-tensor SGD step (kernels/relu.cu,
                    sgd.cu)
  loss.py           softmax cross-entropy forward and backward (kernels/cross_entropy.cu)
  launch.py         compiles kernels/*.cu once (CuPy's RawModule) and launches them, checking
                    arguments and counting launches
  counting.py       the launch budget without a GPU: launches and syncs of a training step
  emulator.py       runs the same .cu files on the CPU (g++, kernels/emu) for NumPy arrays
CuPy arrays always come here; NumPy arrays come here inside `backends.using("cuda")`, and then
every launch runs under the emulator. What is left (pooling's argmax, the linear layer, a sum
without a ReLU after it) is the reference's code, run as CuPy's own kernels on CuPy arrays.
float64 (the gradient checks) takes the reference's code everywhere: the kernels compute in
float32.
"""

import numpy as np

from ..reference import Reference
from . import elementwise, gpu, loss, normalization


def _float32(*arrays):
    """Whether every array given (None aside) is float32, the kernels' dtype."""
    return all(a is None or a.dtype == np.float32 for a in arrays)


class CUDA(Reference):
    name = "cuda"
    im2col = staticmethod(gpu.im2col)
    col2im = staticmethod(gpu.col2im)
    gemm = staticmethod(gpu.gemm)
    sgd_step = staticmethod(elementwise.sgd_step)  # optim.SGD's one-launch step

    # -- convolution: implicit GEMMs, gathering the image columns (no cols), NCHW in place -------
    def conv2d_forward(self, x, w, b, stride, padding):
        """y = w2 @ im2col(x), im2col(x) gathered by the GEMM from x, y written as NCHW: one
        launch (gpu.conv_forward). saved: x and w, not cols."""
        if not _float32(x, w, b) or gpu.get_gemm() != "tiled":
            return super().conv2d_forward(x, w, b, stride, padding)
        y = gpu.conv_forward(x, w, stride, padding)  # (N, C_out, H_out, W_out)
        if b is not None:
            y += b[:, None, None]
        return y, gpu.ConvSaved(x, w)

    def conv2d_backward(self, dy, saved, stride, padding, input_grad=True, bias_grad=True):
        """dw = dy2 @ im2col(x)^T and dx = col2im(w2^T @ dy2), each one implicit GEMM launch."""
        if not isinstance(saved, gpu.ConvSaved):  # the forward took the reference's path
            return super().conv2d_backward(dy, saved, stride, padding, input_grad, bias_grad)
        x, w = saved
        dy = dy.astype(np.float32, copy=False)  # the kernels' dtype (dy is y's: float32)
        dw = gpu.conv_weight_grad(x, dy, w.shape, stride, padding)
        dx = gpu.conv_input_grad(w, dy, x.shape, stride, padding) if input_grad else None
        db = dy.sum(axis=(0, 2, 3)) if bias_grad else None
        return dx, dw, db

    # -- batch normalisation and ReLU: kernels/batch_norm.cu and relu.cu --------------------------
    def batch_norm_forward(self, x, gamma, beta, running_mean, running_var, training, momentum,
                           eps):
        if not _float32(x, gamma, beta, running_mean, running_var):
            return super().batch_norm_forward(x, gamma, beta, running_mean, running_var,
                                              training, momentum, eps)
        return normalization.batch_norm_forward(x, gamma, beta, running_mean, running_var,
                                                training, momentum, eps)

    def batch_norm_backward(self, dy, saved, training):
        if not isinstance(saved, normalization.Saved):  # the forward took the reference's path
            return super().batch_norm_backward(dy, saved, training)
        return normalization.batch_norm_backward(dy, saved, training)

    def batch_norm_relu_forward(self, x, gamma, beta, running_mean, running_var, training,
                                momentum, eps):
        """batchnorm's launch, writing max(y, 0)."""
        if not _float32(x, gamma, beta, running_mean, running_var):
            return super().batch_norm_relu_forward(x, gamma, beta, running_mean, running_var,
                                                   training, momentum, eps)
        return normalization.batch_norm_forward(x, gamma, beta, running_mean, running_var,
                                                training, momentum, eps, relu=True)

    def batch_norm_relu_backward(self, dy, saved, training):
        """batchnorm's launch, reading dy as 0 where the forward's output y is not > 0."""
        if not isinstance(saved, normalization.Saved):
            return super().batch_norm_relu_backward(dy, saved, training)
        return normalization.batch_norm_backward(dy, saved, training)

    def relu_forward(self, x):
        if x.dtype != np.float32:
            return super().relu_forward(x)
        return elementwise.relu_forward(x)

    def relu_backward(self, dy, y):
        if not _float32(dy, y):
            return super().relu_backward(dy, y)
        return elementwise.relu_backward(dy, y)

    def add_relu_forward(self, a, b):
        """One launch for a and b of one shape; add_relu_backward is relu_backward's launch."""
        if not _float32(a, b) or a.shape != b.shape:
            return super().add_relu_forward(a, b)
        return elementwise.add_relu_forward(a, b)

    # -- the loss: kernels/cross_entropy.cu -------------------------------------------------------
    def cross_entropy_forward(self, x, target):
        """One launch; the loss is a one-element array that stays on the device."""
        if x.dtype != np.float32:
            return super().cross_entropy_forward(x, target)
        return loss.cross_entropy_forward(x, target.astype(np.int32, copy=False))

    def cross_entropy_backward(self, dy, saved):
        """One launch, reading dy (one element) from device memory."""
        if not isinstance(saved, loss.Saved):  # the forward took the reference's path
            return super().cross_entropy_backward(dy, saved)
        return loss.cross_entropy_backward(dy, saved)
