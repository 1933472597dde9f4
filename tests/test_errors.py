"""Bad input gets an error that names the argument and the shapes or values involved."""

import numpy as np
import pytest

import minires.functional as F
from minires import tensor

x4 = np.zeros((2, 3, 8, 8), np.float32)
w = np.zeros((4, 3, 3, 3), np.float32)


def test_conv2d_channel_mismatch():
    with pytest.raises(ValueError, match=r"input has 5 channels.*\(2, 5, 8, 8\).*weight expects "
                                         r"3.*\(4, 3, 3, 3\)"):
        F.conv2d(np.zeros((2, 5, 8, 8), np.float32), w)


@pytest.mark.parametrize("call", [
    lambda: F.conv2d(np.zeros((3, 8, 8), np.float32), w),
    lambda: F.max_pool2d(np.zeros((8, 8), np.float32), 2),
    lambda: F.avg_pool2d(np.zeros((1, 8, 8), np.float32), 2),
    lambda: F.global_avg_pool2d(np.zeros((2, 3), np.float32)),
])
def test_non_4d_input_to_conv_and_pool(call):
    with pytest.raises(ValueError, match=r"input must be 4-D \(N, C, H, W\), got shape"):
        call()


def test_conv2d_other_argument_errors():
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\).*got \(3,\)"):
        F.conv2d(x4, w, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"kernel \(3, 3\) is larger than the padded input"):
        F.conv2d(np.zeros((1, 3, 2, 2), np.float32), w)
    with pytest.raises(ValueError, match="stride must be an int or a pair"):
        F.conv2d(x4, w, stride=(1, 2, 3))
    with pytest.raises(TypeError, match="input is float64 but weight is float32"):
        F.conv2d(x4.astype(np.float64), w)


def test_integer_data_with_requires_grad():
    with pytest.raises(TypeError, match=r"floating-point data, got dtype int64 \(shape \(3,\)\)"):
        tensor(np.array([1, 2, 3]), requires_grad=True)


def test_cross_entropy_targets():
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"target holds class 4, outside 0..3 for input \(3, 4\)"):
        F.cross_entropy(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"target holds class -1"):
        F.cross_entropy(logits, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"target must have shape \(3,\).*got \(2,\)"):
        F.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(TypeError, match="integer class indices, got dtype float"):
        F.cross_entropy(logits, np.array([0.0, 1.0, 2.0]))


def test_batch_norm_and_linear_shapes():
    with pytest.raises(ValueError, match=r"running_mean must have shape \(3,\).*got \(4,\)"):
        F.batch_norm(x4, np.zeros(4), np.ones(3))
    with pytest.raises(ValueError, match="evaluation mode.*needs running_mean"):
        F.batch_norm(x4, None, None)
    with pytest.raises(ValueError, match=r"input \(2, 3\) and weight \(4, 5\)"):
        F.linear(np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32))


def test_pool_padding_and_shortcut_arguments():
    with pytest.raises(ValueError, match=r"padding \(2, 2\) must be at most half"):
        F.max_pool2d(x4, 2, padding=2)
    with pytest.raises(ValueError, match=r"out_channels \(2\).*\(2, 3, 8, 8\)"):
        F.pad_shortcut(x4, 2, 2)


@pytest.mark.parametrize("value", [1.5, "2", (1, 2.0), (1, True), None])
def test_stride_and_padding_must_be_ints(value):
    with pytest.raises(ValueError, match=r"stride must be an int or a pair of ints, got"):
        F.conv2d(x4, w, stride=value)
    with pytest.raises(ValueError, match=r"padding must be an int or a pair of ints, got"):
        F.max_pool2d(x4, 2, padding=value)
    assert F.conv2d(x4, w, stride=np.int64(2)).shape == (2, 4, 3, 3)  # NumPy ints are ints


def test_integer_inputs_to_conv2d_and_linear_are_refused():
    images = np.full((1, 3, 3, 3), 255, np.uint8)  # 27 * 255 would wrap around modulo 256
    with pytest.raises(TypeError, match=r"conv2d: input has dtype uint8; convert it to floating"):
        F.conv2d(images, np.ones((1, 3, 3, 3), np.uint8))
    with pytest.raises(TypeError, match=r"linear: weight has dtype int64"):
        F.linear(np.ones((2, 3), np.float32), np.ones((4, 3), np.int64))


def test_gradients_keep_the_dtype_of_their_tensor():
    w = tensor(np.ones(3, np.float32), requires_grad=True)
    (w * np.ones(3, np.float64) + w * np.arange(3)).sum().backward()
    assert w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad, [1, 2, 3])


def test_cross_entropy_of_an_empty_batch():
    with pytest.raises(ValueError, match=r"cross_entropy: .*N, K >= 1.*empty batch.*\(0, 10\)"):
        F.cross_entropy(np.zeros((0, 10), np.float32), np.zeros(0, np.int64))
