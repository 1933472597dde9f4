"""Exercise: the backward pass of a fully connected layer (lesson 3).

y = x @ w^T + b with x (N, in), w (out, in), b (out,). Write backward(dy), dy of shape (N, out):
return (dx, dw, db). Check with `python -m minires.exercises check linear`.
"""

from minires import Function


class Linear(Function):
    """y = x @ w^T + b;  backward: yours to write."""

    def forward(self, x, w, b):
        self.x, self.w = x, w
        return x @ w.T + b  # (N, out)

    def backward(self, dy):
        # TODO: return (dx, dw, db) with the shapes of x (N, in), w (out, in) and b (out,).
        raise NotImplementedError("write Linear.backward")


if __name__ == "__main__":
    from minires.exercises import main

    raise SystemExit(main(["check", "linear", "--file", __file__]))
