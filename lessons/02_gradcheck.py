# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 2: checking gradients
#
# Every `backward` in minires was written by hand, and a wrong one does not crash: the network
# still trains, just worse, and nobody knows why. The defence is old and simple: compare the
# analytic gradient with a **numerical** one, computed from the forward pass alone.
#
# Done carelessly, that comparison is useless in two ways: rounding errors swamp it, or it
# passes a wrong backward. This lesson measures the first and demonstrates the second on a
# batch-normalisation layer with a term missing from its backward.

# %%
# ruff: noqa: E402
import sys

import matplotlib

if "ipykernel" not in sys.modules:  # a script: draw into files, never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import minires
import minires.functional as F
from minires import lesson

parser = lesson.parser("Lesson 2: checking gradients",
                       full_help="(nothing more to run in this lesson)")
args, OUT = lesson.parse(parser)



# %% [markdown]
# ## 1. Which difference, which step, which precision
#
# The derivative of $f$ at $x$ can be estimated with a **forward difference**
# $(f(x+h) - f(x))/h$, whose error shrinks like $h$, or a **central difference**
# $(f(x+h) - f(x-h))/2h$, whose error shrinks like $h^2$ (the $h$ terms of the two Taylor
# series cancel). But $h$ cannot shrink forever: $f(x+h) - f(x-h)$ subtracts two nearly equal
# numbers, each rounded to the machine precision $\epsilon$, leaving an error of about
# $\epsilon / h$. The total error is smallest in between. We measure it for $f = \exp$ at
# 25 points $x$ between 0.1 and 2, where the exact derivative is $e^x$, and take the median
# relative error at each $h$ (a single point can be lucky).

# %%
hs = np.logspace(-14, 0, 57)
points = np.linspace(0.1, 2.0, 25)
exact = np.exp(points)


def forward_diff(h, dtype):
    x, h = points.astype(dtype), dtype(h)
    return ((np.exp(x + h) - np.exp(x)) / h).astype(np.float64)


def central_diff(h, dtype):
    x, h = points.astype(dtype), dtype(h)
    return ((np.exp(x + h) - np.exp(x - h)) / (2 * h)).astype(np.float64)


def median_error(diff, dtype):
    return [np.median(np.abs(diff(h, dtype) - exact) / exact) for h in hs]


errors = {
    "forward, float64": median_error(forward_diff, np.float64),
    "central, float64": median_error(central_diff, np.float64),
    "central, float32": median_error(central_diff, np.float32),
}
best = {}
for name, err in errors.items():
    i = int(np.argmin(err))
    best[name] = err[i]
    print(f"{name}: smallest relative error {err[i]:.1e} at h = {hs[i]:.0e}")

assert best["central, float64"] < best["forward, float64"] / 100
assert best["central, float32"] > 1000 * best["central, float64"]
assert best["central, float64"] < 1e-9

fig, ax = plt.subplots(figsize=(6, 4))
for name, err in errors.items():
    ax.loglog(hs, np.maximum(err, 1e-17), label=name)
ax.set_xlabel("step h")
ax.set_ylabel("median relative error of d exp(x)/dx")
ax.set_title("rounding (left) against truncation (right)")
ax.legend()
lesson.save(fig, OUT / "02_step_size.png")

# %% [markdown]
# Central differences in float64 reach about 1e-11 around $h = 10^{-6}$. In float32, which
# networks train in, the best is about 1e-5, at a step a thousand times larger, and that is for a
# one-line function: section 3 shows what is left of it for a whole layer. So gradients are
# *checked* in float64 with central differences, even though they are *used* in float32;
# `minires.gradcheck` refuses anything else.
#
# ## 2. Comparing two gradients: relative error
#
# Is an analytic value of 1.0002 against a numerical 1.0000 good? And 0.0002 against 0.0000?
# Absolute differences depend on the scale of the gradient, so we compare
# $|a - n| / \max(|a|, |n|)$, and allow a small absolute slack for elements that are both
# nearly zero. `minires.gradcheck` passes an element when $|a - n| \le 10^{-5} + 10^{-3}|n|$.
#
# ## 3. A numerical gradient for an array function
#
# For a function $y = f(x)$ with array output we need a scalar to differentiate. Take
# $L = \sum g \cdot f(x)$ for some fixed array $g$ (the "upstream gradient", the role
# $\partial \text{loss} / \partial y$ plays in a network). Then `backward(g)` gives the analytic
# $\partial L / \partial x$, and nudging one element of $x$ at a time gives the numerical one.

