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
# # Lesson 5: batch normalisation
#
# Every convolution of a ResNet is followed by batch normalisation (Ioffe & Szegedy, 2015):
# each channel is shifted and scaled to mean 0 and variance 1 over the batch, then given a
# learned scale $\gamma$ and shift $\beta$. It keeps the activations of a deep network at a sane
# scale, which is a large part of why networks of 20 or 56 layers train at all (lesson 8 shows
# what happens to the deep *plain* ones anyway).
#
# BN behaves differently in training and in evaluation, keeps running statistics on the side,
# and has the least obvious backward pass of any layer in this course. We take each in turn.

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
from minires import Function, lesson

parser = lesson.parser("Lesson 5: batch normalisation",
                       full_help="(nothing more to run in this lesson)")
args, OUT = lesson.parse(parser)



# %% [markdown]
# ## 1. Training mode: normalise with the batch's own statistics
#
# For activations $x$ of shape $(N, C, H, W)$, each channel $c$ has $m = N H W$ values in the
# batch. Algorithm 1 of the paper:
#
# $$\mu_c = \frac{1}{m}\sum x, \quad \sigma^2_c = \frac{1}{m}\sum (x - \mu_c)^2, \quad
#   \hat x = \frac{x - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}}, \quad y = \gamma_c \hat x + \beta_c$$
#
# Channels whose raw scale differs by a factor of 100 come out alike:

# %%
rng = np.random.default_rng(0)
scales = np.array([0.1, 1.0, 10.0], np.float32)
offsets = np.array([5.0, 0.0, -20.0], np.float32)
x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32) * scales[:, None, None] \
    + offsets[:, None, None]  # (N, C, H, W): channel c ~ N(offset_c, scale_c^2)
gamma, beta = np.ones(3, np.float32), np.zeros(3, np.float32)
y = F.batch_norm(minires.tensor(x), None, None, minires.tensor(gamma), minires.tensor(beta),
                 training=True).numpy()
print("before: mean per channel", x.mean(axis=(0, 2, 3)).round(2),
      " std", x.std(axis=(0, 2, 3)).round(3))
print("after:  mean per channel", y.mean(axis=(0, 2, 3)).round(4),
      " std", y.std(axis=(0, 2, 3)).round(3))
assert np.allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-4)
assert np.allclose(y.std(axis=(0, 2, 3)), 1, atol=1e-2)  # the eps keeps it a bit under 1

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for c in range(3):
    axes[0].hist(x[:, c].ravel(), bins=60, alpha=0.6, label=f"channel {c}")
    axes[1].hist(y[:, c].ravel(), bins=60, alpha=0.6, label=f"channel {c}")
axes[0].set_title("before batchnorm")
axes[1].set_title("after batchnorm (gamma = 1, beta = 0)")
axes[0].legend()
lesson.save(fig, OUT / "05_histograms.png")

# %% [markdown]
# With $\gamma_c = \sigma_c$ and $\beta_c = \mu_c$ the layer could undo itself, so normalising
# costs the network no expressive power; it only changes which weights are easy to learn.
#
# ## 2. Running statistics
#
# At test time there may be one image, not a batch, and a prediction should not depend on
# which other images happen to be in the batch. So during training BN keeps an exponential
# moving average of the statistics, updated in place at every training step:
#
# $$\text{running} \leftarrow (1 - \text{momentum}) \cdot \text{running} + \text{momentum} \cdot
#   \text{batch statistic}$$
#
# with momentum 0.1 (PyTorch's convention; the running *variance* uses the unbiased estimate,
# $\frac{m}{m-1}\sigma^2$). Feed 100 batches from the distribution above and watch the running
# mean and variance approach the true $\mu_c$ and $s_c^2$.

# %%
running_mean, running_var = np.zeros(3, np.float32), np.ones(3, np.float32)  # the usual start
trace_mean, trace_var = [], []
for step in range(100):
    xb = rng.standard_normal((16, 3, 8, 8)).astype(np.float32) * scales[:, None, None] \
        + offsets[:, None, None]
    F.batch_norm(minires.tensor(xb), running_mean, running_var, training=True, momentum=0.1)
    trace_mean.append(running_mean.copy())
    trace_var.append(running_var.copy())
print("running mean", running_mean.round(3), " true", offsets)
print("running var ", running_var.round(4), " true", scales ** 2)
# Within a tenth of each channel's spread (the estimate is an average of noisy batch means):
assert np.all(np.abs(running_mean - offsets) < 0.1 * scales)
assert np.allclose(running_var, scales ** 2, rtol=0.05)

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].plot(np.array(trace_mean))
axes[0].set_title("running mean (momentum 0.1)")
axes[1].semilogy(np.array(trace_var))
axes[1].set_title("running variance")
for ax in axes:
    ax.set_xlabel("training step")
