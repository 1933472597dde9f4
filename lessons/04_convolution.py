# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 4: convolution, from loops to im2col + GEMM
#
# A convolutional layer slides small filters over an image: the same few weights are applied
# at every position, so a 3x3 filter looking for an edge finds it anywhere. ResNet-20 spends
# nearly all of its computation in 19 such layers.
#
# We write the convolution three ways and check that they agree: as plain loops (the
# definition), as **im2col + one matrix product** (how minires, Caffe, Chainer and early cuDNN
# compute it), and through `minires.functional.conv2d`. Then the backward pass, where the
# adjoint of im2col, **col2im**, appears. `minires/backends/reference.py` is the reference code.

# %%
# ruff: noqa: E402
import sys
import time

import matplotlib

if "ipykernel" not in sys.modules:  # a script: draw into files, never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import minires
import minires.functional as F
from minires import lesson
from minires.backends.reference import col2im, conv_output_size, gemm, im2col
from minires.data import load_sample

parser = lesson.parser("Lesson 4: convolution",
                       full_help="(nothing more to run in this lesson)")
args, OUT = lesson.parse(parser)



# %% [markdown]
# ## 1. The definition, as loops
#
# Input $x$ of shape $(N, C_{in}, H, W)$, weights $w$ of shape $(C_{out}, C_{in}, K_H, K_W)$,
# one bias per output channel. With stride $s$ and zero padding $p$:
#
# $$y[n, o, i, j] = b[o] + \sum_{c, k_h, k_w} w[o, c, k_h, k_w]\;
#   x_{\text{pad}}[n, c, i s + k_h, j s + k_w]$$
#
# and the output is $H_{out} = \lfloor (H + 2p - K_H)/s \rfloor + 1$ pixels high (the same for
# the width). Deep-learning libraries call this a convolution although, strictly, it is a
# cross-correlation (the filter is not flipped); learned filters do not care.

# %%
def conv2d_loops(x, w, b, stride=1, padding=0):
    """The definition, one output element at a time."""
    N, C_in, H, W = x.shape
    C_out, _, KH, KW = w.shape
    H_out = conv_output_size(H, KH, stride, padding)
    W_out = conv_output_size(W, KW, stride, padding)
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    y = np.zeros((N, C_out, H_out, W_out), dtype=x.dtype)
    for n in range(N):
        for o in range(C_out):
            for i in range(H_out):
                for j in range(W_out):
                    window = x_pad[n, :, i * stride:i * stride + KH, j * stride:j * stride + KW]
                    y[n, o, i, j] = (window * w[o]).sum() + b[o]
    return y


rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 7, 7))
w = rng.standard_normal((4, 3, 3, 3))
b = rng.standard_normal(4)
y_loops = conv2d_loops(x, w, b, stride=2, padding=1)
print("x", x.shape, "* w", w.shape, "stride 2, padding 1 -> y", y_loops.shape)
assert y_loops.shape == (2, 4, 4, 4)  # floor((7 + 2 - 3) / 2) + 1 = 4

# %% [markdown]
# ## 2. im2col: every window becomes a column
#
# The inner sum is a dot product between the filter and one window of the input. If we copy
# every window into a column of a matrix, **all** the dot products become one matrix product.
# That copy is `im2col`: a matrix with one row per (channel, kernel row, kernel column) and one
# column per (image, output row, output column). Here it is for one 4x4 channel holding the
# numbers 0..15, a 3x3 kernel, stride 1, no padding: four windows, so four columns.

# %%
tiny = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
print(tiny[0, 0])
cols = im2col(tiny, 3, 3, (1, 1), (0, 0))  # (1*3*3, 1*2*2)
print("im2col ->", cols.shape)
print(cols.astype(int))
assert cols.shape == (9, 4)
assert list(cols[:, 0]) == [0, 1, 2, 4, 5, 6, 8, 9, 10]  # the top-left window, row by row

