"""Every op passes a float64 central-difference gradcheck with a random upstream gradient.

Each test runs once per backend (the `backend` fixture in conftest.py). Inputs keep away from
the kinks of ReLU and max-pool: values are distinct and far from 0 where that matters.
"""

import numpy as np
import pytest
from conftest import backend_array

import minires.functional as F
from minires import gradcheck, tensor


def leaf(x, backend):
    return tensor(backend_array(np.asarray(x, dtype=np.float64), backend), requires_grad=True)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def distinct(*shape, seed=0):
    """Values with gaps of at least 0.1 between any two (safe for max and ReLU)."""
    values = np.random.default_rng(seed).permutation(np.prod(shape)) * 0.1 - 0.05 * np.prod(shape)
    return (values + 0.037).reshape(shape)  # +0.037 keeps every value off zero


CONV_CASES = [
    # (N, C_in, H, W), (C_out, KH, KW), stride, padding
    ((2, 3, 7, 5), (4, 3, 3), 1, 1),
    ((2, 3, 7, 5), (4, 3, 3), 2, 1),
    ((1, 3, 6, 7), (5, 3, 3), 1, 0),
    ((2, 1, 5, 6), (3, 1, 1), 1, 0),
    ((2, 2, 5, 5), (3, 1, 1), 2, 0),
    ((1, 3, 6, 5), (2, 5, 3), 1, 2),
    ((2, 3, 8, 7), (3, 5, 3), (2, 1), (1, 2)),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONV_CASES)
def test_conv2d(backend, x_shape, w_shape, stride, padding):
    C_out, KH, KW = w_shape
    x = leaf(randn(*x_shape), backend)
    w = leaf(randn(C_out, x_shape[1], KH, KW, seed=1), backend)
    b = leaf(randn(C_out, seed=2), backend)
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding), [x, w, b])


def test_conv2d_without_bias(backend):
    x, w = leaf(randn(2, 3, 5, 4), backend), leaf(randn(2, 3, 3, 3, seed=1), backend)
    assert gradcheck(lambda x, w: F.conv2d(x, w, padding=1), [x, w])


@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 2, 1), (3, 1, 0),
                                                     ((3, 2), (2, 1), (1, 0))])
def test_max_pool2d(backend, kernel, stride, padding):
    x = leaf(distinct(2, 3, 7, 6), backend)
    assert gradcheck(lambda x: F.max_pool2d(x, kernel, stride, padding), [x])


@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 2, 1), ((3, 2), 1, 0)])
def test_avg_pool2d(backend, kernel, stride, padding):
    x = leaf(randn(2, 3, 7, 6), backend)
    assert gradcheck(lambda x: F.avg_pool2d(x, kernel, stride, padding), [x])


def test_global_avg_pool2d(backend):
    x = leaf(randn(3, 5, 4, 3), backend)
    assert gradcheck(F.global_avg_pool2d, [x])


@pytest.mark.parametrize("shape", [(4, 3), (3, 5, 4, 3), (1, 3, 4, 5)])
def test_batch_norm_training(backend, shape):
    C = shape[1]
    x = leaf(randn(*shape) * 2 + 1, backend)
    gamma = leaf(randn(C, seed=1), backend)
    beta = leaf(randn(C, seed=2), backend)
    assert gradcheck(lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True),
                     [x, gamma, beta])


def test_batch_norm_evaluation(backend):
    x = leaf(randn(3, 4, 3, 2), backend)
    mean = backend_array(randn(4, seed=3), backend)
    var = backend_array(np.random.default_rng(4).uniform(0.5, 2, 4), backend)
    gamma, beta = leaf(randn(4, seed=1), backend), leaf(randn(4, seed=2), backend)
    assert gradcheck(lambda x, g, b: F.batch_norm(x, mean, var, g, b), [x, gamma, beta])


def test_relu(backend):
    x = leaf(distinct(3, 4, 5), backend)
    assert gradcheck(F.relu, [x])


def batch_norm_output(x, gamma, beta, mean=None, var=None):
    """What batchnorm gives before a ReLU (NumPy; the batch's statistics unless given)."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    mean = x.mean(axis=axes) if mean is None else mean
    var = x.var(axis=axes) if var is None else var
    x_hat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-5)
    return x_hat * gamma.reshape(shape) + beta.reshape(shape)


def away_from_the_kink(relu_input):
    """A central difference of step 1e-6 never crosses ReLU's kink from these inputs."""
    return np.abs(relu_input).min() > 1e-3


@pytest.mark.parametrize("shape", [(4, 3), (3, 5, 4, 3), (1, 3, 4, 5)])
def test_batch_norm_relu_training(backend, shape):
    C = shape[1]
    x, gamma, beta = randn(*shape) * 2 + 1, randn(C, seed=1), randn(C, seed=2)
    assert away_from_the_kink(batch_norm_output(x, gamma, beta))
    x, gamma, beta = (leaf(a, backend) for a in (x, gamma, beta))
    assert gradcheck(lambda x, g, b: F.batch_norm_relu(x, None, None, g, b, training=True),
                     [x, gamma, beta])


