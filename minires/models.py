"""The CIFAR-10 ResNets and plain nets of He et al. 2015, "Deep Residual Learning", sec. 4.2.

conv3x3(16) -> BN -> ReLU, three stages of n basic blocks on 32x32, 16x16 and 8x8 maps with
16, 32 and 64 channels (the first block of stages 2 and 3 has stride 2), global average pooling,
a 64 -> 10 linear layer: 6n+2 weighted layers. A basic block computes
relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); a plain net is the same without shortcut.
Each relu(bn(...)) and the last relu(... + ...) is one op (F.batch_norm_relu, F.add_relu), which
the backends compute in fewer passes over memory than the two steps (lesson 10).
Lesson 9 trains them. Parameter names follow akamaster/pytorch_resnet_cifar10, so its
checkpoints load with `load_torch_state_dict`. Also the pre-activation ResNets of the follow-up,
He et al. 2016, "Identity Mappings in Deep Residual Networks" (lesson 11).
"""

from . import functional as F
from .nn import (
    BatchNorm2d,
    Conv2d,
    GlobalAvgPool2d,
    Identity,
    Linear,
    Module,
    PadShortcut,
    Sequential,
)

SHORTCUTS = ("A", "B", "C")


def make_shortcut(option, in_channels, out_channels, stride):
    """The shortcut of one block for the paper's options (sec. 3.3 and Table 3):
    A: identity, and where the shape changes zero-padding (no parameters);
    B: identity, and where the shape changes a 1x1 convolution + BN projection;
    C: a projection on every block."""
    shape_changes = stride != 1 or in_channels != out_channels
    if option == "C" or (option == "B" and shape_changes):
        return Sequential(Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                          BatchNorm2d(out_channels))
    if option == "A" and shape_changes:
        return PadShortcut(out_channels, stride)
    return Identity()


class BasicBlock(Module):
    """Two 3x3 convolutions with BN, added to the shortcut (He et al. Fig. 2, eq. 1):
    relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

    residual=False gives the plain block: no shortcut attribute and no addition at all.
    """

    def __init__(self, in_channels, out_channels, stride=1, shortcut="A", residual=True):
        super().__init__()
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = BatchNorm2d(out_channels)
        self.conv2 = Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = BatchNorm2d(out_channels)
        self.residual = residual
        if residual:
            self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride)

    def forward(self, x):
        out = self.bn1(self.conv1(x), relu=True)  # relu(bn1(conv1(x))), one op
        if not self.residual:
            return self.bn2(self.conv2(out), relu=True)  # the plain block: relu(bn2(conv2(out)))
        out = self.bn2(self.conv2(out))
        return F.add_relu(out, self.shortcut(x))  # the residual connection: relu(F(x) + x)


