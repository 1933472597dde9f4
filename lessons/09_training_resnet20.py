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
# # Lesson 9: training ResNet-20 with the paper's recipe
#
# Everything so far comes together: the engine, the layers, the data pipeline, SGD. This
# lesson takes the recipe of He et al. (2015, sec. 4.2) apart piece by piece (the model, the
# augmentation, the learning-rate schedule) and runs it through `minires.train`, the training
# loop behind `python -m minires train`. Then it reads the curves a run produces.
#
# **Quick mode** (under a minute on two CPU cores) runs the recipe for 40 iterations on the
# 1,000-image sample, with the schedule compressed to fit: enough to see every piece work and to
# produce real curves, far too little to train the network. **`--full`** runs the whole recipe on
# CIFAR-10, 64,000 iterations of 128 images (`--data PATH`; on a GPU, `--device gpu`, the
# default when minires sees one), and should reach the paper's 8.75% test error or close.

# %%
# ruff: noqa: E402
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # a script: draw into files, never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import minires
from minires import lesson, models, optim, train
from minires.data import augment, load_sample
from minires.summary import summary

parser = lesson.parser("Lesson 9: training ResNet-20",
                       full_help="the whole recipe on full CIFAR-10")
parser.add_argument("--data", help="cifar-10-python.tar.gz or its folder (with --full)")
parser.add_argument("--device", help="cpu or gpu (default: gpu with --full when available)")
parser.add_argument("--iters", type=int, help="iterations (default: quick 40, full 64000)")
args, OUT = lesson.parse(parser)
DEVICE = args.device or ("gpu" if args.full and minires.gpu_available() else "cpu")



# %% [markdown]
# ## 1. The recipe, sentence by sentence
#
# Section 4.2 of the paper, and where each piece lives in minires:
#
# - *3x3 conv, 3 stages of $2n$ 3x3 convs on 32, 16 and 8 pixels with 16, 32 and 64 filters,
#   global average pooling, a 10-way fully connected layer*: `models.resnet20()`
# - *identity shortcuts in all cases (option A)*: `resnet_cifar(20, shortcut="A")`
# - *weights initialised as in "Delving deep into rectifiers"*: `nn.init.kaiming_normal_`
# - *batch normalisation right after each convolution and before activation*: `BasicBlock`
# - *4 pixels padded on each side, a random 32x32 crop, a random horizontal flip*:
#   `data.augment`
# - *the per-pixel mean subtracted*: per-channel mean and std (`data.channel_stats`), the
#   usual variant
# - *weight decay 0.0001, momentum 0.9*: `optim.SGD(..., momentum=0.9, weight_decay=1e-4)`
# - *mini-batch 128, learning rate 0.1, divided by 10 at 32k and 48k iterations, stopped at
#   64k*: `optim.PaperSchedule`
# - *a 45k/5k train/validation split*: `TrainConfig(val=True)`; final numbers on the test set

# %%
config = train.TrainConfig()  # the defaults are the paper's recipe
print(config)
assert (config.model, config.shortcut, config.batch, config.lr) == ("resnet20", "A", 128, 0.1)
assert (config.momentum, config.weight_decay, config.schedule) == (0.9, 1e-4, "paper")

# %% [markdown]
# ## 2. The model: 0.27 million parameters, 41 million multiply-adds
#
# `minires.summary` runs one image through the network with a hook on every layer. Note the
# shapes: 32x32 with 16 channels, then 16x16 with 32, then 8x8 with 64.

# %%
text = summary(models.resnet20(), (3, 32, 32), show=False)
lines = text.splitlines()
print("\n".join(lines[:12] + ["..."] + lines[-12:]))
n_params = sum(p.size for p in models.resnet20().parameters())
assert n_params == 269_722 and "40.6 M" in text

# %% [markdown]
# ## 3. Augmentation
#
# Each training image is padded with 4 black pixels on every side, a random 32x32 window is
# cut out (a shift of up to 4 pixels each way) and half the images are mirrored. The network
# almost never sees the same image twice, which is the main defence against overfitting in the
# recipe: ResNet-20 can memorise the 50,000 training images without it.

# %%
x_train, y_train, _, _ = load_sample()
rng = np.random.default_rng(0)
originals = x_train[[3, 7, 11]]
fig, axes = plt.subplots(3, 6, figsize=(9, 4.6))
for row, image in enumerate(originals):
    axes[row, 0].imshow(image.transpose(1, 2, 0))
    axes[row, 0].set_title("original" if row == 0 else "", fontsize=9)
    for col in range(1, 6):
        axes[row, col].imshow(augment(image[None], rng)[0].transpose(1, 2, 0))
    for ax in axes[row]:
        ax.axis("off")
axes[0, 3].set_title("five random augmentations", fontsize=9)
lesson.save(fig, OUT / "09_augmentation.png")
shifted = augment(np.repeat(originals[:1], 200, axis=0), rng)
print(f"distinct augmented versions among 200 draws of one image: "
      f"{len({a.tobytes() for a in shifted})} (of 9 x 9 shifts x 2 flips = 162 possible)")
