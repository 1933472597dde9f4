"""Winograd's F(2x2, 3x3) in the reference backend against its im2col + GEMM convolution.

Odd sizes on purpose: H and W that leave a partial 2x2 tile, batch 1, channel counts that are
not multiples of anything, padding 0 and 1. In float64 the two agree to rounding (1e-12); in
float32 the transforms' additions cost a little more rounding than a direct sum (the tolerance
below, relative to the largest output, is what F(2x2, 3x3) needs; F(4x4, 3x3) would need more).
"""

import numpy as np
import pytest

from minires.backends.reference import (
    WINOGRAD_A_T,
    WINOGRAD_B_T,
    WINOGRAD_G,
    Reference,
    winograd_conv2d,
)

CASES = [
    # (N, C, H, W), C_out, padding
    ((2, 3, 7, 5), 4, (1, 1)),
    ((1, 5, 6, 6), 3, (0, 0)),
    ((1, 1, 3, 3), 2, (0, 0)),  # one output pixel: a single, partial tile
    ((3, 16, 8, 8), 16, (1, 1)),  # ResNet's stage 3, shrunk in batch
    ((1, 2, 9, 4), 5, (1, 0)),
]
reference = Reference()


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("x_shape, C_out, padding", CASES)
def test_winograd_matches_im2col_gemm(x_shape, C_out, padding, dtype, tolerance):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((C_out, x_shape[1], 3, 3)).astype(dtype)
    expected, _ = reference.conv2d_forward(x, w, None, (1, 1), padding)
    y = winograd_conv2d(x, w, padding)
    assert y.shape == expected.shape and y.dtype == dtype
    assert np.abs(y - expected).max() <= tolerance * np.abs(expected).max()


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