class ResNetCifar(Module):
    """The 6n+2-layer CIFAR network; see resnet_cifar()."""

    def __init__(self, n, shortcut="A", residual=True, num_classes=10):
        super().__init__()
        self.conv1 = Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = BatchNorm2d(16)
        in_channels = 16
        for index, (channels, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
            # Only a stage's first block changes the shape (stride 2, more channels).
            blocks = [BasicBlock(in_channels, channels, stride, shortcut, residual)]
            blocks += [BasicBlock(channels, channels, 1, shortcut, residual) for _ in range(n - 1)]
            self.add_module(f"layer{index}", Sequential(*blocks))
            in_channels = channels
        self.pool = GlobalAvgPool2d()
        self.linear = Linear(64, num_classes)

    def forward(self, x):
        out = self.bn1(self.conv1(x), relu=True)  # relu(bn1(conv1(x))): (N, 16, 32, 32)
        out = self.layer1(out)  # (N, 16, 32, 32)
        out = self.layer2(out)  # (N, 32, 16, 16)
        out = self.layer3(out)  # (N, 64, 8, 8)
        return self.linear(self.pool(out))  # (N, 64) -> (N, num_classes)


def resnet_cifar(depth, shortcut="A", residual=True, num_classes=10):
    """The CIFAR ResNet of the given depth = 6n+2 (20, 32, 44, 56, 110, 1202, ...).

    shortcut: "A", "B" or "C" (see make_shortcut); residual=False builds the plain net of the
    same depth, which has no shortcuts, so `shortcut` does not matter for it.
    """
    _check_depth_and_shortcut("resnet_cifar", depth, shortcut)
    return ResNetCifar((depth - 2) // 6, shortcut, residual, num_classes)


class PreActBlock(Module):
    """x + conv2(relu(bn2(conv1(relu(bn1(x)))))): BN and ReLU before each convolution, and
    nothing on the shortcut but the addition (He et al. 2016, Fig. 1b and eq. 3)."""

    def __init__(self, in_channels, out_channels, stride=1, shortcut="A"):
        super().__init__()
        self.bn1 = BatchNorm2d(in_channels)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = BatchNorm2d(out_channels)
        self.conv2 = Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride)

    def forward(self, x):
        out = self.conv1(self.bn1(x, relu=True))  # conv1(relu(bn1(x)))
        out = self.conv2(self.bn2(out, relu=True))
        return out + self.shortcut(x)  # no ReLU after the addition


class PreActResNet(Module):
    """The 6n+2-layer CIFAR network of ResNetCifar, built from pre-activation blocks: one
    convolution first and, since every block ends with a convolution, a last BN and ReLU before
    the pooling. The same convolutions and exactly as many parameters as ResNetCifar."""

    def __init__(self, n, shortcut="A", num_classes=10):
        super().__init__()
        self.conv1 = Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        in_channels = 16
        for index, (channels, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
            blocks = [PreActBlock(in_channels, channels, stride, shortcut)]
            blocks += [PreActBlock(channels, channels, 1, shortcut) for _ in range(n - 1)]
            self.add_module(f"layer{index}", Sequential(*blocks))
            in_channels = channels
        self.bn = BatchNorm2d(64)
        self.pool = GlobalAvgPool2d()
        self.linear = Linear(64, num_classes)

    def forward(self, x):
        out = self.conv1(x)  # (N, 16, 32, 32)
        out = self.layer3(self.layer2(self.layer1(out)))  # (N, 64, 8, 8): never through a ReLU
        return self.linear(self.pool(self.bn(out, relu=True)))  # relu(bn(out)), pooled


def preact_resnet(depth, shortcut="A", num_classes=10):
    """The pre-activation CIFAR ResNet of the given depth = 6n+2 (20, 56, 110, ...)."""
    _check_depth_and_shortcut("preact_resnet", depth, shortcut)
    return PreActResNet((depth - 2) // 6, shortcut, num_classes)


def _check_depth_and_shortcut(builder, depth, shortcut):
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"{builder}: depth must be 6n+2 for a whole number n >= 1 "
                         f"(8, 14, 20, 32, 44, 56, 110, 1202, ...), got {depth!r}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"{builder}: shortcut must be one of {SHORTCUTS}, got {shortcut!r}")


def resnet20(**kwargs):
    return resnet_cifar(20, **kwargs)


def resnet32(**kwargs):
    return resnet_cifar(32, **kwargs)


def resnet44(**kwargs):
    return resnet_cifar(44, **kwargs)


def resnet56(**kwargs):
    return resnet_cifar(56, **kwargs)


def resnet110(**kwargs):
    return resnet_cifar(110, **kwargs)


def resnet1202(**kwargs):
    return resnet_cifar(1202, **kwargs)


def plain20(**kwargs):
    return resnet_cifar(20, residual=False, **kwargs)


def plain32(**kwargs):
    return resnet_cifar(32, residual=False, **kwargs)


def plain44(**kwargs):
    return resnet_cifar(44, residual=False, **kwargs)


def plain56(**kwargs):
    return resnet_cifar(56, residual=False, **kwargs)


def plain110(**kwargs):
    return resnet_cifar(110, residual=False, **kwargs)


def preact_resnet20(**kwargs):
    return preact_resnet(20, **kwargs)


def preact_resnet56(**kwargs):
    return preact_resnet(56, **kwargs)


def preact_resnet110(**kwargs):
    return preact_resnet(110, **kwargs)


def load_torch_state_dict(model, state_dict, strict=True):
    """Load a PyTorch state_dict (e.g. an akamaster/pytorch_resnet_cifar10 checkpoint's
    checkpoint["state_dict"]) into model.

    The names already agree; what differs: PyTorch also saves BN's `num_batches_tracked` (a
    counter minires does not keep: dropped here), nn.DataParallel prefixes every key with
    "module." (stripped), and the values are torch tensors (converted to NumPy).
    """
    converted = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("module."):
            key = key[len("module."):]
        if hasattr(value, "detach"):  # a torch tensor, possibly on a GPU
            value = value.detach().cpu().numpy()
        converted[key] = value
    return model.load_state_dict(converted, strict=strict)
