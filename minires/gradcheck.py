"""gradcheck: compare backward() with central differences, the test every op must pass (lesson 2).

For a random upstream gradient g, backward gives the analytic d(sum(g * f(x)))/dx; the numeric
one is (L(x + eps) - L(x - eps)) / (2 eps) per element, with L(x) = sum(g * f(x)). The upstream
gradient must be random: for batchnorm or softmax the gradient of a plain sum is exactly zero,
so a check against sum(f(x)) would pass even a wrong backward.
"""

import numpy as np

from .backends import get_array_module, to_device
from .function import no_grad
from .tensor import Tensor

# Below this, an input's gradients count as zero: central differences of a float64 loss of
# order 1 carry rounding noise of about 1e-16 / eps = 1e-10.
VACUOUS = 1e-8


class GradcheckError(AssertionError):
    """Raised by gradcheck when an analytic gradient disagrees with the numeric one."""


def _loss(fn, inputs, upstream):
    out = fn(*inputs)
    return float((out.data * upstream).sum())


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, raise_exception=True):
    """Check fn's gradient for every input tensor that requires grad.

    fn takes the tensors in inputs and returns one tensor. Inputs must be float64 (float32's
    rounding swamps a central difference). Returns True when every element satisfies
    |analytic - numeric| <= atol + rtol * |numeric|. Otherwise raises GradcheckError (or prints
    and returns False with raise_exception=False) naming the input, the worst element, both values
    and the relative error. An input whose numeric and analytic gradients are both ~0 everywhere
    is reported as a vacuous check of that input: any backward returning zeros would pass it
    (lesson 2's plain-sum batchnorm, where x's gradient is exactly 0 while gamma's and beta's
    are not).
    """
    inputs = list(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so nothing is checked")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} (shape {inputs[i].shape}) is "
                            f"{inputs[i].dtype}; use float64, float32 is too coarse for "
                            "central differences")
        inputs[i].grad = None
        # Perturbing elements goes through a flat view, which needs contiguous data.
        inputs[i].data = get_array_module(inputs[i].data).ascontiguousarray(inputs[i].data)

    out = fn(*inputs)
    xp = get_array_module(out.data)
    upstream = xp.asarray(np.random.default_rng(seed).standard_normal(out.shape))
    out.backward(upstream)

    problems = []
    for i in checked:
        x = inputs[i]
        analytic = np.zeros(x.shape) if x.grad is None else to_device(x.grad, "cpu")
        numeric = _numeric_gradient(fn, inputs, x, upstream, eps)
        largest = max(float(np.abs(numeric).max(initial=0.0)),
                      float(np.abs(analytic).max(initial=0.0)))
        if largest < VACUOUS:
            problems.append(
                f"input {i} (shape {x.shape}): vacuous check, its numeric and analytic gradients "
                f"are ~0 everywhere (largest {largest:.1e}), so any backward returning zeros "
                "would pass; use a random upstream gradient (not a plain sum), other inputs, or "
                "leave this input out")
            continue
        error = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if (error > 0).any():
            worst = np.unravel_index(np.argmax(error), x.shape)
            a, n = analytic[worst], numeric[worst]
            relative = abs(a - n) / max(abs(a), abs(n), 1e-12)
            problems.append(
                f"input {i} (shape {x.shape}): {int((error > 0).sum())} of {x.size} elements "
                f"differ; worst at index {tuple(int(j) for j in worst)}: analytic {a:.6g}, "
                f"numeric {n:.6g}, relative error {relative:.3g}"
            )
    if not problems:
        return True
    message = "gradcheck failed:\n  " + "\n  ".join(problems)
    if raise_exception:
        raise GradcheckError(message)
    print(message)
    return False


def _numeric_gradient(fn, inputs, x, upstream, eps):
    """Central differences of sum(upstream * fn(inputs)) with respect to x, element by element."""
    numeric = np.zeros(x.shape)
    flat = x.data.reshape(-1)  # a view: writing into it perturbs x in place
    with no_grad():
        for k in range(flat.size):
            original = float(flat[k])
            flat[k] = original + eps
            plus = _loss(fn, inputs, upstream)
            flat[k] = original - eps
            minus = _loss(fn, inputs, upstream)
            flat[k] = original
            numeric.reshape(-1)[k] = (plus - minus) / (2 * eps)
    return numeric
