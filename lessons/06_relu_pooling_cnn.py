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
# # Lesson 6: ReLU, pooling and a first convolutional network
#
# Convolutions (lesson 4) and batchnorm (lesson 5) are linear in their input. What makes a deep
# network more than one big linear map is the nonlinearity between them, here the ReLU, and
# what lets it see a whole image with 3x3 filters is downsampling, here max pooling. With the
# two we build a small CNN with `minires.nn`, train it on the CIFAR-10 sample with
# `minires.optim.SGD`, and meet the two rules any deeper network must respect: initialise so that
# signals keep their scale, and switch batchnorm to evaluation mode to test.
#
# Quick mode trains a small CNN on the 1,000-image sample (10-20 seconds on two CPU cores).
# `--full` trains a wider one on all of CIFAR-10 (`--data PATH`; best with a GPU, which is used
# when minires sees one).

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
from minires import lesson, nn, optim
from minires.backends import to_device
from minires.data import DataLoader, channel_stats, load_cifar10, load_sample

parser = lesson.parser("Lesson 6: ReLU, pooling and a plain CNN",
                       full_help="train on the full CIFAR-10")
parser.add_argument("--data", help="cifar-10-python.tar.gz or its folder (with --full)")
parser.add_argument("--device", help="cpu or gpu (default: gpu with --full when available)")
args, OUT = lesson.parse(parser)
DEVICE = args.device or ("gpu" if args.full and minires.gpu_available() else "cpu")



# %% [markdown]
# ## 1. Without a nonlinearity, depth buys nothing
#
# Two linear layers in a row are one linear layer: $W_2 (W_1 x) = (W_2 W_1) x$. However many
# we stack, the network can only draw straight decision boundaries, like lesson 3's classifier.

# %%
rng = np.random.default_rng(0)
W1, W2 = rng.standard_normal((64, 3072)), rng.standard_normal((10, 64))
x = rng.standard_normal((5, 3072))
two_layers = F.linear(F.linear(minires.tensor(x), minires.tensor(W1)), minires.tensor(W2))
one_layer = F.linear(minires.tensor(x), minires.tensor(W2 @ W1))
print("two linear layers == one linear layer:", np.allclose(two_layers.numpy(),
                                                            one_layer.numpy()))
assert np.allclose(two_layers.numpy(), one_layer.numpy())

# %% [markdown]
# ## 2. ReLU
#
# $\text{relu}(x) = \max(x, 0)$: the cheapest nonlinearity there is, and the one ResNets use.
# Its derivative is 1 where $x > 0$ and 0 elsewhere, so backward just masks the upstream
# gradient: `dx = dy * (x > 0)` (`ReLU` in `minires/ops/elementwise.py`). At exactly 0 the
# derivative is undefined; minires, like PyTorch, uses 0.

# %%
x = minires.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
y = F.relu(x)
y.backward(np.array([10.0, 20.0, 30.0, 40.0, 50.0], np.float32))
print("x       ", x.numpy())
print("relu(x) ", y.numpy())
print("dx      ", x.grad, " (the upstream was 10, 20, 30, 40, 50)")
assert list(x.grad) == [0, 0, 0, 40, 50]
x64 = minires.tensor(np.array([-1.5, -0.3, 0.2, 0.9, 2.0]), requires_grad=True)  # away from 0
assert minires.gradcheck(F.relu, [x64])

# %% [markdown]
# ### Initialisation: keeping the signal alive through depth
#
# A ReLU zeroes about half of its inputs, which halves their mean square. Stack $L$
# convolution + ReLU layers with weights of variance $1/\text{fan\_in}$ and the signal shrinks
# by $\sqrt 2$ per layer: $2^{-15}$ after 30 layers. He et al. (2015, "Delving deep into
# rectifiers") compensate with variance $2/\text{fan\_in}$, which `minires.nn.init` uses for
# every convolution. Here are both, on real images, 30 layers deep, no batchnorm:

# %%
x_train, y_train, x_test, y_test = load_sample()
mean, std = channel_stats(x_train)
images = next(iter(DataLoader(x_train[:16], y_train[:16], batch_size=16, mean=mean, std=std)))[0]
C, depth = 16, 30
stds = {}
for name, gain in [("variance 1/fan_in", 1.0), ("He: variance 2/fan_in", 2.0)]:
    layer_rng = np.random.default_rng(1)
    h, trace = images, []
    with minires.no_grad():
        for layer in range(depth):
            C_in = h.shape[1]
            w = layer_rng.standard_normal((C, C_in, 3, 3)) * np.sqrt(gain / (C_in * 9))
            h = F.relu(F.conv2d(h, minires.tensor(w.astype(np.float32)), padding=1))
            trace.append(float(np.sqrt((h.numpy() ** 2).mean())))
    stds[name] = trace
    print(f"{name:<22} rms activation after layer 1: {trace[0]:.3f}, "
          f"after layer {depth}: {trace[-1]:.2e}")
