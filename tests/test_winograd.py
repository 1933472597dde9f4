"""Winograd's F(2x2, 3x3) and F(4x4, 3x3) against the im2col + GEMM convolution: the reference
backend's winograd_conv2d, then the numba kernels (winograd.py: forward, input and weight
gradients) and where the numba backend uses them.

Odd sizes on purpose: H and W that leave a partial tile, batch 1, channel counts that are not
multiples of anything, padding 0 and 1. In float64 the two agree to rounding (1e-12); in float32
the transforms' additions cost more rounding than a direct sum. The tolerances below, relative to
the largest output, are what each tile needs: measured, F(2x2) stays within 1e-6 of the largest
output (a direct sum: 1e-7), F(4x4), whose transforms multiply by up to 8 and divide by 24,
within 5e-6; the tests allow 10x that.
"""

import numpy as np
import pytest
from test_numba_backend import AVX2, run_tests_in_a_fresh_process

import minires.functional as F
from minires import backends, models, no_grad, tensor
from minires.backends.numba import NumbaDirect, winograd
from minires.backends.numba.config import TILE_ROWS
from minires.backends.reference import (
    WINOGRAD_A_T,
    WINOGRAD_B_T,
    WINOGRAD_G,
    WINOGRAD_MATRICES,
    Reference,
    winograd_conv2d,
)
from minires.nn import init

CASES = [
    # (N, C, H, W), C_out, padding
    ((2, 3, 7, 5), 4, (1, 1)),
    ((1, 5, 6, 6), 3, (0, 0)),
    ((1, 1, 3, 3), 2, (0, 0)),  # one output pixel: a single, partial tile
    ((3, 16, 8, 8), 16, (1, 1)),  # ResNet's stage 3, shrunk in batch
    ((1, 2, 9, 4), 5, (1, 0)),
]
reference = Reference()
TOLERANCE = {(np.float64, 2): 1e-12, (np.float64, 4): 1e-12,
             (np.float32, 2): 1e-5, (np.float32, 4): 5e-5}
DTYPES_AND_TILES = list(TOLERANCE)


def assert_close(got, expected, dtype, tile):
    """got agrees with expected to TOLERANCE, relative to expected's largest value."""
    assert got.shape == expected.shape and got.dtype == dtype
    assert np.abs(got - expected).max() <= TOLERANCE[dtype, tile] * np.abs(expected).max()


@pytest.mark.parametrize("dtype, tile", DTYPES_AND_TILES)
@pytest.mark.parametrize("x_shape, C_out, padding", CASES)
def test_winograd_matches_im2col_gemm(x_shape, C_out, padding, dtype, tile):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((C_out, x_shape[1], 3, 3)).astype(dtype)
    expected, _ = reference.conv2d_forward(x, w, None, (1, 1), padding)
    assert_close(winograd_conv2d(x, w, padding, tile), expected, dtype, tile)


