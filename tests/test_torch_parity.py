"""The same computations in PyTorch (an optional oracle): forward values, input and weight
gradients, and batchnorm's running statistics, on odd shapes."""

import numpy as np
import pytest

import minires.functional as F
from minires import tensor

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def pair(array):
    """The same float64 data as a minires leaf and a torch leaf."""
    return tensor(array.copy(), requires_grad=True), torch.tensor(array, requires_grad=True)


def assert_close(mine, theirs, rtol=1e-7, atol=1e-9):
    np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=rtol, atol=atol)


CONV_CASES = [
    # x shape, w shape, stride, padding
    ((1, 3, 9, 7), (5, 3, 3, 3), 2, 1),
    ((3, 5, 8, 8), (7, 5, 3, 3), 1, 1),
    ((2, 3, 7, 10), (4, 3, 1, 1), 2, 0),
    ((2, 1, 6, 5), (3, 1, 5, 3), 1, (2, 1)),
    ((1, 16, 32, 32), (32, 16, 3, 3), 2, 1),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONV_CASES)
def test_conv2d(x_shape, w_shape, stride, padding):
    rng = np.random.default_rng(0)
    x, tx = pair(rng.standard_normal(x_shape))
    w, tw = pair(rng.standard_normal(w_shape))
    b, tb = pair(rng.standard_normal(w_shape[0]))
    y = F.conv2d(x, w, b, stride=stride, padding=padding)
    ty = TF.conv2d(tx, tw, tb, stride=stride, padding=padding)
    assert_close(y.data, ty)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    ty.backward(torch.tensor(g))
    for mine, theirs in [(x, tx), (w, tw), (b, tb)]:
        assert_close(mine.grad, theirs.grad)


@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_pools(kernel, stride, padding):
    rng = np.random.default_rng(1)
    data = rng.permutation(2 * 3 * 7 * 9).reshape(2, 3, 7, 9) / 10.0 - 5
    for mine_fn, torch_fn in [(F.max_pool2d, TF.max_pool2d), (F.avg_pool2d, TF.avg_pool2d)]:
        x, tx = pair(data)
        y, ty = mine_fn(x, kernel, stride, padding), torch_fn(tx, kernel, stride, padding)
        assert_close(y.data, ty)
        g = rng.standard_normal(y.shape)
        y.backward(g)
        ty.backward(torch.tensor(g))
        assert_close(x.grad, tx.grad)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5, 4, 6), (1, 7, 3, 3)])
def test_batch_norm_training_and_running_statistics(shape):
    rng = np.random.default_rng(2)
    C = shape[1]
    x, tx = pair(rng.standard_normal(shape) * 3 + 2)
    g, tg = pair(rng.standard_normal(C))
    b, tb = pair(rng.standard_normal(C))
    mean, var = np.zeros(C), np.ones(C)
    t_mean, t_var = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    for _ in range(2):  # twice, so the running statistics compound
        y = F.batch_norm(x, mean, var, g, b, training=True, momentum=0.2)
        ty = TF.batch_norm(tx, t_mean, t_var, tg, tb, training=True, momentum=0.2)
    assert_close(y.data, ty)
    assert_close(mean, t_mean)
    assert_close(var, t_var)
    grad = rng.standard_normal(shape)
    y.backward(grad)
    ty.backward(torch.tensor(grad))
    for mine, theirs in [(x, tx), (g, tg), (b, tb)]:
        assert_close(mine.grad, theirs.grad, rtol=1e-6)
    # Evaluation mode uses the running statistics.
    assert_close(F.batch_norm(x, mean, var, g, b).data, TF.batch_norm(tx, t_mean, t_var, tg, tb))


@pytest.mark.parametrize("shape, training", [((3, 5, 4, 6), True), ((5, 3), True),
                                             ((1, 4, 3, 3), False)])
def test_fused_batch_norm_relu_and_add_relu(shape, training):
    """relu(batch_norm(x)) and relu(a + b) as minires's one op each, against PyTorch's two."""
    rng = np.random.default_rng(4)
    C = shape[1]
    x, tx = pair(rng.standard_normal(shape) * 2 + 1)
    g, tg = pair(rng.standard_normal(C))
    b, tb = pair(rng.standard_normal(C))
    s, ts = pair(rng.standard_normal(shape))  # a shortcut to add
    mean, var = rng.standard_normal(C), rng.uniform(0.5, 2, C)
    t_mean, t_var = torch.tensor(mean), torch.tensor(var)
    y = F.add_relu(F.batch_norm_relu(x, mean, var, g, b, training=training), s)
    ty = TF.relu(TF.relu(TF.batch_norm(tx, t_mean, t_var, tg, tb, training=training)) + ts)
    assert_close(y.data, ty)
    assert_close(mean, t_mean)
    assert_close(var, t_var)
    grad = rng.standard_normal(shape)
    y.backward(grad)
    ty.backward(torch.tensor(grad))
    for mine, theirs in [(x, tx), (g, tg), (b, tb), (s, ts)]:
        assert_close(mine.grad, theirs.grad, rtol=1e-6)


def test_linear_relu_global_pool_and_cross_entropy():
    rng = np.random.default_rng(3)
    x, tx = pair(rng.standard_normal((3, 5, 4, 3)))
    w, tw = pair(rng.standard_normal((7, 5)))
    b, tb = pair(rng.standard_normal(7))
    target = np.array([6, 0, 3])
    loss = F.cross_entropy(F.linear(F.relu(F.global_avg_pool2d(x)), w, b), target)
    t_loss = TF.cross_entropy(TF.linear(TF.relu(tx.mean(dim=(2, 3))), tw, tb),
                              torch.tensor(target))
    assert_close(loss.data, t_loss)
    loss.backward()
    t_loss.backward()
    for mine, theirs in [(x, tx), (w, tw), (b, tb)]:
        assert_close(mine.grad, theirs.grad)


def test_pad_shortcut_matches_the_reference_lambda_layer():
    """The option-A shortcut of the common PyTorch CIFAR ResNet (F.pad of the subsampled x)."""
    x = np.random.default_rng(4).standard_normal((2, 16, 8, 8))
    planes = 32
    theirs = TF.pad(torch.tensor(x)[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))
    assert_close(F.pad_shortcut(x, planes, 2).data, theirs)


def test_float32_conv_matches_closely():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 16, 16, 16)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    y = F.conv2d(x, w, stride=2, padding=1).data
    assert y.dtype == np.float32
    ty = TF.conv2d(torch.tensor(x), torch.tensor(w), stride=2, padding=1)
    assert_close(y, ty, rtol=1e-4, atol=1e-4)