lesson.save(fig, OUT / "05_running_stats.png")

# %% [markdown]
# After $k$ steps the starting value still weighs $0.9^k$: about 0.3 after 10 steps, 0.005
# after 50. A network evaluated too early in training, or after the weights changed a lot in
# the last few steps, uses stale statistics; that is one reason test accuracy is noisier than
# training accuracy early in lesson 9's curves.
#
# ## 3. Evaluation mode: a fixed affine map
#
# With `training=False`, BN uses the running statistics, so each channel is just
# $y = \gamma (x - \mu_{run}) / \sqrt{\sigma^2_{run} + \epsilon} + \beta$, the same for every
# batch. In training mode, an image's output depends on the rest of its batch:

# %%
batch_a = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
batch_b = batch_a.copy()
batch_b[1:] = rng.standard_normal((7, 3, 8, 8))  # the same first image, other companions


def first_image(batch, training):
    out = F.batch_norm(minires.tensor(batch), running_mean.copy(), running_var.copy(),
                       minires.tensor(gamma), minires.tensor(beta), training=training)
    return out.numpy()[0]


train_diff = np.abs(first_image(batch_a, True) - first_image(batch_b, True)).max()
eval_diff = np.abs(first_image(batch_a, False) - first_image(batch_b, False)).max()
print(f"image 0, other companions: training mode changes by {train_diff:.3f}, "
      f"evaluation mode by {eval_diff:.1e}")
assert train_diff > 0.01 and eval_diff == 0

# %% [markdown]
# Forgetting to switch a network to evaluation mode (`model.eval()` in lesson 6 onwards) is
# one of the most common bugs in deep learning: test accuracy then depends on the test batch
# size. A batch of one image shows how far it can go. After a fully connected layer, the input
# is (1, C): each channel's "batch" is a single number, which minus its own mean is 0, so every
# image would give the same output, beta; minires (like PyTorch) refuses to train on it. After a
# convolution, the input is (1, C, H, W) and the statistics are over the image's own pixels:
# not zero, but each channel of the image loses its own mean and contrast, which may be what
# told the classes apart.

# %%
one = rng.standard_normal((1, 3)).astype(np.float32) * 5 + 2
by_hand = (one - one.mean(axis=0)) / np.sqrt(one.var(axis=0) + 1e-5)
print(f"(1, C) input, by hand: x_hat = {by_hand.round(6)}")
try:
    F.batch_norm(minires.tensor(one), None, None, training=True)
    refused = ""
except ValueError as error:
    refused = str(error)
print(f"minires: {refused}")
assert np.all(by_hand == 0) and "more than one value per channel" in refused

one_map = rng.standard_normal((1, 3, 8, 8)).astype(np.float32) * 5 + 2
map_out = F.batch_norm(minires.tensor(one_map), None, None, training=True).numpy()
print(f"(1, C, H, W) input: channel means {one_map.mean(axis=(0, 2, 3)).round(2)} before, "
      f"{np.abs(map_out.mean(axis=(0, 2, 3))).max():.0e} after; standard deviations "
      f"{map_out.std(axis=(0, 2, 3)).round(3)}")
assert np.abs(map_out).max() > 1 and np.allclose(map_out.std(axis=(0, 2, 3)), 1, atol=1e-3)
assert np.allclose(map_out.mean(axis=(0, 2, 3)), 0, atol=1e-4)

