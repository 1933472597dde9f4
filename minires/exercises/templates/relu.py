"""Exercise: the backward pass of ReLU (lesson 6).

y = max(x, 0) elementwise. Write backward(dy): the gradient of the loss with respect to x.
Check with `python -m minires.exercises check relu`.
"""

from minires import Function


class ReLU(Function):
    """y = max(x, 0);  backward: yours to write."""

    def forward(self, x):
        self.mask = x > 0  # (same shape as x) True where the input was positive
        return x * self.mask

    def backward(self, dy):
        # TODO: return dx, an array of x's shape. forward saved self.mask for you.
        raise NotImplementedError("write ReLU.backward")


if __name__ == "__main__":
    from minires.exercises import main

    raise SystemExit(main(["check", "relu", "--file", __file__]))
