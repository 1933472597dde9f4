"""minires.nn: registration and naming, train/eval, state_dict save/load, devices, the layers
against the functional ops they wrap, and seeded He initialisation."""

import numpy as np
import pytest
from conftest import backend_array

import minires
import minires.functional as F
from minires import nn, tensor


class Net(nn.Module):
    """A little of everything: a parameter of its own, layers, a nested Sequential."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.ones(1, dtype=np.float32))
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.GlobalAvgPool2d(), nn.Linear(4, 2))

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x)))) * self.scale


def images(seed=0, shape=(4, 3, 6, 6)):
    return tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def test_parameters_are_registered_by_assignment_in_order():
    net = Net()
    names = [name for name, _ in net.named_parameters()]
    assert names == ["scale", "conv.weight", "bn.weight", "bn.bias", "head.1.weight",
                     "head.1.bias"]
    assert [p.shape for p in net.parameters()] == [(1,), (4, 3, 3, 3), (4,), (4,), (2, 4), (2,)]
    assert all(p.requires_grad and p.dtype == np.float32 for p in net.parameters())
    assert [name for name, _ in net.named_buffers()] == ["bn.running_mean", "bn.running_var"]
    # Reassigning a name to something else unregisters it; a shared parameter is listed once,
    # under its first name (a module's own parameters come before its children's).
    net.scale = 2.0
    net.head[1].bias = None
    net.shared = net.conv.weight
    assert [name for name, _ in net.named_parameters()] == ["shared", "bn.weight", "bn.bias",
                                                           "head.1.weight"]


def test_assigning_before_super_init_is_a_clear_error():
    class Forgetful(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Forgetful()


def test_parameter_always_requires_grad():
    p = nn.Parameter(np.zeros(3))
    assert p.requires_grad and p.grad is None and isinstance(p, minires.Tensor)


def test_train_and_eval_switch_batchnorm_behaviour():
    net = Net()
    x = images(shape=(8, 3, 5, 5)) * 3 + 2
    assert net.training and net.bn.training
    net.eval()
    assert not net.training and not net.bn.training and not net.head[1].training
    before = net.bn.running_mean.copy()
    h = net.conv(x)
    # Evaluation: the fixed running statistics (0 and 1), which stay unchanged.
    np.testing.assert_allclose(net.bn(h).data, h.data / np.sqrt(1 + 1e-5), rtol=1e-6)
    np.testing.assert_array_equal(net.bn.running_mean, before)
    net.train()
    y = net.bn(h).data
    # Training: each channel normalised by the batch's own statistics, running stats updated.
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    np.testing.assert_allclose(net.bn.running_mean, 0.1 * h.data.mean(axis=(0, 2, 3)),
                               rtol=1e-5)


def test_zero_grad_forgets_every_gradient():
    net = Net()
    net(images()).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def trained_net(seed):
    """A Net with its own weights and running statistics moved away from their initial values."""
    nn.init.manual_seed(seed)
    net = Net()
    for i in range(3):
        net(images(seed + i))
    return net.eval()


def test_state_dict_round_trip_through_npz(tmp_path):
    net = trained_net(1)
    state = net.state_dict()
    assert list(state) == ["scale", "conv.weight", "bn.weight", "bn.bias", "bn.running_mean",
                           "bn.running_var", "head.1.weight", "head.1.bias"]
    assert all(type(v) is np.ndarray for v in state.values())
    np.savez(tmp_path / "net.npz", **state)
    net.bn.running_mean += 1  # the saved dict is a snapshot, not a view of the live arrays
    assert not np.array_equal(state["bn.running_mean"], net.bn.running_mean)

    fresh = trained_net(2)
    x = images(9)
    assert not np.allclose(fresh(x).data, trained_net(1)(x).data)
    with np.load(tmp_path / "net.npz") as saved:
        result = fresh.load_state_dict(saved)
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(fresh(x).data, trained_net(1)(x).data)
    assert fresh.conv.weight.dtype == np.float32


def test_load_state_dict_lists_missing_unexpected_and_mismatched_keys():
    net = Net()
    state = net.state_dict()
    del state["bn.bias"]
    state["bn.num_batches_tracked"] = np.array(3)
    state["conv.weight"] = np.zeros((4, 3, 5, 5), dtype=np.float32)
    state["head.1.bias"] = np.full(2, 7.0, dtype=np.float32)
    with pytest.raises(RuntimeError) as error:
        net.load_state_dict(state)
    message = str(error.value)
    assert "missing keys: bn.bias" in message
    assert "unexpected keys: bn.num_batches_tracked" in message
    assert "conv.weight: checkpoint (4, 3, 5, 5), model (4, 3, 3, 3)" in message
    assert not np.any(net.head[1].bias.data == 7)  # nothing was written

    # Not strict: missing and unexpected keys are reported back, a wrong shape is still an error.
    with pytest.raises(RuntimeError, match="shape mismatches"):
        net.load_state_dict(state, strict=False)
    del state["conv.weight"]
    result = net.load_state_dict(state, strict=False)
    assert result.missing_keys == ["conv.weight", "bn.bias"]
    assert result.unexpected_keys == ["bn.num_batches_tracked"]
    np.testing.assert_array_equal(net.head[1].bias.data, 7)


def test_to_moves_in_place_and_names_what_is_missing():
    net = Net()
    weight, running_mean = net.conv.weight, net.bn.running_mean
    assert net.to("cpu") is net
    assert net.conv.weight is weight and net.bn.running_mean is running_mean
    with pytest.raises(ValueError, match="device must be one of"):
        net.to("tpu")
    if minires.gpu_available():
        pytest.skip("a GPU is present: the missing-CuPy error cannot be shown")
    with pytest.raises(RuntimeError, match="CuPy"):
        net.to("gpu")


def test_sequential_indexing():
    layers = [nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 4 and list(seq) == layers
    assert seq[0] is layers[0] and seq[-1] is layers[3]
    tail = seq[2:]
    assert isinstance(tail, nn.Sequential) and list(tail) == layers[2:]
    assert [name for name, _ in tail.named_parameters()] == ["3.weight", "3.bias"]
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    x = images(shape=(2, 3, 2, 2))
    np.testing.assert_array_equal(seq(x).data, tail(seq[1](seq[0](x))).data)


def test_repr_is_nested_like_pytorch():
    text = repr(nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
                              nn.Sequential(nn.BatchNorm2d(8), nn.ReLU())))
    assert text == (
        "Sequential(\n"
        "  (0): Conv2d(3, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False)\n"
        "  (1): Sequential(\n"
        "    (0): BatchNorm2d(8, eps=1e-05, momentum=0.1)\n"
        "    (1): ReLU()\n"
        "  )\n"
        ")"
    )


def test_layers_compute_their_functional_op(backend):
    rng = np.random.default_rng(3)
    x_np = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    conv, bn, fc = nn.Conv2d(3, 5, 3, stride=2, padding=1), nn.BatchNorm2d(3), nn.Linear(3, 4)
    conv.bias.data[...] = rng.standard_normal(5)
    cases = [
        (conv, lambda x: F.conv2d(x, conv.weight.data, conv.bias.data, 2, 1)),
        (bn, lambda x: F.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32),
                                    training=True)),
        (nn.MaxPool2d(3, 2, 1), lambda x: F.max_pool2d(x, 3, 2, 1)),
        (nn.AvgPool2d(2), lambda x: F.avg_pool2d(x, 2)),
        (nn.Sequential(nn.GlobalAvgPool2d(), fc),
         lambda x: F.linear(F.global_avg_pool2d(x), fc.weight.data, fc.bias.data)),
        (nn.PadShortcut(8, 2), lambda x: F.pad_shortcut(x, 8, 2)),
        (nn.Identity(), lambda x: x),
    ]
    for module, reference in cases:
        expected = reference(tensor(x_np)).data  # on the CPU
        if backend == "gpu":
            module.to("gpu")
        y = module(tensor(backend_array(x_np, backend)))
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-6,
                                   err_msg=type(module).__name__)


def test_kaiming_normal_statistics_and_seeding():
    nn.init.manual_seed(0)
    a = nn.Conv2d(64, 128, 3)
    nn.init.manual_seed(0)
    b = nn.Conv2d(64, 128, 3)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, nn.Conv2d(64, 128, 3).weight.data)
    std = np.sqrt(2 / (64 * 3 * 3))  # He et al. 2015: std = sqrt(2 / fan_in)
    assert abs(a.weight.data.std() / std - 1) < 0.01 and abs(a.weight.data.mean()) < 0.01 * std
    assert np.all(a.bias.data == 0)
    fc = nn.Linear(256, 10)
    assert abs(fc.weight.data.std() / np.sqrt(2 / 256) - 1) < 0.05
    bn = nn.BatchNorm2d(6)
    assert np.all(bn.weight.data == 1) and np.all(bn.bias.data == 0)
    assert np.all(bn.running_var == 1) and np.all(bn.running_mean == 0)


def test_forward_hook_sees_output_and_can_be_removed():
    relu, seen = nn.ReLU(), []
    handle = relu.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    relu(images())
    handle.remove()
    relu(images())
    assert seen == [(4, 3, 6, 6)]


def test_batch_norm_with_relu_is_relu_of_batch_norm_and_its_hook_sees_that(backend):
    """bn(x, relu=True), the models' fused step: the same as relu(bn(x)) in training (running
    statistics too) and evaluation; a forward hook sees the module's output, relu(bn(x))."""
    x = tensor(backend_array(images().numpy() * 2 + 1, backend))
    fused, plain = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    for bn in (fused, plain):
        bn.weight.data[...] = [1.0, -0.5, 2.0]
        bn.bias.data[...] = [0.2, 0.1, -0.3]
        if backend == "gpu":
            bn.to("gpu")
    seen = []
    fused.register_forward_hook(lambda module, inputs, output: seen.append(output.numpy()))
    for mode in ("train", "eval"):
        fused.train(mode == "train")
        plain.train(mode == "train")
        y = fused(x, relu=True)
        np.testing.assert_allclose(y.numpy(), F.relu(plain(x)).numpy(), rtol=1e-6, atol=1e-6,
                                   err_msg=mode)
        assert (y.numpy() == 0).any()
        np.testing.assert_array_equal(seen[-1], y.numpy())
    assert len(seen) == 2
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(*(minires.backends.to_device(getattr(bn, name), "cpu")
                                     for bn in (fused, plain)), rtol=1e-6, err_msg=name)
    assert list(fused.state_dict()) == list(plain.state_dict())


