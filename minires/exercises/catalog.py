"""The exercises: which class each file defines, the inputs it is checked on, and a hint each.

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
    hint: str


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
    return [Case("x of shape (4, 5)", {}, (_away_from_zero(_rng(0), 4, 5),)),
            Case("x of shape (2, 3, 4, 4)", {}, (_away_from_zero(_rng(1), 2, 3, 4, 4),))]


def _linear_cases():
    rng = _rng(2)
    return [Case("x (5, 4), w (3, 4), b (3,)", {},
                 (rng.standard_normal((5, 4)), rng.standard_normal((3, 4)),
                  rng.standard_normal(3)))]


def _conv_cases():
    rng, rng2 = _rng(3), _rng(4)
    return [
        Case("x (2, 3, 5, 5), w (4, 3, 3, 3), stride 1, padding 1", {"stride": 1, "padding": 1},
             (rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3)),
              rng.standard_normal(4))),
        Case("x (2, 2, 6, 5), w (3, 2, 3, 2), stride 2, padding 0", {"stride": 2, "padding": 0},
             (rng2.standard_normal((2, 2, 6, 5)), rng2.standard_normal((3, 2, 3, 2)),
              rng2.standard_normal(3))),
    ]


def _maxpool_cases():
    return [
        Case("x (2, 3, 4, 4), kernel 2, stride 2", {"kernel": 2, "stride": 2},
             (_distinct(_rng(5), 2, 3, 4, 4),)),
        Case("x (2, 2, 5, 5), kernel 3, stride 2 (overlapping windows)",
             {"kernel": 3, "stride": 2}, (_distinct(_rng(6), 2, 2, 5, 5),)),
    ]


def _batchnorm_cases():
    rng, rng2 = _rng(7), _rng(8)
    return [
        Case("x (6, 4): statistics over N", {},
             (rng.standard_normal((6, 4)) * 2 + 1, 1 + 0.5 * rng.standard_normal(4),
              rng.standard_normal(4))),
        Case("x (3, 2, 3, 3): statistics over N, H, W", {},
             (rng2.standard_normal((3, 2, 3, 3)), 1 + 0.5 * rng2.standard_normal(2),
              rng2.standard_normal(2))),
    ]


def _residual_cases():
    rng = _rng(9)
    C = 3
    return [Case("x (2, 3, 4, 4), two 3x3 convolutions with 3 channels", {},
                 (rng.standard_normal((2, C, 4, 4)),
                  rng.standard_normal((C, C, 3, 3)) * 0.3, 1 + 0.3 * rng.standard_normal(C),
                  0.3 * rng.standard_normal(C),
                  rng.standard_normal((C, C, 3, 3)) * 0.3, 1 + 0.3 * rng.standard_normal(C),
                  0.3 * rng.standard_normal(C)))]


EXERCISES = {
    "relu": Exercise(
        "relu", "ReLU", "ReLU: y = max(x, 0)", "lesson 6", ("dx",), _relu_cases(),
        "ReLU lets the gradient through where the input was positive and stops it elsewhere: "
        "dx = dy * mask, with the mask that forward saved on self.",
    ),
    "linear": Exercise(
        "linear", "Linear", "fully connected layer: y = x @ w^T + b", "lesson 3",
        ("dx", "dw", "db"), _linear_cases(),
        "Let the shapes guide you: dx must be (N, in), and dy (N, out) @ w (out, in) is. dw must "
        "be (out, in): dy^T @ x. b was added to every row of the batch, so db sums dy over the "
        "batch (axis 0).",
    ),
    "conv2d": Exercise(
        "conv2d", "Conv2d", "2-D convolution as im2col + matrix product", "lesson 4",
        ("dx", "dw", "db"), _conv_cases(),
        "forward is one matrix product y2 = w2 @ cols. First put dy in y2's layout: undo the "
        "transpose, then the reshape, to get dy2 of shape (C_out, N*H_out*W_out). Then "
        "dw2 = dy2 @ cols^T and dcols = w2^T @ dy2, as for any product. col2im adds each entry "
        "of dcols back onto the pixel it was copied from, which turns dcols into dx. db sums dy "
        "over N, H_out and W_out.",
    ),
    "maxpool": Exercise(
        "maxpool", "MaxPool2d", "2-D max pooling", "lesson 6", ("dx",), _maxpool_cases(),
        "Only the maximum of each window influenced the output, so each window's gradient goes "
        "to its argmax (saved by forward) and nowhere else: fill a zero array shaped like cols "
        "at (argmax, window), then col2im it back. When windows overlap (stride < kernel) a "
        "pixel can be the maximum of two windows and must receive both gradients: col2im adds, "
        "an assignment into dx would keep only one.",
    ),
    "batchnorm": Exercise(
        "batchnorm", "BatchNorm", "batch normalisation, training mode", "lesson 5",
        ("dx", "dgamma", "dbeta"), _batchnorm_cases(),
        "dgamma = sum(dy * x_hat) and dbeta = sum(dy), summed over the axes of the statistics. "
        "For dx, x reaches the loss three ways: through x_hat directly, through the mean and "
        "through the variance (both depend on every x of the channel). With dx_hat = dy * gamma "
        "and m values per channel, the three terms combine into "
        "dx = inv_std / m * (m * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat)). "
        "A dx that only passes a plain-sum check usually misses one of the terms.",
    ),
    "residual": Exercise(
        "residual", "ResidualBlock", "residual block: y = relu(F(x) + x)", "lesson 7",
        ("dx", "dw1", "dgamma1", "dbeta1", "dw2", "dgamma2", "dbeta2"), _residual_cases(),
        "Call the saved ops' backward methods in the reverse order of forward: relu2, bn2, "
        "conv2, relu1, bn1, conv1 (each returns one gradient per input; the convolutions' bias "
        "gradient is None). The sum s = F(x) + x hands its gradient ds unchanged to both terms, "
        "and x was used twice, so dx = (gradient through F) + ds.",
    ),
}
