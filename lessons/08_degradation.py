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
# # Lesson 8: the degradation problem
#
# The observation that started ResNets (He et al. 2015, sec. 4.2 and Fig. 6): a plain network
# of 56 layers has **higher training error** than one of 20 layers. Not higher test error, which
# overfitting could explain, but higher *training* error, although the deeper network could
# represent everything the shallower one does (36 extra layers computing the identity). The
# deeper plain network is harder to *optimise*. With shortcuts, the order flips: ResNet-56
# trains to lower error than ResNet-20.
#
# **Quick mode** (the default, 20-30 seconds on two CPU cores) cannot train four networks
# for the paper's 64,000 iterations of 128 images. It trains four scaled-down networks for 100
# iterations: the same depths (20 and 56) and structure, but 4 channels in the first stage
# instead of 16, on 256 sample images averaged down to 16x16 pixels. That shows the *start* of
# the paper's curves, where the effect is already clear.
#
# **`--full`** trains the real networks with the paper's recipe on CIFAR-10 (`--data PATH`,
# a GPU via `--device gpu`, the default when minires sees one) and draws Fig. 6. Each of the
# four runs is 64,000 iterations unless `--iters` says otherwise.

# %%
# ruff: noqa: E402
import sys
import time

import matplotlib

if "ipykernel" not in sys.modules:  # a script: draw into files, never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import minires
import minires.functional as F
from minires import lesson, models, nn, optim
from minires.data import DataLoader, channel_stats, load_sample

parser = lesson.parser("Lesson 8: the degradation problem",
                       full_help="the real networks on full CIFAR-10")
parser.add_argument("--data", help="cifar-10-python.tar.gz or its folder (with --full)")
parser.add_argument("--device", help="cpu or gpu (default: gpu with --full when available)")
parser.add_argument("--iters", type=int, help="iterations per network (default: quick 100, "
                                              "full 64000)")
parser.add_argument("--seed", type=int, default=0, help="initialisation and data order")
args, OUT = lesson.parse(parser)
DEVICE = args.device or ("gpu" if args.full and minires.gpu_available() else "cpu")
NETWORKS = [("plain20", 20, False), ("plain56", 56, False),
            ("resnet20", 20, True), ("resnet56", 56, True)]



# %% [markdown]
# ## 1. The networks
#
# `minires.models.resnet_cifar(depth, residual=...)` builds the paper's CIFAR networks: a 3x3
# convolution, three stages of $n$ basic blocks with 16, 32 and 64 channels, global average
# pooling and a linear classifier, $6n + 2$ layers. The plain networks are the same without
# the shortcuts (option A: no extra parameters, so each pair differs *only* in the additions).
#
# For quick mode we build the same architecture at a quarter of the width from the same
# `models.BasicBlock`; the blocks, the depth, the shortcuts and the initialisation are the
# paper's.

