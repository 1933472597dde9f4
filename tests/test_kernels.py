"""The CUDA kernels of kernels/*.cu against the NumPy specification (minires/backends/reference.py).

Each kernel runs through the GPU backend's wrappers (gpu.py, launch.py) on NumPy arrays, so under
the CUDA emulator (kernels/emu), with its race detector on; on awkward shapes: sizes that are not
tile multiples, stride 2, padding 0/1/2, batch 1, 1x1 and 3x3 kernels, non-square everything.
Then the emulator's own strictness: deliberately broken kernels must fail. Last, nvcc compiles
every kernel for three GPU generations with warnings as errors and no register spills.
"""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from minires.backends import reference
from minires.backends.cuda import emulator, gpu, launch

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulator needs g++")

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
BROKEN = Path(__file__).resolve().parent / "gpu_broken"

# (N, C, H, W), (KH, KW), stride, padding
CONV_CASES = [
    ((1, 1, 5, 5), (3, 3), (1, 1), (1, 1)),  # batch 1, one channel
    ((2, 3, 7, 6), (3, 3), (2, 2), (1, 1)),  # stride 2, non-square image
    ((2, 4, 6, 9), (1, 1), (1, 1), (0, 0)),  # 1x1 kernel
    ((2, 3, 5, 4), (1, 1), (2, 2), (0, 0)),  # 1x1 stride 2, like a downsampling shortcut
    ((1, 2, 9, 7), (2, 3), (2, 1), (2, 0)),  # non-square kernel, mixed stride, padding 2
    ((3, 2, 5, 5), (3, 3), (1, 1), (2, 2)),  # padding 2 everywhere
    ((2, 8, 8, 8), (3, 3), (1, 1), (1, 1)),  # several blocks of 256 threads
]

# (M, N, K): op(A) is M x K, op(B) is K x N
GEMM_CASES = [
    (1, 1, 1),
    (5, 7, 3),
    (64, 64, 16),  # exactly one tile
    (65, 63, 17),  # one past / one short of the tile in every direction
    (130, 70, 40),  # several tiles and K steps
    (20, 30, 1000),  # one tile of C: K is split into slices (split_k)
    (70, 130, 700),  # 2 x 3 tiles, K in 5 slices, each tile summed by its last block
]

TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]