@pytest.mark.parametrize("shape", [(3, 4, 3, 2), (1, 4, 3, 2), (1, 4)])
def test_batch_norm_relu_evaluation(backend, shape):
    x, gamma, beta = randn(*shape), randn(4, seed=1), randn(4, seed=2)
    mean, var = randn(4, seed=3), np.random.default_rng(4).uniform(0.5, 2, 4)
    assert away_from_the_kink(batch_norm_output(x, gamma, beta, mean, var))
    x, gamma, beta = (leaf(a, backend) for a in (x, gamma, beta))
    mean, var = backend_array(mean, backend), backend_array(var, backend)
    assert gradcheck(lambda x, g, b: F.batch_norm_relu(x, mean, var, g, b), [x, gamma, beta])


@pytest.mark.parametrize("b_shape", [(2, 3, 4, 5), (3, 1, 1)])
def test_add_relu(backend, b_shape):
    a, b = randn(2, 3, 4, 5), randn(*b_shape, seed=1)
    assert away_from_the_kink(a + b)
    assert gradcheck(F.add_relu, [leaf(a, backend), leaf(b, backend)])


def test_linear(backend):
    x = leaf(randn(3, 5), backend)
    w, b = leaf(randn(4, 5, seed=1), backend), leaf(randn(4, seed=2), backend)
    assert gradcheck(F.linear, [x, w, b])
    assert gradcheck(lambda x, w: F.linear(x, w), [x, w])


def test_cross_entropy_and_log_softmax(backend):
    x = leaf(randn(5, 7) * 3, backend)
    target = backend_array(np.array([0, 6, 3, 3, 1]), backend)
    assert gradcheck(lambda x: F.cross_entropy(x, target), [x])
    assert gradcheck(F.log_softmax, [x])


def test_cross_entropy_in_float32_matches_float64(backend):
    """float32 logits take each backend's own code (the CUDA backend: its kernels, one launch
    each way); loss and gradient equal the float64 reference's within float32 noise, with a
    logit whose exp() overflows float32 (the row maximum comes off first)."""
    x64 = randn(6, 10) * 4
    x64[2, 3] = 95.0
    target = np.array([0, 9, 3, 3, 1, 5])
    expected = tensor(x64, requires_grad=True)
    expected_loss = F.cross_entropy(expected, target)
    expected_loss.backward()
    x = tensor(backend_array(x64.astype(np.float32), backend), requires_grad=True)
    loss = F.cross_entropy(x, backend_array(target, backend))
    (loss * 2).backward()
    assert loss.dtype == x.grad.dtype == np.float32
    np.testing.assert_allclose(loss.item(), expected_loss.item(), rtol=1e-6)
    np.testing.assert_allclose(tensor(x.grad).numpy(), 2 * expected.grad, rtol=1e-5, atol=1e-7)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]])
    x = tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x, np.array([0, 2]))
    # Row 0 is certain and right (loss 0); row 1 prefers class 1 by exactly 1: loss log(1 + e).
    np.testing.assert_allclose(loss.item(), np.log1p(np.e) / 2, rtol=1e-12)
    loss.backward()
    assert np.isfinite(x.grad).all()


@pytest.mark.parametrize("in_c, out_c, stride", [(3, 8, 2), (4, 4, 1), (3, 6, 1), (2, 7, 2)])
def test_pad_shortcut(backend, in_c, out_c, stride):
    x = leaf(randn(2, in_c, 5, 4), backend)
    assert gradcheck(lambda x: F.pad_shortcut(x, out_c, stride), [x])


def test_pad_shortcut_layout():
    x = np.arange(2 * 4 * 4 * 4, dtype=np.float64).reshape(2, 4, 4, 4)
    y = F.pad_shortcut(x, 8, 2).data
    assert y.shape == (2, 8, 2, 2)
    np.testing.assert_array_equal(y[:, :2], 0)
    np.testing.assert_array_equal(y[:, 6:], 0)
    np.testing.assert_array_equal(y[:, 2:6], x[:, :, ::2, ::2])


def test_residual_block_whose_input_feeds_both_branches(backend):
    """y = relu(bn(conv(relu(bn(conv(x))))) + x): x's gradient is the sum of two paths."""
    x = leaf(randn(2, 3, 5, 4), backend)
    w1, w2 = leaf(randn(3, 3, 3, 3, seed=1), backend), leaf(randn(3, 3, 3, 3, seed=2), backend)
    g1, g2 = leaf(randn(3, seed=3), backend), leaf(randn(3, seed=4), backend)

    def block(x, w1, w2, g1, g2):
        h = F.relu(F.batch_norm(F.conv2d(x, w1, padding=1), None, None, g1, training=True))
        h = F.batch_norm(F.conv2d(h, w2, padding=1), None, None, g2, training=True)
        return F.relu(h + x)

    assert gradcheck(block, [x, w1, w2, g1, g2], atol=1e-4)


def test_elementwise_and_reductions(backend):
    a = leaf(randn(3, 4), backend)
    b = leaf(np.random.default_rng(1).uniform(0.5, 2.0, (1, 4)), backend)
    assert gradcheck(lambda a, b: (a * b - a / b + (-a)) ** 3, [a, b])
    assert gradcheck(lambda b: b.log() + b.exp(), [b])
    assert gradcheck(lambda a: a.mean(axis=0) + a.sum(axis=1, keepdims=True), [a])
    assert gradcheck(lambda a: a.reshape(2, 6).transpose()[1:4], [a])
    assert gradcheck(lambda a, b: a @ b.reshape(4, 1), [a, b])