# %%
class NarrowResNet(nn.Module):
    """resnet_cifar's layout with `width` channels in stage 1 (the paper: 16)."""

    def __init__(self, depth, residual, width):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_channels = width
        for index, (channels, stride) in enumerate([(width, 1), (2 * width, 2), (4 * width, 2)],
                                                   start=1):
            blocks = [models.BasicBlock(in_channels, channels, stride, "A", residual)]
            blocks += [models.BasicBlock(channels, channels, 1, "A", residual)
                       for _ in range(n - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
            in_channels = channels
        self.pool = nn.GlobalAvgPool2d()
        self.linear = nn.Linear(4 * width, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(self.pool(out))


for name, depth, residual in NETWORKS:
    nn.init.manual_seed(0)
    full = models.resnet_cifar(depth, residual=residual)
    narrow = NarrowResNet(depth, residual, width=4)
    # Weighted layers: every convolution and the classifier (option A adds no convolutions).
    n_layers = sum(1 for m in full.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    print(f"{name:<9} {n_layers} weighted layers; parameters: paper width "
          f"{sum(p.size for p in full.parameters()):>8,}, quick width "
          f"{sum(p.size for p in narrow.parameters()):>7,}")
    assert n_layers == depth

# %% [markdown]
# ## 2. Training all four
#
# The paper's recipe (sec. 4.2): SGD with momentum 0.9, weight decay $10^{-4}$, batch 128,
# learning rate 0.1, divided by 10 at 32k and 48k iterations, standard augmentation.
# Quick mode keeps SGD, momentum and weight decay, with batch 32 and learning rate 0.05, no
# augmentation (we want to see how well each network *fits* its training set), and records
# the loss and error of every training batch. Every network starts from the same seed and sees
# the same batches.

# %%
def train_quick(depth, residual, x, y, iters, seed):
    """Per-iteration training loss and error of the narrow network on (x, y)."""
    nn.init.manual_seed(seed)
    model = NarrowResNet(depth, residual, width=4)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    mean, std = channel_stats(x)
    loader = DataLoader(x, y, batch_size=32, shuffle=True, drop_last=True, mean=mean, std=std,
                        seed=seed)
    losses, errors = [], []
    while len(losses) < iters:
        for xb, yb in loader:
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            errors.append(float((logits.numpy().argmax(axis=1) != yb).mean()))
            if len(losses) == iters:
                break
    return {"iteration": np.arange(1, iters + 1), "loss": np.array(losses),
            "train_error": np.array(errors)}


def train_full(name):
    """The real network with the paper's recipe, through minires.train; per-epoch history."""
    from minires import train

    config = train.TrainConfig(model=name, data=args.data, device=DEVICE, iters=args.iters,
                               seed=args.seed, out=str(OUT / "08_runs" / name))
    run = train.Run(config)
    run.fit()
    keys = ("iteration", "train_loss", "train_error", "test_error")
    history = {k: np.array([h[k] for h in run.history]) for k in keys}
    history["loss"] = history.pop("train_loss")
    return history


curves = {}
if args.full:
    for name, depth, residual in NETWORKS:
        curves[name] = train_full(name)
else:
    x_train, y_train, _, _ = load_sample()
    # 256 images, each 2x2 block of pixels averaged: (256, 3, 32, 32) -> (256, 3, 16, 16)
    x_small = x_train[:256].reshape(256, 3, 16, 2, 16, 2).mean(axis=(3, 5))
    x_small = x_small.round().astype(np.uint8)
    y_small = y_train[:256]
    for name, depth, residual in NETWORKS:
        start = time.perf_counter()
        curves[name] = train_quick(depth, residual, x_small, y_small, args.iters or 100,
                                   args.seed)
        print(f"{name:<9} {len(curves[name]['loss'])} iterations in "
              f"{time.perf_counter() - start:4.1f} s")

# %% [markdown]
# ## 3. Training error against iterations: the paper's Fig. 6
#
# Left the plain networks, right the ResNets; thin dashed lines training error, bold lines
# test error (`--full` only: quick mode does not test). In quick mode each batch's error is
# smoothed over 20 iterations.

# %%
def smooth(values, window):
    """Moving average over the last `window` values (fewer at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    index = np.arange(1, len(values) + 1)
    return (sums[index] - sums[np.maximum(index - window, 0)]) / np.minimum(index, window)


fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, kind in zip(axes, ("plain", "resnet")):
    for name, depth, residual in NETWORKS:
        if not name.startswith(kind):
            continue
        c = curves[name]
        color = "tab:orange" if depth == 20 else "tab:red"
        label = f"{kind}-{depth}" if kind == "plain" else f"ResNet-{depth}"
        window = 1 if args.full else 20
        ax.plot(c["iteration"], 100 * smooth(c["train_error"], window), "--", lw=1,
                color=color, label=f"{label} train")
        if "test_error" in c:
            ax.plot(c["iteration"], 100 * c["test_error"], "-", lw=2, color=color,
                    label=f"{label} test")
    ax.set_xlabel("iterations")
    ax.set_title("plain networks" if kind == "plain" else "residual networks")
    ax.grid(alpha=0.3)
    ax.legend()
axes[0].set_ylabel("error (%)")
lesson.save(fig, OUT / "08_degradation.png")

# %% [markdown]
# ## 4. What the curves say
#
# We compare the mean training loss over the last third of the iterations (a single batch is
# too noisy to compare).

# %%
final = {name: float(c["loss"][-max(len(c["loss"]) // 3, 1):].mean())
         for name, c in curves.items()}
for name, value in final.items():
    print(f"{name:<9} mean training loss over the last third: {value:.3f}")
print(f"plain-56 minus plain-20:  {final['plain56'] - final['plain20']:+.3f}  "
      "(degradation, if it lasts)")
print(f"ResNet-56 minus plain-56: {final['resnet56'] - final['plain56']:+.3f}")

# %% [markdown]
# In quick mode, with the default seed, plain-56 has barely left the loss of a uniform guess
# ($\log 10 = 2.30$) after 100 iterations while plain-20 is well below it: the deeper plain
# network is the one that trains worse in these first iterations. On its own that is not yet the
# degradation problem: a deeper network might only start slower and catch up later, and 100
# iterations cannot tell the two apart. Both ResNets are ahead of both plain networks. Whether
# ResNet-56 is already ahead of ResNet-20 depends on the seed this early (try `--seed 1`); in the
# paper it is from a few thousand iterations on. What quick mode cannot show is the evidence that
# makes it degradation: that the gap between the plain networks *persists* to the end of training,
# after the learning rate drops, while both training errors keep falling. That needs `--full`.

# %%
assert final["plain56"] > final["plain20"]  # the deeper plain network trains worse, so far
assert final["resnet56"] < final["plain56"]  # the shortcuts fix it
if args.full:
    last = {name: c["train_error"][-1] for name, c in curves.items()}
    assert last["plain56"] > last["plain20"] and last["resnet56"] < last["resnet20"]

# %% [markdown]
# ## Why?
#
# Lesson 7 measured the gradients at initialisation: in plain-56 they grow several
# hundredfold from the last layer to the first, so one learning rate is far too large for
# the first layers or far too small for the last; ResNet-56's stay level. The paper leaves the
# exact cause open ("deep plain nets may have exponentially low convergence rates"); later
# work tied it to how batchnorm and depth interact in plain networks and to the shortcuts
# keeping each block close to the identity. The practical lesson has not changed since 2015:
# past twenty or so layers, add the input back.