# %% [markdown]
# Each pixel appears in up to $K_H K_W$ columns, so the matrix is up to 9 times larger than the
# input: im2col trades memory for speed. With the weights flattened to
# $w_2$ of shape $(C_{out}, C_{in} K_H K_W)$, the whole convolution is
#
# $$y_2 = w_2 \, \text{cols}, \qquad (C_{out}, C_{in} K_H K_W) \times
#   (C_{in} K_H K_W, N H_{out} W_{out}) \to (C_{out}, N H_{out} W_{out})$$
#
# followed by a reshape and a transpose back to $(N, C_{out}, H_{out}, W_{out})$. A matrix
# product is called a GEMM (GEneral Matrix Multiply) in BLAS, which every platform has tuned to
# the hilt; that is the whole trick.

# %%
def conv2d_im2col(x, w, b, stride=1, padding=0):
    N = x.shape[0]
    C_out, _, KH, KW = w.shape
    H_out = conv_output_size(x.shape[2], KH, stride, padding)
    W_out = conv_output_size(x.shape[3], KW, stride, padding)
    cols = im2col(x, KH, KW, (stride, stride), (padding, padding))  # (C_in*KH*KW, N*H_out*W_out)
    y2 = gemm(w.reshape(C_out, -1), cols) + b[:, None]  # (C_out, N*H_out*W_out)
    return y2.reshape(C_out, N, H_out, W_out).transpose(1, 0, 2, 3)  # (N, C_out, H_out, W_out)


y_gemm = conv2d_im2col(x, w, b, stride=2, padding=1)
y_minires = F.conv2d(minires.tensor(x), minires.tensor(w), minires.tensor(b), stride=2,
                     padding=1).numpy()
print("loops vs im2col:  largest difference", np.abs(y_loops - y_gemm).max())
print("loops vs minires: largest difference", np.abs(y_loops - y_minires).max())
assert np.allclose(y_loops, y_gemm) and np.allclose(y_loops, y_minires)

# %% [markdown]
# ## 3. How much work: shapes and FLOPs
#
# One output element costs $C_{in} K_H K_W$ multiply-adds, so a layer costs
# $N C_{out} H_{out} W_{out} \cdot C_{in} K_H K_W$ of them, exactly the size of the GEMM.
# Here are the convolutions of ResNet-20 for one image (lesson 7 builds the network): three
# stages of 6 convolutions at 32x32, 16x16 and 8x8 with 16, 32 and 64 channels.

# %%
layers = [("conv1", 3, 16, 32, 1)]  # (name, C_in, C_out, H_out, count)
layers += [("stage 1", 16, 16, 32, 6)]
layers += [("stage 2, first", 16, 32, 16, 1), ("stage 2", 32, 32, 16, 5)]
layers += [("stage 3, first", 32, 64, 8, 1), ("stage 3", 64, 64, 8, 5)]
total = 0
print(f"{'layer':<16}{'GEMM (M x K) @ (K x P)':<30}{'MACs each':>12}{'count':>7}")
for name, C_in, C_out, H_out, count in layers:
    K, P = C_in * 9, H_out * H_out
    macs = C_out * K * P
    total += macs * count
    print(f"{name:<16}{f'({C_out} x {K}) @ ({K} x {P})':<30}{macs:>12,}{count:>7}")
print(f"total: {total / 1e6:.1f} million multiply-adds per image")
assert 40e6 < total < 42e6

# %% [markdown]
# This count is ours: He et al. give no FLOP count for their CIFAR networks. It counts the
# convolutions only (the final 64 x 10 linear layer adds 640 multiply-adds, batchnorm and ReLU
# a few per activation), one multiply-add per weight and output position.
#
# Every 3x3 layer inside a stage costs the same 2.4 million: halving the resolution while
# doubling the channels keeps the work per layer constant, a design rule of VGG kept by ResNet.
# The im2col matrix of one stage-1 layer for a batch of 128 holds 144 x 131,072 floats, 75 MB:
# memory, not arithmetic, is often what limits the batch size of this method.
#
# Speed: the loops call Python once per output element; im2col does $K_H K_W$ array copies and
# one BLAS call.