@pytest.mark.parametrize("x_shape, C_out, padding", CASES)
def test_the_input_gradient_is_a_winograd_convolution_too(x_shape, C_out, padding):
    """Stride 1: dx is dy convolved with the kernel rotated by 180 degrees and its channels
    swapped, padded by 2 - padding, so Winograd applies to the backward pass as well."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((C_out, x_shape[1], 3, 3))
    y, saved = reference.conv2d_forward(x, w, None, (1, 1), padding)
    dy = rng.standard_normal(y.shape)
    dx, _, _ = reference.conv2d_backward(dy, saved, (1, 1), padding, bias_grad=False)
    flipped = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    got = winograd_conv2d(dy, flipped, (2 - padding[0], 2 - padding[1]))
    np.testing.assert_allclose(got, dx, rtol=1e-12, atol=1e-12)


def test_the_1d_transforms_compute_two_outputs_with_four_multiplies():
    """F(2, 3): y = A^T [(G g) * (B^T d)] is the 3-tap correlation of 4 inputs."""
    rng = np.random.default_rng(2)
    d, g = rng.standard_normal(4), rng.standard_normal(3)
    direct = np.array([d[0:3] @ g, d[1:4] @ g])  # 6 multiplies
    products = (WINOGRAD_G @ g) * (WINOGRAD_B_T @ d)  # 4 multiplies (G g is per filter, once)
    assert products.shape == (4,)
    np.testing.assert_allclose(WINOGRAD_A_T @ products, direct, rtol=1e-12)


@pytest.mark.parametrize("tile", [2, 4])
def test_each_tile_computes_its_1d_outputs(tile):
    """F(m, 3): A^T [(G g) * (B^T d)] is the 3-tap correlation of m + 2 inputs."""
    B_T, G, A_T = WINOGRAD_MATRICES[tile]
    rng = np.random.default_rng(3)
    d, g = rng.standard_normal(tile + 2), rng.standard_normal(3)
    direct = np.array([d[i:i + 3] @ g for i in range(tile)])
    np.testing.assert_allclose(A_T @ ((G @ g) * (B_T @ d)), direct, rtol=1e-12)


# -- the numba kernels (backends/numba/winograd.py) ----------------------------------------------
NUMBA_CASES = CASES + [
    ((2, 17, 9, 7), 5, (1, 1)),  # more channels than a tile row holds, fewer than two
    ((1, 3, 11, 13), 17, (0, 0)),  # partial tiles at the bottom and the right for both tiles
    ((37, 8, 8, 8), 16, (1, 1)),  # groups of images, the last one short
    ((2, 32, 6, 10), 33, (1, 1)),
]


@pytest.mark.parametrize("dtype, tile", DTYPES_AND_TILES)
@pytest.mark.parametrize("x_shape, C_out, padding", NUMBA_CASES)
def test_numba_winograd_matches_the_reference_convolution(x_shape, C_out, padding, dtype, tile):
    """Forward, input gradient and weight gradient, each against im2col + GEMM (+ col2im)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((C_out, x_shape[1], 3, 3)).astype(dtype)
    y, saved = reference.conv2d_forward(x, w, None, (1, 1), padding)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, _ = reference.conv2d_backward(dy, saved, (1, 1), padding, bias_grad=False)
    assert_close(winograd.conv2d(x, w, padding, tile), y, dtype, tile)
    assert_close(winograd.conv2d_input_grad(dy, w, padding, tile), dx, dtype, tile)
    assert_close(winograd.conv2d_weight_grad(x, dy, padding, tile), dw, dtype, tile)


def test_the_numba_backend_uses_winograd_where_its_rule_says(monkeypatch):
    """3x3, stride 1, padding 0 or 1 and a tile from choose_tile: winograd.py; anything else,
    and the backend with winograd = False: conv.py. Both give the reference's numbers."""
    calls = []
    for name in ("conv2d", "conv2d_input_grad", "conv2d_weight_grad"):
        kernel = getattr(winograd, name)
        monkeypatch.setattr(winograd, name,
                            lambda *args, kernel=kernel: calls.append(kernel) or kernel(*args))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 32, 8, 8))
    tile = winograd.choose_tile(32, 32, 8, 8, np.float64)
    assert tile in (2, 4)
    w = rng.standard_normal((32, 32, 3, 3))
    numba_backend = backends.backend("numba")
    results = {}
    for backend, uses_winograd, w_shape, stride, expected_calls in [
        ("numba", True, (32, 32, 3, 3), 1, 3), ("numba", True, (32, 32, 3, 3), 2, 0),
        ("numba", True, (32, 32, 5, 5), 1, 0), ("numba", False, (32, 32, 3, 3), 1, 0),
        ("reference", False, (32, 32, 3, 3), 1, 0),
    ]:
        calls.clear()
        monkeypatch.setattr(numba_backend, "winograd", uses_winograd)
        wt = tensor(w if w_shape[2] == 3 else rng.standard_normal(w_shape), requires_grad=True)
        xt = tensor(x, requires_grad=True)
        with backends.using(backend):
            y = F.conv2d(xt, wt, stride=stride, padding=1)
            y.backward(np.cos(np.arange(y.size)).reshape(y.shape))
        assert len(set(calls)) == expected_calls  # (the input gradient calls conv2d too)
        if w_shape[2] == 3 and stride == 1:
            results[backend, uses_winograd] = (y.data, xt.grad, wt.grad)
    assert not NumbaDirect.winograd
    for got in results.values():
        for a, expected in zip(got, results["reference", False]):
            np.testing.assert_allclose(a, expected, rtol=1e-12, atol=1e-12)


