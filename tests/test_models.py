"""The CIFAR ResNets of He et al. sec. 4.2: shapes, parameter counts, shortcut options, plain
nets, the reference parameter names, agreement with the same net built in PyTorch, a tiny batch
learnt by heart, and summary()'s counts."""

import time

import numpy as np
import pytest

import minires
import minires.functional as F
from minires import models, nn, optim, tensor
from minires.ops.elementwise import Add, AddReLU


def images(n=2, seed=0, size=32):
    return tensor(np.random.default_rng(seed).standard_normal((n, 3, size, size))
                  .astype(np.float32))


def count(model):
    return sum(p.size for p in model.parameters())


@pytest.mark.parametrize("build", [models.resnet20, models.resnet32, models.resnet44,
                                   models.resnet56, models.resnet110, models.plain20,
                                   models.plain56, models.plain110])
def test_each_depth_gives_ten_logits(build):
    model = build()
    with minires.no_grad():
        y = model(images())
    assert y.shape == (2, 10) and np.all(np.isfinite(y.data))


def test_resnet1202_builds_quickly_and_runs():
    start = time.perf_counter()
    model = models.resnet1202()
    assert time.perf_counter() - start < 10
    assert len(model.layer2) == 200 and count(model) == 19_421_274
    with minires.no_grad():
        assert model(images()).shape == (2, 10)


@pytest.mark.parametrize("depth, expected", [(20, 269_722), (32, 464_154), (44, 658_586),
                                             (56, 853_018)])
def test_parameter_counts_of_option_a(depth, expected):
    assert count(models.resnet_cifar(depth)) == expected
    assert count(models.resnet_cifar(depth, residual=False)) == expected  # the plain twin


def shortcut_parameters(model):
    return [name for name, _ in model.named_parameters() if ".shortcut." in name]


def test_shortcut_options():
    a, b, c = (models.resnet20(shortcut=option) for option in "ABC")
    assert shortcut_parameters(a) == []
    assert isinstance(a.layer2[0].shortcut, nn.PadShortcut)
    assert isinstance(a.layer2[1].shortcut, nn.Identity)
    # B: a 1x1 conv + BN projection only where the shape changes (first blocks of stages 2, 3).
    assert {name.split(".shortcut")[0] for name in shortcut_parameters(b)} == {"layer2.0",
                                                                               "layer3.0"}
    projections = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert count(b) == count(a) + projections
    assert isinstance(b.layer1[0].shortcut, nn.Identity)
    # C: a projection on every one of the 9 blocks.
    blocks = {name.split(".shortcut")[0] for name in shortcut_parameters(c)}
    assert blocks == {f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)}
    assert count(c) == count(a) + projections + 3 * (16 * 16 + 32) + 2 * (32 * 32 + 64) + 2 * (
        64 * 64 + 128)
    with minires.no_grad():
        outputs = [m(images()).data for m in (a, b, c)]
    assert all(o.shape == (2, 10) for o in outputs)


def ops_in_graph(y):
    """The types of every Function that made y."""
    found, stack, seen = set(), [y.creator], set()
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        found.add(type(fn))
        stack.extend(x.creator for x in fn.inputs if x is not None)
    return found


def test_plain_nets_have_no_shortcut():
    resnet, plain = models.resnet20(), models.plain20()
    assert not any("shortcut" in name for name, _ in plain.named_modules())
    assert AddReLU in ops_in_graph(resnet(images()))  # relu(F(x) + x), one op
    assert not {Add, AddReLU} & ops_in_graph(plain(images()))
    # The same weights (option A has the same keys), a different function.
    plain.load_state_dict(resnet.state_dict())
    assert not np.allclose(resnet(images()).data, plain(images()).data)


@pytest.mark.parametrize("depth", [0, 6, 19, 21, 1200, 20.0])
def test_invalid_depth_is_named(depth):
    with pytest.raises(ValueError, match=f"6n\\+2.*got {depth!r}"):
        models.resnet_cifar(depth)


def test_invalid_shortcut_is_named():
    with pytest.raises(ValueError, match="'A', 'B', 'C'.*got 'D'"):
        models.resnet_cifar(20, shortcut="D")


def reference_keys(n, projected_blocks):
    """The parameter names of akamaster/pytorch_resnet_cifar10 (without num_batches_tracked)."""
    def bn(prefix):
        return [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]

    keys = ["conv1.weight", *bn("bn1")]
    for stage in (1, 2, 3):
        for i in range(n):
            block = f"layer{stage}.{i}"
            keys += [f"{block}.conv1.weight", *bn(f"{block}.bn1"),
                     f"{block}.conv2.weight", *bn(f"{block}.bn2")]
            if block in projected_blocks:
                keys += [f"{block}.shortcut.0.weight", *bn(f"{block}.shortcut.1")]
    return keys + ["linear.weight", "linear.bias"]


