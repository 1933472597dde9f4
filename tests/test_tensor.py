"""Tensor and autograd: dtypes, broadcasting, accumulation, no_grad, and backward's errors."""

import numpy as np
import pytest

import minires
from minires import Tensor, no_grad, tensor


def test_python_data_becomes_float32_and_arrays_keep_their_dtype():
    assert tensor([1.0, 2.0]).dtype == np.float32
    assert tensor(3.5).dtype == np.float32
    assert tensor(np.zeros(3)).dtype == np.float64
    assert tensor(np.zeros(3, np.float32)).dtype == np.float32
    assert tensor(np.arange(3)).dtype.kind == "i"
    assert tensor([1.0], dtype=np.float64).dtype == np.float64


def test_integer_data_cannot_require_grad():
    with pytest.raises(TypeError, match=r"requires_grad=True needs floating-point.*int"):
        tensor(np.arange(4), requires_grad=True)


def test_attributes():
    x = tensor(np.ones((2, 3)), requires_grad=True)
    assert (x.shape, x.ndim, x.size, x.device, len(x)) == ((2, 3), 2, 6, "cpu", 2)
    assert x.to("cpu") is x
    assert tensor([[4.0]]).item() == 4.0
    with pytest.raises(ValueError, match=r"one element.*\(2, 3\)"):
        x.item()
    d = (x * 2).detach()
    assert d.creator is None and not d.requires_grad


def test_arithmetic_gradients_with_broadcasting():
    rng = np.random.default_rng(0)
    a = tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = tensor(rng.standard_normal((4,)), requires_grad=True)
    c = tensor(rng.uniform(1, 2, (3, 1)), requires_grad=True)
    y = ((a + b) * c - a / c) ** 2
    upstream = rng.standard_normal(y.shape)
    y.backward(upstream)
    inner = (a.data + b.data) * c.data - a.data / c.data
    g = 2 * inner * upstream
    np.testing.assert_allclose(a.grad, g * (c.data - 1 / c.data))
    np.testing.assert_allclose(b.grad, (g * c.data).sum(axis=0))
    expected_c = (g * ((a.data + b.data) + a.data / c.data ** 2)).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(c.grad, expected_c)
    assert b.grad.shape == (4,) and c.grad.shape == (3, 1)


def test_scalars_on_either_side_keep_the_dtype():
    x = tensor([1.0, 2.0], requires_grad=True)
    y = 1 - 2 * x / 4 + 3
    assert y.dtype == np.float32
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [-0.5, -0.5])
    z = 2 / x
    z.sum().backward()
    np.testing.assert_allclose(x.grad, [-0.5 - 2.0, -0.5 - 0.5])


def test_gradients_accumulate_when_a_tensor_is_used_twice():
    x = tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    y = x * x + x  # x feeds three places
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1)
    # A second backward on a new graph adds into .grad, as in PyTorch.
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 4)


def test_diamond_graph_runs_each_op_once_in_topological_order():
    x = tensor(np.array([0.5, 1.5]), requires_grad=True)
    h = x.exp()
    y = (h * 2 + h.log()).sum()  # h reached by two paths: its gradient must be summed first
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * np.exp(x.data) + 1)


def test_deep_graph_does_not_hit_the_recursion_limit():
    x = tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0, 1.0])


def test_reductions_shapes_and_indexing():
    rng = np.random.default_rng(1)
    x = tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    y = x.mean(axis=(0, 2), keepdims=True).sum() + x.sum(axis=1)[1, 2] + x[0, :, ::2].sum()
    y.backward()
    expected = np.full(x.shape, 1 / 8)
    expected[1, :, 2] += 1
    expected[0, :, ::2] += 1
    np.testing.assert_allclose(x.grad, expected)
    z = x.reshape(6, 4).transpose(1, 0).flatten()
    assert z.shape == (24,)
    x.grad = None
    (z * tensor(np.arange(24.0))).sum().backward()
    np.testing.assert_allclose(x.grad.reshape(6, 4).T.ravel(), np.arange(24.0))


def test_repeated_fancy_indices_add_up():
    x = tensor(np.zeros(3), requires_grad=True)
    x[np.array([0, 0, 2])].sum().backward()
    np.testing.assert_allclose(x.grad, [2.0, 0.0, 1.0])


def test_matmul_gradients_and_shape_error():
    rng = np.random.default_rng(2)
    a = tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = tensor(rng.standard_normal((4, 5)), requires_grad=True)
    g = rng.standard_normal((3, 5))
    (a @ b).backward(g)
    np.testing.assert_allclose(a.grad, g @ b.data.T)
    np.testing.assert_allclose(b.grad, a.data.T @ g)
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(3, 4\)"):
        a @ a


def test_no_grad_builds_no_graph():
    x = tensor([1.0], requires_grad=True)
    with no_grad():
        y = x * 2
    assert not y.requires_grad and y.creator is None
    assert minires.function.is_grad_enabled()


