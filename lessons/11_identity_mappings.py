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
# # Lesson 11: what came next, identity mappings
#
# Lesson 7 ended on a puzzle. The block of He et al. (2015) computes $y = \text{relu}(F(x) + x)$:
# the shortcut is an identity, but the ReLU *after* the addition sits on it, so the gradient at
# the sum reaches $x$ only where the sum was positive, and through $n$ blocks the "clean" path is
# a chain of $n$ masks. The authors' follow-up, He, Zhang, Ren and Sun (2016), "Identity
# Mappings in Deep Residual Networks", takes the ReLU off the path: each block adds to the
# stream and changes nothing else,
#
# $$x_{l+1} = x_l + F(x_l), \qquad F(x) = \text{conv}_2(\text{relu}(\text{bn}_2(\text{conv}_1(
#   \text{relu}(\text{bn}_1(x))))))$$
#
# with batchnorm and ReLU moved *before* each convolution: a **pre-activation** block. Then
# $x_L = x_l + \sum_{i=l}^{L-1} F(x_i)$ for any earlier block $l$, and
#
# $$\frac{\partial L}{\partial x_l} = \frac{\partial L}{\partial x_L}
#   \Big(1 + \frac{\partial}{\partial x_l}\sum_{i=l}^{L-1} F(x_i)\Big):$$
#
# the gradient at the top reaches every block unchanged, plus what the branches add. This lesson
# builds the pre-activation block from minires's modules, checks it, and measures what it does
# to the gradients of a 56-layer network, beside lesson 7's ResNet-56; then it looks inside a
# short training run, layer by layer.

# %%
import sys

import matplotlib

if "ipykernel" not in sys.modules:  # a script: draw into files, never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import minires
import minires.functional as F
from minires import lesson, models, nn, optim
from minires.data import DataLoader, channel_stats, load_sample

parser = lesson.parser("Lesson 11: identity mappings (pre-activation ResNets)",
                       full_help="average the gradient norms over 5 seeds; train for 200 steps")
args, OUT = lesson.parse(parser)

# %% [markdown]
# ## 1. The pre-activation block and network
#
# The same pieces as `models.BasicBlock`, in another order (`models.PreActBlock`). Where a
# stage changes the shape, the shortcut is lesson 7's option A (subsample, pad with zero
# channels). The network, `models.preact_resnet(depth)` (the CLI trains it as
# `--model preact_resnet56`), starts with one convolution and, since every block now ends with
# a convolution, finishes with a last batchnorm and ReLU before the pooling.

# %%
import inspect  # noqa: E402

print(inspect.getsource(models.PreActBlock))  # minires/models.py; PreActResNet stacks them

counts = {}
for depth in (20, 56, 110):
    counts[depth] = (sum(p.size for p in models.preact_resnet(depth).parameters()),
                     sum(p.size for p in models.resnet_cifar(depth).parameters()))
    print(f"depth {depth:>3}: pre-activation {counts[depth][0]:,} parameters, "
          f"original {counts[depth][1]:,}")
    assert counts[depth][0] == counts[depth][1]

# %% [markdown]
# The same convolutions, and exactly as many parameters: the batchnorms move, and their
# channels add up to the same total (the stem's 16 become the final 64, while the two blocks
# that widen the stream normalise their 16- and 32-channel inputs instead of their 32- and
# 64-channel outputs: 16 + 32 + 64 = 112 either way). A gradient check
# of the block, in float64 through minires's functional ops (the modules hold float32 weights,
# too coarse for central differences, lesson 2):

# %%
def preact_block(x, w1, w2, gamma1, beta1, gamma2, beta2):
    h = F.conv2d(F.relu(F.batch_norm(x, None, None, gamma1, beta1, training=True)), w1,
                 padding=1)
    return x + F.conv2d(F.relu(F.batch_norm(h, None, None, gamma2, beta2, training=True)), w2,
                        padding=1)