def random(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def gemm_operands(M, N, K, trans_a, trans_b, seed=0):
    a = random(*((K, M) if trans_a else (M, K)), seed=seed)
    b = random(*((N, K) if trans_b else (K, N)), seed=seed + 1)
    return a, b


@pytest.fixture
def gemm_kind():
    """Restores the default GEMM after a test that changes it."""
    previous = gpu.get_gemm()
    yield
    gpu.set_gemm(previous)


# -- every kernel against the specification ----------------------------------------------------

@pytest.mark.parametrize("x_shape, kernel, stride, padding", CONV_CASES)
def test_im2col_matches_numpy(x_shape, kernel, stride, padding):
    x = random(*x_shape)
    cols = gpu.im2col(x, *kernel, stride, padding)
    expected = reference.im2col(x, *kernel, stride, padding)
    assert cols.dtype == np.float32 and cols.shape == expected.shape
    np.testing.assert_array_equal(cols, expected)  # a copy: exact


@pytest.mark.parametrize("x_shape, kernel, stride, padding", CONV_CASES)
def test_col2im_matches_numpy(x_shape, kernel, stride, padding):
    cols_shape = reference.im2col(np.zeros(x_shape, np.float32), *kernel, stride, padding).shape
    cols = random(*cols_shape)
    x = gpu.col2im(cols, x_shape, *kernel, stride, padding)
    assert x.shape == x_shape and x.flags.c_contiguous
    np.testing.assert_allclose(x, reference.col2im(cols, x_shape, *kernel, stride, padding),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["tiled", "naive"])
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("M, N, K", GEMM_CASES)
def test_gemm_matches_numpy(gemm_kind, kind, M, N, K, trans_a, trans_b):
    gpu.set_gemm(kind)
    a, b = gemm_operands(M, N, K, trans_a, trans_b)
    c = gpu.gemm(a, b, trans_a, trans_b)
    expected = reference.gemm(a.astype(np.float64), b.astype(np.float64), trans_a, trans_b)
    assert c.shape == (M, N) and c.dtype == np.float32
    np.testing.assert_allclose(c, expected, rtol=1e-4, atol=1e-4 * np.sqrt(K))


def test_gemm_accepts_views_and_cublas_kind(gemm_kind):
    a, b = random(30, 40), random(20, 40, seed=1)
    expected = reference.gemm(a, b.T)
    np.testing.assert_allclose(gpu.gemm(a, b.T), expected, rtol=1e-5, atol=1e-4)  # copied first
    gpu.set_gemm("cublas")  # NumPy's matmul under the emulator
    np.testing.assert_allclose(gpu.gemm(a, b, trans_b=True), expected, rtol=1e-5, atol=1e-4)


def test_split_k_cuts_the_weight_gradient_only():
    # ResNet-20, batch 128, first stage: dW = dy @ cols^T is 16 x 144 with K = 131072.
    splits, k_per_split = gpu.split_k(16, 144, 131072)
    assert splits > 100 and k_per_split % gpu.TILE_K == 0
    assert (splits - 1) * k_per_split < 131072 <= splits * k_per_split  # no empty slice
    assert gpu.split_k(16, 131072, 144) == (1, 144)  # the forward GEMM has tiles enough
    assert gpu.split_k(20, 30, 1000)[0] == 7  # the split case of GEMM_CASES really splits


def test_tile_sizes_agree_with_gemm_cu():
    source = (KERNELS / "gemm.cu").read_text()
    sizes = dict(re.findall(r"constexpr int (\w+) = (\d+);", source))
    assert (int(sizes["BM"]), int(sizes["BN"]), int(sizes["BK"])) == (
        gpu.TILE_M, gpu.TILE_N, gpu.TILE_K)
    tm, tn = int(sizes["TM"]), int(sizes["TN"])
    assert (gpu.TILE_M // tm) * (gpu.TILE_N // tn) == gpu.TILED_THREADS


def test_float64_takes_the_reference_path(gemm_kind):
    x = random(2, 3, 5, 4, dtype=np.float64)
    cols = gpu.im2col(x, 3, 3, (1, 1), (1, 1))
    assert cols.dtype == np.float64
    np.testing.assert_array_equal(cols, reference.im2col(x, 3, 3, (1, 1), (1, 1)))
    dx = gpu.col2im(cols, x.shape, 3, 3, (1, 1), (1, 1))
    np.testing.assert_array_equal(dx, reference.col2im(cols, x.shape, 3, 3, (1, 1), (1, 1)))
    w = random(4, 27, dtype=np.float64)
    assert gpu.gemm(w, cols).dtype == np.float64


def test_other_dtypes_are_refused_by_name(gemm_kind):
    with pytest.raises(TypeError, match="float16"):
        gpu.im2col(random(1, 1, 3, 3).astype(np.float16), 3, 3, (1, 1), (0, 0))
    with pytest.raises(TypeError, match="int32"):
        gpu.gemm(np.ones((2, 2), np.int32), np.ones((2, 2), np.int32))
    with pytest.raises(TypeError, match="float32.*float64"):
        gpu.gemm(random(2, 2), random(2, 2, dtype=np.float64))
    with pytest.raises(ValueError, match="3x4"):
        gpu.gemm(random(3, 4), random(5, 2))
    with pytest.raises(ValueError, match="kind"):
        gpu.set_gemm("cutlass")


# -- the emulator catches broken kernels -------------------------------------------------------

def broken_gemm(monkeypatch, code, replacement):
    """Make gpu.gemm run the shipped tiled kernel with one piece of code replaced."""
    source = launch.kernel_source("gemm.cu")
    assert source.count(code) == 1, "gemm.cu changed: update this test"
    broken = source.replace(code, replacement)
    monkeypatch.setattr(launch, "kernel_source", lambda file_name: broken)


@pytest.mark.parametrize("barrier", ["the tiles are complete", "everyone has finished reading"])
def test_tiled_gemm_without_a_barrier_fails(monkeypatch, gemm_kind, barrier):
    broken_gemm(monkeypatch, f"__syncthreads();  // {barrier}", f"// (removed) {barrier}")
    gpu.set_gemm("tiled")
    a, b = gemm_operands(70, 40, 50, False, False)  # 3 steps along K: the 2nd barrier matters
    with pytest.raises(emulator.EmulatorError, match="__shared__ memory"):
        gpu.gemm(a, b)
    with emulator.race_detection(False):  # run it to the end: the numbers are wrong
        c = gpu.gemm(a, b)
    assert not np.allclose(c, a @ b, rtol=1e-3, atol=1e-3)


def test_tiled_gemm_without_bounds_check_fails(monkeypatch, gemm_kind):
    broken_gemm(monkeypatch, "m0 + m < M && ", "")
    gpu.set_gemm("tiled")
    a, b = gemm_operands(65, 10, 17, False, False)  # the second row of tiles overhangs A
    with pytest.raises(emulator.EmulatorError, match="out-of-bounds access: reads .* of A"):
        gpu.gemm(a, b)


def run_col2im_kernel(kernel_name, cols, x_shape, KH, KW, stride, padding):
    module = emulator.RawModule((BROKEN / "col2im_scatter.cu").read_text())
    N, C, H, W = x_shape
    H_out = reference.conv_output_size(H, KH, stride[0], padding[0])
    W_out = reference.conv_output_size(W, KW, stride[1], padding[1])
    x = np.zeros(x_shape, np.float32)
    args = (N, C, H, W, KH, KW, *stride, *padding, H_out, W_out)
    module.get_function(kernel_name)((launch.ceil_div(N * H_out * W_out, 256),), (256,),
                                     (cols, x, *map(np.int32, args)))
    return x


def test_scatter_col2im_race_is_caught():
    x_shape, conv = (1, 2, 8, 8), (3, 3, (1, 1), (1, 1))  # windows overlap: 3x3, stride 1
    cols = random(2 * 9, 64)
    expected = reference.col2im(cols, x_shape, *conv)
    with pytest.raises(emulator.EmulatorError, match="data race on element .* of x"):
        run_col2im_kernel("col2im_scatter", cols, x_shape, *conv)
    with emulator.race_detection(False):  # threads interleave in x[p] += v: updates get lost
        x = run_col2im_kernel("col2im_scatter", cols, x_shape, *conv)
    assert not np.allclose(x, expected, atol=1e-3)
    x = run_col2im_kernel("col2im_scatter_atomic", cols, x_shape, *conv)  # the atomicAdd fix
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_name, message", [
    ("exit_before_barrier", "waits at __syncthreads.. but 212 of the block's 256 threads"),
    ("copy_unchecked", "out-of-bounds access: reads 4 bytes at element 300 of x, which has 300"),
    ("all_write_one", "data race on element 0 of y"),
])
def test_emulator_reports_classic_bugs(kernel_name, message):
    module = emulator.RawModule((BROKEN / "emulator_checks.cu").read_text())
    x, y = np.ones(300, np.float32), np.zeros(300, np.float32)
    with pytest.raises(emulator.EmulatorError, match=message):
        module.get_function(kernel_name)((2,), (256,), (x, y, np.int32(300)))


