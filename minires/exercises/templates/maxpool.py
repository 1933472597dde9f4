"""Exercise: the backward pass of 2-D max pooling (lesson 6).

forward takes the maximum of every kernel x kernel window of each channel. Write backward(dy),
dy of shape (N, C, H_out, W_out): return dx, of x's shape.
Check with `python -m minires.exercises check maxpool`.
"""

import numpy as np

from minires import Function
from minires.backends.reference import col2im, conv_output_size, im2col  # noqa: F401 (col2im: yours)


class MaxPool2d(Function):
    """y = max over each window;  backward: yours to write."""

    def __init__(self, kernel=2, stride=None):
        self.kernel = kernel
        self.stride = kernel if stride is None else stride

    def forward(self, x):
        N, C, H, W = x.shape
        k, s = self.kernel, self.stride
        H_out, W_out = conv_output_size(H, k, s, 0), conv_output_size(W, k, s, 0)
        # Each channel alone, as an image of one channel: one column per window.
        cols = im2col(x.reshape(N * C, 1, H, W), k, k, (s, s), (0, 0))  # (k*k, N*C*H_out*W_out)
        self.argmax = cols.argmax(axis=0)  # (N*C*H_out*W_out,) row of each window's maximum
        self.x_shape = x.shape
        y = cols[self.argmax, np.arange(cols.shape[1])]  # (N*C*H_out*W_out,)
        return y.reshape(N, C, H_out, W_out)

    def backward(self, dy):
        # TODO: return dx, an array of x's shape (self.x_shape).
        # Build dcols, shaped like cols, that holds each window's gradient at its argmax, then
        # bring it back to the image with col2im (the adjoint of im2col).
        raise NotImplementedError("write MaxPool2d.backward")


if __name__ == "__main__":
    from minires.exercises import main

    raise SystemExit(main(["check", "maxpool", "--file", __file__]))
