"""The fused ops equal the two ops they fuse, on every backend: batch_norm_relu is relu after
batch_norm, add_relu is relu after the sum. Forward values, every gradient and the running
statistics; training and evaluation; odd shapes, batch 1, (N, C) inputs; float32, which the
numba and CUDA kernels compute themselves, and float64. The models use them: the layers and
blocks are checked in test_nn.py and test_models.py.
"""

import numpy as np
import pytest
from conftest import backend_array

import minires.functional as F
from minires import backends, tensor

SHAPES = [(3, 5, 7, 9), (1, 3, 5, 5), (4, 2, 1, 300), (1, 1, 17, 1), (5, 3), (1, 4)]


def host(array):
    return np.asarray(backends.to_device(array, "cpu"))


def assert_same(fused, unfused, dtype, what):
    """Equal to rounding: the kernels compute the same expressions in the same order."""
    tolerance = 1e-6 if dtype == np.float32 else 1e-12
    scale = max(np.abs(unfused).max(), 1.0)
    np.testing.assert_allclose(fused, unfused, rtol=tolerance, atol=tolerance * scale,
                               err_msg=what)


def run(op, inputs, dy, backend):
    """op(*leaves) and the leaves' gradients for upstream dy, as host arrays."""
    leaves = [tensor(backend_array(x, backend), requires_grad=True) for x in inputs]
    y = op(*leaves)
    y.backward(backend_array(dy, backend))
    return [host(y.data)] + [host(leaf.grad) for leaf in leaves]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_relu_is_batch_norm_then_relu(backend, shape, training, dtype):
    C = shape[1]
    if training and np.prod(shape) // C < 2:
        pytest.skip("training needs two values per channel")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    results, statistics = {}, {}
    for name, fused in (("fused", True), ("unfused", False)):
        running = [backend_array(np.full(C, value, dtype), backend) for value in (0.3, 1.5)]

        def op(x, g, b):
            if fused:
                return F.batch_norm_relu(x, *running, g, b, training=training)
            return F.relu(F.batch_norm(x, *running, g, b, training=training))

        results[name] = run(op, (x, gamma, beta), dy, backend)
        statistics[name] = [host(r) for r in running]
    assert (results["fused"][0] == 0).any() and (results["fused"][0] > 0).any()  # a real ReLU
    for what, fused, unfused in zip(("y", "dx", "dgamma", "dbeta"), results["fused"],
                                    results["unfused"]):
        assert fused.dtype == dtype, what
        assert_same(fused, unfused, dtype, what)
    for fused, unfused in zip(statistics["fused"], statistics["unfused"]):
        assert_same(fused, unfused, dtype, "running statistics")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_shape, b_shape", [((3, 5, 7, 9), (3, 5, 7, 9)), ((257,), (257,)),
                                              ((1, 2, 3, 3), (2, 1, 1)), ((4, 3), (4, 3))])
def test_add_relu_is_the_sum_then_relu(backend, a_shape, b_shape, dtype):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(a_shape).astype(dtype), rng.standard_normal(b_shape).astype(dtype)
    dy = rng.standard_normal(np.broadcast_shapes(a_shape, b_shape)).astype(dtype)
    fused = run(F.add_relu, (a, b), dy, backend)
    unfused = run(lambda a, b: F.relu(a + b), (a, b), dy, backend)
    assert (fused[0] == 0).any() and (fused[0] > 0).any()
    for what, got, want in zip(("y", "da", "db"), fused, unfused):
        assert got.dtype == dtype and got.shape == want.shape, what
        np.testing.assert_array_equal(got, want, err_msg=what)


def test_add_relu_gives_each_leaf_its_own_gradient(backend):
    """One gradient array serves both inputs; two leaves must not share it (p.grad *= 2)."""
    a, b = (tensor(backend_array(np.array([1.0, -2.0, 3.0]), backend), requires_grad=True)
            for _ in range(2))
    F.add_relu(a, b).backward(backend_array(np.ones(3), backend))
    a.grad *= 2
    np.testing.assert_array_equal(host(a.grad), [2, 0, 2])
    np.testing.assert_array_equal(host(b.grad), [1, 0, 1])