rng = np.random.default_rng(0)
C = 3
block_inputs = [rng.standard_normal((4, C, 5, 5)), 0.3 * rng.standard_normal((C, C, 3, 3)),
                0.3 * rng.standard_normal((C, C, 3, 3)), 1 + 0.3 * rng.standard_normal(C),
                0.3 * rng.standard_normal(C), 1 + 0.3 * rng.standard_normal(C),
                0.3 * rng.standard_normal(C)]
passed = minires.gradcheck(preact_block, [minires.tensor(a, requires_grad=True)
                                          for a in block_inputs])
print("gradcheck of the pre-activation block (x and all six parameters):", passed)
assert passed

# %% [markdown]
# ## 2. Gradients through depth, at initialisation
#
# Lesson 7's measurement: one batch of 32 sample images, one forward and backward pass at
# initialisation, and the norm of the gradient of each of the 54 convolutions inside the blocks,
# from the input side to the output side, now for ResNet-56 and its pre-activation twin.

# %%
x_train, y_train, _, _ = load_sample()
mean, std = channel_stats(x_train)
seeds = range(5) if args.full else [0]


def block_gradient_norms(make_model, seed):
    """||dL/dw|| of every 3x3 convolution inside the blocks, input side first."""
    nn.init.manual_seed(seed)
    model = make_model()
    loader = DataLoader(x_train, y_train, batch_size=32, shuffle=True, mean=mean, std=std,
                        seed=seed)
    xb, yb = next(iter(loader))
    F.cross_entropy(model(xb), yb).backward()
    return np.array([np.linalg.norm(p.grad) for name, p in model.named_parameters()
                     if name.endswith(("conv1.weight", "conv2.weight"))
                     and name.count(".") >= 2])  # in a block, not the stem's conv1


nets = {"resnet56": models.resnet56, "preact56": models.preact_resnet56}
norms = {name: np.mean([block_gradient_norms(make, s) for s in seeds], axis=0)
         for name, make in nets.items()}
spread = {}
for name, g in norms.items():
    spread[name] = g.max() / g.min()
    print(f"{name:<9} {len(g)} convolutions: first {g[0]:.3f}, last {g[-1]:.3f}, "
          f"largest / smallest {spread[name]:.1f}")

fig, ax = plt.subplots(figsize=(7, 3.5))
for name, style in [("resnet56", "b-"), ("preact56", "g-")]:
    ax.semilogy(range(1, len(norms[name]) + 1), norms[name], style, label=name)
ax.set_xlabel("convolution inside the blocks (1 = next to the input)")
ax.set_ylabel("||dL/dw|| at initialisation")
ax.set_title("gradient norm per layer, one batch of 32 images")
ax.legend()
lesson.save(fig, OUT / "11_gradient_norms.png")
assert len(norms["resnet56"]) == len(norms["preact56"]) == 54
assert spread["resnet56"] < 30 and spread["preact56"] < 30  # lesson 7's plain-56: hundreds

# %% [markdown]
# At initialisation the two are alike: both keep their weight gradients within a factor of ten
# or so across 54 layers (plain-56's grew by hundreds in lesson 7), and the pre-activation net
# is not the more level of the two by this measure. Its advantage is in the path itself. In
# the original net, the gradient at a stage's output reaches the stage's input through the
# shortcuts only where every block's sum $s$ was positive; in the pre-activation net it always
# does. How much of it gets through the masks, in ResNet-56 on one batch:

# %%
nn.init.manual_seed(0)
original = models.resnet56()
xb, _ = next(iter(DataLoader(x_train, y_train, batch_size=32, shuffle=True, mean=mean,
                             std=std, seed=0)))
stream = F.relu(original.bn1(original.conv1(xb)))
carried = {}
for stage in ("layer1", "layer2", "layer3"):
    through = None
    for block in getattr(original, stage):
        s = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(stream))))) + block.shortcut(stream)
        mask = s.numpy() > 0
        through = mask if through is None else through & mask  # same shape after the first
        stream = F.relu(s)
    carried[stage] = through.mean()
    print(f"{stage}: the shortcuts carry the gradient to {carried[stage]:.0%} of the stage's "
          f"{through[0].size:,} activations per image (pre-activation: 100%, no mask)")
assert all(fraction < 0.9 for fraction in carried.values())

