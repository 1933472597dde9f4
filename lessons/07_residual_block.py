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
# # Lesson 7: the residual block
#
# He, Zhang, Ren and Sun (2015), "Deep Residual Learning for Image Recognition": instead of
# asking a few stacked layers to compute a mapping $H(x)$, let them compute the *residual*
# $F(x) = H(x) - x$ and add the input back:
#
# $$y = \text{relu}\big(F(x) + x\big), \qquad F(x) = \text{bn}_2(\text{conv}_2(\text{relu}(
#   \text{bn}_1(\text{conv}_1(x)))))$$
#
# If the best thing a block can do is nothing, it only has to drive $F$ to zero, which is easy;
# a plain block would have to learn the identity through two convolutions, which is not. This
# lesson reads the block in `minires/models.py`, counts what the three kinds of shortcut cost,
# and measures what the shortcut does to the gradients of a 56-layer network at initialisation.

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
from minires import lesson, models, nn
from minires.data import DataLoader, channel_stats, load_sample

parser = lesson.parser("Lesson 7: the residual block",
                       full_help="average the gradients over 5 seeds")
args, OUT = lesson.parse(parser)



# %% [markdown]
# ## 1. The block in code
#
# `models.BasicBlock` is the paper's Fig. 2 for CIFAR: two 3x3 convolutions, each followed by
# batchnorm, a ReLU between them, and the shortcut added before the last ReLU. Its `forward`:
#
# ```python
# out = self.bn1(self.conv1(x), relu=True)  # relu(bn1(conv1(x))), one op
# if not self.residual:
#     return self.bn2(self.conv2(out), relu=True)  # the plain block: relu(bn2(conv2(out)))
# out = self.bn2(self.conv2(out))
# return F.add_relu(out, self.shortcut(x))  # the residual connection: relu(F(x) + x)
# ```
#
# `relu=True` and `F.add_relu` are the formula's ReLUs, each computed as one op with the step
# before it: the same numbers as `F.relu(self.bn1(...))` and `F.relu(out + self.shortcut(x))`,
# in fewer passes over memory (lesson 10). `residual=False` builds the *plain* block: the same
# layers without the addition. Same parameters, same computation, one `+` apart.

# %%
nn.init.manual_seed(0)
block = models.BasicBlock(16, 16)
plain_block = models.BasicBlock(16, 16, residual=False)
print(block)
params = sum(p.size for p in block.parameters())
print(f"parameters: residual block {params:,}, plain block "
      f"{sum(p.size for p in plain_block.parameters()):,}")
assert params == sum(p.size for p in plain_block.parameters())

# %% [markdown]
# ### A block that does nothing
#
# Set the last batchnorm's scale $\gamma_2$ to zero and $F(x) = \beta_2 = 0$: the residual
# block becomes $\text{relu}(x)$, the identity on the non-negative activations that come out
# of a previous ReLU, and its gradient passes straight through. The plain block with the same
# weights outputs $\text{relu}(0) = 0$ and passes no gradient at all. (Initialising $\gamma_2 = 0$
# on purpose is a known trick for training very deep ResNets; Goyal et al. 2017.)

# %%
x = minires.tensor(np.abs(np.random.default_rng(0).standard_normal((4, 16, 8, 8)))
                   .astype(np.float32), requires_grad=True)  # non-negative, as after a ReLU
for b in (block, plain_block):
    b.bn2.weight.data[...] = 0
upstream = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
for name, b in [("residual", block), ("plain", plain_block)]:
    x.grad = None
    y = b(x)
    y.backward(upstream)
    print(f"{name:<9} block: |y - x| max {np.abs(y.numpy() - x.numpy()).max():.2e}, "
          f"|dx - upstream| max {np.abs(x.grad - upstream * (x.numpy() > 0)).max():.2e}, "
          f"|dx| max {np.abs(x.grad).max():.2e}")
    if name == "residual":
        assert np.allclose(y.numpy(), x.numpy()) and np.allclose(x.grad, upstream * (x.numpy() > 0))
    else:
        assert np.allclose(y.numpy(), 0) and np.allclose(x.grad, 0)