# %% [markdown]
#
# ## Exercise first: the backward pass
#
# The next section derives the answer to the exercise `lessons/exercises/batchnorm.py`, so try
# it before reading on. The file has the forward pass of section 1, in training mode and, given
# running statistics, in evaluation mode; write its backward for both, returning
# `dx, dgamma, dbeta`, and run `python -m minires.exercises check batchnorm`. The difficulty is
# that in training $\mu$ and $\sigma$ depend on every $x$ of the channel (and in evaluation?).
# Stuck? `check batchnorm --hint 1` asks a question, `--hint 2` points the way, `--hint 3` gives
# the formula; the grader recognises the common slips (a missing path, a missing $\gamma$, a
# wrong axis, the training formula in evaluation mode).
#
# ## 4. The backward pass, three ways
#
# In training mode, $\mu$ and $\sigma$ depend on every $x$ of the channel, so each input
# influences every output of its channel. We derive the gradient by walking the forward
# computation backwards one stage at a time (the way autograd would), then simplify.
# Forward, per channel, with $g = \partial L / \partial y$ the upstream gradient:
#
# | stage | forward | backward |
# |---|---|---|
# | 1 | $\mu = \frac1m \sum x$ | $dx \mathrel{+}= \frac1m d\mu$ |
# | 2 | $x_c = x - \mu$ | $dx \mathrel{+}= dx_c$, $d\mu = -\sum dx_c$ |
# | 3 | $v = \frac1m \sum x_c^2$ | $dx_c \mathrel{+}= \frac2m x_c\, dv$ |
# | 4 | $r = (v + \epsilon)^{-1/2}$ | $dv = -\frac12 (v+\epsilon)^{-3/2} dr$ |
# | 5 | $\hat x = x_c\, r$ | $dx_c = r\, d\hat x$, $dr = \sum x_c\, d\hat x$ |
# | 6 | $y = \gamma \hat x + \beta$ | $d\hat x = \gamma g$ |
#
# and for the parameters $d\gamma = \sum g\,\hat x$, $d\beta = \sum g$ (sums over the channel).
# Note $x_c$ is used twice (stages 3 and 5) and $x$ twice (stages 1 and 2): their gradients
# add, as in lesson 1.

# %%
class StagedBatchNorm(Function):
    """Training-mode BN over the axes (0, 2, 3); backward walks the table above, stage 6 to 1."""

    def forward(self, x, gamma, beta):
        axes, m = (0, 2, 3), x.size // x.shape[1]
        self.m, self.axes = m, axes
        mu = x.mean(axis=axes, keepdims=True)  # stage 1
        self.xc = x - mu  # stage 2
        self.v = (self.xc ** 2).sum(axis=axes, keepdims=True) / m  # stage 3
        self.r = (self.v + 1e-5) ** -0.5  # stage 4
        self.x_hat = self.xc * self.r  # stage 5
        self.gamma = gamma.reshape(1, -1, 1, 1)
        return self.gamma * self.x_hat + beta.reshape(1, -1, 1, 1)  # stage 6

    def backward(self, g):
        axes, m = self.axes, self.m
        dgamma, dbeta = (g * self.x_hat).sum(axis=axes), g.sum(axis=axes)  # stage 6
        dx_hat = self.gamma * g
        dxc = self.r * dx_hat  # stage 5
        dr = (self.xc * dx_hat).sum(axis=axes, keepdims=True)
        dv = -0.5 * (self.v + 1e-5) ** -1.5 * dr  # stage 4
        dxc = dxc + 2 / m * self.xc * dv  # stage 3: the second use of xc
        dx = dxc  # stage 2
        dmu = -dxc.sum(axis=axes, keepdims=True)
        dx = dx + dmu / m  # stage 1: the second use of x
        return dx, dgamma, dbeta


# %% [markdown]
# Substituting each stage into the next, and using $\sum x_c = 0$, everything collapses to
# one line (the formula in `minires/ops/norm.py`):
#
# $$dx = \frac{r}{m}\Big(m\, d\hat x - \sum d\hat x - \hat x \sum d\hat x\, \hat x\Big),
#   \qquad d\hat x = \gamma g$$
#
# Read it as: the gradient $d\hat x$, minus its mean (the path through $\mu$), minus its
# component along $\hat x$ (the path through $\sigma$), scaled by $1/\sigma$. Three versions
# must agree: the staged one, the engine's compact one, and plain autograd through the
# *primitive* ops (mean, subtract, power, multiply), which needs no derivation at all.

# %%
def bn_by_primitives(x, gamma, beta):
    """The same forward from minires's elementwise and reduction ops; autograd does backward."""
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    xc = x - mu
    v = (xc ** 2).mean(axis=(0, 2, 3), keepdims=True)
    x_hat = xc * (v + 1e-5) ** -0.5
    return gamma.reshape(1, -1, 1, 1) * x_hat + beta.reshape(1, -1, 1, 1)


