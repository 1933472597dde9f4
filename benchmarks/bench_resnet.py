"""ResNet-20 training and evaluation speed: minires against PyTorch CPU, in the same run.

Times a full training step (forward, backward, SGD step) and an evaluation forward at batch 128
on random data, each framework in its own subprocess with the same thread count, and prints
images/s, the minires/PyTorch ratio (>1: minires is faster) and each process's peak RSS, with
the CPU's model and the instruction set each framework's code was compiled for. --rounds R
alternates the two R times and prints the medians (a shared machine's speed drifts); --isa avx2
compiles minires for Haswell and caps PyTorch at AVX2, to measure an AVX2 machine's code on an
AVX-512 one. --profile prints instead where minires's step spends its time, op by op
(benchmarks/PROFILE.md).

    python benchmarks/bench_resnet.py [--batch 128] [--steps 5] [--threads 2] [--rounds 3]
                                      [--isa native|avx2] [--profile]
"""

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

# What Haswell has (AVX2 and FMA, no AVX-512): numba compiles for it with these, and PyTorch's
# ATen and oneDNN are capped at AVX2.
AVX2_FEATURES = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fsgsbase,+lzcnt,+mmx,"
                 "+movbe,+pclmul,+popcnt,+rdrnd,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,"
                 "+sahf,-avx512f")