def test_state_dict_keys_follow_the_reference_naming():
    assert list(models.resnet20().state_dict()) == reference_keys(3, set())
    assert list(models.resnet20(shortcut="B").state_dict()) == reference_keys(
        3, {"layer2.0", "layer3.0"})


def test_a_tiny_batch_is_learnt_by_heart():
    nn.init.manual_seed(0)
    model = models.resnet20()
    rng = np.random.default_rng(0)
    x, y = images(8, seed=1, size=16), rng.integers(0, 10, 8)  # 16x16: 4x quicker than 32x32
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    losses = []
    for _ in range(30):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        losses.append(loss.item())
        if losses[-1] < 0.05:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[0] > 1.5 and losses[-1] < 0.05, losses
    assert np.all(logits.data.argmax(axis=1) == y)


def test_summary_counts_parameters_and_macs(capsys):
    model = models.resnet20()
    running_mean = model.bn1.running_mean.copy()
    text = minires.summary(model, (3, 32, 32))
    assert capsys.readouterr().out.strip() == text.strip()
    assert "Total parameters: 269,722" in text
    macs = int(text.split("Total MACs per image: ")[1].split(" ")[0].replace(",", ""))
    assert 40e6 < macs < 41.5e6  # He et al. Table 6 era count: ~41M multiply-adds
    assert "layer3.2.conv2  " in text and "(1, 64, 8, 8)" in text and "(1, 10)" in text
    # The probe forward changed nothing: still training, running statistics untouched.
    assert model.training
    np.testing.assert_array_equal(model.bn1.running_mean, running_mean)
    assert minires.summary(models.resnet20(shortcut="B"), (3, 32, 32), show=False).count(
        "shortcut.0") == 2


# -- the same network in PyTorch -------------------------------------------------------------