# %%
x_big = rng.standard_normal((8, 16, 16, 16)).astype(np.float32)
w_big = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
b_big = np.zeros(16, np.float32)
start = time.perf_counter()
y1 = conv2d_loops(x_big, w_big, b_big, padding=1)
t_loops = time.perf_counter() - start
start = time.perf_counter()
for _ in range(10):
    y2 = conv2d_im2col(x_big, w_big, b_big, padding=1)
t_gemm = (time.perf_counter() - start) / 10
print(f"x {x_big.shape}, w {w_big.shape}: loops {t_loops * 1e3:.0f} ms, "
      f"im2col + GEMM {t_gemm * 1e3:.2f} ms ({t_loops / t_gemm:.0f}x faster)")
assert np.allclose(y1, y2, atol=1e-4)
assert t_gemm * 10 < t_loops

# %% [markdown]
# ## Exercise first: the backward pass
#
# The next section is the answer to the exercise `lessons/exercises/conv2d.py`, so try it before
# reading on. The file has the forward pass above (im2col, then one matrix product); write its
# backward, returning `dx, dw, db`, and run `python -m minires.exercises check conv2d`. You know
# everything it needs: the gradient of a matrix product (lesson 3's linear layer) and what
# im2col does to each pixel. Stuck? `check conv2d --hint 1` asks a question, `--hint 2` points
# the way, `--hint 3` gives the formula; the grader names the common mistakes.
#
# ## 4. Backward, through col2im
#
# The forward pass is a matrix product, so its gradients are matrix products too. With
# $dy_2$ the upstream gradient in the layout of $y_2$:
#
# $$dw_2 = dy_2\,\text{cols}^T, \qquad d\text{cols} = w_2^T\, dy_2, \qquad
#   db = \textstyle\sum_{n,i,j} dy$$
#
# $d\text{cols}$ holds one gradient per *copy* of each pixel. A pixel copied into nine columns
# influenced the loss through all nine, so its gradient is the **sum** of its nine entries:
# that is `col2im`, which adds every entry back onto the pixel it came from. It is the
# *adjoint* (transpose) of im2col as a linear map: $\langle \text{im2col}(x), c\rangle =
# \langle x, \text{col2im}(c)\rangle$ for all $x$ and $c$.

# %%
x_s, c_s = rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((27, 2 * 4 * 4))
left = (im2col(x_s, 3, 3, (2, 2), (1, 1)) * c_s).sum()
right = (x_s * col2im(c_s, x_s.shape, 3, 3, (2, 2), (1, 1))).sum()
print(f"<im2col(x), c> = {left:.10f}\n<x, col2im(c)> = {right:.10f}")
assert np.isclose(left, right)

# %% [markdown]
# Three backward passes that must agree: by loops, straight from the definition (each output
# element passes $dy[n,o,i,j]$ times its weights back to its window of $x$, and times its window
# of $x$ to the weights); by the two GEMMs and col2im above; and through minires's `conv2d`
# (`Convolution2D` in `minires/ops/conv.py`). The op calls its backend's `conv2d_backward`: the
# reference backend's is exactly the column version above (`minires/backends/reference.py`); by
# default a CPU runs the numba backend's, which forms the same sums without building the column
# matrix (section 6). Agreement is what tells us all of them are right.

# %%
def conv2d_backward_loops(x, w, dy, stride=1, padding=0):
    N, C_in, H, W = x.shape
    C_out, _, KH, KW = w.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dx_pad, dw = np.zeros_like(x_pad), np.zeros_like(w)
    for n in range(N):
        for o in range(C_out):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    rows = slice(i * stride, i * stride + KH)
                    columns = slice(j * stride, j * stride + KW)
                    dx_pad[n, :, rows, columns] += dy[n, o, i, j] * w[o]
                    dw[o] += dy[n, o, i, j] * x_pad[n, :, rows, columns]
    dx = dx_pad[:, :, padding:padding + H, padding:padding + W]
    return dx, dw, dy.sum(axis=(0, 2, 3))


