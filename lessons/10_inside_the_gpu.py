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
# # Lesson 10: inside the GPU
#
# A ResNet-20 on CIFAR-10 is 64,000 iterations of about 3 x 41 million multiply-adds per image
# for 128 images: some 10^15 operations, days for NumPy, well under an hour for a GPU. minires
# runs on an NVIDIA GPU through CuPy, with its own CUDA kernels for the three functions
# convolution rests on: `im2col`, `col2im` and the GEMM (lesson 4). This lesson reads them
# beside their NumPy specification in `minires/backends/reference.py`.
#
# No GPU? Everything below still runs. minires ships a **CUDA emulator**
# (`minires.backends.using("cuda")` on NumPy arrays): it compiles the very same `.cu` files
# with g++ and runs every thread of every block on the CPU, with NumPy arrays as device
# memory, checking each memory access on the way. The last section runs on a real GPU when
# there is one (`minires.gpu_available()`); `--full` makes its benchmark bigger.

# %%
# ruff: noqa: E402
import inspect
import time
from pathlib import Path

import numpy as np

import minires
import minires.functional as F
from minires import backends, lesson, models, nn
from minires.backends import reference
from minires.backends.cuda import counting, emulator, launch

parser = lesson.parser("Lesson 10: inside the GPU",
                       full_help="a larger benchmark on a real GPU")
args, OUT = lesson.parse(parser)

# %% [markdown]
# ## 1. The seam: one op, three backends
#
# Ops never ask "am I on the GPU?" (or on the CPU). Each op's forward and backward ask
# `get_backend(x)` and call that backend's kernel; `Convolution2D.forward` in
# `minires/ops/conv.py` is
#
# ```python
# self.backend, self.has_bias = get_backend(x), b is not None
# y, self.saved = self.backend.conv2d_forward(x, w, b, self.stride, self.padding)
# ```
#
# Every backend has the same kernels with the same signatures: `reference` (NumPy, the
# specification: `backends/reference.py`), `numba` (compiled CPU kernels, the default for NumPy
# arrays) and `cuda` (always, for CuPy arrays). The CUDA backend is a subclass of the reference
# that swaps in our CUDA kernels where the work is (`backends/cuda/`): `im2col`, `col2im` and
# `gemm`; a `conv2d_forward` that is the reference's column algorithm done as an *implicit*
# GEMM (the tiled GEMM's copies gather the columns from x itself, so `cols` is never stored,
# and the product is written straight into the (N, C, H, W) output); and batchnorm, ReLU and
# the SGD step. What is left, such as pooling, is the reference's own code.
# `backends.using("cuda")` sends NumPy arrays there too, and the kernels run in the emulator.

# %%
x = np.zeros((1, 1, 4, 4), np.float32)
print("NumPy array:                        ", backends.get_backend(x))
with backends.using("cuda"):
    print("NumPy array, inside using(\"cuda\"):", backends.get_backend(x))
    assert backends.get_backend(x).name == "cuda"
cuda = backends.backend("cuda")
print("the CUDA backend's im2col:", cuda.im2col.__module__, "; its conv2d_forward:",
      type(cuda).conv2d_forward.__qualname__, "; its max_pool2d_forward:",
      type(cuda).max_pool2d_forward.__qualname__)
assert isinstance(cuda, reference.Reference)
assert cuda.im2col.__module__ == "minires.backends.cuda.gpu"
assert type(cuda).max_pool2d_forward is reference.Reference.max_pool2d_forward
print("a real GPU here:", minires.gpu_available())
assert backends.get_backend(x).name == "numba"

# %% [markdown]
# ## 2. im2col: the specification and the kernel
#
# The NumPy version copies one strided slice per kernel offset $(k_h, k_w)$: $K_H K_W$
# vectorised copies. A GPU wants the opposite shape of work: thousands of threads, each doing
# one tiny thing. The kernel gives **one thread to each element of `cols`**; thread $i$ works
# out from $i$ alone which element it is, which pixel of $x$ that is, and copies it (or
# writes 0 in the padding).

# %%
print(inspect.getsource(reference.im2col))
source = launch.kernel_source("im2col.cu")
body = source[source.index('extern "C"'):]
print(body)

