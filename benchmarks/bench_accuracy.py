"""Accuracy: the same training run under the reference backend and the fast one (issue 16).

Trains a CIFAR ResNet from the same weights on the same batches (the embedded sample, no
augmentation; SGD with the paper's momentum and weight decay) three times: the reference backend
in float64, which stands for the exact curve (its rounding is 1e-16, far below float32's); the
reference in float32; and the fast backend (numba: its own convolutions, Winograd among them) in
float32. Training amplifies every rounding difference, step after step, so no float32 run stays
on the exact curve; the question is whether the fast backend strays further than float32 itself
does. It passes (exit status 0) when its loss stays within `--factor` times the reference-float32
run's distance from the exact curve, at its largest and on average (within_float32_noise says
why not step by step). Which float32 run strays further in one training run is largely chance;
--seeds N repeats the comparison for seeds 0 .. N-1 (other weights, other batches) and prints
each seed's two ratios and their geometric means over the seeds; it passes when every seed
does. Over the first few steps (--steps 6) most seeds' float32 curves all sit at the loss's
own rounding, until a rounding difference moves a ReLU input across 0; more rounding does that
sooner, and the geometric means over seeds show it: that is where the tiles of
winograd.choose_tile differ (PROFILE.md).

    python benchmarks/bench_accuracy.py [--depth 20] [--batch 32] [--steps 150] [--fast numba]
                                        [--seeds 1]
"""

import argparse
import sys
import time

import numpy as np

import minires.functional as F
from minires import backends, models, optim, tensor
from minires.cifar10 import load_sample
from minires.data import channel_stats
from minires.nn import init


def loss_curve(backend, dtype, depth, batch, steps, seed=0):
    """The training loss of each step, the model and the batches fixed by seed."""
    init.manual_seed(seed)
    model = models.resnet_cifar(depth)
    for param in model.parameters():
        param.data = param.data.astype(dtype)
    for module in model.modules():
        for name, buffer in module._buffers.items():
            module._buffers[name] = buffer.astype(dtype)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x_train, y_train, _, _ = load_sample()
    mean, std = channel_stats(x_train)
    images = ((x_train / np.float32(255) - mean[:, None, None]) / std[:, None, None])
    images = images.astype(dtype)  # (1000, 3, 32, 32)
    order = np.random.default_rng(seed).permutation(len(images))
    losses = []
    with backends.using(backend):
        for step in range(steps):
            # Batches in a fixed random order, the sample repeated as often as needed.
            pick = np.take(order, np.arange(step * batch, (step + 1) * batch), mode="wrap")
            loss = F.cross_entropy(model(tensor(images[pick])), y_train[pick])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return np.array(losses)


def within_float32_noise(exact, reference32, fast32, factor=3.0):
    """Whether fast32's loss curve strays from the exact one no further than reference32's does,
    give or take factor: in its largest and in its mean distance over the run.

    Not step by step: training is chaotic, and a rounding difference of 1e-7 grows to 0.1 in the
    loss within 10-25 steps (ResNet-20, batch 32, lr 0.1), as soon as it moves one ReLU input
    across 0. Which float32 run crosses first is chance (Winograd's F(4x4), which rounds about
    10x more than a direct sum, tends to cross a few steps earlier), so a step-by-step band would
    measure luck. The accuracy of each op is tested on its own (test_winograd, test_backends); a
    wrong backward shows here as a curve that leaves from the first steps on."""
    noise, error = np.abs(reference32 - exact), np.abs(fast32 - exact)
    return bool(error.max() <= factor * noise.max() + 1e-6
                and error.mean() <= factor * noise.mean() + 1e-6)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20, help="6n+2: 8, 14, 20, ...")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--fast", default="numba", help="the backend to check")
    parser.add_argument("--factor", type=float, default=3.0,
                        help="how far past float32's own noise the fast backend may stray")
    parser.add_argument("--seeds", type=int, default=1,
                        help="repeat for seeds 0 .. SEEDS-1 and summarise")
    args = parser.parse_args(argv)
    runs = [("reference float64", "reference", np.float64),
            ("reference float32", "reference", np.float32),
            (f"{args.fast} float32", args.fast, np.float32)]
    if args.seeds > 1:
        return compare_seeds(args, runs)

    curves = {}
    for name, backend, dtype in runs:
        start = time.perf_counter()
        curves[name] = loss_curve(backend, dtype, args.depth, args.batch, args.steps)
        print(f"{name:18} {args.steps} steps in {time.perf_counter() - start:5.1f} s, "
              f"loss {curves[name][0]:.4f} -> {curves[name][-1]:.4f}")
    exact = curves["reference float64"]
    noise = np.abs(curves["reference float32"] - exact)
    error = np.abs(curves[f"{args.fast} float32"] - exact)
    print(f"ResNet-{args.depth}, batch {args.batch}: |loss - float64 reference's loss|")
    print(f"{'step':>6} {'reference float32':>18} {args.fast + ' float32':>18}")
    for step in sorted({1, 10, 25, 50, 100, args.steps} & set(range(1, args.steps + 1))):
        print(f"{step:6d} {noise[step - 1]:18.2e} {error[step - 1]:18.2e}")
    print(f"{'max':>6} {noise.max():18.2e} {error.max():18.2e}")
    print(f"{'mean':>6} {noise.mean():18.2e} {error.mean():18.2e}")
    within = within_float32_noise(exact, curves["reference float32"],
                                  curves[f"{args.fast} float32"], args.factor)
    print(f"{args.fast} float32 {'stays' if within else 'does NOT stay'} within {args.factor:g}x "
          f"the float32 reference's distance from the exact curve")
    return 0 if within else 1


def compare_seeds(args, runs):
    """The comparison for seeds 0 .. args.seeds-1: per seed, the fast curve's largest and mean
    distance from the exact one over the float32 reference's; then their geometric means."""
    print(f"ResNet-{args.depth}, batch {args.batch}, {args.steps} steps: {args.fast} float32's "
          f"distance from the float64 curve over the float32 reference's")
    print(f"{'seed':>6} {'largest':>8} {'mean':>8}")
    ratios, passed = [], 0
    for seed in range(args.seeds):
        exact, reference32, fast32 = (
            loss_curve(backend, dtype, args.depth, args.batch, args.steps, seed)
            for _, backend, dtype in runs)
        noise, error = np.abs(reference32 - exact), np.abs(fast32 - exact)
        ratios.append((error.max() / noise.max(), error.mean() / noise.mean()))
        within = within_float32_noise(exact, reference32, fast32, args.factor)
        passed += within
        print(f"{seed:6d} {ratios[-1][0]:8.2f} {ratios[-1][1]:8.2f}"
              f"{'' if within else f'  (past {args.factor:g}x)'}", flush=True)
    largest, mean = np.exp(np.log(ratios).mean(axis=0))
    print(f"{'geomean':>6} {largest:8.2f} {mean:8.2f}; {passed} of {args.seeds} seeds within "
          f"{args.factor:g}x")
    return 0 if passed == args.seeds else 1


if __name__ == "__main__":
    sys.exit(main())
