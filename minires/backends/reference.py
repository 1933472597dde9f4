"""The reference backend, in NumPy: the specification that every other backend must match.

Convolution is im2col + GEMM (lesson 4), batchnorm the formulas of Ioffe & Szegedy (lesson 5),
pooling im2col again (lesson 6). The numba and CUDA backends compute the same kernels with the
same signatures, and the tests check each of them against this file through the ops; run it
inside a real model with `minires.backends.using("reference")`.

Layouts, shared by every backend:
  x     (N, C, H, W)                 contiguous activations (NCHW)
  cols  (C*KH*KW, N*H_out*W_out)     row (c, kh, kw), column (n, oh, ow), both row-major
so that conv2d's forward is one GEMM: (C_out, C*KH*KW) @ cols = (C_out, N*H_out*W_out).
Every kernel works on NumPy or CuPy arrays alike (`xp`), so that the CUDA backend can reuse them
and swap in its own im2col, col2im and gemm.
"""

import numpy as np

from . import conv_output_size
from .devices import get_array_module


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


def update_running_stats(running_mean, running_var, mean, var, count, momentum):
    """PyTorch's rule, in place: running = (1 - momentum) * running + momentum * batch, with the
    unbiased variance (count values per channel) going into running_var."""
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += momentum * var * count / max(count - 1, 1)


