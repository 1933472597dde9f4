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
# # Lesson 3: a linear softmax classifier on CIFAR-10 pixels
#
# Before any convolution, the simplest classifier that can be trained with our engine: ten
# scores, each a weighted sum of the 3,072 pixel values of a 32x32 colour image, turned into
# probabilities by a softmax and trained with cross-entropy. It sets the baseline every later
# network must beat, and it exercises the whole training loop: data, forward, loss, backward,
# update, evaluation.
#
# Quick mode trains on the 1,000-image sample shipped with minires (a few seconds on a CPU).
# `--full` trains on all 50,000 CIFAR-10 training images (`--data PATH` to the
# `cifar-10-python.tar.gz` archive or its folder; without it minires downloads it).

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
from minires import lesson
from minires.data import CLASSES, DataLoader, channel_stats, load_cifar10, load_sample

parser = lesson.parser("Lesson 3: a linear softmax classifier",
                       full_help="train on the full CIFAR-10")
parser.add_argument("--data", help="cifar-10-python.tar.gz or its folder (with --full)")
args, OUT = lesson.parse(parser)



# %% [markdown]
# ## 1. The data
#
# CIFAR-10 images are stored as `uint8` arrays of shape `(N, 3, 32, 32)`: N images, 3 colour
# channels (red, green, blue), 32 rows, 32 columns. This layout, channels first, is called NCHW
# and every minires op uses it.

# %%
if args.full:
    x_train, y_train, x_test, y_test = load_cifar10(args.data)
else:
    x_train, y_train, x_test, y_test = load_sample()
print("train:", x_train.shape, x_train.dtype, " test:", x_test.shape)
print("images per class in training:", np.bincount(y_train))
assert x_train.shape[1:] == (3, 32, 32) and x_train.dtype == np.uint8
assert len(np.unique(y_train)) == 10

fig, axes = plt.subplots(4, 10, figsize=(10, 4.4))
for c in range(10):
    for row, i in enumerate(np.flatnonzero(y_train == c)[:4]):
        axes[row, c].imshow(x_train[i].transpose(1, 2, 0))  # (3, 32, 32) -> (32, 32, 3) to draw
        axes[row, c].axis("off")
    axes[0, c].set_title(CLASSES[c], fontsize=8)
lesson.save(fig, OUT / "03_samples.png")

# %% [markdown]
# Each channel is standardised with the **training** set's mean and standard deviation, so that
# every input has mean about 0 and variance about 1. `DataLoader` does it batch by batch
# (and shuffles the training set each epoch).

# %%
mean, std = channel_stats(x_train)
print("channel mean:", mean.round(3), " std:", std.round(3))
train_loader = DataLoader(x_train, y_train, batch_size=100, shuffle=True, mean=mean, std=std)
test_loader = DataLoader(x_test, y_test, batch_size=500, mean=mean, std=std)
xb, yb = next(iter(train_loader))
print("a batch:", xb.shape, xb.dtype, "labels", yb[:10])
print(f"batch mean {xb.data.mean():.3f}, std {xb.data.std():.3f}")
assert abs(xb.data.mean()) < 0.2 and abs(xb.data.std() - 1) < 0.2

# %% [markdown]
# ## 2. Scores, softmax, cross-entropy
#
# The classifier is one matrix product: scores $s = W x + b$ with $W$ of shape (10, 3072).
# The softmax turns scores into probabilities, $p_k = e^{s_k} / \sum_j e^{s_j}$, and the
# cross-entropy loss is $-\log p_{\text{true class}}$.
#
# Computed literally, $e^{s}$ overflows for a score of 1000. Subtracting the largest score
# first changes nothing mathematically ($e^{s - m}/\sum e^{s_j - m}$ is the same ratio) and keeps
# every exponent $\le 0$. `F.log_softmax` does this (`minires/ops/loss.py`).

# %%
scores = np.array([[1000.0, 999.0, -1000.0]])
with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # it overflows
    naive = np.log(np.exp(scores) / np.exp(scores).sum())
stable = F.log_softmax(minires.tensor(scores)).numpy()
print("naive log-softmax: ", naive)
print("stable log-softmax:", stable)
assert np.isnan(naive).any() and np.isfinite(stable).all()
assert np.isclose(stable[0, 0], -np.log1p(np.exp(-1.0)))

# %% [markdown]
# With all weights zero, every class gets probability 1/10, so the loss starts at
# $\log 10 \approx 2.303$: a sanity check worth making before any training. The gradient of the
# cross-entropy with respect to the scores is simply $p - \text{onehot}(y)$ (divided by the batch
# size); the linear layer's backward (`minires/ops/linear.py`, and the `linear` exercise)
# passes it on to $W$ and $b$.