# %% [markdown]
# In general, the gradient of $s = F(x) + x$ is $\frac{\partial L}{\partial x} =
# \frac{\partial L}{\partial s}\big(\frac{\partial F}{\partial x} + I\big)$: whatever $F$'s
# Jacobian does, the identity term delivers the gradient *at the sum*, $\partial L/\partial s$,
# to $x$ unchanged. That is not the gradient at the block's output: the block returns
# $y = \mathrm{relu}(s)$, so $\partial L/\partial s$ is $\partial L/\partial y$ with the
# entries where $s < 0$ set to zero. Above, $F = 0$ and $x$ was non-negative, so $s = x$ and
# nothing was masked. In a working block $F(x) \neq 0$, and $s = F(x) + x$ is negative wherever
# $F$ pulls an activation below zero: there the identity delivers nothing. Keeping $F = 0$, a
# signed $x$ shows the mask:

# %%
x_signed = minires.tensor(np.random.default_rng(2).standard_normal((4, 16, 8, 8))
                          .astype(np.float32), requires_grad=True)
block(x_signed).backward(upstream)
passed = np.abs(x_signed.grad) > 0
print(f"signed input: the gradient reaches {passed.mean():.0%} of x through the identity "
      f"(where x > 0: {(x_signed.numpy() > 0).mean():.0%})")
assert np.array_equal(passed, x_signed.numpy() > 0)
assert np.allclose(x_signed.grad, upstream * (x_signed.numpy() > 0))

# %% [markdown]
# Through $n$ blocks, the shortcut path is a chain of $n$ such masks; the authors' next paper
# (He et al. 2016, "Identity Mappings in Deep Residual Networks") moves the ReLU off that path.
# The autograd engine needs nothing special for it: $x$ is used twice, and the gradients of its two
# uses add (lesson 1, section 4). Write that backward by hand in the exercise
# `lessons/exercises/residual.py` (`python -m minires.exercises check residual`).
#
# ## 2. When the shape changes: shortcuts A, B and C
#
# The first block of stages 2 and 3 halves the height and width (stride 2) and doubles the
# channels, so $x$ no longer has $F(x)$'s shape. The paper offers two fixes in sec. 3.3 (A and
# B) and adds a third in sec. 4.1 (C), where Table 3 compares all three on ImageNet:
#
# - **A**: identity, subsampled (every other pixel) and padded with zero channels; no
#   parameters. The CIFAR networks of the paper use this.
# - **B**: a projection (1x1 convolution with stride 2, plus batchnorm) where the shape changes,
#   identity elsewhere.
# - **C**: a projection on every block.

# %%
x = minires.tensor(np.random.default_rng(2).standard_normal((2, 16, 32, 32)).astype(np.float32))
y = F.pad_shortcut(x, 32, stride=2)
print("option A:", x.shape, "->", y.shape)
print("  channels 0-7 and 24-31 are zero:", bool(np.all(y.numpy()[:, :8] == 0)
                                                   and np.all(y.numpy()[:, 24:] == 0)))
print("  channels 8-23 are x subsampled:", np.array_equal(y.numpy()[:, 8:24],
                                                           x.numpy()[:, :, ::2, ::2]))
assert y.shape == (2, 32, 16, 16)
assert np.array_equal(y.numpy()[:, 8:24], x.numpy()[:, :, ::2, ::2])

# %%
print(f"{'network':<12}{'A':>12}{'B':>12}{'C':>12}{'plain':>12}")
counts = {}
for depth in (20, 32, 44, 56, 110):
    row = [sum(p.size for p in models.resnet_cifar(depth, shortcut=s).parameters())
           for s in "ABC"]
    plain = sum(p.size for p in models.resnet_cifar(depth, residual=False).parameters())
    counts[depth] = row + [plain]
    print(f"ResNet-{depth:<5}" + "".join(f"{n:>12,}" for n in row) + f"{plain:>12,}")
# The paper's Table 6: 0.27M, 0.46M, 0.66M, 0.85M and 1.7M parameters with option A.
for depth, paper in [(20, 0.27e6), (32, 0.46e6), (44, 0.66e6), (56, 0.85e6), (110, 1.7e6)]:
    assert abs(counts[depth][0] - paper) / paper < 0.03
    a, b, c, plain = counts[depth]
    assert a == plain < b < c

