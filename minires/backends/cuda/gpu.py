"""The CUDA backend's im2col, col2im and gemm: reference.py's, computed by kernels/*.cu; and the
convolution's three products as implicit GEMMs (conv_forward, conv_weight_grad, conv_input_grad:
gemm.cu's version 3, the tiled GEMM gathering from the images, no cols), which a training step runs.

im2col, col2im and gemm have the functions, signatures and layouts of reference.py (the
specification); the conv_* wrappers compute what reference.conv2d_forward/backward do. Each wrapper
checks its arrays, allocates the output with `xp`, works out the launch shape and calls
`launch(kernel, grid, block, args)`; launch.py compiles and runs the kernel (CuPy on a GPU, the
CUDA emulator on NumPy arrays). Lesson 10 reads this file beside reference.py and the kernels.

dtypes: the kernels compute in float32, the dtype networks train in. float64, which the gradient
checks use, takes the reference path instead: reference.py's own code, via host memory for CuPy
arrays (slow, but gradient checks are small), and cuBLAS/NumPy for gemm. Other dtypes raise
TypeError.
"""

from typing import NamedTuple

import numpy as np

from .. import reference
from ..devices import get_array_module
from ..reference import conv_output_size
from .launch import ceil_div, launch

__all__ = ["ConvSaved", "col2im", "conv_forward", "conv_input_grad", "conv_output_size",
           "conv_weight_grad", "gemm", "gemm_images", "get_gemm", "im2col", "set_gemm"]

THREADS = 256  # threads per block of the one-thread-per-element kernels (im2col, col2im)
NAIVE_BLOCK = (32, 8)  # gemm_naive: 32 columns x 8 rows of C per block
TILE_M, TILE_N, TILE_K = 64, 64, 16  # gemm_tiled's BM, BN, BK: must match kernels/gemm.cu
TILED_THREADS = 256  # gemm_tiled's THREADS = (BM / TM) * (BN / TN)
# Split K when C has too few tiles to keep a GPU busy (the weight gradient): aim for this many
# blocks, each still walking at least MIN_K_PER_SPLIT of K.
TARGET_BLOCKS = 512
MIN_K_PER_SPLIT = 128
INT32_MAX = 2**31 - 1  # the kernels index with 32-bit ints
# The last block's threads compute indices up to one block past the end before their bounds
# check, so sizes must leave that much room below INT32_MAX.
MAX_BLOCK_THREADS = 1024

GEMM_KINDS = ("tiled", "naive", "cublas")
_gemm_kind = "tiled"


def set_gemm(kind):
    """Choose the float32 GEMM: our "tiled" kernel (default), our "naive" one, or "cublas"
    (`cupy.matmul`; NumPy's matmul under the emulator), to compare them. Returns the old kind."""
    global _gemm_kind
    if kind not in GEMM_KINDS:
        raise ValueError(f"set_gemm: kind must be one of {GEMM_KINDS}, got {kind!r}")
    previous, _gemm_kind = _gemm_kind, kind
    return previous


def get_gemm():
    """The GEMM in use: "tiled", "naive" or "cublas"."""
    return _gemm_kind


def im2col(x, KH, KW, stride, padding):
    """cols[(c,kh,kw), (n,oh,ow)] = x_padded[n, c, oh*sh + kh, ow*sw + kw], as reference.im2col."""
    if x.dtype == np.float64:
        return _like(x, reference.im2col(_host(x), KH, KW, stride, padding))
    x = _kernel_input("im2col", x)
    N, C, H, W = x.shape
    (sh, sw), (ph, pw) = stride, padding
    H_out = conv_output_size(H, KH, sh, ph)
    W_out = conv_output_size(W, KW, sw, pw)
    cols = _empty(x, (C * KH * KW, N * H_out * W_out))
    _check_fits("im2col", x.size, cols.size)
    launch("im2col", grid=(ceil_div(cols.size, THREADS),), block=(THREADS,),
           args=(x, cols, *_int32(N, C, H, W, KH, KW, sh, sw, ph, pw, H_out, W_out)))
    return cols


