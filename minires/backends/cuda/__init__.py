"""The CUDA backend: the reference's kernels, computed by our own CUDA kernels where they matter.

  gpu.py            im2col, col2im and gemm (kernels/im2col.cu, col2im.cu, gemm.cu)
  normalization.py  batchnorm forward and backward (kernels/batch_norm.cu)
  elementwise.py    ReLU both ways, and the multi-tensor SGD step (kernels/relu.cu, sgd.cu)
  launch.py         compiles kernels/*.cu once (CuPy's RawModule) and launches them, checking
                    arguments and counting launches
  counting.py       the launch budget without a GPU: launches and syncs of a training step
  emulator.py       runs the same .cu files on the CPU (g++, kernels/emu) for NumPy arrays
CuPy arrays always come here; NumPy arrays come here inside `backends.using("cuda")`, and then
every launch runs under the emulator. What is left (pooling's argmax, the loss, the residual
add) is the reference's code, which runs as CuPy's own kernels on CuPy arrays. float64 (the
gradient checks) takes the reference's code everywhere: the kernels compute in float32.
"""

import numpy as np

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

    def relu_forward(self, x):
        if x.dtype != np.float32:
            return super().relu_forward(x)
        return elementwise.relu_forward(x)

    def relu_backward(self, dy, y):
        if not _float32(dy, y):
            return super().relu_backward(dy, y)
        return elementwise.relu_backward(dy, y)