def conv2d_backward_im2col(x, w, dy, stride=1, padding=0):
    C_out, _, KH, KW = w.shape
    s, p = (stride, stride), (padding, padding)
    cols = im2col(x, KH, KW, s, p)  # (C_in*KH*KW, N*H_out*W_out), as saved by forward
    dy2 = dy.transpose(1, 0, 2, 3).reshape(C_out, -1)  # (C_out, N*H_out*W_out), like y2
    dw = gemm(dy2, cols, trans_b=True).reshape(w.shape)  # dw2 = dy2 @ cols^T
    dcols = gemm(w.reshape(C_out, -1), dy2, trans_a=True)  # w2^T @ dy2, like cols
    return col2im(dcols, x.shape, KH, KW, s, p), dw, dy2.sum(axis=1)


dy = rng.standard_normal(y_loops.shape)
dx_loops, dw_loops, db_loops = conv2d_backward_loops(x, w, dy, stride=2, padding=1)
dx_cols, dw_cols, db_cols = conv2d_backward_im2col(x, w, dy, stride=2, padding=1)

xt, wt, bt = (minires.tensor(a, requires_grad=True) for a in (x, w, b))
F.conv2d(xt, wt, bt, stride=2, padding=1).backward(dy)
for name, ref, cols_version, mine in [("dx", dx_loops, dx_cols, xt.grad),
                                      ("dw", dw_loops, dw_cols, wt.grad),
                                      ("db", db_loops, db_cols, bt.grad)]:
    print(f"{name}: largest difference from the loops: im2col "
          f"{np.abs(cols_version - ref).max():.1e}, minires {np.abs(mine - ref).max():.1e}")
    assert np.allclose(cols_version, ref) and np.allclose(mine, ref)
assert minires.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [xt, wt, bt])
print("gradcheck of conv2d (stride 2, padding 1): passed")

# %% [markdown]
# If you skipped the exercise, it is still worth doing now: `lessons/exercises/conv2d.py`,
# graded by `python -m minires.exercises check conv2d`.
#
# ## 5. What filters do
#
# A hand-made filter shows what a learned one can find. The Sobel filters respond to
# horizontal and vertical changes of brightness: edges. Applied to a grey-scale CIFAR-10 image
# (one input channel, two output channels, padding 1 to keep the size):

# %%
x_train, y_train, _, _ = load_sample()
image = x_train[7].astype(np.float32).mean(axis=0) / 255  # (32, 32) grey
sobel = np.array([[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]],
                  [[[-1, -2, -1], [0, 0, 0], [1, 2, 1]]]], dtype=np.float32)  # (2, 1, 3, 3)
edges = F.conv2d(minires.tensor(image[None, None]), minires.tensor(sobel), padding=1).numpy()
print("image", image[None, None].shape, "-> edges", edges.shape)
assert edges.shape == (1, 2, 32, 32)
# On a constant patch every Sobel response is zero: the filter's weights sum to zero.
flat = F.conv2d(minires.tensor(np.ones((1, 1, 5, 5), np.float32)), minires.tensor(sobel))
assert np.allclose(flat.numpy(), 0)

fig, axes = plt.subplots(1, 3, figsize=(9, 3))
axes[0].imshow(image, cmap="gray")
axes[0].set_title("image")
axes[1].imshow(edges[0, 0], cmap="RdBu")
axes[1].set_title("vertical edges (d/dx)")
axes[2].imshow(edges[0, 1], cmap="RdBu")
axes[2].set_title("horizontal edges (d/dy)")
for ax in axes:
    ax.axis("off")
lesson.save(fig, OUT / "04_sobel.png")

# %% [markdown]
# ## 6. The reference inside a real network
#
# Every op in minires asks `get_backend(x)` which code to run. On the CPU that is the numba
# backend unless a `with minires.backends.using("reference"):` block says otherwise; inside it,
# every convolution of a ResNet runs the `im2col` and `gemm` of this lesson. We count the
# `im2col` calls with a wrapper, run the same ResNet-8 both ways, and compare the logits.