class Reference:
    """The kernels every backend provides. Each forward returns its output and `saved`, what its
    backward needs (here the column matrix, x_hat, ...: each backend keeps what suits it)."""

    name = "reference"
    # The three functions convolution and pooling rest on; the CUDA backend swaps in its kernels.
    im2col = staticmethod(im2col)
    col2im = staticmethod(col2im)
    gemm = staticmethod(gemm)

    def __repr__(self):
        return f"<minires backend {self.name!r}>"

    # -- convolution (lesson 4) -------------------------------------------------------------------
    def conv2d_forward(self, x, w, b, stride, padding):
        """y = w (*) x + b as one GEMM: y2 = w2 @ im2col(x). saved: (cols, w, x.shape)."""
        N, _, H, W = x.shape
        C_out, _, KH, KW = w.shape
        H_out = conv_output_size(H, KH, stride[0], padding[0])
        W_out = conv_output_size(W, KW, stride[1], padding[1])
        cols = self.im2col(x, KH, KW, stride, padding)  # (C_in*KH*KW, N*H_out*W_out)
        y = self.gemm(w.reshape(C_out, -1), cols)  # (C_out, C_in*KH*KW) @ cols
        if b is not None:
            y += b[:, None]
        y = y.reshape(C_out, N, H_out, W_out).transpose(1, 0, 2, 3)  # (N, C_out, H_out, W_out)
        return get_array_module(y).ascontiguousarray(y), (cols, w, x.shape)

    def conv2d_backward(self, dy, saved, stride, padding, input_grad=True, bias_grad=True):
        """dw = dy2 @ cols^T,  dx = col2im(w2^T @ dy2),  db = sum of dy over N, H, W;
        dx (db) is None unless input_grad (bias_grad)."""
        cols, w, x_shape = saved
        C_out, _, KH, KW = w.shape
        dy2 = dy.transpose(1, 0, 2, 3).reshape(C_out, -1)  # (C_out, N*H_out*W_out)
        dw = self.gemm(dy2, cols, trans_b=True).reshape(w.shape)
        dx = None
        if input_grad:
            dcols = self.gemm(w.reshape(C_out, -1), dy2, trans_a=True)  # like cols
            dx = self.col2im(dcols, x_shape, KH, KW, stride, padding)
        db = dy2.sum(axis=1) if bias_grad else None
        return dx, dw, db

    # -- pooling (lesson 6): each channel alone, as an image of one channel ----------------------
    def max_pool2d_forward(self, x, kernel, stride, padding):
        """y = max over each window, padding counting as -inf. saved: the argmax of each window."""
        xp = get_array_module(x)
        N, C, H, W = x.shape
        (KH, KW), (ph, pw) = kernel, padding
        x_pad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-xp.inf)
        pad_shape = (N * C, 1) + x_pad.shape[2:]  # (N*C, 1, H+2ph, W+2pw)
        cols = self.im2col(x_pad.reshape(pad_shape), KH, KW, stride, (0, 0))
        argmax = cols.argmax(axis=0)  # (N*C*H_out*W_out,): which tap of each window
        y = cols[argmax, xp.arange(cols.shape[1])]
        H_out = conv_output_size(H, KH, stride[0], ph)
        W_out = conv_output_size(W, KW, stride[1], pw)
        return y.reshape(N, C, H_out, W_out), (argmax, x.shape)

    def max_pool2d_backward(self, dy, saved, kernel, stride, padding):
        """dx = dy routed to the argmax of its window (summed where windows overlap)."""
        xp = get_array_module(dy)
        argmax, (N, C, H, W) = saved
        (KH, KW), (ph, pw) = kernel, padding
        dcols = xp.zeros((KH * KW, dy.size), dtype=dy.dtype)  # (KH*KW, N*C*H_out*W_out)
        dcols[argmax, xp.arange(dy.size)] = dy.ravel()
        pad_shape = (N * C, 1, H + 2 * ph, W + 2 * pw)
        dx_pad = self.col2im(dcols, pad_shape, KH, KW, stride, (0, 0))
        return dx_pad.reshape(N, C, H + 2 * ph, W + 2 * pw)[:, :, ph:ph + H, pw:pw + W]

    def avg_pool2d_forward(self, x, kernel, stride, padding):
        """y = mean over each window, zero padding included in the count (PyTorch's default)."""
        N, C, H, W = x.shape
        KH, KW = kernel
        cols = self.im2col(x.reshape(N * C, 1, H, W), KH, KW, stride, padding)
        H_out = conv_output_size(H, KH, stride[0], padding[0])
        W_out = conv_output_size(W, KW, stride[1], padding[1])
        return cols.mean(axis=0).reshape(N, C, H_out, W_out)  # cols: (KH*KW, N*C*H_out*W_out)

    def avg_pool2d_backward(self, dy, x_shape, kernel, stride, padding):
        """dx = col2im of dy / (KH*KW), copied to every position of its window."""
        xp = get_array_module(dy)
        N, C, H, W = x_shape
        KH, KW = kernel
        dcols = xp.broadcast_to(dy.reshape(1, -1) / (KH * KW), (KH * KW, dy.size))
        dx = self.col2im(xp.ascontiguousarray(dcols), (N * C, 1, H, W), KH, KW, stride, padding)
        return dx.reshape(x_shape)

    # -- batch normalisation (lesson 5) -----------------------------------------------------------
    def batch_norm_forward(self, x, gamma, beta, running_mean, running_var, training, momentum,
                           eps):
        """y = gamma * x_hat + beta, x_hat = (x - mean) / sqrt(var + eps) per channel: the batch's
        mean and biased variance in training (running statistics updated in place when given),
        the running statistics in evaluation. saved: (x_hat, inv_std, gamma)."""
        xp = get_array_module(x)
        axes = (0,) if x.ndim == 2 else (0, 2, 3)  # statistics over all but the channel axis
        shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)  # a (C,) vector broadcast against x
        if training:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            if running_mean is not None:
                update_running_stats(running_mean, running_var, mean, var,
                                     x.size // x.shape[1], momentum)
        else:
            mean, var = running_mean, running_var
        inv_std = (1 / xp.sqrt(var + eps)).reshape(shape)
        x_hat = (x - mean.reshape(shape)) * inv_std
        gamma = None if gamma is None else gamma.reshape(shape)
        y = x_hat if gamma is None else x_hat * gamma
        y = y if beta is None else y + beta.reshape(shape)
        return y, (x_hat, inv_std, gamma)

    def batch_norm_backward(self, dy, saved, training):
        """Training: dx = gamma / (m * std) * (m * dy - sum(dy) - x_hat * sum(dy * x_hat)), m the
        count per channel; evaluation: dx = dy * gamma / std. dgamma = sum(dy * x_hat) (None
        without gamma), dbeta = sum(dy)."""
        x_hat, inv_std, gamma = saved
        axes = (0,) if dy.ndim == 2 else (0, 2, 3)
        dx_hat = dy if gamma is None else dy * gamma
        if training:
            m = dy.size // dy.shape[1]
            sum_dx_hat = dx_hat.sum(axis=axes, keepdims=True)
            sum_dx_hat_x_hat = (dx_hat * x_hat).sum(axis=axes, keepdims=True)
            dx = inv_std / m * (m * dx_hat - sum_dx_hat - x_hat * sum_dx_hat_x_hat)
        else:
            dx = dx_hat * inv_std
        dgamma = None if gamma is None else (dy * x_hat).sum(axis=axes)
        return dx, dgamma, dy.sum(axis=axes)

    # -- ReLU (lesson 6) ---------------------------------------------------------------------------
    def relu_forward(self, x):
        """y = max(x, 0)."""
        return get_array_module(x).maximum(x, 0)

    def relu_backward(self, dy, y):
        """dx = dy where y > 0 (exactly where x > 0), else 0."""
        return dy * (y > 0)

    # -- fused: batchnorm then ReLU, the sum then ReLU (the ResNet block's steps; lesson 10) -----
    # Here each is its two pieces called one after the other: that is the specification. The
    # fast backends compute the same in fewer passes over memory (numba) or launches (CUDA).
    # ReLU's backward reads its output y (y > 0 exactly where its input is), so the pair saves
    # nothing that the pieces would not.
    def batch_norm_relu_forward(self, x, gamma, beta, running_mean, running_var, training,
                                momentum, eps):
        """y = relu(batch_norm(x)), batch_norm_forward's arguments. saved: (batchnorm's, y)."""
        z, saved = self.batch_norm_forward(x, gamma, beta, running_mean, running_var, training,
                                           momentum, eps)
        y = self.relu_forward(z)
        return y, (saved, y)

    def batch_norm_relu_backward(self, dy, saved, training):
        """batchnorm's (dx, dgamma, dbeta) for the upstream gradient dz = dy where y > 0."""
        batch_norm_saved, y = saved
        return self.batch_norm_backward(self.relu_backward(dy, y), batch_norm_saved, training)

    def add_relu_forward(self, a, b):
        """y = relu(a + b): a residual block's sum and last ReLU."""
        return self.relu_forward(a + b)

    def add_relu_backward(self, dy, y):
        """The gradient of both a and b (before unbroadcasting): dy where y > 0, else 0."""
        return self.relu_backward(dy, y)

    # -- the loss (lesson 3) -----------------------------------------------------------------------
    def log_softmax(self, x):
        """log_softmax(x) along axis 1 of logits x (N, K): x - max(x) - log(sum exp(x - max(x))),
        the row maximum subtracted before exp() so that no term overflows."""
        xp = get_array_module(x)
        shifted = x - x.max(axis=1, keepdims=True)
        return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))

    def cross_entropy_forward(self, x, target):
        """loss = -mean_n log_softmax(x)[n, target[n]] for logits x (N, K).
        saved: (log_softmax(x), target)."""
        xp = get_array_module(x)
        log_p = self.log_softmax(x)  # (N, K)
        return -log_p[xp.arange(len(x)), target].mean(), (log_p, target)

    def cross_entropy_backward(self, dy, saved):
        """dx = (softmax(x) - onehot(target)) * dy / N, dy the loss's (one-element) gradient."""
        log_p, target = saved
        xp = get_array_module(log_p)
        N = log_p.shape[0]
        dx = xp.exp(log_p)  # softmax(x), (N, K)
        dx[xp.arange(N), target] -= 1
        return dx * (dy / N)