def test_emulator_checks_launch_arguments():
    im2col = emulator.RawModule(launch.kernel_source("im2col.cu")).get_function("im2col")
    x, cols = np.zeros((1, 1, 3, 3), np.float32), np.zeros((9, 1), np.float32)
    ints = [np.int32(v) for v in (1, 1, 3, 3, 3, 3, 1, 1, 0, 0, 1, 1)]
    im2col((1,), (32,), (x, cols, *ints))
    with pytest.raises(TypeError, match=r"argument 2 \(int N\) must be numpy.int32, got int"):
        im2col((1,), (32,), (x, cols, 1, *ints[1:]))
    with pytest.raises(TypeError, match="non-contiguous"):
        im2col((1,), (32,), (x, np.zeros((9, 2), np.float32)[:, :1], *ints))
    with pytest.raises(TypeError, match="takes 14 arguments"):
        im2col((1,), (32,), (x, cols))
    with pytest.raises(ValueError, match="more than 1024 threads"):
        im2col((1,), (64, 32), (x, cols, *ints))
    with pytest.raises(NotImplementedError, match="dynamic shared memory"):
        im2col((1,), (32,), (x, cols, *ints), shared_mem=1024)


# -- the real compiler -------------------------------------------------------------------------

ARCHS = ("75", "80", "90")  # Turing, Ampere, Hopper


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not installed")
def test_nvcc_compiles_every_kernel_without_warnings_or_spills(tmp_path):
    """Every .cu builds for sm_75, sm_80 and sm_90 with warnings as errors; ptxas reports no
    register spills (device-code only, --fatbin: no host compiler run; files in parallel)."""
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    sources = sorted(KERNELS.glob("*.cu"))
    assert {s.name for s in sources} >= set(launch.KERNEL_FILES.values())
    jobs = [subprocess.Popen(["nvcc", "-std=c++17", "--fatbin", "--Werror", "all-warnings",
                              "-Xptxas", "-v,-warn-spills", *gencode, str(source),
                              "-o", str(tmp_path / f"{source.stem}.fatbin")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for source in sources]
    reports = {}
    for source, job in zip(sources, jobs):
        output = job.communicate(timeout=300)[0]
        assert job.returncode == 0, f"nvcc failed on {source.name}:\n{output}"
        for kernel, arch, properties in re.findall(
                r"Compiling entry function '(\w+)' for 'sm_(\d+)'\n.*?\n(.*?spill loads)", output):
            reports[kernel, arch] = properties
    for kernel in launch.KERNEL_FILES:
        for arch in ARCHS:
            assert "0 bytes spill stores, 0 bytes spill loads" in reports[kernel, arch], (
                kernel, arch, reports[kernel, arch])


# -- the stricter checks: each has a broken kernel it must catch, and correct kernels it must pass

def stricter(kernel_name):
    return emulator.RawModule((BROKEN / "stricter_checks.cu").read_text()).get_function(
        kernel_name)


def correct(kernel_name):
    return emulator.RawModule((BROKEN / "correct_kernels.cu").read_text()).get_function(
        kernel_name)


@pytest.mark.parametrize("kernel_name, message", [
    ("different_barriers", r"__syncthreads\(\) of line \d+ while thread .* line \d+"),
    ("last_reader_writes", "data race on __shared__ memory: this thread writes it, .* read it"),
    ("store_races_atomic", "data race on element 0 of y: .* atomically updat"),
    ("shared_overflow", "thread .63,0,0.: out-of-bounds access: writes 4 bytes at 0 bytes past "
                        "the end of the __shared__ array tile"),
])
def test_stricter_checks_catch_broken_kernels(kernel_name, message):
    threads = 64 if kernel_name == "shared_overflow" else 256
    x, y = random(threads), np.zeros(threads, np.float32)
    with pytest.raises(emulator.EmulatorError, match=message):
        stricter(kernel_name)((1,), (threads,), (x, y, np.int32(threads)))


def test_a_result_that_depends_on_thread_order_is_caught():
    x = np.abs(random(100)) + 1
    y, count = np.zeros(100, np.float32), np.zeros(1, np.float32)
    with pytest.raises(emulator.EmulatorError, match="depends on the order threads run"):
        stricter("compact_unordered")((1,), (128,), (x, y, count, np.int32(100)))


def test_blocks_are_ordered_only_by_a_fence_and_an_atomic():
    """The last-block sum (gemm_tiled's split K) passes, in both block orders; without the
    fence, the last block's read of another block's partial sum is a race."""
    x = random(1000)
    partial, count, total = np.zeros(8, np.float32), np.zeros(1, np.int32), np.zeros(1, np.float32)
    correct("last_block_sum")((8,), (128,), (x, partial, count, total, np.int32(1000)))
    np.testing.assert_allclose(total[0], x.sum(), rtol=1e-5, atol=1e-4)
    assert count[0] == 0
    with pytest.raises(emulator.EmulatorError, match="data race on element 0 of partial"):
        stricter("last_block_unfenced")((8,), (128,), (x, partial, count, total, np.int32(1000)))


@pytest.mark.parametrize("threads", [48, 100, 256])
def test_block_sizes_that_are_not_a_multiple_of_32(threads):
    """The emulator runs any block shape, partial warps included: a reduction that assumes a
    power-of-2 block is wrong at 48 and 100 threads; the strided tree is right at each size."""
    x = random(threads)
    y = np.zeros(1, np.float32)
    correct("tree_sum")((1,), (threads,), (x, y, np.int32(threads)))
    np.testing.assert_allclose(y[0], x.sum(), rtol=1e-5, atol=1e-5)
    stricter("tree_sum_power_of_two")((1,), (threads,), (x, y, np.int32(threads)))
    assert np.isclose(y[0], x.sum(), rtol=1e-5, atol=1e-5) == (threads == 256)


def test_correct_kernels_are_not_flagged():
    x = random(1000)
    sums = np.zeros(4, np.float32)
    correct("tree_sum")((4,), (250,), (x, sums, np.int32(1000)))
    np.testing.assert_allclose(sums, x.reshape(4, 250).sum(axis=1), rtol=1e-5, atol=1e-4)

    H, W = 45, 70  # neither a multiple of the 32 x 32 tile
    a = random(H, W)
    t = np.zeros((W, H), np.float32)
    correct("transpose_tiled")((3, 2), (32, 8), (a, t, np.int32(H), np.int32(W)))
    np.testing.assert_array_equal(t, a.T)

    values = np.random.default_rng(0).integers(0, 10, 3000).astype(np.float32)
    counts = np.zeros(10, np.float32)
    correct("histogram")((3,), (128,), (values, counts, np.int32(3000), np.int32(10)))
    np.testing.assert_array_equal(counts, np.bincount(values.astype(int), minlength=10))


# -- defects from the review (issue 13, item 6) ----------------------------------------------------

@pytest.mark.parametrize("M, N, K", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
def test_gemm_of_empty_shapes(gemm_kind, M, N, K):
    for kind in ("tiled", "naive"):
        gpu.set_gemm(kind)
        c = gpu.gemm(np.ones((M, K), np.float32), np.ones((K, N), np.float32))
        assert c.shape == (M, N) and c.dtype == np.float32
        np.testing.assert_array_equal(c, 0)
    assert gpu.split_k(0, 7, 1000)[0] >= 1  # no division by zero


def test_cublas_gemm_checks_the_dtype_too(gemm_kind):
    gpu.set_gemm("cublas")
    with pytest.raises(TypeError, match="float16"):
        gpu.gemm(np.ones((2, 2), np.float16), np.ones((2, 2), np.float16))


def test_sizes_leave_room_for_the_last_block():
    gpu._check_fits("im2col", gpu.INT32_MAX - gpu.MAX_BLOCK_THREADS)
    with pytest.raises(ValueError, match="32-bit"):
        gpu._check_fits("im2col", gpu.INT32_MAX - 100)  # i of the last block would overflow


def test_launch_refuses_host_and_device_arrays_together(monkeypatch):
    class DeviceArray(np.ndarray):
        """Stands in for a CuPy array: get_array_module says it lives elsewhere."""

    real = launch.get_array_module
    monkeypatch.setattr(launch, "get_array_module",
                        lambda *a: "cupy" if isinstance(a[0], DeviceArray) else real(*a))
    params = launch.kernel_signature(launch.kernel_source("relu.cu"), "relu_forward")
    x = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match="mix NumPy and CuPy"):
        launch.check_args("relu_forward", params, (x.view(DeviceArray), x, np.int32(4)))
    launch.check_args("relu_forward", params, (x, x.copy(), np.int32(4)))  # all on one device


@pytest.mark.parametrize("N, C, hw, K", [(3, 5, 7, 9), (2, 16, 300, 27), (1, 70, 65, 40)])
def test_gemm_reads_and_writes_nchw_images_in_place(N, C, hw, K):
    """conv2d's three products with the channel-major operand kept as (N, C, H*W) images,
    against the same products after the reference's transposing copies; (2, 16, 300, 27)
    splits K in the weight gradient."""
    images = random(N, C, hw)  # dy, or y: (N, C, HW)
    matrix = images.transpose(1, 0, 2).reshape(C, N * hw)  # (C, N*HW), as reference.py copies it
    w, cols = random(C, K, seed=1), random(K, N * hw, seed=2)
    y = gpu.gemm_images(w, cols, c_hw=hw)  # forward: written as images
    np.testing.assert_allclose(y, (w @ cols).reshape(C, N, hw).transpose(1, 0, 2),
                               rtol=1e-4, atol=1e-4)
    dw = gpu.gemm_images(images, cols, trans_b=True, a_hw=hw)  # weight gradient
    np.testing.assert_allclose(dw, matrix @ cols.T, rtol=1e-4, atol=1e-3)
    dcols = gpu.gemm_images(w, images, trans_a=True, b_hw=hw)  # input gradient
    np.testing.assert_allclose(dcols, w.T @ matrix, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="gemm_images"):
        gpu.gemm_images(images, cols, trans_a=True, a_hw=hw)
