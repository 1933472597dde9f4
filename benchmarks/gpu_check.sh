#!/usr/bin/env bash
# gpu_check.sh: the GPU figures issue 13 asks for, in one run on a GPU machine: about 5 minutes
# when all is well (the steps' time limits add up to 11, the worst case).
#
#   bash benchmarks/gpu_check.sh [RESULTS_FILE] [CIFAR10_ARCHIVE]
#
# Run from the repository root, inside the virtual environment to use. In order, each step with
# its own time limit, everything it prints appended to RESULTS_FILE (default gpu_check.txt):
#   1. the GPU and driver (nvidia-smi), then `pip install -e ".[gpu-cuda12|13,test]"`, the extra
#      chosen by the driver's CUDA version;
#   2. the tests on real CuPy arrays: the backend fixture's "gpu" cases and the GPU backend tests;
#   3. bench_gpu.py: our GEMMs against cuBLAS on ResNet-20's shapes, conv2d and a training step
#      against PyTorch (when PyTorch with CUDA is installed); then the launch count (--count);
#   4. 2,000 iterations of ResNet-20 on CIFAR-10 (batch 128), and the time per iteration; then
#      one epoch with --cuda-graph (the step replayed from a CUDA graph) and its time.
# A step that fails or runs out of time is recorded as such and the script goes on, so that one
# run gives every figure it can. Needs no network beyond pip's.
set -uo pipefail

RESULTS=${1:-gpu_check.txt}
DATA=${2:-${MINIRES_CIFAR10:-/work/shared/datasets/cifar-10-python.tar.gz}}
RUN_DIR=$(mktemp -d)
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-4}

step() {  # step TITLE SECONDS COMMAND...: run COMMAND with a time limit, output to RESULTS
    local title=$1 seconds=$2
    shift 2
    echo "== $title ($(date -u +%H:%M:%S), limit ${seconds}s)" | tee -a "$RESULTS"
    local start=$SECONDS
    timeout "$seconds" "$@" 2>&1 | tee -a "$RESULTS"
    local status=${PIPESTATUS[0]}
    echo "-- $title: exit $status after $((SECONDS - start)) s" | tee -a "$RESULTS"
    return "$status"
}

echo "minires gpu_check, $(date -u), commit $(git rev-parse --short HEAD 2>/dev/null)" > "$RESULTS"

# 1. The machine and the install.
step "GPU" 20 nvidia-smi
CUDA_MAJOR=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -1)
EXTRA=gpu-cuda12
if [ "${CUDA_MAJOR:-12}" -ge 13 ]; then EXTRA=gpu-cuda13; fi
step "install .[$EXTRA,test]" 120 python -m pip install -q -e ".[$EXTRA,test]"
step "CuPy sees the GPU" 30 python -c "import minires; assert minires.gpu_available(), \
'CuPy is installed but sees no GPU'; import cupy; print('CuPy', cupy.__version__)"

# 2. The tests on real CuPy arrays (the emulator ran everything else already, without a GPU).
step "tests on the GPU" 90 python -m pytest -q -x -k "gpu" tests/test_ops.py tests/test_optim.py \
    tests/test_gpu_backend.py

# 3. Speed: kernels, conv2d, a training step; the launch budget.
step "bench_gpu.py" 90 python benchmarks/bench_gpu.py --repeat 10 --skip-naive
step "launch budget" 60 python benchmarks/bench_gpu.py --count

# 4. Real training: 2,000 iterations (5 epochs at batch 128, each with an evaluation).
if [ -e "$DATA" ]; then
    start=$SECONDS
    if step "train resnet20, 2000 iterations" 180 python -m minires train --model resnet20 \
            --device gpu --iters 2000 --batch 128 --data "$DATA" --out "$RUN_DIR/run" \
            --no-progress; then
        elapsed=$((SECONDS - start))
        echo "time per iteration: $((elapsed * 1000 / 2000)) ms (wall time of the whole run / \
2000: includes start-up, data loading and 5 evaluations of 10,000 images)" | tee -a "$RESULTS"
        tail -n 3 "$RUN_DIR/run/metrics.csv" 2>/dev/null | tee -a "$RESULTS"
    fi
    # The same steps replayed from a CUDA graph (train --cuda-graph): one epoch, time per step.
    start=$SECONDS
    if step "train resnet20 --cuda-graph, 390 iterations" 90 python -m minires train \
            --model resnet20 --device gpu --iters 390 --batch 128 --data "$DATA" \
            --out "$RUN_DIR/graph" --no-progress --cuda-graph; then
        elapsed=$((SECONDS - start))
        echo "--cuda-graph: $((elapsed * 1000 / 390)) ms per iteration (wall time / 390, with \
start-up and one evaluation)" | tee -a "$RESULTS"
    fi
else
    echo "== training skipped: no CIFAR-10 archive at $DATA (pass one as the 2nd argument)" \
        | tee -a "$RESULTS"
fi
rm -rf "$RUN_DIR"
echo "figures in $RESULTS"