def test_pooling_layers_default_their_stride_to_the_kernel_size():
    pool = nn.MaxPool2d(2)
    assert repr(pool) == "MaxPool2d(kernel_size=2, stride=2, padding=0)"
    x = np.arange(2 * 1 * 4 * 6, dtype=np.float64).reshape(2, 1, 4, 6)
    assert pool(x).shape == (2, 1, 2, 3) and nn.AvgPool2d((2, 3))(x).shape == (2, 1, 2, 2)


def test_layer_stats_record_each_step_layer_by_layer():
    from minires import models, optim

    nn.init.manual_seed(0)
    model = models.resnet_cifar(8)
    stats = nn.LayerStats(model)
    assert len(stats.names) == 7 and stats.names[0] == "conv1"  # the stem, then 3 blocks of 2
    sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    first_weight = model.conv1.weight.data.copy()
    for _ in range(3):
        with stats.step():
            loss = F.cross_entropy(model(x), np.array([0, 1, 2, 3]))
            sgd.zero_grad()
            loss.backward()
            sgd.step()
            if not stats.grad_norm:  # the first step: what the statistics must say
                grad_norm = np.linalg.norm(model.conv1.weight.grad)
                step_size = 0.1 * grad_norm / np.linalg.norm(first_weight)
    assert stats.array("update_ratio").shape == (3, 7)
    np.testing.assert_allclose(stats.grad_norm[0][0], grad_norm, rtol=1e-6)
    np.testing.assert_allclose(stats.update_ratio[0][0], step_size, rtol=1e-5)  # w -= lr * g
    # The first step's stem output is the convolution of x with the initial weights.
    stem = F.conv2d(tensor(x), tensor(first_weight), padding=1).data
    np.testing.assert_allclose(stats.activation_std[0][0], stem.std(), rtol=1e-5)
    stats.remove()
    model(x)
    assert stats._outputs == {}  # no hook left behind