assert shifted.shape == (200, 3, 32, 32) and len({a.tobytes() for a in shifted}) > 80

# %% [markdown]
# ## 4. The learning-rate schedule
#
# Start at 0.1, divide by 10 at 32,000 and 48,000 iterations, stop at 64,000: about 164
# epochs of 391 batches. Large steps first to travel, small steps at the end to settle into a
# minimum. The schedule counts iterations, not epochs; minires's cosine schedule is a smooth
# modern alternative.

# %%
its = np.arange(0, 64000, 100)
paper = optim.PaperSchedule()
cosine = optim.CosineSchedule(0.1, total_iters=64000)
paper_lr = [paper.lr(i) for i in its]
cosine_lr = [cosine.lr(i) for i in its]
print("paper schedule: lr at 0, 31999, 32000, 48000:",
      ", ".join(f"{paper.lr(i):g}" for i in (0, 31999, 32000, 48000)))
assert np.allclose([paper.lr(i) for i in (0, 31999, 32000, 48000)], [0.1, 0.1, 0.01, 0.001])

fig, ax = plt.subplots(figsize=(6, 3))
ax.semilogy(its, paper_lr, label="paper: /10 at 32k and 48k")
ax.semilogy(its, cosine_lr, label="cosine")
ax.set_xlabel("iteration")
ax.set_ylabel("learning rate")
ax.set_ylim(1e-4, 0.2)
ax.legend()
lesson.save(fig, OUT / "09_schedule.png")

# %% [markdown]
# ## 5. A run
#
# Each iteration of a run is one call of `train.train_step`: forward, loss, backward, update.

# %%
import inspect  # noqa: E402

print(inspect.getsource(train.train_step))

# %% [markdown]
# `train.Run(config)` builds everything from the config (data, loaders with augmentation,
# model, optimizer, schedule); `fit()` calls `train_step` for every batch (the learning rate
# set by the schedule first), evaluates after every epoch, writes
# `metrics.csv`, a checkpoint and `curves.png` into `config.out`. A shorter run keeps the
# schedule's shape: the drops come at 50% and 75% of the iterations, where 32k and 48k sit in
# 64k. Quick mode uses batches of 32 (31 iterations per epoch of the sample) for 40
# iterations: one epoch and a bit, evaluated after each.

# %%
if args.full:
    config = train.TrainConfig(data=args.data, device=DEVICE, iters=args.iters,
                               out=str(OUT / "09_run"))
else:
    config = train.TrainConfig(data="sample", batch=32, iters=args.iters or 40,
                               out=str(OUT / "09_run"))
run = train.Run(config)
print(f"{len(run.train_loader)} iterations per epoch, {run.total_iters} in all, "
      f"learning-rate drops at {run.schedule.milestones}")
result = run.fit(progress=False)  # prints one line per epoch: the errors
print("what else run.history holds, per epoch:")
print(f"{'epoch':>5} {'iteration':>9} {'lr':>7} {'train loss':>10} {'test loss':>9} "
      f"{'images/s':>8}")
for h in run.history:
    print(f"{h['epoch']:>5} {h['iteration']:>9} {h['lr']:>7g} {h['train_loss']:>10.3f} "
          f"{h['test_loss']:>9.3f} {h['images_per_s']:>8.0f}")

# %% [markdown]
# What was written, and a check that the checkpoint holds the trained model: a fresh
# ResNet-20 loaded from it has exactly the trained weights and batchnorm statistics.
# (`python -m minires train --resume` continues a run from it; `python -m minires eval`
# evaluates it.)

# %%
print("files:", sorted(p.name for p in Path(config.out).iterdir()))
checkpoint = train.load_checkpoint(result["checkpoint"])
fresh = models.resnet20()
fresh.load_state_dict(checkpoint["model"])
trained = run.model.state_dict()
same = all(np.array_equal(v, trained[k]) for k, v in fresh.state_dict().items())
print(f"checkpoint at iteration {checkpoint['iteration']}: {len(trained)} arrays, "
      f"identical to the trained model: {same}")
assert same and checkpoint["iteration"] == run.total_iters
assert (Path(config.out) / "metrics.csv").is_file() and (Path(config.out) / "curves.png").is_file()
assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
assert run.history[-1]["test_error"] < 0.9  # above chance, after 40 iterations
if args.full:
    assert run.history[-1]["test_error"] < 0.10  # the paper: 8.75%

# %% [markdown]
# ## 6. Reading the curves
#
# Training error (thin) and test error (bold) against iterations, with the learning rate.
# The run logs every iteration in `run.steps` (and `steps.csv`): one batch's error is noisy,
# so the thin curve is a moving average, as the paper's curves are.

