"""GPU speed: minires's CUDA kernels against cuBLAS and PyTorch, as ratios measured in one run.

Needs an NVIDIA GPU and CuPy (`pip install -e ".[gpu-cuda12]"`, or `[gpu-cuda13]`); PyTorch with
CUDA for the PyTorch columns. Three parts, each printed as times and a ratio (>1: minires slower):
  1. GEMM on ResNet-20's conv shapes at batch 128 (C_out x C_in*9 x N*H*W): our naive and tiled
     kernels against cuBLAS (cupy.matmul), for the forward (NN), input-gradient (TN) and
     weight-gradient (NT) products.
  2. conv2d forward and forward+backward, minires (tiled GEMM; cuBLAS GEMM) against PyTorch.
  3. A full ResNet-20 training step (forward, backward, SGD) against the same net in PyTorch,
     and the same step replayed from a CUDA graph (train --cuda-graph).

    python benchmarks/bench_gpu.py [--batch 128] [--repeat 20] [--skip-naive]

`--count` needs no GPU: it runs one ResNet-20 training step on the CPU under the CUDA emulator
and prints the kernel launches and device-to-host syncs the step would cost on CuPy
(minires/backends/cuda/counting.py says what counts). The emulator is far too slow for batch
128, so it runs at batch 4 unless --batch says otherwise. The count does not depend on the
batch: which GEMMs split K (gpu.split_k) does (42 of a step at batch 4, 31 at batch 128), but
the tiled kernels sum the slices in the same launch, so a split GEMM is one launch like the others:

    python benchmarks/bench_gpu.py --count [--batch 4] [--by-name]
"""

import argparse
import sys
import time

import numpy as np

# ResNet-20's three stages at 32x32 input: (name, C, H=W); every conv is 3x3, padding 1.
STAGES = [("stage 1", 16, 32), ("stage 2", 32, 16), ("stage 3", 64, 8)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=None, help="default 128 (4 with --count)")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per measurement")
    parser.add_argument("--skip-naive", action="store_true", help="the naive GEMM is slow")
    parser.add_argument("--count", action="store_true",
                        help="count launches and syncs of a training step, on the CPU")
    parser.add_argument("--by-name", action="store_true", help="with --count: which ops launch")
    args = parser.parse_args()
    if args.count:
        count = count_training_step(args.batch or 4)
        print(f"launches per step: {count.launches}, syncs per step: {count.syncs}")
        # CuPy spends 5-20 us of Python and driver time per launch, whatever the kernel does.
        low, high = count.launches * 5e-3, count.launches * 20e-3
        print(f"  launch overhead alone, at 5-20 us per launch: {low:.1f}-{high:.1f} ms per step")
        if args.by_name:
            for name, n in count.by_name.most_common():
                print(f"  {n:5d}  {name}")
        return
    args.batch = args.batch or 128

    from minires.backends import import_cupy

    try:
        cupy = import_cupy()
    except RuntimeError as e:
        sys.exit(f"bench_gpu.py: {e}")
    device = cupy.cuda.Device()
    name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"].decode()
    print(f"GPU: {name}, CuPy {cupy.__version__}, batch {args.batch}, median of {args.repeat}")

    bench_gemm(cupy, args)
    torch = import_torch_cuda()
    bench_conv(cupy, torch, args)
    bench_training_step(cupy, torch, args)


