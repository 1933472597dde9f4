"""Elementwise ops and matmul, with numpy broadcasting (lesson 1).

Every binary op sums its gradient back to each input's shape through unbroadcast.
"""

from ..backends import get_array_module, get_backend
from ..function import Function, unbroadcast
from ..tensor import as_tensor


class Add(Function):
    """y = a + b;  da = dy, db = dy."""

    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, dy):
        return unbroadcast(dy, self.a_shape), unbroadcast(dy, self.b_shape)


def add(a, b):
    return Add()(a, b)


class Sub(Function):
    """y = a - b;  da = dy, db = -dy."""

    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, dy):
        return unbroadcast(dy, self.a_shape), unbroadcast(-dy, self.b_shape)


def sub(a, b):
    return Sub()(a, b)


class Mul(Function):
    """y = a * b;  da = dy * b, db = dy * a."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, dy):
        return unbroadcast(dy * self.b, self.a.shape), unbroadcast(dy * self.a, self.b.shape)


def mul(a, b):
    return Mul()(a, b)


class Div(Function):
    """y = a / b;  da = dy / b, db = -dy * a / b^2."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, dy):
        da = dy / self.b
        db = -da * self.a / self.b
        return unbroadcast(da, self.a.shape), unbroadcast(db, self.b.shape)


def div(a, b):
    return Div()(a, b)


class Neg(Function):
    """y = -x;  dx = -dy."""

    def forward(self, x):
        return -x

    def backward(self, dy):
        return -dy


def neg(x):
    return Neg()(x)


class Pow(Function):
    """y = x ** c for a constant c;  dx = dy * c * x ** (c - 1)."""

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        self.x = x
        return x ** self.c

    def backward(self, dy):
        return dy * self.c * self.x ** (self.c - 1)


def pow(x, c):
    if not isinstance(c, (int, float)):
        raise TypeError(f"pow: the exponent must be a Python int or float, got {type(c).__name__}")
    return Pow(c)(x)


class Exp(Function):
    """y = exp(x);  dx = dy * y."""

    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, dy):
        return dy * self.y


def exp(x):
    return Exp()(x)


class Log(Function):
    """y = log(x);  dx = dy / x."""

    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, dy):
        return dy / self.x


def log(x):
    return Log()(x)


class ReLU(Function):
    """y = max(x, 0);  dx = dy where x > 0, else 0 (the kink at 0 gets gradient 0).
    y > 0 exactly where x > 0, so backward needs only y, which the next op keeps anyway."""

    def forward(self, x):
        self.backend = get_backend(x)
        self.y = self.backend.relu_forward(x)
        return self.y

    def backward(self, dy):
        return self.backend.relu_backward(dy, self.y)


def relu(input):
    return ReLU()(input)


class AddReLU(Function):
    """y = relu(a + b), a residual block's last step as one op;  da = db = dy where y > 0.
    The backend adds and rectifies in one pass (one launch), and nothing but y is kept."""

    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        self.backend = get_backend(a, b)
        self.y = self.backend.add_relu_forward(a, b)
        return self.y

    def backward(self, dy):
        da = self.backend.add_relu_backward(dy, self.y)  # the gradient of a + b
        db = da[...]  # the same memory as a view, so that Tensor.backward sees it is shared
        return unbroadcast(da, self.a_shape), unbroadcast(db, self.b_shape)


def add_relu(a, b):
    return AddReLU()(a, b)


class MatMul(Function):
    """y = a @ b (batched over leading axes);  da = dy @ b^T, db = a^T @ dy."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, dy):
        da = dy @ self.b.swapaxes(-1, -2)
        db = self.a.swapaxes(-1, -2) @ dy
        return unbroadcast(da, self.a.shape), unbroadcast(db, self.b.shape)


def matmul(a, b):
    a, b = as_tensor(a), as_tensor(b)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: cannot multiply shapes {a.shape} and {b.shape}: both need 2+ "
                         "dimensions and a's last size must equal b's second-to-last")
    return MatMul()(a, b)
