"""The numba kernels of backends/cpu_fast.py against the specification, backends/cpu.py.

conv2d's forward, input gradient and weight gradient are compared with im2col + GEMM + col2im on
awkward shapes (stride 2 and mixed strides, padding 0/1/2, batch 1, 1x1, 3x3 and 5x3 kernels,
non-square images), in float64 (to 1e-12) and float32 (to float32 rounding); batchnorm and ReLU
with the NumPy expressions in ops/norm.py and ops/elementwise.py.
"""

import os
import subprocess
import sys

import llvmlite.binding
import numba
import numpy as np
import pytest

import minires.functional as F
from minires import tensor
from minires.backends import cpu, cpu_fast

CONV_CASES = [
    # (N, C_in, H, W), (C_out, KH, KW), stride, padding
    ((2, 3, 7, 5), (4, 3, 3), (1, 1), (1, 1)),
    ((2, 3, 7, 5), (4, 3, 3), (2, 2), (1, 1)),
    ((1, 3, 6, 7), (5, 3, 3), (1, 1), (0, 0)),
    ((2, 2, 5, 6), (3, 1, 1), (1, 1), (0, 0)),
    ((2, 2, 5, 5), (3, 1, 1), (2, 2), (0, 0)),
    ((1, 2, 5, 5), (3, 1, 1), (1, 1), (1, 1)),  # padding wider than the kernel
    ((1, 3, 6, 5), (2, 5, 3), (1, 1), (2, 2)),
    ((2, 3, 8, 7), (3, 5, 3), (2, 1), (1, 2)),
    ((2, 3, 9, 7), (4, 3, 3), (3, 2), (2, 0)),
    ((1, 4, 6, 9), (2, 2, 4), (1, 3), (1, 2)),
    ((3, 16, 8, 8), (32, 3, 3), (2, 2), (1, 1)),  # the network's downsampling conv
    ((2, 8, 9, 9), (8, 3, 3), (1, 1), (1, 1)),  # and its stride-1 conv, odd size
]


def spec_conv(x, w, dy, stride, padding):
    """y, dx, dw the way ops/conv.py computes them on the specification backend."""
    N = x.shape[0]
    C_out, _, KH, KW = w.shape
    cols = cpu.im2col(x, KH, KW, stride, padding)  # (C_in*KH*KW, N*H_out*W_out)
    y = cpu.gemm(w.reshape(C_out, -1), cols).reshape(C_out, N, *dy.shape[2:]).transpose(1, 0, 2, 3)
    dy2 = dy.transpose(1, 0, 2, 3).reshape(C_out, -1)  # (C_out, N*H_out*W_out)
    dw = cpu.gemm(dy2, cols, trans_b=True).reshape(w.shape)
    dx = cpu.col2im(cpu.gemm(w.reshape(C_out, -1), dy2, trans_a=True), x.shape, KH, KW, stride,
                    padding)
    return y, dx, dw


def tolerance(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONV_CASES)
def test_conv2d_matches_im2col_gemm_col2im(x_shape, w_shape, stride, padding, dtype):
    rng = np.random.default_rng(0)
    C_out, KH, KW = w_shape
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((C_out, x_shape[1], KH, KW)).astype(dtype)
    y = cpu_fast.conv2d(x, w, stride, padding)
    dy = rng.standard_normal(y.shape).astype(dtype)
    y_ref, dx_ref, dw_ref = spec_conv(x, w, dy, stride, padding)
    dx = cpu_fast.conv2d_input_grad(dy, w, x.shape, stride, padding)
    dw = cpu_fast.conv2d_weight_grad(x, dy, KH, KW, stride, padding)
    for mine, ref in [(y, y_ref), (dx, dx_ref), (dw, dw_ref)]:
        assert mine.shape == ref.shape and mine.dtype == dtype
        np.testing.assert_allclose(mine, ref, **tolerance(dtype))


def test_tile_rows_follow_the_vector_registers():
    """16 rows where numba compiles AVX-512 code (32 vector registers), 4 where it compiles AVX2."""
    features = numba.core.config.CPU_FEATURES or llvmlite.binding.get_host_cpu_features().flatten()
    assert cpu_fast.R == (16 if "+avx512f" in features.split(",") else 4)


# What numba compiles for a Haswell CPU: AVX2 and FMA, no AVX-512.
AVX2 = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fsgsbase,+lzcnt,+mmx,+movbe,+pclmul,"
        "+popcnt,+rdrnd,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,+sahf,-avx512f")


@pytest.mark.skipif(os.environ.get("NUMBA_CPU_FEATURES") is not None
                    or "+avx512f" not in llvmlite.binding.get_host_cpu_features().flatten(),
                    reason="the tests above already run the AVX2 tile (or a chosen one) here")
def test_convolutions_with_the_avx2_tile(tmp_path):
    """On an AVX-512 machine the tests above check the 16-row tile; here the 4-row tile that an
    AVX2 machine gets, compiled for Haswell in a fresh process, passes the same tests."""
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=AVX2,
               NUMBA_CACHE_DIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                          "-k", "im2col or tile_rows or non_contiguous"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout


def test_conv2d_skips_the_input_gradient_nobody_wants():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 5))
    w = tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    y = F.conv2d(tensor(x), w, padding=1)
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = y.creator.backward(dy)
    assert dx is None
    np.testing.assert_allclose(dw, spec_conv(x, w.data, dy, (1, 1), (1, 1))[2], rtol=1e-12)


def test_conv2d_op_takes_the_fast_path_and_keeps_no_columns():
    x = tensor(np.ones((2, 3, 6, 6)), requires_grad=True)
    w = tensor(np.ones((4, 3, 3, 3)), requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    assert "cols" not in vars(y.creator)
    y.sum().backward()
    assert x.grad[0, 0, 0, 0] == 4 * 4 and x.grad[0, 0, 1, 1] == 4 * 9  # corner and inside


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_norm_kernels_match_the_numpy_formulas(dtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 5, 4, 6)) * 2 + 1000).astype(dtype)  # far-off mean: no cancelling
    dy = rng.standard_normal(x.shape).astype(dtype)
    gamma, beta = rng.standard_normal(5).astype(dtype), rng.standard_normal(5).astype(dtype)
    x64 = x.astype(np.float64)
    mean, var = cpu_fast.channel_mean_var(x)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(var, x64.var(axis=(0, 2, 3)), rtol=1e-9)
    inv_std = 1 / np.sqrt(var + 1e-5)
    shape = (1, -1, 1, 1)
    x_hat = (x64 - mean.reshape(shape)) * inv_std.reshape(shape)
    y = cpu_fast.batch_norm(x, mean, inv_std, gamma, beta)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, x_hat * gamma.reshape(shape) + beta.reshape(shape),
                               **tolerance(dtype))
    dx, dgamma, dbeta = cpu_fast.batch_norm_grads(dy, x, mean, inv_std, gamma, training=True)
    m = x.size // 5
    dx_hat = dy * gamma.reshape(shape)
    dx_ref = inv_std.reshape(shape) / m * (m * dx_hat - dx_hat.sum(axis=(0, 2, 3), keepdims=True)
                                           - x_hat * (dx_hat * x_hat).sum(axis=(0, 2, 3),
                                                                         keepdims=True))
    np.testing.assert_allclose(dx, dx_ref, **tolerance(dtype))
    np.testing.assert_allclose(dgamma, (dy * x_hat).sum(axis=(0, 2, 3)), **tolerance(dtype))
    np.testing.assert_allclose(dbeta, dy.sum(axis=(0, 2, 3)), **tolerance(dtype))
    # Evaluation: mean and inv_std are constants, so dx = dy * gamma * inv_std.
    dx, dgamma, _ = cpu_fast.batch_norm_grads(dy, x, mean, inv_std, gamma, training=False)
    np.testing.assert_allclose(dx, dx_hat * inv_std.reshape(shape), **tolerance(dtype))
    np.testing.assert_allclose(dgamma, (dy * x_hat).sum(axis=(0, 2, 3)), **tolerance(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_kernels(dtype):
    x = np.array([[-2.0, -0.0, 0.0, 3.0, np.nan, np.inf, -np.inf]], dtype=dtype)
    y = cpu_fast.relu(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    dy = np.arange(1, 8, dtype=dtype).reshape(1, 7)
    np.testing.assert_array_equal(cpu_fast.relu_grad(dy, y), [[0, 0, 0, 4, 0, 6, 0]])


def test_ops_take_non_contiguous_inputs():
    """Views (here transposed ones) go through the kernels as the same values, copied or not."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3, 6, 4)).transpose(0, 1, 3, 2)  # (5, 3, 4, 6), not C-ordered
    w = rng.standard_normal((2, 3, 3, 3))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    for op in [F.relu, lambda t: F.conv2d(t, w, padding=1),
               lambda t: F.batch_norm(t, None, None, gamma, beta, training=True)]:
        view, copy = tensor(x, requires_grad=True), tensor(x.copy(), requires_grad=True)
        y_view, y_copy = op(view), op(copy)
        np.testing.assert_allclose(y_view.data, y_copy.data, rtol=1e-12, atol=1e-12)
        dy = rng.standard_normal(y_view.shape).T.copy().T  # a non-C-ordered gradient too
        y_view.backward(dy)
        y_copy.backward(dy)
        np.testing.assert_allclose(view.grad, copy.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_arrays_stay_in_the_process(monkeypatch):
    """minires raises glibc's mmap and trim thresholds on import (backends/memory.py), unless
    MINIRES_KEEP_MEMORY=0."""
    from minires.backends import memory

    assert memory.keep_freed_memory()
    monkeypatch.setenv("MINIRES_KEEP_MEMORY", "0")
    assert not memory.keep_freed_memory()


def test_the_vectorizer_setting_is_restored_after_concurrent_calls():
    """Convolutions in several threads at once: numba's SLP setting is back as it was after."""
    import threading

    before = (os.environ.get("NUMBA_SLP_VECTORIZE"), numba.core.config.SLP_VECTORIZE)
    x, w = np.ones((2, 3, 6, 6), np.float32), np.ones((4, 3, 3, 3), np.float32)
    threads = [threading.Thread(target=cpu_fast.conv2d, args=(x, w, (1, 1), (1, 1)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (os.environ.get("NUMBA_SLP_VECTORIZE"), numba.core.config.SLP_VECTORIZE) == before