def count_training_step(batch):
    """Launches and syncs of the second ResNet-20 training step (forward, cross-entropy,
    backward, SGD) under the emulated CUDA backend: the first step makes the momentum buffers."""
    import minires
    from minires import backends, models, optim
    from minires import functional as F
    from minires.backends.cuda import counting, emulator

    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, batch)
    model = models.resnet20()
    sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    # The labels stay a host array, as a user passes them: cross_entropy checks their classes
    # there (no wait for the device) and copies them over. (A loader's labels, already on the
    # GPU, were checked when it loaded them and are not checked again: no sync either way.)
    x, y = counting.device_array(images), labels

    def step():
        sgd.zero_grad()
        F.cross_entropy(model(minires.tensor(x)), y).backward()
        sgd.step()

    # The count is of the code path, not of the values: skip the race detector's bookkeeping.
    with backends.using("cuda"), emulator.race_detection(False):
        with counting.counting():  # inside it, setting .data keeps the CountingArray
            for module in model.modules():  # every parameter and buffer as "device" memory
                for param in module._parameters.values():
                    param.data = counting.device_array(param.data)
                for name, buffer in module._buffers.items():
                    if buffer is not None:
                        module._buffers[name] = counting.device_array(buffer)
            step()
        with counting.counting() as count:
            step()
    return count


def import_torch_cuda():
    try:
        import torch
    except ImportError:
        print("\n(PyTorch is not installed: no PyTorch columns)")
        return None
    if not torch.cuda.is_available():
        print("\n(PyTorch has no CUDA here: no PyTorch columns)")
        return None
    torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithm per shape
    return torch


def median_ms(function, synchronize, repeat):
    """Median wall-clock time of function() in ms, the GPU drained before and after each run
    (so Python's launch overhead counts, as it does in training)."""
    for _ in range(3):  # warm-up: compilation, cuDNN autotuning, memory pools
        function()
    synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        synchronize()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def bench_gemm(cupy, args):
    from minires.backends.cuda import gpu

    print("\n1. GEMM, ms (TFLOP/s); ratio = time / cuBLAS time")
    sync = cupy.cuda.Device().synchronize
    kinds = ["cublas", "tiled"] + ([] if args.skip_naive else ["naive"])
    previous = gpu.get_gemm()
    rng = cupy.random.default_rng(0)
    for stage, C, H in STAGES:
        NHW, CK = args.batch * H * H, C * 9
        w = rng.standard_normal((C, CK), dtype=np.float32)  # (C_out, C_in*9)
        cols = rng.standard_normal((CK, NHW), dtype=np.float32)  # (C_in*9, N*H*W)
        dy = rng.standard_normal((C, NHW), dtype=np.float32)  # (C_out, N*H*W)
        cases = [("NN y = W @ cols", w, cols, False, False),
                 ("TN dcols = W^T @ dy", w, dy, True, False),
                 ("NT dW = dy @ cols^T", dy, cols, False, True)]
        for label, a, b, trans_a, trans_b in cases:
            M = a.shape[1] if trans_a else a.shape[0]
            K = a.shape[0] if trans_a else a.shape[1]
            N = b.shape[0] if trans_b else b.shape[1]
            shape = f"{M}x{N}x{K}"
            results, line = {}, f"  {stage} {label:<20} {shape:<17}"
            for kind in kinds:
                gpu.set_gemm(kind)
                results[kind] = gpu.gemm(a, b, trans_a, trans_b)
                ms = median_ms(lambda: gpu.gemm(a, b, trans_a, trans_b), sync, args.repeat)
                if kind == "cublas":
                    reference = ms
                    line += f" cuBLAS {ms:7.3f} ({2 * M * N * K / ms / 1e9:5.1f})"
                else:
                    error = float(cupy.abs(results[kind] - results["cublas"]).max()
                                  / cupy.abs(results["cublas"]).max())
                    line += f"  {kind} {ms:8.3f} ({2 * M * N * K / ms / 1e9:5.1f}) " \
                            f"x{ms / reference:5.1f} err {error:.0e}"
            print(line)
    gpu.set_gemm(previous)