AVX2_ENV = dict(NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=AVX2_FEATURES,
                ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")


def cpu_model():
    """The CPU's model name, as lscpu prints it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def instruction_set(framework):
    """What this process's code for framework was compiled for, in words."""
    if framework == "torch":
        import torch

        return f"ATen {torch.backends.cpu.get_cpu_capability()}"
    import llvmlite.binding
    import numba

    from minires.backends.numba import config

    name = numba.core.config.CPU_NAME or llvmlite.binding.get_host_cpu_name()
    isa = "AVX-512" if config.compiles_for_avx512() else "AVX2"
    if "-prefer-256-bit" in (numba.core.config.CPU_FEATURES or "").split(","):
        isa += " with 512-bit vectors"  # config.ask_for_512_bit_vectors
    return f"numba for {name}, {isa}, tile {config.TILE_ROWS}x{config.TILE_COLS}"


def torch_resnet20():
    """The reference CIFAR ResNet-20 (option A shortcuts) in PyTorch, for timing only."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.stride, self.pad = stride, (c_out - c_in) // 2

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            shortcut = x[:, :, ::self.stride, ::self.stride]
            if self.pad:
                shortcut = nn.functional.pad(shortcut, (0, 0, 0, 0, self.pad, self.pad))
            return torch.relu(out + shortcut)

    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    c_in = 16
    for c_out, stride in [(16, 1), (32, 2), (64, 2)]:
        for i in range(3):
            layers.append(Block(c_in, c_out, stride if i == 0 else 1))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def time_minires(x, y, steps):
    import minires
    from minires import models, optim
    from minires.functional import cross_entropy

    model = models.resnet20()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def train_step():
        loss = cross_entropy(model(minires.tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def eval_step():
        with minires.no_grad():
            model(minires.tensor(x))

    model.train()
    train = best_of(train_step, steps)
    model.eval()
    return train, best_of(eval_step, steps)


def time_torch(x, y, steps):
    import torch

    model = torch_resnet20()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    xt, yt = torch.tensor(x), torch.tensor(y)

    def train_step():
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def eval_step():
        with torch.no_grad():
            model(xt)

    model.train()
    train = best_of(train_step, steps)
    model.eval()
    return train, best_of(eval_step, steps)


def best_of(fn, steps):
    fn()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def profile_minires(batch, steps):
    """Time every op's forward and backward inside the best of `steps` steps, train and eval."""
    import minires
    from minires import function, models, optim
    from minires.functional import cross_entropy

    times = collections.defaultdict(float)
    calls = collections.Counter()

    def timed(method, key):
        def wrapper(self, *args):
            start = time.perf_counter()
            result = method(self, *args)
            times[key] += time.perf_counter() - start
            calls[key] += 1
            return result
        return wrapper

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for cls in set(subclasses(function.Function)):
        for name in ("forward", "backward"):
            if name in vars(cls):
                setattr(cls, name, timed(vars(cls)[name], f"{cls.__name__}.{name}"))

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model = models.resnet20()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def train_step():
        loss = cross_entropy(model(minires.tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def eval_step():
        with minires.no_grad():
            model(minires.tensor(x))

    for mode, step in [("train", train_step), ("eval", eval_step)]:
        model.train(mode == "train")
        step()  # warm-up
        best = None
        for _ in range(steps):
            times.clear()
            calls.clear()
            start = time.perf_counter()
            step()
            total = time.perf_counter() - start
            if best is None or total < best[0]:
                best = (total, dict(times), dict(calls))
        total, op_times, op_calls = best
        print(f"{mode} step: {total * 1e3:.0f} ms ({batch / total:.1f} images/s)")
        for key, seconds in sorted(op_times.items(), key=lambda item: -item[1]):
            print(f"  {key:34} {op_calls[key]:3d}x {seconds * 1e3:8.1f} ms "
                  f"{100 * seconds / total:5.1f}%")
        rest = total - sum(op_times.values())
        print(f"  {'rest (graph walk, SGD, Python)':39} {rest * 1e3:8.1f} ms "
              f"{100 * rest / total:5.1f}%")


def worker(framework, batch, steps, threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
        train, evaluate = time_torch(x, y, steps)
    else:
        train, evaluate = time_minires(x, y, steps)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"train": batch / train, "eval": batch / evaluate, "peak_mb": peak_mb,
                      "isa": instruction_set(framework)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate minires and PyTorch this many times; print medians")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="avx2: both frameworks' AVX2 code, on an AVX-512 machine too")
    parser.add_argument("--profile", action="store_true", help="minires's time per op instead")
    parser.add_argument("--worker", choices=["minires", "torch", "profile"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "profile":
        return profile_minires(args.batch, args.steps)
    if args.worker:
        return worker(args.worker, args.batch, args.steps, args.threads)

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if args.isa == "avx2":
        env.update(AVX2_ENV)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; ResNet-20, batch {args.batch}, "
          f"{args.threads} threads, best of {args.steps} steps")
    if args.profile:
        cmd = [sys.executable, __file__, "--worker", "profile", "--batch", str(args.batch),
               "--steps", str(args.steps)]
        return subprocess.run(cmd, env=env).returncode
    rounds = []
    for _ in range(args.rounds):
        results = {}
        for framework in ["minires", "torch"]:
            cmd = [sys.executable, __file__, "--worker", framework, "--batch", str(args.batch),
                   "--steps", str(args.steps), "--threads", str(args.threads)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{framework}: failed\n{done.stderr.strip().splitlines()[-1]}")
                return 1
            results[framework] = json.loads(done.stdout.strip().splitlines()[-1])
        rounds.append(results)
        print_round(results, f"round {len(rounds)}" if args.rounds > 1 else "")
    if args.rounds > 1:
        print_medians(rounds)


def print_round(results, title):
    m, t = results["minires"], results["torch"]
    if title:
        print(title)
    print(f"{'':10} {'train img/s':>12} {'eval img/s':>11} {'peak RSS MB':>12}  code")
    for framework, r in results.items():
        print(f"{framework:10} {r['train']:12.1f} {r['eval']:11.1f} {r['peak_mb']:12.0f}  "
              f"{r['isa']}")
    print(f"{'ratio':10} {m['train'] / t['train']:12.2f} {m['eval'] / t['eval']:11.2f}")


def print_medians(rounds):
    """The median of each figure over the rounds, the ratios' medians taken round by round."""
    def median(f):
        return float(np.median([f(r) for r in rounds]))

    print(f"median of {len(rounds)} rounds")
    for framework in ["minires", "torch"]:
        print(f"{framework:10} {median(lambda r: r[framework]['train']):12.1f} "
              f"{median(lambda r: r[framework]['eval']):11.1f}")
    print(f"{'ratio':10} "
          f"{median(lambda r: r['minires']['train'] / r['torch']['train']):12.2f} "
          f"{median(lambda r: r['minires']['eval'] / r['torch']['eval']):11.2f}")


if __name__ == "__main__":
    main()
