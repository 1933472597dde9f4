"""Exercise: the backward pass of a fully connected layer (lesson 3).

y = x @ w^T + b with x (N, in), w (out, in), b (out,). Write backward(dy), dy of shape (N, out):
return (dx, dw, db). Check with `python -m minires.exercises check linear`.
"""

from minires import Function


class Linear(Function):
    """y = x @ w^T + b;  dx = dy @ w,  dw = dy^T @ x,  db = sum of dy over the batch."""

    def forward(self, x, w, b):
        self.x, self.w = x, w
        return x @ w.T + b  # (N, out)

    def backward(self, dy):
        dx = dy @ self.w  # (N, out) @ (out, in) -> (N, in)
        dw = dy.T @ self.x  # (out, N) @ (N, in) -> (out, in)
        db = dy.sum(axis=0)  # b was added to every row of the batch
        return dx, dw, db


if __name__ == "__main__":
    from minires.exercises import main

    raise SystemExit(main(["check", "linear", "--file", __file__]))
