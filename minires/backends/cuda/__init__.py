"""The CUDA backend: the reference's kernels, computed by our own CUDA kernels where they matter.

  gpu.py            im2col, col2im and gemm (kernels/im2col.cu, col2im.cu, gemm.cu)
  normalization.py  batchnorm forward and backward, with or without a ReLU after it
                    (kernels/batch_norm.cu)
  elementwise.py    ReLU both ways, relu(a + b), and the multi-tensor SGD step (kernels/relu.cu,
                    sgd.cu)
  launch.py         compiles kernels/*.cu once (CuPy's RawModule) and launches them, checking
                    arguments and counting launches
  counting.py       the launch budget without a GPU: launches and syncs of a training step
  emulator.py       runs the same .cu files on the CPU (g++, kernels/emu) for NumPy arrays
CuPy arrays always come here; NumPy arrays come here inside `backends.using("cuda")`, and then
every launch runs under the emulator. What is left (pooling's argmax, the loss, a sum without
a ReLU after it) is the reference's code, which runs as CuPy's own kernels on CuPy arrays.
float64 (the gradient checks) takes the reference's code everywhere: the kernels compute in
float32.
"""

import numpy as np

from .. import conv_output_size
from ..reference import Reference
from . import elementwise, gpu, normalization


def _float32(*arrays):
    """Whether every array given (None aside) is float32, the kernels' dtype."""
    return all(a is None or a.dtype == np.float32 for a in arrays)


class CUDA(Reference):
    name = "cuda"
    im2col = staticmethod(gpu.im2col)
    col2im = staticmethod(gpu.col2im)
    gemm = staticmethod(gpu.gemm)
    sgd_step = staticmethod(elementwise.sgd_step)  # optim.SGD's one-launch step

    # -- convolution: the reference's GEMMs, reading and writing NCHW images in place ------------
    def conv2d_forward(self, x, w, b, stride, padding):
        """y = w2 @ im2col(x), written by the GEMM straight into (N, C_out, H_out, W_out)."""
        if not _float32(x, w, b) or gpu.get_gemm() != "tiled":
            return super().conv2d_forward(x, w, b, stride, padding)
        N, _, H, W = x.shape
        C_out, _, KH, KW = w.shape
        H_out = conv_output_size(H, KH, stride[0], padding[0])
        W_out = conv_output_size(W, KW, stride[1], padding[1])
        cols = self.im2col(x, KH, KW, stride, padding)  # (C_in*KH*KW, N*H_out*W_out)
        y = gpu.gemm_images(w.reshape(C_out, -1), cols, c_hw=H_out * W_out)  # (N, C_out, HW)
        if b is not None:
            y += b[:, None]
        return y.reshape(N, C_out, H_out, W_out), (cols, w, x.shape)

    def conv2d_backward(self, dy, saved, stride, padding, input_grad=True, bias_grad=True):
        """dw = dy2 @ cols^T and dcols = w2^T @ dy2, dy2 read in place from NCHW dy."""
        cols, w, x_shape = saved
        if not _float32(dy, cols) or gpu.get_gemm() != "tiled":
            return super().conv2d_backward(dy, saved, stride, padding, input_grad, bias_grad)
        C_out, _, KH, KW = w.shape
        hw = dy.shape[2] * dy.shape[3]  # H_out * W_out
        dw = gpu.gemm_images(dy, cols, trans_b=True, a_hw=hw).reshape(w.shape)
        dx = None
        if input_grad:
            dcols = gpu.gemm_images(w.reshape(C_out, -1), dy, trans_a=True, b_hw=hw)  # like cols
            dx = self.col2im(dcols, x_shape, KH, KW, stride, padding)
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
