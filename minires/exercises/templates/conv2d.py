"""Exercise: the backward pass of a 2-D convolution through im2col and col2im (lesson 4).

forward unfolds x into columns and does one matrix product: y2 = w2 @ cols. Write backward(dy),
dy of shape (N, C_out, H_out, W_out): return (dx, dw, db).
Check with `python -m minires.exercises check conv2d`.
"""

from minires import Function
from minires.backends.reference import col2im, conv_output_size, im2col  # noqa: F401 (col2im: yours)


class Conv2d(Function):
    """y = w (*) x + b as y2 = w2 @ im2col(x);  backward: yours to write."""

    def __init__(self, stride=1, padding=0):
        self.stride, self.padding = stride, padding

    def forward(self, x, w, b):
        N, C_in, H, W = x.shape
        C_out, _, KH, KW = w.shape
        s, p = (self.stride, self.stride), (self.padding, self.padding)
        H_out = conv_output_size(H, KH, self.stride, self.padding)
        W_out = conv_output_size(W, KW, self.stride, self.padding)
        cols = im2col(x, KH, KW, s, p)  # (C_in*KH*KW, N*H_out*W_out)
        w2 = w.reshape(C_out, -1)  # (C_out, C_in*KH*KW)
        y2 = w2 @ cols + b[:, None]  # (C_out, N*H_out*W_out)
        self.x_shape, self.w, self.cols = x.shape, w, cols
        return y2.reshape(C_out, N, H_out, W_out).transpose(1, 0, 2, 3)  # (N, C_out, H_out, W_out)

    def backward(self, dy):
        # TODO: return (dx, dw, db) with the shapes of x, w and b.
        # 1. dy2: dy in the layout of y2, (C_out, N*H_out*W_out)
        # 2. dw from dy2 and self.cols; dcols from self.w and dy2
        # 3. dx = col2im(dcols, self.x_shape, KH, KW, stride pair, padding pair)
        raise NotImplementedError("write Conv2d.backward")


if __name__ == "__main__":
    from minires.exercises import main

    raise SystemExit(main(["check", "conv2d", "--file", __file__]))