# %%
def numerical_gradient(fn, x, upstream, h=1e-6):
    """d sum(upstream * fn(x)) / dx by central differences, one element at a time."""
    grad = np.zeros_like(x.data)
    with minires.no_grad():
        for i in np.ndindex(x.shape):
            original = x.data[i]
            x.data[i] = original + h
            plus = (fn(x).data * upstream).sum()
            x.data[i] = original - h
            minus = (fn(x).data * upstream).sum()
            x.data[i] = original
            grad[i] = (plus - minus) / (2 * h)
    return grad


rng = np.random.default_rng(0)
x = minires.tensor(rng.standard_normal((4, 5)), requires_grad=True)  # float64: from NumPy
upstream = rng.standard_normal((4, 5))
F.log_softmax(x).backward(upstream)
numeric = numerical_gradient(F.log_softmax, x, upstream)
relative = np.abs(x.grad - numeric) / np.maximum(np.abs(x.grad), np.abs(numeric))
print(f"log_softmax, float64, h = 1e-6: largest relative error {relative.max():.1e}")
assert relative.max() < 1e-7

# The same check in float32, with the step that suits float32 best:
x32 = minires.tensor(x.data.astype(np.float32), requires_grad=True)
F.log_softmax(x32).backward(upstream.astype(np.float32))
numeric32 = numerical_gradient(F.log_softmax, x32, upstream.astype(np.float32), h=1e-3)
relative32 = np.abs(x32.grad - numeric32) / np.maximum(np.abs(x32.grad), np.abs(numeric32))
print(f"log_softmax, float32, h = 1e-3: largest relative error {relative32.max():.1e}")
assert relative32.max() > 1000 * relative.max()

# %% [markdown]
# In float32 the *correct* backward is off by a few tenths of a percent somewhere: a check loose
# enough to pass it would also pass a backward that is wrong by as much.

# %% [markdown]
# `minires.gradcheck` is this loop with the bookkeeping done: it draws the random upstream,
# checks every input that requires grad, and reports the worst element when one disagrees.
# Every op of the engine passes it (`tests/test_gradcheck.py`).

# %%
w = minires.tensor(rng.standard_normal((3, 5)), requires_grad=True)
b = minires.tensor(rng.standard_normal(3), requires_grad=True)
print("linear:", minires.gradcheck(F.linear, [x, w, b]))
assert minires.gradcheck(F.linear, [x, w, b])
try:
    minires.gradcheck(F.linear, [minires.tensor(x.data.astype(np.float32), requires_grad=True),
                                 w, b])
    raise AssertionError("gradcheck accepted float32")
except TypeError as e:
    print("float32 refused:", e)


# %% [markdown]
# ## 4. A wrong backward that passes the obvious check
#
# Batch normalisation (lesson 5 derives it properly) normalises each channel with the batch's
# own mean and variance: $\hat x = (x - \mu)/\sigma$, $y = \gamma \hat x + \beta$. Because $\mu$
# and $\sigma$ depend on every $x$ of the channel, a change of one $x$ reaches the loss along
# three paths: directly, through the mean, and through the variance. Deriving the backward by
# hand (lesson 5's exercise), the classic slip is to forget one of them.
#
# We can make that slip without writing a backward at all: build batchnorm from minires's
# operations, but compute the variance under `no_grad()`, so that autograd treats it as a
# constant. The result is a batchnorm whose gradient lacks the path through the variance.

# %%
def broken_bn(x, gamma, beta):
    """Training-mode batchnorm over axis 0 of (N, C) whose gradient forgets that the variance
    depends on x: autograd sees the variance as a constant."""
    mean = x.mean(axis=0, keepdims=True)
    with minires.no_grad():  # the slip: no graph, so no gradient, through the variance
        var = ((x - mean) ** 2).mean(axis=0, keepdims=True)
    return gamma * ((x - mean) * (var + 1e-5) ** -0.5) + beta


