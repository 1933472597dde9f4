"""The CPU backend in NumPy: im2col, col2im and GEMM, the three functions convolution rests on.

This file is the specification: the CUDA kernels in kernels/*.cu must compute exactly this
(lesson 4 derives it, lesson 10 reads the kernels beside it). Layouts, shared by every backend:
  x     (N, C, H, W)                 contiguous activations (NCHW)
  cols  (C*KH*KW, N*H_out*W_out)     row (c, kh, kw), column (n, oh, ow), both row-major
so that conv2d's forward is one GEMM: (C_out, C*KH*KW) @ cols = (C_out, N*H_out*W_out).
"""

import numpy as np


def conv_output_size(size, kernel, stride, padding):
    """Output length of a sliding window: floor((size + 2*padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def im2col(x, KH, KW, stride, padding):
    """Unfold every KHxKW window of x into a column: cols[(c,kh,kw), (n,oh,ow)] =
    x_padded[n, c, oh*sh + kh, ow*sw + kw]."""
    N, C, H, W = x.shape
    (sh, sw), (ph, pw) = stride, padding
    H_out = conv_output_size(H, KH, sh, ph)
    W_out = conv_output_size(W, KW, sw, pw)
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((C, KH, KW, N, H_out, W_out), dtype=x.dtype)
    # One strided slice per kernel offset: KH*KW vectorised copies instead of a loop per pixel.
    for kh in range(KH):
        for kw in range(KW):
            window = x_pad[:, :, kh:kh + sh * H_out:sh, kw:kw + sw * W_out:sw]
            cols[:, kh, kw] = window.transpose(1, 0, 2, 3)  # (N, C, H_out, W_out) -> (C, N, ...)
    return cols.reshape(C * KH * KW, N * H_out * W_out)


def col2im(cols, x_shape, KH, KW, stride, padding):
    """The adjoint of im2col: add every column entry back onto the pixel it was copied from."""
    N, C, H, W = x_shape
    (sh, sw), (ph, pw) = stride, padding
    H_out = conv_output_size(H, KH, sh, ph)
    W_out = conv_output_size(W, KW, sw, pw)
    cols = cols.reshape(C, KH, KW, N, H_out, W_out)
    x_pad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for kh in range(KH):
        for kw in range(KW):
            # Windows overlap across kernel offsets, never within one: this += has no collisions.
            x_pad[:, :, kh:kh + sh * H_out:sh, kw:kw + sw * W_out:sw] += (
                cols[:, kh, kw].transpose(1, 0, 2, 3)  # (N, C, H_out, W_out)
            )
    return x_pad[:, :, ph:ph + H, pw:pw + W]


def gemm(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b), where op transposes when asked: the three products conv2d needs are
    W @ cols (forward), W.T @ dy (input gradient) and dy @ cols.T (weight gradient)."""
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    return a @ b
