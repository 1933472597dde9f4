"""Per-layer convolution speed: minires (NumPy backend) against PyTorch CPU, in the same run.

For each distinct conv shape of ResNet-20 at batch 128, times forward and forward+backward
(input and weight gradients) and prints milliseconds, GFLOP/s and minires/PyTorch speed ratios
(>1 means minires is faster). PyTorch gets the same thread count as minires's numba kernels.

    python benchmarks/bench_conv.py [--batch 128] [--repeat 3] [--threads 2] [--no-winograd]

--no-winograd keeps every layer on conv.py (the numba backend's winograd = False), to compare.
"""

import argparse
import os
import time

import numpy as np

# ResNet-20 (He et al. 2015, sec. 4.2): (C_in, C_out, H, stride) of each distinct 3x3 conv.
RESNET20_CONVS = [
    ("conv1", 3, 16, 32, 1),
    ("stage1", 16, 16, 32, 1),
    ("stage2 down", 16, 32, 32, 2),
    ("stage2", 32, 32, 16, 1),
    ("stage3 down", 32, 64, 16, 2),
    ("stage3", 64, 64, 8, 1),
]


def best_time(fn, repeat):
    fn()  # warm-up: first-call allocations, numba compilation
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_minires(x, w, stride, repeat):
    import minires
    import minires.functional as F

    xt = minires.tensor(x, requires_grad=True)
    wt = minires.tensor(w, requires_grad=True)
    g = np.ones((x.shape[0], w.shape[0], x.shape[2] // stride, x.shape[3] // stride), x.dtype)

    def forward():
        with minires.no_grad():
            F.conv2d(xt, wt, stride=stride, padding=1)

    def forward_backward():
        F.conv2d(xt, wt, stride=stride, padding=1).backward(g)

    return best_time(forward, repeat), best_time(forward_backward, repeat)


def bench_torch(x, w, stride, repeat):
    import torch

    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    g = torch.ones(x.shape[0], w.shape[0], x.shape[2] // stride, x.shape[3] // stride)

    def forward():
        with torch.no_grad():
            torch.nn.functional.conv2d(xt, wt, stride=stride, padding=1)

    def forward_backward():
        torch.nn.functional.conv2d(xt, wt, stride=stride, padding=1).backward(g)

    return best_time(forward, repeat), best_time(forward_backward, repeat)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-winograd", action="store_true", help="conv.py on every layer")
    args = parser.parse_args()
    import numba

    from minires import backends

    backends.backend("numba").winograd = not args.no_winograd

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))  # minires's kernels
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
        print("PyTorch is not installed: printing minires times only")

    rng = np.random.default_rng(0)
    winograd = "off" if args.no_winograd else "on"
    print(f"batch {args.batch}, {args.threads} threads, best of {args.repeat}, Winograd {winograd}")
    header = f"{'layer':12} {'shape':>18} {'GFLOP':>6} | {'fwd ms':>7} {'GF/s':>5} "
    header += f"{'fwd+bwd ms':>10} {'GF/s':>5}"
    if torch:
        header += f" | {'torch fwd':>9} {'torch f+b':>9} | {'ratio fwd':>9} {'ratio f+b':>9}"
    print(header)
    for name, c_in, c_out, size, stride in RESNET20_CONVS:
        x = rng.standard_normal((args.batch, c_in, size, size), dtype=np.float32)
        w = rng.standard_normal((c_out, c_in, 3, 3), dtype=np.float32)
        out = size // stride
        gflop = 2 * args.batch * c_out * out * out * c_in * 9 / 1e9  # one GEMM's worth
        fwd, fwd_bwd = bench_minires(x, w, stride, args.repeat)
        line = (f"{name:12} {f'{c_in}->{c_out} {size}x{size}/{stride}':>18} {gflop:6.2f} | "
                f"{fwd * 1e3:7.1f} {gflop / fwd:5.0f} {fwd_bwd * 1e3:10.1f} "
                f"{3 * gflop / fwd_bwd:5.0f}")
        if torch:
            t_fwd, t_fwd_bwd = bench_torch(x, w, stride, args.repeat)
            line += (f" | {t_fwd * 1e3:9.1f} {t_fwd_bwd * 1e3:9.1f} | "
                     f"{t_fwd / fwd:9.2f} {t_fwd_bwd / fwd_bwd:9.2f}")
        print(line)


if __name__ == "__main__":
    main()