def col2im(cols, x_shape, KH, KW, stride, padding):
    """The adjoint of im2col: each pixel gathers the column entries copied from it, as
    reference.col2im."""
    if cols.dtype == np.float64:
        return _like(cols, reference.col2im(_host(cols), x_shape, KH, KW, stride, padding))
    cols = _kernel_input("col2im", cols)
    N, C, H, W = x_shape
    (sh, sw), (ph, pw) = stride, padding
    H_out = conv_output_size(H, KH, sh, ph)
    W_out = conv_output_size(W, KW, sw, pw)
    if cols.shape != (C * KH * KW, N * H_out * W_out):
        raise ValueError(f"col2im: cols has shape {cols.shape}, but x_shape {tuple(x_shape)} with "
                         f"a {KH}x{KW} kernel needs {(C * KH * KW, N * H_out * W_out)}")
    x = _empty(cols, (N, C, H, W))  # every pixel is written: no zeroing
    _check_fits("col2im", x.size, cols.size)
    launch("col2im", grid=(ceil_div(x.size, THREADS),), block=(THREADS,),
           args=(cols, x, *_int32(N, C, H, W, KH, KW, sh, sw, ph, pw, H_out, W_out)))
    return x


def gemm(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b), op transposing when asked, as reference.gemm; the kernel is set_gemm()'s
    choice."""
    M, K = a.shape[::-1] if trans_a else a.shape
    K_b, N = b.shape[::-1] if trans_b else b.shape
    if K != K_b:
        raise ValueError(f"gemm: op(a) is {M}x{K} but op(b) is {K_b}x{N} "
                         f"(a {a.shape}, trans_a={trans_a}; b {b.shape}, trans_b={trans_b})")
    if a.dtype != b.dtype:
        raise TypeError(f"gemm: a is {a.dtype} but b is {b.dtype}")
    if a.dtype != np.float64:
        a, b = _kernel_input("gemm", a), _kernel_input("gemm", b)  # float32, or a TypeError
    if a.dtype == np.float64 or _gemm_kind == "cublas":
        # `@`: cupy.matmul, i.e. cuBLAS, on CuPy arrays
        return reference.gemm(a, b, trans_a, trans_b)
    if _gemm_kind == "naive":
        c = _empty(a, (M, N))
        _check_fits("gemm", a.size, b.size, c.size)
        launch("gemm_naive", grid=(ceil_div(N, NAIVE_BLOCK[0]), ceil_div(M, NAIVE_BLOCK[1])),
               block=NAIVE_BLOCK, args=(a, b, c, *_int32(M, N, K, trans_a, trans_b)))
        return c
    return _gemm_tiled(a, b, M, N, K, trans_a, trans_b)


def gemm_images(a, b, trans_a=False, trans_b=False, a_hw=0, b_hw=0, c_hw=0):
    """gemm, with conv2d's channel-major matrices held as NCHW images and never transposed:
    a_hw > 0 reads op(a), the (C, N*a_hw) matrix of an (N, C, H, W) array a (H*W = a_hw), in
    place; b_hw likewise; c_hw > 0 writes the result as images (N, M, c_hw). Our tiled kernel
    only: callers check get_gemm() == "tiled" and float32 first."""
    a, b = _kernel_input("gemm", a), _kernel_input("gemm", b)
    M, K = (a.shape[1], a.size // max(a.shape[1], 1)) if a_hw else (
        a.shape[::-1] if trans_a else a.shape)
    K_b, N = (b.shape[1], b.size // max(b.shape[1], 1)) if b_hw else (
        b.shape[::-1] if trans_b else b.shape)
    if K != K_b or (a_hw and trans_a) or (b_hw and trans_b) or (c_hw and N % c_hw):
        raise ValueError(f"gemm_images: cannot multiply a {a.shape} (trans_a={trans_a}, "
                         f"a_hw={a_hw}) by b {b.shape} (trans_b={trans_b}, b_hw={b_hw}) into "
                         f"images of {c_hw} pixels")
    c = _gemm_tiled(a, b, M, N, K, trans_a, trans_b, a_hw, b_hw, c_hw)
    return c.reshape(N // c_hw, M, c_hw) if c_hw else c  # (N, C_out, H_out*W_out)


def _gemm_tiled(a, b, M, N, K, trans_a, trans_b, a_hw=0, b_hw=0, c_hw=0):
    """Launch gemm_tiled on contiguous float32 a, b: C (M, N), in c_hw's layout."""
    c = _empty(a, (M, N))  # as images (N // c_hw, M, c_hw) when c_hw
    _launch_tiled("gemm_tiled", a, b, c, M, N, K,
                  lambda k_per_split: (M, N, K, trans_a, trans_b, k_per_split, a_hw, b_hw, c_hw))
    return c