def inputs():
    rng = np.random.default_rng(1)
    return [minires.tensor(rng.standard_normal((8, 3)) * 2 + 1, requires_grad=True),
            minires.tensor(1 + 0.5 * rng.standard_normal(3), requires_grad=True),
            minires.tensor(rng.standard_normal(3), requires_grad=True)]


# %% [markdown]
# **The obvious check** differentiates the plain sum of the outputs, $L = \sum y$, as one would
# for a scalar function. (With a one-element output, gradcheck's random upstream is a single
# number, so this is the plain sum up to a constant factor.) First by hand: the broken backward's
# $\partial L/\partial x$ against central differences, element by element.

# %%
xs = inputs()
broken_bn(*xs).sum().backward()
plain_numeric = np.zeros(xs[0].shape)
for index in np.ndindex(*xs[0].shape):
    bumped = [minires.tensor(t.data.copy()) for t in inputs()]
    bumped[0].data[index] += 1e-6
    plus = float(broken_bn(*bumped).sum().data)
    bumped[0].data[index] -= 2e-6
    minus = float(broken_bn(*bumped).sum().data)
    plain_numeric[index] = (plus - minus) / 2e-6
print(f"plain sum: largest |analytic dL/dx| = {np.abs(xs[0].grad).max():.1e}, "
      f"largest |numeric dL/dx| = {np.abs(plain_numeric).max():.1e}")
assert np.abs(xs[0].grad).max() < 1e-12 and np.abs(plain_numeric).max() < 1e-8

# %% [markdown]
# They agree, so an element-by-element comparison passes the broken backward. Why? Under $L = \sum
# y$ the upstream gradient is the same number $g$ everywhere, and the missing path would carry it
# through the variance as $g \sum \hat x$, where $\sum \hat x = 0$ because $\hat x$ has mean zero by
# construction: the missing term is multiplied by zero. Worse, the whole true $\partial L/\partial
# x$ is zero (shifting or scaling a channel's inputs does not change its normalised outputs), so the
# comparison was zero against zero, and checked nothing. (So is $\partial L/\partial \gamma = \sum
# \hat x = 0$; only $\partial L/\partial \beta = m$ is not.)
#
# `minires.gradcheck` looks at each input on its own: an input whose numeric and analytic
# gradients are both ~0 everywhere is a **vacuous** check, and it says so, even though beta's
# check beside it is real:

# %%
try:
    minires.gradcheck(lambda x, g, b: broken_bn(x, g, b).sum(), inputs())
    plain_report = ""
except minires.GradcheckError as error:
    plain_report = str(error)
print(plain_report)
assert "input 0 (shape (8, 3)): vacuous" in plain_report  # x
assert "input 1 (shape (3,)): vacuous" in plain_report  # gamma
assert "input 2" not in plain_report  # beta's gradient is m per channel: a real check, passed

# %% [markdown]
# **With a random upstream gradient** $g$, the sums no longer vanish and the missing term shows.
# This is why `minires.gradcheck` always draws $g$ at random (and why its failure report names
# the input, the worst element and both values):

# %%
random_upstream = minires.gradcheck(broken_bn, inputs(), raise_exception=False)
print("random-upstream check of the broken backward:", "passed" if random_upstream else "failed")
assert not random_upstream

# %% [markdown]
# The engine's own batchnorm (`minires/ops/norm.py`) has all three terms: under a plain sum its
# check of x is just as vacuous, and with a random upstream it passes.

# %%
def real_bn(x, gamma, beta):
    return F.batch_norm(x, None, None, gamma, beta, training=True)


plain_real = minires.gradcheck(lambda *t: real_bn(*t).sum(), inputs(), raise_exception=False)
print("minires batch_norm, random upstream:", minires.gradcheck(real_bn, inputs()))
assert not plain_real and minires.gradcheck(real_bn, inputs())

# %% [markdown]
# ## What to take away
#
# - Check gradients with **central differences in float64**, $h \approx 10^{-6}$, and compare
#   with a **relative** error.
# - Always use a **random upstream gradient**. Normalising ops (batchnorm, softmax) have
#   gradients that vanish under a plain sum, so such a check can pass a wrong backward.
# - A check whose gradients are all zero checks nothing; `minires.gradcheck` says so, input by
#   input.
#
# The exercises (`python -m minires.exercises list`) use exactly this check on the backward
# passes you write: try `python -m minires.exercises check batchnorm` after lesson 5.