def test_backward_errors():
    x = tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"one-element tensor, got shape \(2, 2\)"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\).*\(2, 2\)"):
        (x * 2).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        tensor([1.0]).backward()
    y = (x * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()
    z = (x * 2).sum()
    z.backward(retain_graph=True)
    z.backward()
    np.testing.assert_allclose(x.grad, np.full((2, 2), 6.0))


def test_wrong_gradient_shape_from_a_backward_is_named():
    class Bad(minires.Function):
        def forward(self, x):
            return x * 2

        def backward(self, dy):
            return dy[:1]

    x = tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Bad.backward returned a gradient of shape \(1,\)"):
        Bad()(x).sum().backward()


def test_leaf_tensor_is_a_tensor_instance():
    assert isinstance(tensor([1.0]), Tensor)
    assert "requires_grad=True" in repr(tensor([1.0], requires_grad=True))


def test_repr_reads_like_pytorchs():
    assert repr(tensor(np.float32(2.3079393), requires_grad=True)) == (
        "tensor(2.3079, requires_grad=True)")
    assert repr(tensor([1.0, 2.0, 3.0])) == "tensor([1., 2., 3.])"
    assert repr(tensor([[0.1, 0.2], [0.3, 0.4]])) == (
        "tensor([[0.1000, 0.2000],\n        [0.3000, 0.4000]])")
    assert repr(tensor(np.arange(3))) == "tensor([0, 1, 2], dtype=int64)"
    assert repr(tensor(np.ones(2))) == "tensor([1., 1.], dtype=float64)"  # not float32: named
    big = repr(tensor(np.zeros((100, 100), dtype=np.float32)))
    assert "..." in big and len(big.splitlines()) == 7  # 3 rows, "...", 3 rows


def test_repr_matches_torch_for_float32():
    torch = pytest.importorskip("torch")
    x = np.array([[0.12345, -2.5], [3.0, 1e-3]], dtype=np.float32)
    assert repr(tensor(x, requires_grad=True)) == repr(torch.tensor(x, requires_grad=True))


def test_the_readmes_ten_lines_print_what_their_comments_show():
    import contextlib
    import io
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("## Ten lines", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    loss_line, model_line = printed.getvalue().splitlines()
    assert loss_line.startswith("tensor(2.") and loss_line.endswith(
        ", requires_grad=True) (16, 3, 3, 3)")
    assert model_line == "269722 (8, 10)"


def test_a_leaf_gradient_never_aliases_another_array():
    """backward keeps a freshly made gradient without copying it (a kernel launch per parameter
    on a GPU), but a gradient that is passed through (Add), a view of the upstream gradient
    (reshape) or handed to two inputs must be copied: changing one .grad in place (gradient
    clipping does) must change nothing else."""
    rng = np.random.default_rng(0)
    a = tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = tensor(rng.standard_normal((2, 3)), requires_grad=True)
    c = tensor(rng.standard_normal(6), requires_grad=True)
    upstream = rng.standard_normal((2, 3))
    kept = upstream.copy()
    (a + b + c.reshape(2, 3)).backward(upstream)  # Add gives dy to a and b; reshape a view of it
    grads = [a.grad, b.grad, c.grad]
    for i, g in enumerate(grads):
        assert not np.may_share_memory(g, upstream)
        for h in grads[i + 1:]:
            assert not np.may_share_memory(g, h)
    a.grad *= 0.0
    np.testing.assert_array_equal(b.grad, kept)
    np.testing.assert_array_equal(c.grad, kept.reshape(6))
    np.testing.assert_array_equal(upstream, kept)

    # A leaf's own backward: the caller's array is copied, not kept.
    d = tensor(np.ones(3), requires_grad=True)
    g = np.full(3, 2.0)
    d.backward(g)
    g[:] = 0.0
    np.testing.assert_array_equal(d.grad, [2.0, 2.0, 2.0])


def test_one_array_returned_for_two_inputs_becomes_two_gradients():
    """A backward may hand the same new array to two inputs (dy * 2 for a + a-like ops): the
    leaves must not end up sharing one .grad."""

    class Doubled(minires.Function):
        def forward(self, a, b):
            return 2 * (a + b)

        def backward(self, dy):
            g = 2 * dy  # a fresh array, returned for both inputs
            return g, g

    a = tensor(np.ones(3), requires_grad=True)
    b = tensor(np.ones(3), requires_grad=True)
    Doubled()(a, b).backward(np.ones(3))
    assert not np.may_share_memory(a.grad, b.grad)
    a.grad *= 0.0
    np.testing.assert_array_equal(b.grad, [2.0, 2.0, 2.0])


def test_a_fresh_gradient_is_kept_without_a_copy_and_accumulates_out_of_place():
    x = tensor(np.arange(3.0), requires_grad=True)
    w = tensor(np.full(3, 2.0), requires_grad=True)
    (x * w).backward(np.ones(3))
    first = x.grad
    assert not np.may_share_memory(first, w.data)  # dy * w is a new array
    (x * w).backward(np.ones(3))  # a second backward adds into a new array
    assert x.grad is not first and not np.may_share_memory(x.grad, first)
    np.testing.assert_array_equal(first, [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(x.grad, [4.0, 4.0, 4.0])


def test_changing_a_gradient_in_place_does_not_change_a_retained_graph():
    x = tensor(np.arange(4.0), requires_grad=True)
    y = x * 3.0
    loss = y.sum()
    loss.backward(retain_graph=True)
    x.grad *= 0.0  # in place: the retained graph must not see it
    loss.backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0, 3.0, 3.0])


def test_a_broadcast_gradient_becomes_a_plain_writable_array():
    """mean's backward gives a read-only view of stride 0; the leaf gets a copy of its own."""
    x = tensor(np.ones((3, 4), np.float32), requires_grad=True)
    x.mean().backward()
    assert x.grad.flags.c_contiguous and x.grad.flags.writeable
    x.grad *= 2.0
    np.testing.assert_allclose(x.grad, np.full((3, 4), 2 / 12))