def _launch_tiled(kernel, a, b, c, M, N, K, int_args):
    """Launch a kernel of gemm.cu's tiled versions (2 and 3) for C (M, N) = op(A) (M, K) @
    op(B) (K, N): kernel(a, b, c, partials, tile_counters, *int_args(k_per_split))."""
    if M == 0 or N == 0:
        return  # nothing to compute, and no tiles to split K over
    splits, k_per_split = split_k(M, N, K)
    # One partial product per slice of K, summed by the kernel (unused when K is not split).
    partials = _empty(a, (splits, M, N) if splits > 1 else (1,))
    _check_fits(kernel, a.size, b.size, c.size, partials.size, M * N, M * K, K * N)
    launch(kernel, grid=(ceil_div(N, TILE_N), ceil_div(M, TILE_M), splits),
           block=(TILED_THREADS,),
           args=(a, b, c, partials, tile_counters(a), *_int32(*int_args(k_per_split))))


# -- the convolution as implicit GEMMs (gemm.cu, version 3) --------------------------------------

class ConvSaved(NamedTuple):
    """What conv_forward's backward needs: x itself (no cols) and w."""
    x: object
    w: object


def conv_forward(x, w, stride, padding):
    """y = w2 @ im2col(x), as (N, C_out, H_out, W_out), with im2col(x) gathered from x inside
    the GEMM's tile copies (reference.conv2d_forward without its bias and without cols)."""
    x, w = _kernel_input("conv_forward", x), _kernel_input("conv_forward", w)
    shape = _conv_shape(x.shape, w.shape, stride, padding)
    N, C_in, _, _, C_out, KH, KW, *_, H_out, W_out = shape
    y = _empty(x, (N, C_out, H_out, W_out))
    _launch_tiled("conv_forward", w, x, y, C_out, N * H_out * W_out, C_in * KH * KW,
                  lambda k_per_split: (*shape, k_per_split))
    return y


def conv_weight_grad(x, dy, w_shape, stride, padding):
    """dw = dy2 @ im2col(x)^T, (C_out, C_in, KH, KW), dy2 read in place from NCHW dy; K (the
    N*H_out*W_out pixels) is split as gemm's weight gradient is."""
    x, dy = _kernel_input("conv_weight_grad", x), _kernel_input("conv_weight_grad", dy)
    shape = _conv_shape(x.shape, w_shape, stride, padding)
    N, C_in, _, _, C_out, KH, KW, *_, H_out, W_out = shape
    _check_output_shape("conv_weight_grad", dy, (N, C_out, H_out, W_out))
    dw = _empty(x, tuple(w_shape))
    _launch_tiled("conv_weight_grad", dy, x, dw, C_out, C_in * KH * KW, N * H_out * W_out,
                  lambda k_per_split: (*shape, k_per_split))
    return dw


