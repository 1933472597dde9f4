"""The gradient checker itself: it must bite on wrong backwards and refuse vacuous checks."""

import numpy as np
import pytest

import minires.functional as F
from minires import Function, GradcheckError, gradcheck, tensor
from minires.ops.norm import BatchNormalization


class BatchNormMissingATerm(BatchNormalization):
    """A classic mistake: dx = dx_hat / std, forgetting that mean and var depend on x too."""

    def backward(self, dy):
        dx, dgamma, dbeta = super().backward(dy)
        _, inv_std, gamma = self.saved  # (N, C) inputs: the reference's (x_hat, inv_std, gamma)
        return dy * gamma * inv_std, dgamma, dbeta


def broken_batch_norm(x, gamma):
    return BatchNormMissingATerm(None, None, True, 0.1, 1e-5)(x, gamma, None)


def test_wrong_batchnorm_backward_is_reported():
    rng = np.random.default_rng(0)
    x = tensor(rng.standard_normal((4, 3)), requires_grad=True)
    gamma = tensor(rng.standard_normal(3), requires_grad=True)
    with pytest.raises(GradcheckError) as error:
        gradcheck(broken_batch_norm, [x, gamma])
    message = str(error.value)
    assert "input 0 (shape (4, 3))" in message
    assert "worst at index" in message and "analytic" in message and "numeric" in message
    assert "input 1" not in message  # dgamma is right, so it must not be blamed


def test_a_plain_sum_would_have_passed_the_broken_batchnorm():
    """Why gradcheck uses a random upstream gradient: d sum(bn(x)) / dx is exactly 0."""
    rng = np.random.default_rng(0)
    x = tensor(rng.standard_normal((4, 3)), requires_grad=True)
    gamma = tensor(np.ones(3))
    broken_batch_norm(x, gamma).sum().backward()
    plain_sum_analytic = x.grad  # the broken backward says gamma / std, far from 0
    assert np.abs(plain_sum_analytic).min() > 0.1
    # ...yet the true gradient of the plain sum is zero, so only a random upstream exposes it:
    correct = tensor(x.data, requires_grad=True)
    F.batch_norm(correct, None, None, training=True).sum().backward()
    np.testing.assert_allclose(correct.grad, 0, atol=1e-9)


def test_returns_false_and_prints_without_raising(capsys):
    x = tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    assert gradcheck(broken_batch_norm, [x, tensor(np.ones(3))], raise_exception=False) is False
    assert "gradcheck failed" in capsys.readouterr().out


def test_vacuous_check_is_flagged():
    x = tensor(np.random.default_rng(0).standard_normal(5), requires_grad=True)
    with pytest.raises(GradcheckError, match="vacuous"):
        gradcheck(lambda x: x * 0.0, [x])


def test_a_vacuous_input_is_refused_even_when_the_others_are_not():
    """Lesson 2's plain-sum batchnorm: d sum(bn(x)) / dx is exactly 0, and so is d/dgamma (it is
    sum(x_hat) = 0), while beta's gradient is m per channel: the check of beta is real, those of
    x and gamma are vacuous, and each is refused on its own."""
    rng = np.random.default_rng(1)
    x = tensor(rng.standard_normal((8, 3)) * 2 + 1, requires_grad=True)
    gamma = tensor(1 + 0.5 * rng.standard_normal(3), requires_grad=True)
    beta = tensor(rng.standard_normal(3), requires_grad=True)

    def plain_sum(x, gamma, beta):
        return F.batch_norm(x, None, None, gamma, beta, training=True).sum()

    with pytest.raises(GradcheckError) as error:
        gradcheck(plain_sum, [x, gamma, beta])
    message = str(error.value)
    assert "input 0 (shape (8, 3)): vacuous" in message
    assert "input 1 (shape (3,)): vacuous" in message
    assert "input 2" not in message  # beta's check is real, and passes
    x.requires_grad = gamma.requires_grad = False
    assert gradcheck(plain_sum, [x, gamma, beta])
    # x alone, with beta's real gradient no longer beside it, is refused all the same.
    x.requires_grad, beta.requires_grad = True, False
    with pytest.raises(GradcheckError, match="input 0.*vacuous"):
        gradcheck(plain_sum, [x, gamma, beta])
    # With a random upstream gradient, no check is vacuous, and all pass.
    gamma.requires_grad = beta.requires_grad = True
    assert gradcheck(lambda *t: F.batch_norm(*t[:1], None, None, *t[1:], training=True),
                     [x, gamma, beta])


def test_float32_is_refused_and_nothing_to_check_is_an_error():
    with pytest.raises(TypeError, match="input 0.*float32.*float64"):
        gradcheck(F.relu, [tensor(np.ones(3, np.float32), requires_grad=True)])
    with pytest.raises(ValueError, match="no input has requires_grad"):
        gradcheck(F.relu, [tensor(np.ones(3))])


def test_a_subtly_wrong_scale_is_caught():
    class AlmostDouble(Function):
        def forward(self, x):
            return 2 * x

        def backward(self, dy):
            return 2.01 * dy

    x = tensor(np.random.default_rng(0).standard_normal((3, 3)), requires_grad=True)
    with pytest.raises(GradcheckError, match="relative error"):
        gradcheck(lambda x: AlmostDouble()(x), [x])