# %%
W = minires.tensor(np.zeros((10, 3 * 32 * 32), np.float32), requires_grad=True)
b = minires.tensor(np.zeros(10, np.float32), requires_grad=True)


def classify(xb):
    return F.linear(F.flatten(xb), W, b)  # (B, 3, 32, 32) -> (B, 3072) -> (B, 10)


loss = F.cross_entropy(classify(xb), yb)
print(f"initial loss {loss.item():.4f}, log(10) = {np.log(10):.4f}")
assert abs(loss.item() - np.log(10)) < 1e-5

# %% [markdown]
# ## 3. Training
#
# Stochastic gradient descent on minibatches of 100, with a little weight decay (an L2 penalty
# $\frac{\lambda}{2}\|W\|^2$, whose gradient $\lambda W$ we add by hand). One pass over the
# training set is an epoch. The update is written out: no optimizer object yet.

# %%
def accuracy(loader):
    correct = 0
    with minires.no_grad():
        for xb, yb in loader:
            correct += int((classify(xb).numpy().argmax(axis=1) == yb).sum())
    return correct / len(loader.x)


lr, weight_decay = 0.005, 0.01
epochs = 10 if args.full else 30
history = {"loss": [], "train": [], "test": []}
start = time.perf_counter()
for epoch in range(epochs):
    losses = []
    for xb, yb in train_loader:
        loss = F.cross_entropy(classify(xb), yb)
        W.grad = b.grad = None
        loss.backward()
        W.data -= lr * (W.grad + weight_decay * W.data)
        b.data -= lr * b.grad
        losses.append(loss.item())
    history["loss"].append(np.mean(losses))
    history["train"].append(accuracy(train_loader))
    history["test"].append(accuracy(test_loader))
    if epoch % 5 == 4 or epoch == epochs - 1:
        print(f"epoch {epoch + 1:3d}: loss {history['loss'][-1]:.3f}, "
              f"train accuracy {history['train'][-1]:.1%}, test accuracy {history['test'][-1]:.1%}")
print(f"{time.perf_counter() - start:.1f} s")

# %% [markdown]
# Chance is 10%. On the 1,000-image sample the classifier reaches about 30% on held-out test
# images (typically 30-32%); on full CIFAR-10, about 40%. Training accuracy on the sample climbs
# much higher: 30,730 weights can memorise 1,000 images, a first sight of overfitting.

# %%
print(f"test accuracy {history['test'][-1]:.1%} (chance: 10%)")
assert history["test"][-1] > 0.20
assert history["train"][-1] > history["test"][-1]
assert history["loss"][-1] < history["loss"][0]
if args.full:
    assert history["test"][-1] > 0.33

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.plot(range(1, epochs + 1), history["loss"])
ax1.set_xlabel("epoch")
ax1.set_ylabel("training loss")
ax2.plot(range(1, epochs + 1), history["train"], label="train")
ax2.plot(range(1, epochs + 1), history["test"], label="test")
ax2.axhline(0.1, color="gray", ls=":", label="chance")
ax2.set_xlabel("epoch")
ax2.set_ylabel("accuracy")
ax2.legend()
lesson.save(fig, OUT / "03_training.png")

# %% [markdown]
# ## 4. What a linear classifier learns
#
# Each row of $W$ has one weight per pixel and channel, so it can be shown as an image: the
# *template* that its class's score matches against. Trained on the 1,000-image sample they
# are mostly noise with a tint: bluish for airplane and ship (sky and water), browner for the
# animals. Trained with `--full` they become smooth, blurry average images (a horse's brown in
# the middle, sometimes with two heads). One template per class cannot cover horses facing left
# and right; the layers of the following lessons can.

# %%
templates = W.numpy().reshape(10, 3, 32, 32).transpose(0, 2, 3, 1)  # (10, 32, 32, 3) to draw
fig, axes = plt.subplots(1, 10, figsize=(12, 1.8))
for c, ax in enumerate(axes):
    t = templates[c]
    ax.imshow((t - t.min()) / (t.max() - t.min()))
    ax.set_title(CLASSES[c], fontsize=8)
    ax.axis("off")
lesson.save(fig, OUT / "03_templates.png")
blue_minus_red = templates[:, :, :, 2].mean(axis=(1, 2)) - templates[:, :, :, 0].mean(axis=(1, 2))
print("mean (blue - red) weight per class:", dict(zip(CLASSES, blue_minus_red.round(4))))
# Sky and water: blue pulls towards airplane and ship more than towards cat or dog.
assert min(blue_minus_red[0], blue_minus_red[8]) > max(blue_minus_red[3], blue_minus_red[5])