# %% [markdown]
# Option A adds nothing to the plain network: the comparison of lesson 8 is between networks
# with *exactly* the same parameters. B adds 2,752 parameters whatever the depth (two
# projections); C about 5% more. The paper found B slightly better than A and C slightly
# better than B, too little to matter for its argument.
#
# ## 3. Gradients at initialisation: plain-56 against ResNet-56
#
# One forward and backward pass on 32 sample images, at initialisation, and the norm of the
# gradient of each of the 55 convolution weights, from the first layer (next to the input) to
# the last. If gradients *vanished* in the plain network, its first layers would get tiny ones.

# %%
x_train, y_train, _, _ = load_sample()
mean, std = channel_stats(x_train)
seeds = range(5) if args.full else [0]


def conv_gradient_norms(name, seed):
    """||dL/dw|| of every 3x3 convolution of a freshly initialised model, input side first."""
    nn.init.manual_seed(seed)
    model = getattr(models, name)()
    loader = DataLoader(x_train, y_train, batch_size=32, shuffle=True, mean=mean, std=std,
                        seed=seed)
    xb, yb = next(iter(loader))
    F.cross_entropy(model(xb), yb).backward()
    return np.array([np.linalg.norm(p.grad) for n, p in model.named_parameters()
                     if n.endswith(("conv1.weight", "conv2.weight"))])


norms = {name: np.mean([conv_gradient_norms(name, s) for s in seeds], axis=0)
         for name in ("plain56", "resnet56", "plain20", "resnet20")}
for name, g in norms.items():
    print(f"{name:<9} {len(g)} conv layers: first {g[0]:8.2f}, last {g[-1]:6.2f}, "
          f"first / last = {g[0] / g[-1]:7.1f}")

fig, ax = plt.subplots(figsize=(7, 4))
for name, style in [("plain56", "r-"), ("resnet56", "b-"), ("plain20", "r:"),
                    ("resnet20", "b:")]:
    ax.semilogy(range(1, len(norms[name]) + 1), norms[name], style, label=name)
ax.set_xlabel("convolution layer (1 = next to the input)")
ax.set_ylabel("||dL/dw|| at initialisation")
ax.set_title("gradient norm per layer, one batch of 32 images")
ax.legend()
lesson.save(fig, OUT / "07_gradient_norms.png")

# %% [markdown]
# The plain networks' gradients do not vanish: they *grow* towards the input, by a factor of
# several hundred over the 55 layers of plain-56 (the line above prints it; 678 in quick mode)
# and by a few over plain-20.
# The paper says as much (sec. 4.1): its plain networks are trained with batchnorm, and the
# authors "verify that the backward propagated gradients exhibit healthy norms"; the
# difficulty is not vanishing gradients. What our measurement adds is that with batchnorm the
# plain network's gradients *explode* backwards through depth, a known effect of batchnorm in
# deep plain networks (Philipp et al. 2018, Yang et al. 2019): the first layers get steps a
# few hundred times larger, relative to their weights, than the last ones, and no single learning
# rate suits both ends.
#
# The ResNet's gradients stay within a small factor across all 55 layers, because each
# gradient reaches the early layers through the identity paths as well as through the
# convolutions.

# %%
ratio = {name: g[0] / g[-1] for name, g in norms.items()}
assert ratio["plain56"] > 50 * ratio["resnet56"]
assert ratio["resnet56"] < 20 and ratio["plain56"] > 100
assert ratio["plain56"] > ratio["plain20"]  # the deeper plain net is the worse one

# %% [markdown]
# ## What we have
#
# - A residual block adds its input to its output; one `+` in `forward` (inside `F.add_relu`),
#   and its backward is the sum of two gradients (autograd does it for free, the exercise does it
#   by hand).
# - Option A shortcuts cost nothing; B and C add projections for a small gain.
# - At initialisation, plain-56's gradients grow several hundredfold from its last layer to its
#   first; ResNet-56's stay level.
#
# Lesson 8 trains these networks and shows the consequence: the *degradation problem*.