def bench_conv(cupy, torch, args):
    import minires
    from minires import functional as F
    from minires.backends.cuda import gpu

    print("\n2. conv2d 3x3, ms; ratio = minires time / PyTorch time")
    sync = cupy.cuda.Device().synchronize
    previous = gpu.get_gemm()
    for stage, C, H in STAGES:
        rng = cupy.random.default_rng(0)
        x = minires.tensor(rng.standard_normal((args.batch, C, H, H), dtype=np.float32),
                           requires_grad=True)
        w = minires.tensor(rng.standard_normal((C, C, 3, 3), dtype=np.float32) * 0.1,
                           requires_grad=True)
        dy = rng.standard_normal((args.batch, C, H, H), dtype=np.float32)

        def forward():
            return F.conv2d(x, w, padding=1)

        def forward_backward():
            forward().backward(dy)

        line = f"  {stage} N={args.batch} C={C} {H}x{H}:"
        mine = {}
        for kind in ("tiled", "cublas"):
            gpu.set_gemm(kind)
            mine[kind] = (median_ms(forward, sync, args.repeat),
                          median_ms(forward_backward, sync, args.repeat))
            line += f"  minires[{kind}] fwd {mine[kind][0]:.3f} fwd+bwd {mine[kind][1]:.3f}"
        if torch is not None:
            tx = torch.as_tensor(x.data, device="cuda").requires_grad_()
            tw = torch.as_tensor(w.data, device="cuda").requires_grad_()
            tdy = torch.as_tensor(dy, device="cuda")

            def torch_forward():
                return torch.nn.functional.conv2d(tx, tw, padding=1)

            def torch_forward_backward():
                torch_forward().backward(tdy)

            theirs = (median_ms(torch_forward, torch.cuda.synchronize, args.repeat),
                      median_ms(torch_forward_backward, torch.cuda.synchronize, args.repeat))
            line += f"  PyTorch fwd {theirs[0]:.3f} fwd+bwd {theirs[1]:.3f}  ratio tiled " \
                    f"x{mine['tiled'][0] / theirs[0]:.1f} / x{mine['tiled'][1] / theirs[1]:.1f}"
        print(line)
    gpu.set_gemm(previous)


def bench_training_step(cupy, torch, args):
    print("\n3. ResNet-20 training step (forward, backward, SGD), ms; ratio = minires / PyTorch")
    try:
        from minires import models, optim
    except ImportError as e:
        print(f"  skipped: minires.models or minires.optim is missing ({e})")
        return
    import minires
    from minires import functional as F

    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, args.batch)

    model = models.resnet20().to("gpu")
    sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = minires.tensor(cupy.asarray(images))
    y = cupy.asarray(labels)

    def minires_step():
        sgd.zero_grad()
        F.cross_entropy(model(x), y).backward()
        sgd.step()

    mine = median_ms(minires_step, cupy.cuda.Device().synchronize, args.repeat)
    line = f"  minires {mine:.1f} ms ({args.batch / mine * 1e3:.0f} images/s)"
    # The same step replayed from a CUDA graph (train --cuda-graph): the launch overhead gone.
    from minires.backends.cuda.graph import GraphedStep
    from minires.train import train_step

    graphed = GraphedStep(train_step, F.cross_entropy)
    graphed_ms = median_ms(lambda: graphed(model, (x, y), sgd), cupy.cuda.Device().synchronize,
                           args.repeat)
    line += f", with --cuda-graph {graphed_ms:.1f} ms"
    if torch is not None:
        try:
            from bench_resnet import torch_resnet20  # benchmarks/ is on sys.path as a script
        except ImportError:
            torch_resnet20 = None
        if torch_resnet20 is not None:
            net = torch_resnet20().cuda()
            torch_sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9,
                                        weight_decay=1e-4)
            tx, ty = torch.as_tensor(images, device="cuda"), torch.as_tensor(labels, device="cuda")

            def torch_step():
                torch_sgd.zero_grad()
                torch.nn.functional.cross_entropy(net(tx), ty).backward()
                torch_sgd.step()

            theirs = median_ms(torch_step, torch.cuda.synchronize, args.repeat)
            line += f"  PyTorch {theirs:.1f} ms  ratio x{mine / theirs:.1f}"
    print(line)


if __name__ == "__main__":
    main()
