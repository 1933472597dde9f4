"""The CUDA backend's own batchnorm, ReLU, loss and SGD kernels (kernels/batch_norm.cu, relu.cu,
cross_entropy.cu, sgd.cu), fused (batchnorm then ReLU, the sum then ReLU) or not, against the
reference backend, under the CUDA emulator with its race detector on; awkward shapes: one
channel, (N, C) inputs, H*W not a multiple of the block, a mean far from zero, no affine
parameters, no running statistics, one row or class of logits, more rows than a block. Then
five training steps of a small ResNet, emulated GPU against the CPU reference: the same losses
within float32 noise; last, the emulator's bounds checks with its race detector off.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

from minires import backends, models, nn, optim, tensor
from minires import functional as F
from minires.backends import reference
from minires.backends.cuda import counting

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulator needs g++")

BN_SHAPES = [(3, 5, 7, 9), (2, 3), (1, 1, 17, 1), (4, 2, 1, 300), (2, 16, 8, 8)]


def random(*shape, seed=0, scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + offset).astype(np.float32)


def cuda():
    return backends.backend("cuda")


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_the_reference(shape, training, affine):
    C = shape[1]
    x = random(*shape, scale=3.0, offset=50.0)  # a large mean: the variance must not cancel
    gamma, beta = (random(C, seed=1), random(C, seed=2)) if affine else (None, None)
    running = [random(C, seed=3), np.abs(random(C, seed=4)) + 0.5]
    expected_running = [r.astype(np.float64) for r in running]
    dy = random(*shape, seed=5)
    with counting.counting() as count, backends.using("cuda"):
        y, saved = cuda().batch_norm_forward(x, gamma, beta, *running, training, 0.1, 1e-5)
        dx, dgamma, dbeta = cuda().batch_norm_backward(dy, saved, training)
    forward = "batch_norm_forward_training" if training else "batch_norm_normalize"
    assert count.by_name[forward] == count.by_name["batch_norm_backward"] == 1, count.by_name
    f64 = [None if a is None else a.astype(np.float64) for a in (x, gamma, beta)]
    y_ref, saved_ref = reference.Reference().batch_norm_forward(
        *f64, *expected_running, training, 0.1, 1e-5)
    dx_ref, dgamma_ref, dbeta_ref = reference.Reference().batch_norm_backward(
        dy.astype(np.float64), saved_ref, training)
    assert y.dtype == dx.dtype == np.float32 and y.shape == dx.shape == shape
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    # dx is a difference of terms of size |gamma * dy| / std, far larger than dx itself when
    # the batch is 2 (x_hat nearly +-1, dx nearly 0), and x_hat in float32 is off by about
    # eps * |x| / std: float32 noise is relative to those, not to dx.
    inv_std = np.abs(saved_ref[1]).max()
    terms = np.abs(dy).max() * inv_std * (np.abs(gamma).max() if affine else 1)
    x_hat_noise = 1e-7 * np.abs(x).max() * inv_std
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=terms * (1e-5 + 10 * x_hat_noise))
    np.testing.assert_allclose(dbeta, dbeta_ref, rtol=1e-5, atol=1e-4)
    if affine:
        np.testing.assert_allclose(dgamma, dgamma_ref, rtol=1e-4, atol=1e-4)
    else:
        assert dgamma is None
    for got, want in zip(running, expected_running):  # updated in place when training
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_batch_norm_without_running_statistics_and_in_float64():
    x = random(3, 4, 5, 5)
    with backends.using("cuda"):
        y, _ = cuda().batch_norm_forward(x, None, None, None, None, True, 0.1, 1e-5)
        y64, saved = cuda().batch_norm_forward(x.astype(np.float64), None, None, None, None,
                                               True, 0.1, 1e-5)
        assert cuda().batch_norm_backward(y64, saved, True)[0].dtype == np.float64
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y, y64, atol=1e-4)  # float64 took the reference's code


def test_batch_norm_gradient_is_accurate_in_float32():
    """Issue 13: the float32 reduction gave a gradient error of 7.7e-4; doubles keep it small."""
    x = random(64, 8, 16, 16, scale=2.0, offset=10.0)  # 16384 values per channel
    dy = random(*x.shape, seed=1)
    gamma, beta = random(8, seed=2), random(8, seed=3)
    with backends.using("cuda"):
        _, saved = cuda().batch_norm_forward(x, gamma, beta, None, None, True, 0.1, 1e-5)
        dx, dgamma, _ = cuda().batch_norm_backward(dy, saved, True)
    _, saved_ref = reference.Reference().batch_norm_forward(
        x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64), None, None,
        True, 0.1, 1e-5)
    dx_ref, dgamma_ref, _ = reference.Reference().batch_norm_backward(
        dy.astype(np.float64), saved_ref, True)
    assert np.abs(dx - dx_ref).max() / np.abs(dx_ref).max() < 1e-5
    assert np.abs(dgamma - dgamma_ref).max() / np.abs(dgamma_ref).max() < 1e-5


@pytest.mark.parametrize("shape", [(1,), (257,), (3, 5, 7, 9)])
def test_relu_matches_the_reference(shape):
    x, dy = random(*shape), random(*shape, seed=1)
    x.reshape(-1)[0] = np.nan  # NaN stays NaN, as numpy.maximum has it
    with backends.using("cuda"):
        y = cuda().relu_forward(x)
        dx = cuda().relu_backward(dy, y)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(dx, reference.Reference().relu_backward(dy, y))


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_relu_matches_the_reference_in_batch_norms_launches(shape, training):
    """The relu flag of batch_norm.cu: relu(batchnorm(x)) forward and backward in the launches
    of batchnorm alone (one each way), equal to the reference's
    batch_norm_relu_forward/backward (batchnorm, then ReLU) in float64."""
    C = shape[1]
    x = random(*shape, scale=3.0, offset=50.0)
    gamma, beta = random(C, seed=1), random(C, seed=2)
    running = [random(C, seed=3), np.abs(random(C, seed=4)) + 0.5]
    expected_running = [r.astype(np.float64) for r in running]
    dy = random(*shape, seed=5)
    with counting.counting() as count, backends.using("cuda"):
        y, saved = cuda().batch_norm_relu_forward(x, gamma, beta, *running, training, 0.1, 1e-5)
        dx, dgamma, dbeta = cuda().batch_norm_relu_backward(dy, saved, training)
    forward = "batch_norm_forward_training" if training else "batch_norm_normalize"
    assert dict(count.by_name) == {forward: 1, "batch_norm_backward": 1}
    f64 = [a.astype(np.float64) for a in (x, gamma, beta)]
    y_ref, saved_ref = reference.Reference().batch_norm_relu_forward(
        *f64, *expected_running, training, 0.1, 1e-5)
    dx_ref, dgamma_ref, dbeta_ref = reference.Reference().batch_norm_relu_backward(
        dy.astype(np.float64), saved_ref, training)
    assert y.dtype == dx.dtype == np.float32 and y.shape == dx.shape == shape
    np.testing.assert_array_equal(y > 0, y_ref > 0)  # the same mask: no value near the kink
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    inv_std = np.abs(saved_ref[0][1]).max()  # float32 noise, as in the test without ReLU
    terms = np.abs(dy).max() * inv_std * np.abs(gamma).max()
    x_hat_noise = 1e-7 * np.abs(x).max() * inv_std
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=terms * (1e-5 + 10 * x_hat_noise))
    np.testing.assert_allclose(dbeta, dbeta_ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dgamma, dgamma_ref, rtol=1e-4, atol=1e-4)
    for got, want in zip(running, expected_running):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1,), (257,), (3, 5, 7, 9)])
def test_add_relu_is_one_launch_each_way(shape):
    a, b, dy = random(*shape), random(*shape, seed=1), random(*shape, seed=2)
    with counting.counting() as count, backends.using("cuda"):
        y = cuda().add_relu_forward(a, b)
        d = cuda().add_relu_backward(dy, y)
    assert dict(count.by_name) == {"add_relu_forward": 1, "relu_backward": 1}
    np.testing.assert_array_equal(y, np.maximum(a + b, 0))
    np.testing.assert_array_equal(d, dy * (y > 0))


@pytest.mark.parametrize("N, K", [(1, 1), (5, 7), (300, 10), (3, 1000)])
def test_cross_entropy_matches_the_reference_in_one_launch_each_way(N, K):
    """kernels/cross_entropy.cu: one row (and one class), more rows than the forward's block
    has threads, more classes than the backward's block; against the reference in float64.
    The loss stays a device array: no sync, one launch each way."""
    x = random(N, K, scale=5.0)
    x[0, 0] = 90.0  # exp(90) overflows float32 unless the row maximum comes off first
    target = np.random.default_rng(1).integers(0, K, N).astype(np.int32)
    dy = np.array(0.5, np.float32)
    with counting.counting() as count, backends.using("cuda"):
        loss, saved = cuda().cross_entropy_forward(x, target)
        dx = cuda().cross_entropy_backward(dy, saved)
    assert dict(count.by_name) == {"cross_entropy_forward": 1, "cross_entropy_backward": 1}
    assert count.syncs == 0
    loss_ref, saved_ref = reference.Reference().cross_entropy_forward(x.astype(np.float64),
                                                                      target)
    dx_ref = reference.Reference().cross_entropy_backward(dy.astype(np.float64), saved_ref)
    assert loss.shape == () and loss.dtype == dx.dtype == np.float32 and dx.shape == (N, K)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-6 / N)


def test_cross_entropy_of_a_class_outside_the_row_is_nan():
    """Labels already on the GPU are not checked on the host: a bad one gives NaN, not a read
    outside its row (which the emulator would report)."""
    x, target = random(3, 4), np.array([0, 4, 1], np.int32)
    with backends.using("cuda"):
        loss, saved = cuda().cross_entropy_forward(x, target)
        dx = cuda().cross_entropy_backward(np.ones((), np.float32), saved)
    assert np.isnan(loss)
    assert np.isnan(dx[1]).all() and np.isfinite(dx[[0, 2]]).all()


@pytest.mark.parametrize("momentum, weight_decay, nesterov", [
    (0.9, 1e-4, False), (0.9, 1e-3, True), (0.0, 1e-4, False), (0.5, 0.0, False)])
def test_flat_sgd_takes_the_reference_loops_steps(momentum, weight_decay, nesterov):
    shapes = [(16, 3, 3, 3), (16,), (1,), (10, 64), (257,)]
    rng = np.random.default_rng(0)
    starts = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    loop = [nn.Parameter(w.copy()) for w in starts]
    flat = [nn.Parameter(w.copy()) for w in starts]
    settings = dict(lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    sgd_loop, sgd_flat = optim.SGD(loop, **settings), optim.SGD(flat, **settings)
    for step in range(3):
        for a, b in zip(loop, flat):
            a.grad = rng.standard_normal(a.shape).astype(np.float32)
            b.grad = a.grad.copy()
        sgd_loop.step()
        with backends.using("cuda"):
            sgd_flat.step()
        assert sgd_flat._flat_w is not None  # the one-launch path ran
        for a, b in zip(loop, flat):
            np.testing.assert_allclose(b.data, a.data, rtol=1e-6, atol=1e-7, err_msg=str(step))
    state = sgd_flat.state_dict()  # the momentum buffers are views: saved as copies
    if momentum:
        np.testing.assert_allclose(state["momentum_buffer.4"], sgd_loop.momentum_buffers[4],
                                   rtol=1e-6, atol=1e-7)


def test_flat_sgd_follows_replaced_arrays_and_skips_missing_gradients():
    a, b = nn.Parameter(np.ones(5, np.float32)), nn.Parameter(np.ones(3, np.float32))
    sgd = optim.SGD([a, b], lr=0.5, momentum=0.9, weight_decay=0)
    with backends.using("cuda"):
        a.grad, b.grad = np.ones(5, np.float32), np.ones(3, np.float32)
        sgd.step()
        a.data = np.zeros(5, np.float32)  # replaced, as load_state_dict or .to() would
        sgd.load_state_dict(sgd.state_dict())  # new momentum buffers: flattened again
        a.grad, b.grad = np.ones(5, np.float32), None  # b has no gradient: the loop's way
        sgd.step()
    np.testing.assert_allclose(a.data, -0.5 * (0.9 * 1 + 1))
    np.testing.assert_allclose(b.data, 0.5)


def test_five_emulated_training_steps_match_the_cpu():
    """A small ResNet (8 layers, 8x8 images), five SGD steps: the emulated GPU (every kernel of
    this backend) and the CPU reference give the same losses within float32 noise."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 10, 4)
    losses = {}
    for name in ("reference", "cuda"):
        nn.init.manual_seed(0)
        model = models.resnet_cifar(8)
        sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        losses[name] = []
        with backends.using(name):
            for _ in range(5):
                loss = F.cross_entropy(model(tensor(images)), labels)
                sgd.zero_grad()
                loss.backward()
                sgd.step()
                losses[name].append(loss.item())
    assert losses["reference"][-1] < losses["reference"][0]  # it learns
    np.testing.assert_allclose(losses["cuda"], losses["reference"], rtol=1e-4)


