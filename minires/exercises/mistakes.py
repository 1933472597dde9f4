"""Naming the likely mistake behind a wrong gradient, so that the grader can say more than "wrong".

Two kinds of evidence. Shapes and patterns any gradient can show: a flipped sign, a constant
factor (everywhere, or one per channel), axes in the wrong order, a kernel turned around, a sum
over the wrong axes, errors only where windows share a pixel. And, per exercise, the gradients
that the common slips produce (batchnorm without the path through the mean, say), computed here
and compared with the learner's.
"""

import itertools

import numpy as np

from minires.backends.reference import col2im, im2col


def _close(a, b):
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-7)


# -- any gradient ------------------------------------------------------------------------------
def wrong_shape(value, expected, dy):
    """What a gradient of the wrong shape most likely is, or None."""
    if value.ndim == expected.ndim and sorted(value.shape) == sorted(expected.shape):
        for order in itertools.permutations(range(value.ndim)):
            if _close(value.transpose(order), expected):
                return (f"its axes are in the wrong order: transposing it with {order} gives the "
                        "right gradient (a layout changed for the computation and not changed "
                        "back?)")
        return "it has the right sizes in the wrong order: a transpose or a reshape is off"
    if value.ndim > expected.ndim and 1 in value.shape:
        squeezed = value.reshape([n for n in value.shape if n != 1])
        if squeezed.shape == expected.shape:
            return "it has extra axes of size 1: a sum with keepdims=True, or a reshape to undo"
    sums_over = {axes: dy.sum(axis=axes).shape for r in range(1, dy.ndim)
                 for axes in itertools.combinations(range(dy.ndim), r)}
    right = [axes for axes, shape in sums_over.items() if shape == expected.shape]
    wrong = [axes for axes, shape in sums_over.items() if shape == value.shape]
    if right and wrong:
        return (f"it has the shape of a sum of dy {dy.shape} over axes {wrong[0]}: a wrong "
                f"axis; this gradient sums over axes {right[0]}")
    if right and value.size * expected.size == dy.size:
        return (f"it looks like a sum over the one axis it should keep: this gradient sums dy "
                f"{dy.shape} over axes {right[0]} and keeps the other")
    return None


def wrong_values(value, expected, shared=None):
    """What a gradient of the right shape but wrong values most likely is, or None. shared
    marks the elements that lie in more than one window (conv2d, max pooling), if any."""
    if not np.abs(value).max(initial=0) > 0:
        return "it is zero everywhere"
    if _close(value, -expected):
        return "the sign is flipped"
    if value.ndim == 4 and _close(value[:, :, ::-1, ::-1], expected):
        return ("the kernel is turned around (flipped in both spatial axes): the gradient "
                "pairs each weight with the input it multiplied in forward")
    if value.ndim >= 2:
        first = expected.shape[0]
        if _close(value.reshape(-1, first).T.reshape(expected.shape), expected):
            return ("it is the right matrix transposed before a reshape: a product taken in "
                    "the wrong order (A^T B instead of B^T A)?")
        for order in itertools.permutations(range(value.ndim)):
            if order != tuple(range(value.ndim)) and _close(value.transpose(order), expected):
                return f"its axes are in the wrong order (transposing with {order} fixes it)"
    big = np.abs(expected) > 1e-3 * np.abs(expected).max()
    if big.any():
        ratio = value[big] / expected[big]
        if np.allclose(ratio, ratio[0], rtol=1e-4):
            return (f"it is the right gradient times {ratio[0]:.4g} everywhere: a missing or "
                    "extra constant (a 1/m, a 2, a count of values)?")
        if value.ndim >= 2 and expected.shape[1] > 1:
            channel = np.broadcast_to(np.arange(expected.shape[1]).reshape(
                (1, -1) + (1,) * (value.ndim - 2)), expected.shape)[big]
            factors = [ratio[channel == c] for c in np.unique(channel)]
            if all(np.allclose(f, f[0], rtol=1e-4) for f in factors):
                shown = ", ".join(f"{f[0]:.3g}" for f in factors[:4])
                return (f"it is the right gradient times a constant per channel ({shown}"
                        f"{', ...' if len(factors) > 4 else ''}): a missing or extra "
                        "per-channel scale, such as gamma or 1/std")
    if shared is not None and shared.any() and not shared.all():
        bad = ~np.isclose(value, expected, rtol=1e-5, atol=1e-7)
        if bad.any() and not bad[~shared].any():
            return ("it is right at every pixel that lies in one window and wrong only where "
                    "windows share a pixel: the gradients of a pixel's copies must add (col2im "
                    "adds; an assignment keeps only one)")
    return None


# -- the slips of particular exercises ---------------------------------------------------------
def _shared_pixels(x_shape, kernel, stride, padding):
    """True where a pixel of x is copied into more than one window."""
    ones = np.ones(x_shape)
    counts = col2im(im2col(ones, kernel[0], kernel[1], stride, padding), x_shape, kernel[0],
                    kernel[1], stride, padding)
    return counts > 1