def conv_input_grad(w, dy, x_shape, stride, padding):
    """dx = col2im(w2^T @ dy2) as one GEMM: dx[n, c, h, w] = sum over (k, kh, kw) of
    w[k, c, kh, kw] * dy[n, k, oh, ow] where h = oh*stride_h - pad_h + kh (likewise w), each
    pixel of dx written by one thread."""
    w, dy = _kernel_input("conv_input_grad", w), _kernel_input("conv_input_grad", dy)
    shape = _conv_shape(x_shape, w.shape, stride, padding)
    N, C_in, H, W, C_out, KH, KW, *_, H_out, W_out = shape
    _check_output_shape("conv_input_grad", dy, (N, C_out, H_out, W_out))
    dx = _empty(w, (N, C_in, H, W))
    _launch_tiled("conv_input_grad", w, dy, dx, C_in, N * H * W, C_out * KH * KW,
                  lambda k_per_split: (*shape, k_per_split))
    return dx


def _conv_shape(x_shape, w_shape, stride, padding):
    """The sizes gemm.cu's ConvShape holds, in its order."""
    N, C_in, H, W = x_shape
    C_out, C_w, KH, KW = w_shape
    if C_w != C_in:
        raise ValueError(f"conv2d: x {tuple(x_shape)} has {C_in} channels, w {tuple(w_shape)} "
                         f"expects {C_w}")
    (sh, sw), (ph, pw) = stride, padding
    H_out, W_out = conv_output_size(H, KH, sh, ph), conv_output_size(W, KW, sw, pw)
    return N, C_in, H, W, C_out, KH, KW, sh, sw, ph, pw, H_out, W_out


def _check_output_shape(op, dy, shape):
    if dy.shape != shape:
        raise ValueError(f"{op}: dy has shape {dy.shape}, the convolution's output {shape}")


_tile_counters = {}  # (array module, device): gemm_tiled's split-K counters, kept all zero


def tile_counters(like):
    """The zeroed int32 counters gemm_tiled's split K counts finished slices in, one per tile
    (split_k splits only when C has fewer than TARGET_BLOCKS tiles), on like's device. Made once
    per device: the kernel leaves them zero, so no launch zeroes them again."""
    xp = get_array_module(like)
    key = (xp.__name__, getattr(getattr(like, "device", None), "id", None))
    if key not in _tile_counters:
        _tile_counters[key] = xp.zeros(TARGET_BLOCKS, dtype=np.int32)
    return _tile_counters[key]


def split_k(M, N, K):
    """(splits, k_per_split): cut K into slices (multiples of TILE_K) when C alone has fewer than
    TARGET_BLOCKS tiles, as in the weight gradient (C is C_out x C_in*KH*KW, K is N*H_out*W_out)."""
    tiles = max(1, ceil_div(M, TILE_M) * ceil_div(N, TILE_N))  # C may be empty
    splits = max(1, min(ceil_div(TARGET_BLOCKS, tiles), K // MIN_K_PER_SPLIT))
    k_per_split = ceil_div(ceil_div(max(K, 1), splits), TILE_K) * TILE_K
    return ceil_div(max(K, 1), k_per_split), k_per_split  # no empty slice at the end


def _kernel_input(op, a):
    """a as a contiguous float32 array: a kernel indexes raw memory, so it cannot follow strides."""
    if a.dtype != np.float32:
        raise TypeError(f"{op}: the GPU kernels compute in float32 (float64 takes the reference "
                        f"path), got {a.dtype}: convert with .astype(numpy.float32)")
    return get_array_module(a).ascontiguousarray(a)


def _empty(like, shape):
    """An unfilled float32 array of this shape where `like` lives (empty_like, rather than
    xp.empty, also keeps counting.py's CountingArrays counting)."""
    return get_array_module(like).empty_like(like, dtype=np.float32, order="C", shape=shape)


def _int32(*values):
    """Kernel int parameters are 32 bits: CuPy would pass a Python int as 64."""
    return tuple(np.int32(v) for v in values)


def _check_fits(op, *sizes):
    if max(sizes) > INT32_MAX - MAX_BLOCK_THREADS:
        raise ValueError(f"{op}: an array of {max(sizes)} elements is too large for the kernels' "
                         "32-bit indices; use a smaller batch")


def _host(a):
    """a as a NumPy array (the reference path computes on the host)."""
    return a if get_array_module(a) is np else a.get()


def _like(a, result):
    """result moved to where a lives."""
    return get_array_module(a).asarray(result)