# %%
from minires import backends, models  # noqa: E402

reference = backends.backend("reference")
im2col_calls = []
reference.im2col = lambda *args: im2col_calls.append(args[0].shape) or im2col(*args)
net = models.resnet_cifar(8)
images = minires.tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
logits_numba = net(images).numpy()
with backends.using("reference"):
    logits_reference = net(images).numpy()
del reference.im2col  # back to the class's own im2col
print(f"im2col calls: {len(im2col_calls)}, the first on {im2col_calls[0]}; largest logit "
      f"difference, reference vs numba: {np.abs(logits_reference - logits_numba).max():.1e}")
assert len(im2col_calls) == 7  # ResNet-8: the first conv, then 3 blocks of 2 convs
assert np.allclose(logits_reference, logits_numba, atol=1e-4)

# %% [markdown]
# ## 7. Fewer multiplies: Winograd's F(2, 3)
#
# A GEMM does one multiply per (output, tap, channel): 9 per output per channel pair for a 3x3
# filter. Winograd's minimal filtering does fewer. In one dimension, two outputs of a 3-tap
# filter $g$ over inputs $d_0..d_3$ are $y_0 = d_0 g_0 + d_1 g_1 + d_2 g_2$ and
# $y_1 = d_1 g_0 + d_2 g_1 + d_3 g_2$: 6 multiplies. Instead compute four products
#
# $m_1 = (d_0 - d_2)\,g_0,\quad m_2 = (d_1 + d_2)\,\tfrac{g_0 + g_1 + g_2}{2},\quad
# m_3 = (d_2 - d_1)\,\tfrac{g_0 - g_1 + g_2}{2},\quad m_4 = (d_1 - d_3)\,g_2$
#
# and then $y_0 = m_1 + m_2 + m_3$ and $y_1 = m_2 - m_3 - m_4$. Expand them to check: every
# unwanted term cancels. The filter's combinations are computed once per filter, not per
# output, so 4 multiplies remain. In matrix form, $y = A^T[(G g) \odot (B^T d)]$.

# %%
from minires.backends.reference import (  # noqa: E402
    WINOGRAD_A_T,
    WINOGRAD_B_T,
    WINOGRAD_G,
    winograd_conv2d,
)

d, g = rng.standard_normal(4), rng.standard_normal(3)
m1, m4 = (d[0] - d[2]) * g[0], (d[1] - d[3]) * g[2]
m2, m3 = (d[1] + d[2]) * (g[0] + g[1] + g[2]) / 2, (d[2] - d[1]) * (g[0] - g[1] + g[2]) / 2
direct = np.array([d[0:3] @ g, d[1:4] @ g])
print("direct:", direct, " four products:", np.array([m1 + m2 + m3, m2 - m3 - m4]))
assert np.allclose([m1 + m2 + m3, m2 - m3 - m4], direct)
assert np.allclose(WINOGRAD_A_T @ ((WINOGRAD_G @ g) * (WINOGRAD_B_T @ d)), direct)

# %% [markdown]
# Nested in two dimensions, F(2x2, 3x3) takes a 4x4 tile of the input to a 2x2 tile of the
# output with $4 \times 4 = 16$ multiplies instead of $4 \times 9 = 36$: 2.25x fewer. Summed
# over input channels inside the transformed domain, those 16 products become 16 GEMMs, one per
# position of the tile (`winograd_conv2d` in `backends/reference.py`). It must give the same
# convolution as im2col + GEMM, here on an odd-sized image that leaves partial tiles:

# %%
x_w = rng.standard_normal((2, 5, 9, 7))
w_w = rng.standard_normal((4, 5, 3, 3))
y_winograd = winograd_conv2d(x_w, w_w, (1, 1))
y_gemm = F.conv2d(minires.tensor(x_w), minires.tensor(w_w), padding=1).numpy()
print(f"largest difference from im2col + GEMM: {np.abs(y_winograd - y_gemm).max():.1e}")
assert np.allclose(y_winograd, y_gemm, atol=1e-10)


