"""The exercises: which class each file defines, the inputs it is checked on, and three hints each.

The hints come in steps (`check NAME --hint 1`, 2, 3): a question first, then the direction, the
formula last, so that a learner who is stuck takes only as much as they need.

Every case builds float64 inputs from a fixed seed, so a result is the same on every run. Inputs
stay clear of the places where a gradient jumps (ReLU at 0, ties inside a pooling window), where
central differences would disagree with any backward.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class Case:
    """One check: a description, the class's constructor arguments, and the input arrays."""

    description: str
    settings: dict
    inputs: tuple


@dataclass
class Exercise:
    name: str  # the file is lessons/exercises/<name>.py
    cls: str  # the Function subclass that file defines
    summary: str
    lesson: str
    grads: tuple  # the names of the gradients backward returns, one per input
    cases: list
    hints: tuple  # (a question, the direction, the formula)


def _rng(case):
    return np.random.default_rng(1000 + case)


def _away_from_zero(rng, *shape):
    """Random values with |x| >= 0.1: ReLU's kink at 0 is far from every input."""
    r = rng.standard_normal(shape)
    return np.sign(r) * (0.1 + np.abs(r))


def _distinct(rng, *shape):
    """Distinct values 0.1 apart in random order: no two elements of a window tie."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) / 10.0


def _relu_cases():
    shapes = [(4, 5), (2, 3, 4, 4), (7,), (1, 1, 3, 5), (3, 2, 1, 6)]
    return [Case(f"x of shape {shape}", {}, (_away_from_zero(_rng(k), *shape),))
            for k, shape in zip((0, 1, 20, 21, 22), shapes)]


def _linear_case(seed, N, n_in, n_out):
    rng = _rng(seed)
    return Case(f"x ({N}, {n_in}), w ({n_out}, {n_in}), b ({n_out},)", {},
                (rng.standard_normal((N, n_in)), rng.standard_normal((n_out, n_in)),
                 rng.standard_normal(n_out)))


def _linear_cases():
    return [_linear_case(2, 5, 4, 3), _linear_case(23, 1, 6, 2),  # a batch of one
            _linear_case(24, 4, 4, 4),  # square w: a transposed w has the right shape
            _linear_case(25, 7, 1, 5), _linear_case(26, 3, 5, 1)]


def _conv_case(seed, x_shape, w_shape, stride, padding):
    rng = _rng(seed)
    return Case(f"x {x_shape}, w {w_shape}, stride {stride}, padding {padding}",
                {"stride": stride, "padding": padding},
                (rng.standard_normal(x_shape), rng.standard_normal(w_shape),
                 rng.standard_normal(w_shape[0])))


def _conv_cases():
    return [
        _conv_case(3, (2, 3, 5, 5), (4, 3, 3, 3), 1, 1),
        _conv_case(4, (2, 2, 6, 5), (3, 2, 3, 2), 2, 0),  # odd width, a non-square kernel
        _conv_case(10, (1, 1, 4, 4), (1, 1, 1, 1), 1, 0),  # 1x1: no window overlaps another
        _conv_case(11, (3, 2, 7, 7), (5, 2, 3, 3), 2, 1),  # stride 2 with padding, odd size
        _conv_case(12, (2, 4, 5, 6), (2, 4, 5, 5), 1, 2),  # a kernel as large as the image
        _conv_case(13, (1, 3, 9, 8), (2, 3, 4, 3), 3, 1),  # stride 3: some pixels in no window
    ]


def _maxpool_cases():
    def case(seed, shape, kernel, stride, note=""):
        return Case(f"x {shape}, kernel {kernel}, stride {stride}{note}",
                    {"kernel": kernel, "stride": stride}, (_distinct(_rng(seed), *shape),))

    return [case(5, (2, 3, 4, 4), 2, 2), case(6, (2, 2, 5, 5), 3, 2, " (overlapping windows)"),
            case(27, (1, 2, 6, 6), 3, 3), case(28, (2, 1, 7, 5), 2, 2, " (odd sizes)"),
            case(29, (1, 3, 5, 5), 2, 1, " (stride 1: every pixel in up to four windows)")]


def _batchnorm_case(seed, x_shape, scale=1.0, shift=0.0, evaluation=False):
    rng = _rng(seed)
    C = x_shape[1]
    inputs = (rng.standard_normal(x_shape) * scale + shift, 1 + 0.5 * rng.standard_normal(C),
              rng.standard_normal(C))
    if evaluation:  # running statistics near, but not equal to, the batch's own
        running = {"running_mean": shift + 0.3 * rng.standard_normal(C),
                   "running_var": scale**2 * (0.5 + rng.random(C))}
        return Case(f"x {x_shape}: evaluation mode, the running statistics given", running,
                    inputs)
    over = "N" if len(x_shape) == 2 else "N, H, W"
    return Case(f"x {x_shape}: statistics over {over}", {}, inputs)


def _batchnorm_cases():
    return [
        _batchnorm_case(7, (6, 4), 2, 1),
        _batchnorm_case(8, (3, 2, 3, 3)),
        _batchnorm_case(14, (5, 3), 0.01, 4),  # small variance: eps matters, 1/std is large
        _batchnorm_case(15, (2, 5, 3, 1), 3, -2),  # odd sizes, W = 1
        _batchnorm_case(16, (7, 1)),  # one channel
        _batchnorm_case(17, (4, 3, 2, 5), 1, 10),  # a large mean
        _batchnorm_case(18, (3, 4, 3, 2), 2, 1, evaluation=True),
        _batchnorm_case(19, (1, 3), 1, 0, evaluation=True),  # batch 1: fine in evaluation
    ]


def _residual_cases():
    def case(seed, N, C, H, W):
        rng = _rng(seed)
        channels = f"{C} channel{'s' if C > 1 else ''}"
        return Case(f"x ({N}, {C}, {H}, {W}), two 3x3 convolutions with {channels}", {},
                    (rng.standard_normal((N, C, H, W)),
                     rng.standard_normal((C, C, 3, 3)) * 0.3, 1 + 0.3 * rng.standard_normal(C),
                     0.3 * rng.standard_normal(C),
                     rng.standard_normal((C, C, 3, 3)) * 0.3, 1 + 0.3 * rng.standard_normal(C),
                     0.3 * rng.standard_normal(C)))

    return [case(9, 2, 3, 4, 4), case(30, 3, 2, 3, 5), case(31, 2, 1, 5, 3),
            case(32, 1, 2, 4, 4),  # batch 1: batchnorm's statistics over H, W alone
            case(33, 2, 5, 3, 6)]  # non-square, an odd channel count


EXERCISES = {
    "relu": Exercise(
        "relu", "ReLU", "ReLU: y = max(x, 0)", "lesson 6", ("dx",), _relu_cases(),
        ("Where the input was negative, does a small change of it change the output?",
         "The local derivative is 1 where x > 0 and 0 elsewhere; forward saved that as a mask.",
         "dx = dy * self.mask"),
    ),
    "linear": Exercise(
        "linear", "Linear", "fully connected layer: y = x @ w^T + b", "lesson 3",
        ("dx", "dw", "db"), _linear_cases(),
        ("Which product of dy (N, out) with x (N, in) or w (out, in) has the shape (N, in) of "
         "dx? And the shape (out, in) of dw?",
         "Let the shapes guide you: one product each for dx and dw. b was added to every row "
         "of the batch: what happens to a gradient when a value is used N times?",
         "dx = dy @ w, dw = dy^T @ x, db = dy.sum(axis=0)"),
    ),
    "conv2d": Exercise(
        "conv2d", "Conv2d", "2-D convolution as im2col + matrix product", "lesson 4",
        ("dx", "dw", "db"), _conv_cases(),
        ("forward is one matrix product, y2 = w2 @ cols, followed by a reshape and a "
         "transpose. In what layout must dy be before you can use what you know about the "
         "gradient of a matrix product?",
         "Undo forward's last two steps on dy (the transpose, then the reshape) to get dy2, "
         "shaped (C_out, N*H_out*W_out) like y2. Then treat y2 = w2 @ cols like any product "
         "(lesson 3's linear layer), and ask what a pixel copied into several columns does "
         "with the gradients of its copies.",
         "dy2 = dy.transpose(1, 0, 2, 3).reshape(C_out, -1); dw = (dy2 @ cols^T) reshaped to "
         "w's shape; dcols = w2^T @ dy2; dx = col2im(dcols, ...), which adds the copies' "
         "gradients; db = dy2.sum(axis=1)."),
    ),
    "maxpool": Exercise(
        "maxpool", "MaxPool2d", "2-D max pooling", "lesson 6", ("dx",), _maxpool_cases(),
        ("Which elements of a window influenced its output?",
         "Each window's gradient goes to its argmax (saved by forward) and nowhere else. When "
         "windows overlap, a pixel can be the maximum of two windows: what must it receive?",
         "dcols = zeros like cols; dcols[argmax, arange(windows)] = dy.ravel(); then col2im "
         "(which adds) back to x's shape. An assignment into dx would keep only one gradient."),
    ),
    "batchnorm": Exercise(
        "batchnorm", "BatchNorm", "batch normalisation, training and evaluation mode", "lesson 5",
        ("dx", "dgamma", "dbeta"), _batchnorm_cases(),
        ("gamma and beta are used once per value of their channel: over which axes do their "
         "gradients sum? And through how many paths does one x reach the loss, in training "
         "mode and in evaluation mode?",
         "Three paths: through x_hat directly, through the mean, and through the variance "
         "(both depend on every x of the channel). Write forward as stages (mean, centre, "
         "variance, 1/std, x_hat, scale and shift) and walk them backwards, adding the "
         "gradients of a value used twice; then simplify with sum(x - mean) = 0.",
         "dgamma = sum(dy * x_hat), dbeta = sum(dy) over self.axes; with dx_hat = dy * gamma "
         "and m values per channel, dx = inv_std / m * (m * dx_hat - sum(dx_hat) - "
         "x_hat * sum(dx_hat * x_hat)). In evaluation mode the mean and the variance are "
         "constants: dx = dx_hat * inv_std."),
    ),
    "residual": Exercise(
        "residual", "ResidualBlock", "residual block: y = relu(F(x) + x)", "lesson 7",
        ("dx", "dw1", "dgamma1", "dbeta1", "dw2", "dgamma2", "dbeta2"), _residual_cases(),
        ("forward calls six saved ops and one addition. In which order must their backward "
         "methods run?",
         "The reverse order of forward: relu2, bn2, conv2, relu1, bn1, conv1 (each returns one "
         "gradient per input; the convolutions' bias gradient is None). What does the sum "
         "s = F(x) + x hand to each of its terms, and how many times was x used?",
         "ds = relu2.backward(dy); then back through F to get dx_branch; dx = dx_branch + ds."),
    ),
}
