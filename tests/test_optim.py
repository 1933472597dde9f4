"""SGD (by hand and against torch.optim.SGD) and the learning-rate schedules."""

import numpy as np
import pytest
from conftest import backend_array

from minires import nn, optim


def param(values):
    return nn.Parameter(np.array(values, dtype=np.float64))


def test_sgd_two_steps_by_hand():
    w = param([1.0])
    sgd = optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.1)
    w.grad = np.array([0.5])
    sgd.step()  # g = 0.5 + 0.1 * 1 = 0.6; buf = g; w = 1 - 0.1 * 0.6
    np.testing.assert_allclose(w.data, [0.94])
    sgd.step()  # g = 0.5 + 0.094 = 0.594; buf = 0.9 * 0.6 + 0.594 = 1.134; w = 0.94 - 0.1134
    np.testing.assert_allclose(w.data, [0.8266])
    nesterov = optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0, nesterov=True)
    nesterov.step()  # buf = g = 0.5; update = g + 0.9 * buf = 0.95
    np.testing.assert_allclose(w.data, [0.8266 - 0.095])


def test_sgd_skips_parameters_without_grad_and_zero_grad_clears():
    a, b = param([1.0, 2.0]), param([3.0])
    sgd = optim.SGD([a, b], lr=0.5, momentum=0, weight_decay=0)
    a.grad = np.array([1.0, -1.0])
    sgd.step()
    np.testing.assert_array_equal(a.data, [0.5, 2.5])
    np.testing.assert_array_equal(b.data, [3.0])
    sgd.zero_grad()
    assert a.grad is None and b.grad is None


def test_sgd_rejects_bad_settings():
    with pytest.raises(ValueError, match="empty"):
        optim.SGD(iter([]), lr=0.1)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([param([1.0])], lr=0.1, momentum=0, nesterov=True)


@pytest.mark.parametrize("momentum, weight_decay, nesterov",
                         [(0.0, 0.0, False), (0.9, 1e-4, False), (0.9, 5e-2, True),
                          (0.5, 0.0, True)])
def test_sgd_takes_the_same_steps_as_pytorch(momentum, weight_decay, nesterov):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,), (2, 1, 3)]
    start = [rng.standard_normal(s) for s in shapes]
    mine = [param(x) for x in start]
    theirs = [torch.tensor(x, requires_grad=True) for x in start]
    settings = dict(lr=0.05, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    sgd, torch_sgd = optim.SGD(mine, **settings), torch.optim.SGD(theirs, **settings)
    for step in range(5):
        for i, (p, t) in enumerate(zip(mine, theirs)):
            if step == 2 and i == 1:  # a step without a gradient for one parameter
                p.grad, t.grad = None, None
                continue
            g = rng.standard_normal(p.shape)
            p.grad, t.grad = g.copy(), torch.tensor(g)
        sgd.step()
        torch_sgd.step()
        for p, t in zip(mine, theirs):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_sgd_updates_arrays_where_they_live(backend):
    w = nn.Parameter(backend_array(np.ones(4, dtype=np.float32), backend))
    sgd = optim.SGD([w], lr=0.5, momentum=0.9, weight_decay=0)
    for _ in range(2):
        w.grad = backend_array(np.full(4, 2.0, dtype=np.float32), backend)
        sgd.step()
    assert w.device == ("gpu" if backend == "gpu" else "cpu") and w.dtype == np.float32
    np.testing.assert_allclose(w.numpy(), 1 - 0.5 * 2 - 0.5 * (0.9 * 2 + 2))


def test_sgd_state_dict_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    start = rng.standard_normal((2, 3))
    grads = [rng.standard_normal((2, 3)) for _ in range(4)]
    a, b = param(start), param(start)
    sgd_a = optim.SGD([a], lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
    for g in grads[:3]:
        a.grad = g
        sgd_a.step()
    sgd_a.lr = 0.01
    np.savez(tmp_path / "optimizer.npz", **sgd_a.state_dict())

    b.data[...] = a.data
    sgd_b = optim.SGD([b], lr=0.5, momentum=0.0, weight_decay=0)
    with np.load(tmp_path / "optimizer.npz") as saved:
        sgd_b.load_state_dict(saved)
    assert (sgd_b.lr, sgd_b.momentum, sgd_b.weight_decay, sgd_b.nesterov) == (0.01, 0.9, 1e-3,
                                                                                True)
    a.grad, b.grad = grads[3], grads[3].copy()
    sgd_a.step()
    sgd_b.step()
    np.testing.assert_array_equal(a.data, b.data)

    wrong = optim.SGD([param(np.zeros(5))], lr=0.1)
    with pytest.raises(ValueError, match="momentum_buffer.0 has shape \\(2, 3\\)"):
        wrong.load_state_dict(sgd_a.state_dict())


def test_paper_schedule_steps_at_32k_and_48k():
    schedule = optim.PaperSchedule()
    expected = {0: 0.1, 31999: 0.1, 32000: 0.01, 47999: 0.01, 48000: 0.001, 63999: 0.001}
    for iteration, lr in expected.items():
        assert schedule.lr(iteration) == pytest.approx(lr, rel=1e-12)
    assert schedule.total_iters == 64000 and schedule.iteration == 63999


def test_paper_schedule_warm_up_ends_once_the_error_is_below_80_percent():
    schedule = optim.PaperSchedule(warmup_lr=0.01)
    sgd = optim.SGD([param([1.0])], lr=123.0)
    assert schedule.apply(sgd, 0, train_error=0.9) == 0.01 and sgd.lr == 0.01
    assert schedule.lr(1) == 0.01  # no error reported: still warming up
    assert schedule.lr(399, train_error=0.8) == 0.01  # not below 80% yet
    assert schedule.lr(400, train_error=0.79) == 0.1
    assert schedule.lr(401, train_error=0.95) == 0.1  # back to 0.1 for good
    assert schedule.lr(32000) == pytest.approx(0.01)


def test_cosine_schedule_endpoints_and_warm_up():
    cosine = optim.CosineSchedule(0.1, total_iters=1000)
    assert cosine.lr(0) == pytest.approx(0.1)
    assert cosine.lr(500) == pytest.approx(0.05)
    assert cosine.lr(1000) == pytest.approx(0.0, abs=1e-15)
    assert cosine.lr(1500) == pytest.approx(0.0, abs=1e-15)
    warm = optim.CosineSchedule(0.1, total_iters=1100, warmup_iters=100)
    assert warm.lr(0) == pytest.approx(0.001)
    assert warm.lr(49) == pytest.approx(0.05)
    assert warm.lr(99) == pytest.approx(0.1) and warm.lr(100) == pytest.approx(0.1)
    assert warm.lr(600) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="warmup_iters < total_iters"):
        optim.CosineSchedule(0.1, total_iters=10, warmup_iters=10)


def test_schedule_state_dict_round_trip(tmp_path):
    schedule = optim.PaperSchedule(warmup_lr=0.01)
    schedule.lr(450, train_error=0.5)
    np.savez(tmp_path / "schedule.npz", **schedule.state_dict())
    resumed = optim.PaperSchedule(warmup_lr=0.01)
    assert resumed.lr(0) == 0.01
    with np.load(tmp_path / "schedule.npz") as saved:
        resumed.load_state_dict(saved)
    assert resumed.iteration == 450 and not resumed.warming_up
    assert resumed.lr(451) == 0.1

    cosine = optim.CosineSchedule(0.1, 100)
    cosine.lr(42)
    other = optim.CosineSchedule(0.1, 100)
    other.load_state_dict(cosine.state_dict())
    assert other.iteration == 42