def test_a_graphed_step_replays_the_eager_steps():
    """train --cuda-graph's GraphedStep under the emulator (no capture: "replay" runs the step on
    the static buffers): the same losses as train_step, a capture per learning rate and after a
    parameter's array is replaced, the replay reading each new batch (not the first one again),
    and a smaller batch run eagerly."""
    from minires.backends.cuda import emulator
    from minires.backends.cuda.graph import GraphedStep
    from minires.ops.loss import cross_entropy
    from minires.train import train_step

    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((4, 3, 8, 8)).astype(np.float32), rng.integers(0, 10, 4))
               for _ in range(5)]
    batches.append((batches[0][0][:3], batches[0][1][:3]))  # a last, partial batch
    lrs = [0.1, 0.1, 0.1, 0.05, 0.05, 0.05]
    losses = {}
    for mode in ("eager", "graph"):
        nn.init.manual_seed(0)
        model = models.resnet_cifar(8)
        sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        step = GraphedStep(train_step, cross_entropy) if mode == "graph" else train_step
        losses[mode] = []
        # The kernels' own tests check for races; here only the path matters.
        with backends.using("cuda"), emulator.race_detection(False):
            for i, ((x, y), lr) in enumerate(zip(batches, lrs)):
                sgd.lr = lr
                if i == 4:  # as load_state_dict does: a parameter's array replaced
                    sgd.params[0].data = sgd.params[0].data.copy()
                loss, logits = step(model, (tensor(x), y), sgd)
                assert logits.shape == (len(y), 10)
                losses[mode].append(loss)
    np.testing.assert_allclose(losses["graph"], losses["eager"], rtol=1e-6)
    assert (step.captures, step.replays) == (3, 4)  # lr 0.1, 0.05, a new array; steps 2-5


@pytest.mark.parametrize("file, kernel_name, threads, message", [
    ("emulator_checks.cu", "copy_unchecked", 256,
     "out-of-bounds access: reads 4 bytes at element 300 of x, which has 300"),
    ("stricter_checks.cu", "shared_overflow", 64,
     "writes 4 bytes at 0 bytes past the end of the __shared__ array tile"),
])
def test_bounds_checks_stay_on_without_the_race_detector(file, kernel_name, threads, message):
    """The graphed-step test and bench_gpu.py --count turn the race detector off: an access
    past the end of an array argument or of a __shared__ array is still reported."""
    from minires.backends.cuda import emulator

    source = Path(__file__).resolve().parent / "gpu_broken" / file
    kernel = emulator.RawModule(source.read_text()).get_function(kernel_name)
    n = 300 if kernel_name == "copy_unchecked" else threads
    x, y = random(n), np.zeros(n, np.float32)
    blocks = -(-n // threads)
    with emulator.race_detection(False), pytest.raises(emulator.EmulatorError, match=message):
        kernel((blocks,), (threads,), (x, y, np.int32(n)))