# -- Winograd's minimal filtering, F(2x2, 3x3) and F(4x4, 3x3) (Lavin & Gray 2016; lesson 4) ------
# A 1-D convolution of 4 inputs d with 3 taps g gives 2 outputs; done directly that is 6
# multiplies, done as y = A^T [(G g) * (B^T d)] it is 4 (the elementwise product). Nested in 2-D,
# a 2x2 output tile from a 4x4 input tile costs 16 multiplies instead of 36: 2.25x fewer. The
# transforms only add and halve, and the channels sum inside the elementwise product, which so
# becomes 16 matrix products, one per position of the 4x4 tile.
WINOGRAD_B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
WINOGRAD_A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
# F(4x4, 3x3): a 4x4 output tile from a 6x6 input tile, 36 multiplies instead of 144 (4x fewer),
# from the points 0, 1, -1, 2, -2 and infinity. Its transforms multiply by up to 8 (A^T) and
# divide by 24 (G), so float32 rounding errors grow by about 10x against F(2x2, 3x3).
WINOGRAD_F4_B_T = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                            [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
                           np.float64)
WINOGRAD_F4_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                          [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
WINOGRAD_F4_A_T = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                            [0, 1, -1, 8, -8, 1]], np.float64)
WINOGRAD_MATRICES = {2: (WINOGRAD_B_T, WINOGRAD_G, WINOGRAD_A_T),
                     4: (WINOGRAD_F4_B_T, WINOGRAD_F4_G, WINOGRAD_F4_A_T)}


