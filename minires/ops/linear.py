"""The fully connected layer (lesson 3): y = x @ w^T + b, with w of shape (out, in)."""

from ..function import Function
from ..tensor import as_tensor
from . import check_floating


class Affine(Function):
    """y = x @ w^T + b;  dx = dy @ w,  dw = dy^T @ x,  db = sum of dy over the batch."""

    def forward(self, x, w, b):
        self.x, self.w, self.has_bias = x, w, b is not None
        y = x @ w.T  # (N, out)
        return y if b is None else y + b

    def backward(self, dy):
        dx = dy @ self.w  # (N, in)
        dw = dy.T @ self.x  # (out, in)
        db = dy.sum(axis=0) if self.has_bias else None
        return dx, dw, db


def linear(input, weight, bias=None):
    """input (N, in), weight (out, in), bias (out,) -> (N, out)."""
    input, weight = as_tensor(input), as_tensor(weight)
    check_floating("linear", input=input, weight=weight)
    if input.ndim != 2 or weight.ndim != 2 or input.shape[1] != weight.shape[1]:
        raise ValueError(f"linear: input must be (N, in) and weight (out, in) with the same 'in', "
                         f"got input {input.shape} and weight {weight.shape}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},) for weight "
                         f"{weight.shape}, got {tuple(bias.shape)}")
    return Affine()(input, weight, bias)