assert stds["variance 1/fan_in"][-1] < 1e-3 * stds["variance 1/fan_in"][0]
assert 0.2 < stds["He: variance 2/fan_in"][-1] / stds["He: variance 2/fan_in"][0] < 5

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, trace in stds.items():
    ax.semilogy(range(1, depth + 1), trace, marker=".", label=name)
ax.set_xlabel("layer")
ax.set_ylabel("rms activation")
ax.set_title("30 conv + ReLU layers, no batchnorm")
ax.legend()
lesson.save(fig, OUT / "06_init.png")

# %% [markdown]
# The same happens to gradients on the way back. Batchnorm (lesson 5) rescales every layer's
# output anyway, which makes deep networks far less sensitive to this; lessons 7 and 8 show
# what it does *not* fix.
#
# ## 3. Max pooling
#
# A 2x2 max pooling with stride 2 keeps the largest value of each 2x2 window: it halves the
# height and width, so the next 3x3 filter sees a region twice as wide, and it makes the output
# insensitive to shifts smaller than the window. Only the maximum influenced the output, so
# backward sends each window's gradient to its maximum and nowhere else.

# %%
x = minires.tensor(np.array([[1, 5, 2, 0],
                             [3, 4, 8, 1],
                             [0, 2, 6, 7],
                             [9, 1, 3, 5]], np.float32).reshape(1, 1, 4, 4), requires_grad=True)
y = F.max_pool2d(x, 2)
y.backward(np.array([[10, 20], [30, 40]], np.float32).reshape(1, 1, 2, 2))
print("x:\n", x.numpy()[0, 0])
print("max_pool2d(x, 2):\n", y.numpy()[0, 0])
print("dx for the upstream [[10, 20], [30, 40]]:\n", x.grad[0, 0])
assert y.numpy()[0, 0].tolist() == [[5, 8], [9, 7]]
assert x.grad[0, 0, 0, 1] == 10 and x.grad[0, 0, 3, 0] == 30 and x.grad.sum() == 100

# %% [markdown]
# When windows overlap (a 3x3 window with stride 2, as in the first layer of the ImageNet
# ResNets), one pixel can be the maximum of two windows, and then it receives *both*
# gradients. minires's `MaxPooling2D` routes the gradients into the im2col layout and lets
# col2im add them up, the same adjoint as in lesson 4.

# %%
x = minires.tensor(np.array([[0, 0, 0, 0, 0],
                             [0, 1, 0, 1, 0],
                             [0, 0, 9, 0, 0],
                             [0, 1, 0, 1, 0],
                             [0, 0, 0, 0, 0]], np.float32).reshape(1, 1, 5, 5), requires_grad=True)
y = F.max_pool2d(x, 3, stride=2)
y.backward(np.ones((1, 1, 2, 2), np.float32))
print("the 9 is the maximum of all four 3x3 windows; its gradient:", x.grad[0, 0, 2, 2])
assert x.grad[0, 0, 2, 2] == 4
x64 = minires.tensor(rng.permutation(50).reshape(1, 2, 5, 5) / 10.0, requires_grad=True)
assert minires.gradcheck(lambda t: F.max_pool2d(t, 3, stride=2), [x64])

# %% [markdown]
# Write both backward passes yourself: `lessons/exercises/relu.py` and
# `lessons/exercises/maxpool.py` (`python -m minires.exercises check maxpool`).
#
# ## 4. A small CNN, written as a Module
#
# Three stages of convolution, batchnorm and ReLU, with max pooling between them, then global
# average pooling (the mean of each channel) and a linear classifier: the layout of a ResNet
# without its shortcuts and with far fewer layers. `nn.Module` registers every layer assigned
# to an attribute, so `parameters()` finds all the weights (read `minires/nn/module.py`).

