"""summary(model, input_shape): each layer's output shape, parameters and MACs (lesson 9).

It runs one forward pass on a zero image with a forward hook on every leaf module (a module with
no children) and records what each one produced. A multiply-accumulate (MAC) is one a*b + c:
a convolution does C_in*KH*KW of them per output element, a linear layer `in` per output.
He et al. 2015 (sec. 4.2) count "FLOPs" the same way for their Table 3 (multiply-adds).
"""

import numpy as np

from .backends import to_device
from .function import no_grad
from .nn import Conv2d, Linear
from .tensor import Tensor


def _macs(module, output):
    """Multiply-accumulates of one forward of this module, for the output it produced."""
    if isinstance(module, Conv2d):
        KH, KW = module.kernel_size
        return output.size * module.in_channels * KH * KW  # C_out*H_out*W_out * C_in*KH*KW
    if isinstance(module, Linear):
        return output.size * module.in_features  # out * in
    return 0  # BN, ReLU, pooling, shortcuts: elementwise work, not counted


def summary(model, input_shape, show=True):
    """Print (when show) and return the table for one input of input_shape = (C, H, W).

    The forward runs in evaluation mode under no_grad, so batchnorm's running statistics are
    left as they were; the model's training mode is restored afterwards.
    """
    if len(input_shape) != 3:
        raise ValueError(f"summary: input_shape is one image's (C, H, W), got {input_shape}")
    first = next(model.parameters(), None)
    device = "cpu" if first is None else first.device
    x = Tensor(to_device(np.zeros((1, *input_shape), dtype=np.float32), device))

    rows = []  # (name, type, output shape, parameters, MACs)

    def record(name):
        def hook(module, inputs, output):
            params = sum(p.size for p in module._parameters.values())
            rows.append((name, type(module).__name__, tuple(output.shape), params,
                         _macs(module, output)))
        return hook

    leaves = [(name, m) for name, m in model.named_modules() if not m._modules]
    handles = [module.register_forward_hook(record(name)) for name, module in leaves]
    was_training = model.training
    try:
        model.eval()
        with no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    total_params = sum(p.size for p in model.parameters())
    total_macs = sum(row[4] for row in rows)
    header = ("layer", "type", "output shape", "params", "MACs")
    table = [header] + [(name, kind, str(shape), f"{params:,}", f"{macs:,}")
                        for name, kind, shape, params, macs in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]

    def line(row):
        return "  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(row, widths)))

    rule = "-" * len(line(header))
    lines = [f"{type(model).__name__} on input (1, {', '.join(map(str, input_shape))})", rule,
             line(header), rule, *map(line, table[1:]), rule,
             f"Total parameters: {total_params:,} ({total_params * 4 / 2**20:.2f} MiB as float32)",
             f"Total MACs per image: {total_macs:,} ({total_macs / 1e6:.1f} M)",
             "(MACs of conv and linear layers only; BN, ReLU, pooling and the shortcut additions "
             "are elementwise and not counted)"]
    text = "\n".join(lines)
    if show:
        print(text)
    return text