versions = {
    "staged by hand": lambda x, g, b: StagedBatchNorm()(x, g, b),
    "minires batch_norm": lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True),
    "autograd of primitives": bn_by_primitives,
}
x64 = rng.standard_normal((4, 3, 5, 5)) * 3 + 1
g64, b64 = 1 + 0.5 * rng.standard_normal(3), rng.standard_normal(3)
upstream = rng.standard_normal(x64.shape)
grads = {}
for name, fn in versions.items():
    inputs = [minires.tensor(a, requires_grad=True) for a in (x64, g64, b64)]
    fn(*inputs).backward(upstream)
    grads[name] = [t.grad for t in inputs]
    passed = minires.gradcheck(fn, [minires.tensor(a, requires_grad=True)
                                    for a in (x64, g64, b64)])
    print(f"{name:<24} dx[0, 0, 0, :3] = {inputs[0].grad[0, 0, 0, :3].round(6)}  "
          f"gradcheck: {'passed' if passed else 'FAILED'}")
    assert passed
for name in versions:
    for mine, ref in zip(grads[name], grads["minires batch_norm"]):
        assert np.allclose(mine, ref)

# %% [markdown]
# Two properties of this gradient, visible in the formula: per channel, $\sum dx = 0$ and
# $\sum dx\,\hat x = 0$ (the second up to a term of order $\epsilon/\sigma^2$, from the
# $\epsilon$ under the square root). Shifting a channel's inputs, or scaling them, does not
# change $\hat x$, so the gradient has no component in those directions. (Lesson 2 showed the
# trap this sets: under a plain sum, the whole $dx$ is zero.)

# %%
dx = grads["minires batch_norm"][0]
x_hat = (x64 - x64.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(
    x64.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
print("sum of dx per channel:        ", dx.sum(axis=(0, 2, 3)).round(12))
print("sum of dx * x_hat per channel:", (dx * x_hat).sum(axis=(0, 2, 3)))
assert np.allclose(dx.sum(axis=(0, 2, 3)), 0, atol=1e-10)
assert np.all(np.abs((dx * x_hat).sum(axis=(0, 2, 3))) < 1e-5 * np.abs(dx).sum(axis=(0, 2, 3)))

# %% [markdown]
# In evaluation mode $\mu$ and $\sigma$ are constants, and the backward is just
# $dx = \gamma g / \sqrt{\sigma^2_{run} + \epsilon}$:

# %%
rm, rv = rng.standard_normal(3), 1 + rng.random(3)
eval_bn = lambda x, g, b: F.batch_norm(x, rm, rv, g, b, training=False)  # noqa: E731
inputs = [minires.tensor(a, requires_grad=True) for a in (x64, g64, b64)]
eval_bn(*inputs).backward(upstream)
expected = upstream * (g64 / np.sqrt(rv + 1e-5)).reshape(1, -1, 1, 1)
print("evaluation mode: dx = g * gamma / std:", np.allclose(inputs[0].grad, expected))
assert np.allclose(inputs[0].grad, expected)
assert minires.gradcheck(eval_bn, [minires.tensor(a, requires_grad=True)
                                   for a in (x64, g64, b64)])

# %% [markdown]
# ## The reference inside a real network
#
# minires's `batch_norm` op computes nothing itself: it calls its backend's
# `batch_norm_forward` and `batch_norm_backward`. The reference backend's are the formulas
# of this lesson, line for line:

# %%
import inspect  # noqa: E402

from minires import backends, models  # noqa: E402

print(inspect.getsource(backends.backend("reference").batch_norm_backward))

# %% [markdown]
# On the CPU the default backend, numba, computes the same thing in fewer passes over memory.
# One training step of a ResNet-8, run on each backend from the same weights, gives the same
# gradients (float64, so only the order of the sums differs):

# %%
batch = minires.tensor(np.random.default_rng(7).standard_normal((4, 3, 16, 16)))
grads = {}
for name in ("reference", "numba"):
    minires.nn.init.manual_seed(0)
    net = models.resnet_cifar(8)
    for p in net.parameters():
        p.data = p.data.astype(np.float64)
    with backends.using(name):
        minires.functional.cross_entropy(net(batch), np.array([0, 1, 2, 3])).backward()
    grads[name] = {k: p.grad for k, p in net.named_parameters()}
worst = max(np.abs(grads["numba"][k] - g).max() / np.abs(g).max()
            for k, g in grads["reference"].items())
print(f"largest relative difference of a gradient, numba vs reference: {worst:.1e}")
assert worst < 1e-9

# %% [markdown]
# ## What we have
#
# - Training mode normalises each channel with the batch's statistics and updates running
#   averages in place; evaluation mode uses the running averages, a fixed affine map.
# - The training-mode gradient removes from $d\hat x$ its mean and its component along $\hat x$.
# - Three derivations agree with each other and with central differences.
#
# Your turn: `lessons/exercises/batchnorm.py`, graded by
# `python -m minires.exercises check batchnorm`.