def test_float32_inference_takes_the_larger_tile_and_keeps_resnet_logits(monkeypatch):
    """choose_tile's float32 rule: F(2x2) for a forward that builds a graph (its backward uses
    the same tile), F(4x4) under no_grad(), where no gradient follows. A ResNet-20's float32
    logits on F(4x4) stay within 3x the float32 reference's own distance from the float64
    reference (measured, 64 images: 5.6e-7 of the largest logit, against 3.9e-7 for the float32
    reference and 3.6e-7 on F(2x2)), and the predicted classes agree."""
    assert winograd.choose_tile(16, 16, 32, 32, np.float32) == 2
    assert winograd.choose_tile(16, 16, 32, 32, np.float32, training=False) == 4
    assert winograd.choose_tile(16, 16, 32, 32, np.float64) == 4
    assert winograd.choose_tile(3, 16, 32, 32, np.float32, training=False) is None
    tiles = []
    kernel = winograd.conv2d
    monkeypatch.setattr(winograd, "conv2d", lambda x, w, padding, tile:
                        tiles.append(tile) or kernel(x, w, padding, tile))
    init.manual_seed(0)
    model = models.resnet20()  # float32
    model.eval()
    images = np.random.default_rng(6).standard_normal((8, 3, 32, 32))
    x = tensor(images.astype(np.float32))
    with backends.using("numba"):
        with no_grad():
            inference = model(x).data
        assert tiles and set(tiles) == {4}
        tiles.clear()
        graphed = model(x).data
        assert tiles and set(tiles) == {2}
    with no_grad(), backends.using("reference"):
        float32_reference = model(x).data
    for param in model.parameters():
        param.data = param.data.astype(np.float64)
    for module in model.modules():
        for name, buffer in module._buffers.items():
            module._buffers[name] = buffer.astype(np.float64)
    with no_grad(), backends.using("reference"):
        exact = model(tensor(images)).data
    float32_noise = np.abs(float32_reference - exact).max()
    for logits in (inference, graphed):
        assert logits.dtype == np.float32
        assert np.abs(logits - exact).max() < 3 * float32_noise
        np.testing.assert_array_equal(logits.argmax(axis=1), exact.argmax(axis=1))


@pytest.mark.skipif(TILE_ROWS != 16,
                    reason="the tests above already run the 4-row AVX2 tile here")
def test_numba_winograd_with_the_avx2_tile(tmp_path):
    """The kernels above with the 4-row tile that an AVX2 machine gets, compiled for Haswell in
    a fresh process (test_numba_backend.py's AVX2 settings)."""
    run_tests_in_a_fresh_process(__file__, "numba_winograd_matches and float32", tmp_path,
                                 NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=AVX2)


@pytest.mark.skipif(TILE_ROWS == 16,
                    reason="the tests above already run the 16-row AVX-512 tile here")
def test_numba_winograd_with_the_16_row_tile(tmp_path):
    """The kernels above, float32, with the 16-row tile of AVX-512 machines (MINIRES_TILE_ROWS:
    its accumulators spill in AVX2 code, but the sums are the same) in a fresh process."""
    run_tests_in_a_fresh_process(__file__, "numba_winograd_matches and float32", tmp_path,
                                 MINIRES_TILE_ROWS="16")