def multiplies(H, W, C_in, C_out):
    """Per image, padding 1: direct 9 per output and input channel; Winograd 16 per 2x2 tile
    (a partial tile at an odd edge costs a whole one)."""
    return H * W * C_out * C_in * 9, -(-H // 2) * -(-W // 2) * C_out * C_in * 16


for H, W in [(9, 7), (32, 32)]:
    direct_count, winograd_count = multiplies(H, W, 5, 4)
    print(f"{H}x{W} image: {direct_count:,} multiplies direct, {winograd_count:,} Winograd "
          f"({direct_count / winograd_count:.2f}x fewer)")
assert multiplies(32, 32, 16, 16)[0] / multiplies(32, 32, 16, 16)[1] == 2.25

# %% [markdown]
# Larger tiles save more. F(4x4, 3x3) takes a 6x6 input tile to a 4x4 output tile with
# $6 \times 6 = 36$ multiplies instead of $16 \times 9 = 144$: 4x fewer. Its transforms come from
# more interpolation points (0, 1, -1, 2, -2 and infinity), so they multiply by up to 8 and divide
# by 24, and float32 rounding grows. Measured against the float64 result:

# %%
x32, w32 = rng.standard_normal((2, 16, 8, 8)), rng.standard_normal((16, 16, 3, 3))
exact = F.conv2d(minires.tensor(x32), minires.tensor(w32), padding=1).numpy()
errors = {}
for tile in (2, 4):
    y32 = winograd_conv2d(x32.astype(np.float32), w32.astype(np.float32), (1, 1), tile=tile)
    errors[tile] = np.abs(y32 - exact).max() / np.abs(exact).max()
    print(f"F({tile}x{tile}, 3x3) in float32: largest error {errors[tile]:.1e} of the largest "
          f"output")
assert errors[2] < errors[4] < 1e-4

# %% [markdown]
# The numba backend (the default on the CPU) runs Winograd for the 3x3 stride-1 layers where it
# measured faster than its direct convolution (`choose_tile` in
# `minires/backends/numba/winograd.py` holds the rule and the measurements behind it), forward
# and both gradients, and its tests compare it with this reference on odd sizes. The larger
# tile rounds worse, as above: in float32, training takes F(2x2), whose rounding is close to a
# direct sum's, and inference (under `no_grad()`, where no gradient and no training curve
# follow) takes the faster F(4x4). For ResNet-20's layers, in float32:

# %%
from minires.backends.numba import winograd  # noqa: E402


def tile_name(tile):
    return f"F({tile}x{tile}, 3x3)" if tile else "direct (conv.py)"


for name, C_in, C_out, size in [("first conv", 3, 16, 32), ("stage 1", 16, 16, 32),
                                ("stage 2", 32, 32, 16), ("stage 3", 64, 64, 8)]:
    training = winograd.choose_tile(C_in, C_out, size, size)
    inference = winograd.choose_tile(C_in, C_out, size, size, training=False)
    print(f"{name}: {C_in}->{C_out} channels at {size}x{size}: training {tile_name(training)}, "
          f"inference {tile_name(inference)}")
    assert (training, inference) == ((None, None) if C_in == 3 else (2, 4))

# %% [markdown]
# ## What we have
#
# - A convolution is a dot product of a filter with every window of the input.
# - im2col turns all the windows into one matrix, so the layer is one GEMM; it costs memory.
# - The backward pass is two more GEMMs, and col2im, the adjoint of im2col, sums the gradient of
#   every copy of a pixel back onto it.
# - Winograd's F(2x2, 3x3) computes the same 3x3 convolution with 2.25x fewer multiplies,
#   F(4x4, 3x3) with 4x fewer, at the price of more float32 rounding.
# - This NumPy code is the reference backend; `backends.using("reference")` runs it inside any
#   model, and the numba and CUDA backends are tested against it.
# - Lesson 10 reads the CUDA versions of im2col, col2im and the GEMM beside this NumPy code.