def torch_resnet(n, shortcut):
    """akamaster/pytorch_resnet_cifar10's ResNet for CIFAR, options A and B, in a few lines."""
    torch = pytest.importorskip("torch")
    tnn, TF = torch.nn, torch.nn.functional

    class Block(tnn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(c_out)
            self.conv2 = tnn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(c_out)
            self.pad = 0
            self.shortcut = tnn.Sequential()
            if stride != 1 or c_in != c_out:
                if shortcut == "A":
                    self.pad = c_out // 4
                else:
                    self.shortcut = tnn.Sequential(
                        tnn.Conv2d(c_in, c_out, 1, stride, bias=False), tnn.BatchNorm2d(c_out))

        def forward(self, x):
            out = TF.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.pad:
                s = TF.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
            else:
                s = self.shortcut(x)
            return TF.relu(out + s)

    class ResNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(16)
            c_in = 16
            for stage, (c, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
                blocks = [Block(c_in if i == 0 else c, c, stride if i == 0 else 1)
                          for i in range(n)]
                setattr(self, f"layer{stage}", tnn.Sequential(*blocks))
                c_in = c
            self.linear = tnn.Linear(64, 10)

        def forward(self, x):
            out = TF.relu(self.bn1(self.conv1(x)))
            out = self.layer3(self.layer2(self.layer1(out)))
            out = TF.avg_pool2d(out, out.size()[3]).flatten(1)
            return self.linear(out)

    return ResNet()


def randomised_resnet20(shortcut):
    """A minires ResNet-20 whose BN weights, biases and running statistics are all random."""
    nn.init.manual_seed(0)
    model = models.resnet20(shortcut=shortcut)
    rng = np.random.default_rng(1)
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        elif value.ndim == 1:  # BN weight, bias and running_mean; the linear bias
            state[key] = (rng.standard_normal(value.shape) * 0.2 + (key.endswith(
                "weight"))).astype(np.float32)
    model.load_state_dict(state)
    return model


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_matches_the_same_resnet20_in_pytorch(shortcut):
    torch = pytest.importorskip("torch")
    mine = randomised_resnet20(shortcut)
    theirs = torch_resnet(3, shortcut)
    state = mine.state_dict()
    missing, unexpected = theirs.load_state_dict(
        {k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    assert unexpected == [] and all(k.endswith("num_batches_tracked") for k in missing)
    assert list(state) == [k for k in theirs.state_dict() if "num_batches" not in k]
    # The oracle runs in float64. minires runs in float32 forward (evaluation mode, then the
    # training logits), and in float64 for the gradients: at batch 4 in training mode a float32
    # rounding difference can move one of the 200k ReLU inputs across 0, and the gradients then
    # differ by 1% for a good reason (here 2 flip with Winograd's F(4x4), 1 with the reference's
    # BLAS, none with the direct convolution). test_backends and test_training_curves check
    # float32 against float64 where no input crosses; here both sides are exact.
    theirs = theirs.double()
    x = images(4, seed=2)
    tx = torch.from_numpy(x.data.astype(np.float64))

    mine.eval()
    theirs.eval()
    with torch.no_grad():
        expected = theirs(tx).numpy()
    np.testing.assert_allclose(mine(x).data, expected, rtol=1e-4, atol=1e-4 * np.abs(
        expected).max())

    mine.train()
    theirs.train()
    labels = np.array([3, 1, 4, 1])
    logits32 = randomised_resnet20(shortcut).train()(x).data  # a twin: mine's buffers stay
    for param in mine.parameters():
        param.data = param.data.astype(np.float64)
    for module in mine.modules():
        for key, buffer in module._buffers.items():
            module._buffers[key] = buffer.astype(np.float64)
    logits = mine(tensor(x.data.astype(np.float64)))
    F.cross_entropy(logits, labels).backward()
    t_logits = theirs(tx)
    torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(labels)).backward()
    np.testing.assert_allclose(logits32, t_logits.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits.data, t_logits.detach().numpy(), rtol=1e-9, atol=1e-9)
    t_params = dict(theirs.named_parameters())
    for name, param in mine.named_parameters():
        t_grad = t_params[name].grad.numpy()
        np.testing.assert_allclose(param.grad, t_grad, rtol=1e-7,
                                   atol=1e-9 * np.abs(t_grad).max(), err_msg=name)
    t_buffers = dict(theirs.named_buffers())
    for name, buffer in mine.named_buffers():
        np.testing.assert_allclose(buffer, t_buffers[name].numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)


def test_load_torch_state_dict_drops_what_minires_does_not_keep():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch_resnet(1, "A")
    x = images(3, seed=4)
    theirs.train()
    with torch.no_grad():
        theirs(torch.from_numpy(x.data.copy()))  # moves the running statistics off 0 and 1
    theirs.eval()
    # A DataParallel checkpoint, as akamaster's are: every key prefixed with "module.".
    checkpoint = {"module." + k: v for k, v in theirs.state_dict().items()}
    mine = models.resnet_cifar(8)
    result = models.load_torch_state_dict(mine, checkpoint)
    assert result.missing_keys == [] and result.unexpected_keys == []
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x.data.copy())).numpy()
    np.testing.assert_allclose(mine.eval()(x).data, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_preact_resnets_have_the_same_parameter_count(depth):
    """The batchnorms move before the convolutions; their channels add up to the same total."""
    assert count(models.preact_resnet(depth)) == count(models.resnet_cifar(depth))
    assert count(models.preact_resnet20()) == 269_722


def test_preact_block_passes_gradcheck_and_keeps_the_identity_path_clean():
    block = models.PreActBlock(3, 3)
    for param in block.parameters():
        param.data = param.data.astype(np.float64)
    rng = np.random.default_rng(0)
    for param in [block.bn1.weight, block.bn2.weight]:  # away from 1, so a wrong path shows
        param.data = rng.uniform(0.5, 1.5, param.shape)
    x = tensor(rng.standard_normal((2, 3, 5, 4)), requires_grad=True)
    block.train()
    assert minires.gradcheck(lambda x: block(x), [x], atol=1e-4)
    # With the residual branch's last weights zero, the block is the identity, and so is its
    # gradient: nothing on the shortcut masks it (the original block's final ReLU would).
    block.conv2.weight.data[:] = 0
    x.grad = None
    dy = rng.standard_normal(x.shape)
    y = block(x)
    y.backward(dy)
    np.testing.assert_array_equal(y.data, x.data)
    np.testing.assert_allclose(x.grad, dy, rtol=1e-12)


def test_preact_resnet_trains_from_the_cli(tmp_path, capsys):
    from minires import __main__ as cli

    status = cli.main(["train", "--model", "preact_resnet8", "--data", "sample", "--batch", "32",
                       "--iters", "3", "--no-progress", "--out", str(tmp_path / "run")])
    assert status == 0, capsys.readouterr().err
    assert "after 3 iterations" in capsys.readouterr().out