# %%
class SmallCNN(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        c = width
        self.features = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.MaxPool2d(2, stride=2),  # 32x32 -> 16x16
            nn.Conv2d(c, 2 * c, 3, padding=1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(),
            nn.MaxPool2d(2, stride=2),  # 16x16 -> 8x8
            nn.Conv2d(2 * c, 4 * c, 3, padding=1, bias=False), nn.BatchNorm2d(4 * c), nn.ReLU(),
        )
        self.pool = nn.GlobalAvgPool2d()  # (N, 4c, 8, 8) -> (N, 4c)
        self.classifier = nn.Linear(4 * c, 10)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


nn.init.manual_seed(0)
width = 32 if args.full else 8
model = SmallCNN(width).to(DEVICE)
n_params = sum(p.size for p in model.parameters())
print(model)
print(f"{n_params:,} parameters (lesson 3's linear classifier had 30,730)")
assert n_params < 30_730 or args.full
assert "MaxPool2d(kernel_size=2, stride=2, padding=0)" in repr(model)  # windows side by side

# %% [markdown]
# Training uses `optim.SGD` with momentum 0.9 and weight decay, and a cosine learning-rate
# schedule (`optim.CosineSchedule`): large steps first, small ones at the end. Note
# `model.train()` before the training steps and `model.eval()` before evaluating.

# %%
if args.full:
    x_train, y_train, x_test, y_test = load_cifar10(args.data)
    mean, std = channel_stats(x_train)
epochs, batch = (15, 128) if args.full else (10, 50)
train_loader = DataLoader(x_train, y_train, batch_size=batch, shuffle=True, drop_last=True,
                          augment=args.full, mean=mean, std=std, device=DEVICE)
test_loader = DataLoader(x_test, y_test, batch_size=500, mean=mean, std=std, device=DEVICE)
optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
schedule = optim.CosineSchedule(0.1, total_iters=epochs * len(train_loader))


def count_correct(logits, yb):
    return int((logits.numpy().argmax(axis=1) == to_device(yb, "cpu")).sum())


def evaluate(model, loader):
    """Accuracy in evaluation mode, without building a graph."""
    model.eval()
    correct = 0
    with minires.no_grad():
        for xb, yb in loader:
            correct += count_correct(model(xb), yb)
    model.train()
    return correct / len(loader.x)


history = {"loss": [], "train": [], "test": []}
start, iteration = time.perf_counter(), 0
for epoch in range(epochs):
    model.train()
    losses, correct = [], 0
    for xb, yb in train_loader:
        schedule.apply(optimizer, iteration)
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        iteration += 1
        losses.append(loss.item())
        correct += count_correct(logits, yb)
    history["loss"].append(float(np.mean(losses)))
    history["train"].append(correct / (len(train_loader) * batch))
    history["test"].append(evaluate(model, test_loader))
    print(f"epoch {epoch + 1:2d}: loss {history['loss'][-1]:.3f}, train accuracy "
          f"{history['train'][-1]:.1%}, test accuracy {history['test'][-1]:.1%}, "
          f"lr {optimizer.lr:.4f}, {time.perf_counter() - start:.0f} s")

# %% [markdown]
# On the sample, the small CNN reaches about 40% where the linear classifier of lesson 3
# stopped near 31%, with a fifth of its parameters: filters shared across positions generalise
# better than one weight per pixel. With `--full` (50,000 images, a 4x wider network,
# augmentation) it goes much further.

# %%
print(f"final test accuracy: {history['test'][-1]:.1%} (chance 10%)")
assert history["test"][-1] > 0.20
assert history["loss"][-1] < history["loss"][0]
if args.full:
    assert history["test"][-1] > 0.6

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.plot(range(1, epochs + 1), history["loss"])
ax1.set_xlabel("epoch")
ax1.set_ylabel("training loss")
ax2.plot(range(1, epochs + 1), history["train"], label="train (running, training mode)")
ax2.plot(range(1, epochs + 1), history["test"], label="test (evaluation mode)")
ax2.axhline(0.1, color="gray", ls=":", label="chance")
ax2.set_xlabel("epoch")
ax2.set_ylabel("accuracy")
ax2.legend()
lesson.save(fig, OUT / "06_training.png")

# %% [markdown]
# ### Why `model.eval()` matters
#
# In training mode batchnorm normalises with the statistics of the batch in front of it. Test
# in batches of two images that way and every channel is normalised by the mean and spread of
# just those two: each prediction depends on its companion, and accuracy drops. (A training-mode
# forward also updates the running statistics, so we save the model's state first and restore
# it afterwards.)

# %%
saved = model.state_dict()
small_batches = DataLoader(x_test, y_test, batch_size=2, mean=mean, std=std, device=DEVICE)
eval_accuracy = evaluate(model, test_loader)
model.train()
correct = 0
with minires.no_grad():
    for xb, yb in small_batches:
        correct += count_correct(model(xb), yb)
train_mode_accuracy = correct / len(x_test)
model.load_state_dict(saved)
print(f"evaluation mode: {eval_accuracy:.1%};  training mode, batches of 2: "
      f"{train_mode_accuracy:.1%}")
assert train_mode_accuracy < eval_accuracy
assert evaluate(model, test_loader) == eval_accuracy  # the restored model is the same again

# %% [markdown]
# ## What we have
#
# - ReLU makes depth useful; its backward masks the gradient.
# - He initialisation keeps the signal's scale through many ReLU layers.
# - Max pooling downsamples; its backward routes each gradient to the window's maximum, and
#   sums where windows overlap.
# - A `Module`, `SGD` and a schedule give a training loop in a dozen lines.
#
# Next: what happens when this kind of plain network is made much deeper, and the one-line
# change that fixes it (lesson 7).