# %%
last = run.steps[-1]
print(f"{len(run.steps)} iterations logged; the last: iteration {last['iteration']}, "
      f"lr {last['lr']:g}, loss {last['loss']:.3f}, batch error {last['error']:.1%}")
assert len(run.steps) == run.total_iters
window = max(1, len(run.train_loader) // 4)
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot([s["iteration"] for s in run.steps], 100 * train.smooth([s["error"] for s in run.steps],
                                                                  window),
        "-", lw=1, label=f"training error (mean of {window} batches, augmented)")
ax.plot([h["iteration"] for h in run.history], [100 * h["test_error"] for h in run.history],
        "-", lw=2, marker="o", label="test error (evaluation mode)")
ax.set_xlabel("iteration")
ax.set_ylabel("error (%)")
ax2 = ax.twinx()
ax2.semilogy(np.arange(run.total_iters), [run.schedule.lr(i) for i in range(run.total_iters)],
             color="gray", lw=0.8)
ax2.set_ylabel("learning rate", color="gray")
ax.legend(loc="lower left")
ax.set_title(f"{config.model}, {run.total_iters} iterations")
lesson.save(fig, OUT / "09_curves.png")

# %% [markdown]
# What to look for in a full run (`--full`, or the paper's Fig. 6):
#
# - **The first phase (lr 0.1)**: both errors fall fast, then flatten around 10-15%; the test
#   error is noisy from epoch to epoch, because the weights still move a lot and batchnorm's
#   running statistics lag behind them (lesson 5).
# - **The drop at 32k (lr 0.01)**: both errors fall suddenly by several points. The large
#   steps were bouncing across a valley; smaller steps descend into it. This cliff is the
#   signature of a step schedule.
# - **After 48k (lr 0.001)**: a small further gain; the training error keeps falling and
#   the test error levels off near 8-9%. The widening gap is overfitting, held in check by
#   augmentation and weight decay.
# - **Training error above test error early on** is not a bug: it is measured on augmented
#   images, in training mode, averaged over an epoch while the network improved.
#
# In quick mode the same pieces show at a tiny scale: the learning rate drops after 20 and 30
# of the 40 iterations, and the test error, evaluated with running statistics that have seen
# only 40 batches, is still not far from chance. The network needs more than a thousand times
# more training to be good: that is what `--full` and a GPU are for (lesson 10).
#
# ## Deeper: the rest of the paper's Table 6
#
# The same recipe trains the deeper ResNets of Table 6. Their test errors on CIFAR-10, as the
# paper reports them, beside the parameter counts minires's models have:

# %%
table6 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}  # test error, %
counts = {}
print(f"{'network':<12}{'parameters':>12}{'test error (paper)':>20}")
for depth, error in table6.items():
    counts[depth] = sum(p.size for p in models.resnet_cifar(depth).parameters())
    print(f"ResNet-{depth:<5}{counts[depth] / 1e6:>11.2f}M{error:>19.2f}%")
errors = list(table6.values())
assert errors[:5] == sorted(errors[:5], reverse=True)  # deeper is better, up to 110 layers
assert errors[5] > errors[4] and round(counts[1202] / 1e6, 1) == 19.4

# %% [markdown]
# Depth pays up to 110 layers: 8.75% to 6.43% with the same recipe, which is the paper's point
# (no degradation, lesson 8). At 1202 layers the test error is worse again. The authors
# attribute that to overfitting, not to optimisation: 19.4 M parameters for 50,000 training
# images is more capacity than this small data set needs, and the paper uses no stronger
# regularisation (such as dropout) to hold it in check.
#
# ## ResNet-110's warm-up
#
# For ResNet-110 the paper starts at learning rate 0.01 instead of 0.1, because 0.1 is slightly
# too large for it to start converging, and goes back to 0.1 once the training error is below
# 80%; then the usual schedule follows. minires does this for depths of 110 and more
# (`warmup` in `TrainConfig`, `PaperSchedule(warmup_lr=...)` in `minires/optim.py`). The rate
# depends on the training error of the epoch so far, which `fit()` passes to the schedule, and
# the warm-up ends once and for all:

# %%
warm = train.make_schedule("paper", 0.1, 64000, warmup=True)
seen = [(0, 0.90), (100, 0.85), (300, 0.79), (301, 0.82), (32000, 0.10), (48000, 0.05)]
rates = [warm.lr(i, train_error=e) for i, e in seen]
for (i, e), lr in zip(seen, rates):
    print(f"iteration {i:>6}, training error so far {e:.0%}: lr {lr:g}")
assert np.allclose(rates, [0.01, 0.01, 0.1, 0.1, 0.01, 0.001])
run110 = train.Run(train.TrainConfig(model="resnet110", data="sample", batch=32, iters=1,
                                     out=str(OUT / "09_run110")))
print(f"a ResNet-110 run warms up: {run110.warmup}; a ResNet-20 run: {run.warmup}")
assert run110.warmup and not run.warmup