def _batchnorm_slips(case, dy):
    (x, gamma, _), evaluation = case.inputs, "running_mean" in case.settings
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    m = x.size // x.shape[1]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if evaluation:
        mean = case.settings["running_mean"].reshape(shape)
        var = case.settings["running_var"].reshape(shape)
    else:
        mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(var + 1e-5)
    x_hat = (x - mean) * inv_std
    gamma = gamma.reshape(shape)

    def dx(dx_hat, mean_path=True, variance_path=True):
        total = m * dx_hat
        if mean_path:
            total = total - dx_hat.sum(axis=axes, keepdims=True)
        if variance_path:
            total = total - x_hat * (dx_hat * x_hat).sum(axis=axes, keepdims=True)
        return inv_std / m * total

    if evaluation:
        return {"dx": [("the training-mode formula in evaluation mode: there the running mean "
                        "and variance are constants, so x reaches the loss only through x_hat",
                        dx(dy * gamma)),
                       ("gamma is missing: dx_hat = dy * gamma", dy * inv_std)],
                "dgamma": [("dgamma uses x where it needs x_hat", (dy * x).sum(axis=axes))]}
    return {
        "dx": [
            ("the path through the variance is missing (the x_hat * sum(dx_hat * x_hat) term)",
             dx(dy * gamma, variance_path=False)),
            ("the path through the mean is missing (the sum(dx_hat) term)",
             dx(dy * gamma, mean_path=False)),
            ("only the direct path, dx_hat / std: the mean and the variance depend on x too",
             dx(dy * gamma, mean_path=False, variance_path=False)),
            ("gamma is missing: dx_hat = dy * gamma", dx(dy)),
        ],
        "dgamma": [("dgamma uses x where it needs x_hat", (dy * x).sum(axis=axes))],
    }


def _conv_copies(case, dy):
    """For conv2d: (where, dcols), the pixel (1 + flat index, 0 for padding) of every entry of
    cols and the gradient of that copy."""
    x, w = case.inputs[0], case.inputs[1]
    s, p = case.settings["stride"], case.settings["padding"]
    C_out, _, KH, KW = w.shape
    index = np.arange(1, x.size + 1, dtype=np.float64).reshape(x.shape)
    where = im2col(index, KH, KW, (s, s), (p, p)).astype(np.int64)  # (C_in*KH*KW, windows)
    dcols = w.reshape(C_out, -1).T @ dy.transpose(1, 0, 2, 3).reshape(C_out, -1)  # like cols
    return where, dcols


def one_copy_only(name, case, dy, value):
    """True when every pixel of value (a conv2d dx) holds the gradient of one of its copies in
    cols, where it needed the sum of them all: the copies were assigned, not added."""
    if name != "conv2d":
        return False
    where, dcols = _conv_copies(case, dy)
    flat = np.concatenate([[0.0], value.reshape(-1)])
    matches = np.isclose(flat[where], dcols, rtol=1e-5, atol=1e-7)
    pixel_matched = np.zeros(flat.size, dtype=bool)
    np.logical_or.at(pixel_matched, where, matches)
    copies = np.bincount(where.reshape(-1), minlength=flat.size)
    return bool(pixel_matched[1:][copies[1:] > 0].all() and (copies[1:] > 1).any())


def slips(name, case, dy):
    """{gradient name: [(what went wrong, the gradient it gives)]} for exercise name."""
    if name == "batchnorm":
        return _batchnorm_slips(case, dy)
    return {}


def shared_pixels(name, case):
    """{gradient name: mask of the input elements that lie in more than one window}."""
    if name == "conv2d":
        x, w = case.inputs[0], case.inputs[1]
        s, p = case.settings["stride"], case.settings["padding"]
        return {"dx": _shared_pixels(x.shape, w.shape[2:], (s, s), (p, p))}
    if name == "maxpool":
        x = case.inputs[0]
        N, C, H, W = x.shape
        k, s = case.settings["kernel"], case.settings["stride"]
        return {"dx": _shared_pixels((N * C, 1, H, W), (k, k), (s, s), (0, 0)).reshape(x.shape)}
    return {}


def diagnose(name, case, dy, gradient, value, expected):
    """One sentence on what is likely wrong with value (the learner's gradient), or None."""
    if value.shape != expected.shape:
        return wrong_shape(value, expected, dy)
    for what, slip in slips(name, case, dy).get(gradient, []):
        if _close(value, slip):
            return what
    if gradient == "dx" and one_copy_only(name, case, dy, value):
        return ("each pixel holds the gradient of one of its copies in cols: it is wrong only "
                "where windows share a pixel, and there the copies' gradients must add (col2im "
                "adds; an assignment keeps only one)")
    return wrong_values(value, expected, shared_pixels(name, case).get(gradient))