# %% [markdown]
# The header comment of `kernels/im2col.cu` (read it in full) gives the index math. Here it is
# in NumPy, for every thread at once: `i` runs over all elements of `cols`, and each line is the
# kernel's line. If the math is right, it reproduces `reference.im2col` exactly.

# %%
def im2col_by_thread_index(x, KH, KW, stride, padding):
    N, C, H, W = x.shape
    (sh, sw), (ph, pw) = stride, padding
    H_out = reference.conv_output_size(H, KH, sh, ph)
    W_out = reference.conv_output_size(W, KW, sw, pw)
    n_cols = N * H_out * W_out
    i = np.arange(C * KH * KW * n_cols)  # one "thread" per element of cols
    row, col = i // n_cols, i % n_cols
    kw, kh, c = row % KW, (row // KW) % KH, row // (KW * KH)
    ow, oh, n = col % W_out, (col // W_out) % H_out, col // (W_out * H_out)
    h, w = oh * sh + kh - ph, ow * sw + kw - pw  # where this window element sits in x
    inside = (0 <= h) & (h < H) & (0 <= w) & (w < W)
    flat = ((n * C + c) * H + np.clip(h, 0, H - 1)) * W + np.clip(w, 0, W - 1)
    return np.where(inside, x.reshape(-1)[flat], 0).reshape(C * KH * KW, n_cols)


rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
for stride, padding in [((1, 1), (1, 1)), ((2, 2), (0, 0)), ((2, 1), (1, 2))]:
    same = np.array_equal(im2col_by_thread_index(x, 3, 3, stride, padding),
                           reference.im2col(x, 3, 3, stride, padding))
    print(f"stride {stride}, padding {padding}: thread-index im2col == reference.im2col: {same}")
    assert same

# %% [markdown]
# ## 3. Launch shapes
#
# Threads come in blocks (256 here), blocks in a grid; the grid must cover every element, so
# it has $\lceil \text{size} / 256 \rceil$ blocks and the last one overhangs (hence the
# `if (i >= ...) return;` at the top of the kernel). For the first stage of ResNet-20 at batch
# 128:

# %%
N, C, H, W, KH, KW = 128, 16, 32, 32, 3, 3
cols_size = C * KH * KW * N * H * W
blocks = launch.ceil_div(cols_size, 256)
print(f"cols: {C * KH * KW} x {N * H * W} = {cols_size:,} elements -> grid of {blocks:,} "
      f"blocks of 256 threads")
assert blocks * 256 >= cols_size > (blocks - 1) * 256

from minires.backends.cuda import gpu  # noqa: E402  (pure Python: imports no CuPy)

for name, (M, K, P) in {"forward  y = W @ cols": (16, 144, N * H * W),
                        "weights  dW = dy @ cols^T": (16, N * H * W, 144)}.items():
    splits, k_per_split = gpu.split_k(M, P, K)
    grid = (launch.ceil_div(P, gpu.TILE_N), launch.ceil_div(M, gpu.TILE_M), splits)
    print(f"gemm_tiled, {name}: C is {M} x {P}, K = {K}: grid {grid} "
          f"({grid[0] * grid[1] * grid[2]:,} blocks)")
weight_tiles = launch.ceil_div(144, gpu.TILE_N) * launch.ceil_div(16, gpu.TILE_M)
print(f"the weight gradient's 16 x 144 output: {weight_tiles} tiles of {gpu.TILE_M} x {gpu.TILE_N}")
assert (gpu.TILE_M, gpu.TILE_N) == (64, 64) and weight_tiles == 3 == grid[0] * grid[1]

# %% [markdown]
# The weight gradient is the awkward one: its output is only 16 x 144, three 64 x 64 tiles
# (the grid's first two numbers), which would leave most of a GPU's 132 multiprocessors idle
# while each block walks a K of 131,072. So the wrapper splits K into slices, one block per
# tile and slice, and sums the partial products (`split_k` in `gpu.py`).
#
# ## 4. The same kernels, run by the emulator
#
# Inside `using("cuda")` the CUDA backend compiles the kernels (once, cached on disk) and runs
# them thread by thread. Each must agree with the NumPy specification: im2col and col2im
# exactly (they only copy and add), the GEMMs to float32 rounding.

# %%
cols = reference.im2col(x, 3, 3, (2, 1), (1, 2))
a = rng.standard_normal((5, cols.shape[0])).astype(np.float32)
with backends.using("cuda"):
    start = time.perf_counter()
    assert np.array_equal(gpu.im2col(x, 3, 3, (2, 1), (1, 2)), cols)
    assert np.allclose(gpu.col2im(cols, x.shape, 3, 3, (2, 1), (1, 2)),
                       reference.col2im(cols, x.shape, 3, 3, (2, 1), (1, 2)), atol=1e-5)
    for kind in ("naive", "tiled"):
        previous = gpu.set_gemm(kind)
        difference = np.abs(gpu.gemm(a, cols) - reference.gemm(a, cols)).max()
        gpu.set_gemm(previous)
        print(f"gemm_{kind}: largest difference from NumPy {difference:.1e}")
        assert difference < 1e-4
    print(f"emulated im2col, col2im and both GEMMs agree with reference.py "
          f"({time.perf_counter() - start:.2f} s)")

# %% [markdown]
# And a whole convolution layer, forward and backward, through the GPU backend's code path.
# `Convolution2D` calls three kernels, `conv_forward`, `conv_weight_grad` and `conv_input_grad`
# (version 3 in `kernels/gemm.cu`): the three GEMMs above, with the tile copies doing the index
# math of `im2col` (and, for dx, of `col2im`) themselves, so that no `cols` is ever stored:

# %%
w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
dy = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
results = {}
for name in ("reference", "cuda"):
    xt, wt = minires.tensor(x, requires_grad=True), minires.tensor(w, requires_grad=True)
    with backends.using(name), counting.counting() as count:
        y = F.conv2d(xt, wt, padding=1)
        y.backward(dy)
    results[name] = (y.numpy(), xt.grad, wt.grad)
print("kernels the emulated CUDA conv2d launched:", dict(count.by_name))
assert dict(count.by_name) == {"conv_forward": 1, "conv_weight_grad": 1, "conv_input_grad": 1}
for name, mine, ref in zip(("y", "dx", "dw"), results["cuda"], results["reference"]):
    print(f"conv2d {name}: largest difference, emulated CUDA vs reference "
          f"{np.abs(mine - ref).max():.1e}")
    assert np.allclose(mine, ref, atol=1e-4)

# %% [markdown]
# ## 5. What the emulator catches
#
# On a real GPU a kernel that writes past the end of an array does not crash: it silently
# overwrites whatever lies there, and the bug shows up later, somewhere else. The emulator
# gives every array a guarded allocation and checks every access. Here is `im2col` launched
# with a `cols` array one column too small:

# %%
x_small = np.zeros((1, 1, 4, 4), np.float32)
too_small = np.empty((9, 3), np.float32)  # a 3x3 kernel on 4x4 needs (9, 4)
args_ok = tuple(np.int32(v) for v in (1, 1, 4, 4, 3, 3, 1, 1, 0, 0, 2, 2))
try:
    launch.launch("im2col", grid=(1,), block=(256,), args=(x_small, too_small, *args_ok))
    raise AssertionError("the overrun went unnoticed")
except emulator.EmulatorError as e:
    print("EmulatorError:", e)

# %% [markdown]
# And `launch` checks arguments against the kernel's C signature before anything runs: a
# Python `int` would reach the kernel as 64 bits where it reads 32.

# %%
try:
    launch.launch("im2col", grid=(1,), block=(256,),
                  args=(x_small, np.empty((9, 4), np.float32), 1, 1, 4, 4, 3, 3, 1, 1, 0, 0, 2, 2))
    raise AssertionError("a Python int was accepted")
except TypeError as e:
    print("TypeError:", e)

# %% [markdown]
# ### col2im: gather, don't scatter
#
# The natural GPU col2im gives each *column entry* a thread that adds itself onto its pixel,
# `x[p] += v`. Where windows overlap, two threads add onto the same pixel at the same time, and
# since `+=` is load, add, store, one addition can be lost: a **data race**. minires's kernel
# turns it around: one thread per *pixel* gathers every entry that belongs to it, and no two
# threads ever write the same place (read the header of `kernels/col2im.cu`). The racy version
# is kept in `tests/gpu_broken/col2im_scatter.cu`; the emulator's race detector flags it.

# %%
# In a checkout (an editable install) the tests folder sits beside the package.
broken = Path(minires.__file__).resolve().parents[1] / "tests/gpu_broken/col2im_scatter.cu"
if broken.is_file():
    module = emulator.RawModule(broken.read_text())
    x_shape, conv = (1, 2, 8, 8), (3, 3, 1, 1, 1, 1)  # 3x3 windows, stride 1: they overlap
    cols = rng.standard_normal((2 * 9, 64)).astype(np.float32)
    x_out = np.zeros(x_shape, np.float32)
    try:
        module.get_function("col2im_scatter")((1,), (256,), (cols, x_out, *map(
            np.int32, (*x_shape, *conv, 8, 8))))
        raise AssertionError("the race went unnoticed")
    except emulator.EmulatorError as e:
        print("EmulatorError:", str(e)[:200])
else:
    print(f"({broken} is not here: this section needs a checkout of the repository)")

# %% [markdown]
# ## 6. On a real GPU
#
# With CuPy and an NVIDIA GPU, `model.to("gpu")` moves the weights, a loader's `device="gpu"`
# the batches, and every op runs the kernels above (CuPy's `RawModule` compiles them with
# NVRTC). The results must match the CPU to float32 rounding; the speed is the point.

# %%
if minires.gpu_available():
    batch = 128 if args.full else 32
    nn.init.manual_seed(0)
    model = models.resnet20()
    xb = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    with minires.no_grad():
        model.eval()
        y_cpu = model(minires.tensor(xb)).numpy()
        model.to("gpu")
        y_gpu = model(minires.tensor(xb).to("gpu")).numpy()
    difference = np.abs(y_gpu - y_cpu).max() / np.abs(y_cpu).max()
    print(f"ResNet-20 logits, GPU vs CPU: largest difference {difference:.1e} of the largest logit")
    assert difference < 1e-3  # float32 sums in another order, through 20 layers
    model.train()
    xg = minires.tensor(xb).to("gpu")
    labels = backends.to_device(rng.integers(0, 10, batch), "gpu")
    for kind in ("tiled", "naive", "cublas"):
        previous = gpu.set_gemm(kind)
        times = []
        for _ in range(5 if args.full else 3):
            start = time.perf_counter()
            F.cross_entropy(model(xg), labels).backward()
            backends.import_cupy().cuda.Device().synchronize()
            times.append(time.perf_counter() - start)
        gpu.set_gemm(previous)
        print(f"gemm {kind:<7}: forward + backward of {batch} images in "
              f"{min(times) * 1e3:.1f} ms ({batch / min(times):,.0f} images/s)")
else:
    print("No GPU here (or no CuPy): this section runs where `minires.gpu_available()` is "
          "True. Install the extra for your CUDA version, e.g. pip install -e \".[gpu-cuda12]\".")

# %% [markdown]
# ## What we have
#
# - The backend seam: ops ask their arrays which `im2col`, `col2im` and `gemm` to use.
# - Each kernel gives one thread one output element and recomputes its indices from the
#   thread number; the NumPy code is the specification it must match.
# - col2im gathers instead of scattering, so it needs no atomics.
# - The training step fuses im2col and col2im into the tiled GEMM's tile copies (implicit
#   GEMM, version 3 of `kernels/gemm.cu`): the same index math, no `cols` in memory, 37 fewer
#   launches per ResNet-20 step.
# - The emulator runs the real kernels on a CPU and catches out-of-bounds accesses, wrong
#   arguments and data races that a GPU would let pass silently.
#
# Further: `benchmarks/bench_gpu.py` compares the kernels with cuBLAS and PyTorch, and the
# header of `kernels/gemm.cu` works out what limits each GEMM on an H100.