def winograd_conv2d(x, w, padding, tile=2):
    """What conv2d_forward computes for a 3x3 kernel with stride 1 (no bias), by F(m x m, 3x3)
    with m = tile (2 or 4), from (m+2)x(m+2) input tiles overlapping by 2:
    y[tile] = A^T [sum over c of (G w[co, c] G^T) * (B^T x_tile[c] B)] A, tile by tile."""
    N, C, H, W = x.shape
    C_out = w.shape[0]
    (ph, pw), dtype, m = padding, x.dtype, tile
    H_out, W_out = conv_output_size(H, 3, 1, ph), conv_output_size(W, 3, 1, pw)
    tiles_h, tiles_w = -(-H_out // m), -(-W_out // m)  # mxm output tiles, the last ones partial
    # Zeros below and right too, so that every input tile lies inside the padded image.
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, m * tiles_h + 2 - H - ph),
                       (pw, m * tiles_w + 2 - W - pw)))
    windows = np.lib.stride_tricks.sliding_window_view(x_pad, (m + 2, m + 2), axis=(2, 3))
    tiles = windows[:, :, ::m, ::m]  # (N, C, tiles_h, tiles_w, m+2, m+2): overlapping by 2
    B_T, G, A_T = (matrix.astype(dtype) for matrix in WINOGRAD_MATRICES[m])
    V = B_T @ tiles @ B_T.T  # the input transform, (N, C, tiles_h, tiles_w, m+2, m+2)
    U = G @ w @ G.T  # the filter transform, (C_out, C, m+2, m+2)
    # One GEMM per tile position (a, b): M[a, b] = U[a, b] @ V[a, b] sums over the channels.
    U = U.transpose(2, 3, 0, 1)  # (m+2, m+2, C_out, C)
    V = V.transpose(4, 5, 1, 0, 2, 3).reshape(m + 2, m + 2, C, -1)  # (.., C, N*tiles_h*tiles_w)
    M = (U @ V).reshape(m + 2, m + 2, C_out, N, tiles_h, tiles_w).transpose(3, 2, 4, 5, 0, 1)
    Y = A_T @ M @ A_T.T  # the output transform, (N, C_out, tiles_h, tiles_w, m, m)
    y = Y.transpose(0, 1, 2, 4, 3, 5).reshape(N, C_out, m * tiles_h, m * tiles_w)
    return np.ascontiguousarray(y[:, :, :H_out, :W_out])