# %% [markdown]
# In the original network, part of the gradient at the top of each stage (the fraction
# printed above) goes down through the shortcuts unchanged; the rest must pass through the
# convolutions of the branches. The pre-activation network keeps the whole of it, at every
# depth: the clean shortcut path of the follow-up paper.
#
# ## 3. Inside a short training run, layer by layer
#
# A gradient norm at initialisation is one snapshot. During training, the number to watch per
# layer is the **update-to-weight ratio** $\|\Delta w\| / \|w\|$ of each step: around $10^{-3}$
# is a common rule of thumb; much larger and the layer is thrashing, much smaller and it is not
# learning. Below, 60 steps (200 with `--full`) of SGD with momentum on the sample's images at
# 16x16, for a pre-activation ResNet-20, recording per convolution the ratio of each step and
# the norm of its weight gradient, with `minires.nn.LayerStats`: it copies the weights before
# the step and compares after (`minires.optim.SGD` updates them in place), and records each
# layer's output through a forward hook (`stats.array("activation_std")`).

# %%
def train_and_watch(model, steps, lr=0.1):
    """nn.LayerStats of every convolution over a short run, and the losses."""
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    stats = nn.LayerStats(model)  # forward hooks on the convolutions, norms around each step
    loader = DataLoader(x_train[:, :, ::2, ::2], y_train, batch_size=32, shuffle=True,
                        mean=mean, std=std, seed=0)
    losses = []
    while len(losses) < steps:
        for xb, yb in loader:
            if len(losses) == steps:
                break
            with stats.step():
                loss = F.cross_entropy(model(xb), yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            losses.append(loss.item())
    stats.remove()
    return stats.array("grad_norm"), stats.array("update_ratio"), np.array(losses)


nn.init.manual_seed(0)
steps = 200 if args.full else 60
grad_history, ratio_history, losses = train_and_watch(models.preact_resnet20(), steps)
per_layer = np.median(ratio_history, axis=0)
print(f"{steps} steps: loss {losses[:5].mean():.3f} (first 5) -> {losses[-5:].mean():.3f} "
      f"(last 5); update-to-weight ratio per layer, median over the run: "
      f"{per_layer.min():.1e} to {per_layer.max():.1e}")

fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
axes[0].plot(losses)
axes[0].set_title("training loss")
axes[0].set_xlabel("step")
image = axes[1].imshow(np.log10(ratio_history.T), aspect="auto", cmap="viridis")
axes[1].set_title("log10 ||delta w|| / ||w||")
axes[1].set_xlabel("step")
axes[1].set_ylabel("conv layer (0 = input side)")
fig.colorbar(image, ax=axes[1])
for layer in (0, ratio_history.shape[1] // 2, ratio_history.shape[1] - 1):
    axes[2].semilogy(grad_history[:, layer], label=f"layer {layer}")
axes[2].set_title("||dL/dw|| per step")
axes[2].set_xlabel("step")
axes[2].legend()
fig.tight_layout()
lesson.save(fig, OUT / "11_training_dynamics.png")
assert losses[-5:].mean() < losses[:5].mean()
assert np.all(np.isfinite(ratio_history)) and 1e-5 < np.median(ratio_history) < 1e-1

# %% [markdown]
# What to read in these plots: whether the loss falls; whether any layer's ratio sits orders
# of magnitude above or below the others (the printed range says how far apart they are here);
# whether a layer's gradient norm drifts away from the rest as training goes on. A layer whose
# ratio stayed near $10^{-5}$ would be a layer that does not learn; one near $10^{-1}$, a layer
# whose weights are rewritten every few steps. Try the same on lesson 8's plain-56.
#
# ## What we have
#
# - The ReLU after the addition is on the shortcut path; moving batchnorm and ReLU before the
#   convolutions leaves the path a pure sum, so the gradient at the top reaches every block.
# - A pre-activation ResNet has the same convolutions and nearly the same parameters.
# - Per-layer statistics during training (gradient norms, update-to-weight ratios, activation
#   spreads: `nn.LayerStats`) are a with-block around the training step, and the first thing
#   to plot when a network does not train.
