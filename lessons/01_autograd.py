# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 1: autograd from scratch
#
# Training a network means nudging every weight against the gradient of the loss. A ResNet-56
# has 850,000 weights; nobody derives 850,000 partial derivatives by hand. What we write by hand
# is the derivative of each *small* operation (add, multiply, convolve), and a program chains
# them together: **reverse-mode automatic differentiation**, or backpropagation.
#
# We build it twice. First for single numbers, in about 80 lines (the `Value` of Karpathy's
# micrograd), so that every step is visible. Then we read the same ideas in `minires.Tensor`,
# which does the same for whole arrays and is the engine of every later lesson.
#
# Run it as a script (`python lessons/01_autograd.py`) or open it as a notebook. Each cell prints
# what to look at, then asserts it.

# %%
# ruff: noqa: E402
import math
import random
import sys

import matplotlib

if "ipykernel" not in sys.modules:  # a script: draw into files, never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import minires
from minires import Function, lesson

parser = lesson.parser("Lesson 1: autograd from scratch",
                       full_help="(nothing more to run in this lesson)")
args, OUT = lesson.parse(parser)



# %% [markdown]
# ## 1. A number that remembers where it came from
#
# A `Value` holds a number (`data`), the derivative of the final output with respect to it
# (`grad`, filled in later), and the values it was computed from (`_prev`). Each operation
# creates its output *and* a small closure, `_backward`, that knows the local derivative of
# that one operation. For `out = a * b`:
#
# $$\frac{\partial L}{\partial a} = \frac{\partial L}{\partial \text{out}} \cdot b, \qquad
#   \frac{\partial L}{\partial b} = \frac{\partial L}{\partial \text{out}} \cdot a$$
#
# That is the chain rule: the gradient arriving at the output (`out.grad`) times the local
# derivative. Note the `+=`: a value used twice receives gradient from both uses.

# %%
class Value:
    """A scalar with a gradient: micrograd's Value (github.com/karpathy/micrograd)."""

    def __init__(self, data, children=(), op=""):
        self.data = float(data)
        self.grad = 0.0
        self._backward = lambda: None  # how to pass out.grad on to the children
        self._prev = tuple(children)
        self._op = op

    def __repr__(self):
        return f"Value(data={self.data:.4f}, grad={self.grad:.4f})"

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward():  # d(a + b)/da = 1, d(a + b)/db = 1
            self.grad += out.grad
            other.grad += out.grad
        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():  # d(a * b)/da = b, d(a * b)/db = a
            self.grad += out.grad * other.data
            other.grad += out.grad * self.data
        out._backward = _backward
        return out

    def __pow__(self, c):  # c is a plain number
        out = Value(self.data ** c, (self,), f"**{c}")

        def _backward():  # d(a^c)/da = c * a^(c-1)
            self.grad += out.grad * c * self.data ** (c - 1)
        out._backward = _backward
        return out

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,), "tanh")

        def _backward():  # d tanh(a)/da = 1 - tanh(a)^2
            self.grad += out.grad * (1 - t * t)
        out._backward = _backward
        return out

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-other)

    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def backward(self):
        """Fill .grad of every value this one depends on: d(self)/d(value)."""
        # Order the graph so that each value comes after everything it was computed from...
        order, visited = [], set()

        def visit(v):
            if v not in visited:
                visited.add(v)
                for child in v._prev:
                    visit(child)
                order.append(v)
        visit(self)
        # ...then walk it backwards: a value's grad is complete before it is passed on.
        self.grad = 1.0
        for v in reversed(order):
            v._backward()
        return order


# %% [markdown]
# ## 2. One neuron, differentiated
#
# A neuron with two inputs: $o = \tanh(x_1 w_1 + x_2 w_2 + b)$. We call `backward()` on the
# output and read the five gradients. To trust them, compare each with a **numerical
# derivative**, $(f(v + h) - f(v - h)) / 2h$ for a small $h$ (lesson 2 is about doing this well).

# %%
def neuron(x1, x2, w1, w2, b):
    return (x1 * w1 + x2 * w2 + b).tanh()


inputs = {"x1": 2.0, "x2": 0.0, "w1": -3.0, "w2": 1.0, "b": 6.8813735870195432}
leaves = {name: Value(v) for name, v in inputs.items()}
o = neuron(**leaves)
order = o.backward()
print(f"o = {o.data:.4f}")


def nudged(name, h):
    """The neuron's output with one input moved by h (plain floats wrapped as Values)."""
    return neuron(**{k: Value(v + h if k == name else v) for k, v in inputs.items()}).data


for name, v in leaves.items():
    numeric = (nudged(name, 1e-6) - nudged(name, -1e-6)) / 2e-6
    print(f"  do/d{name:<2} = {v.grad:+.6f}   numerical {numeric:+.6f}")
    assert abs(v.grad - numeric) < 1e-6

# %% [markdown]
# `do/dx2` is not zero even though `x2 = 0`: it is `w2` times the local derivative of tanh
# (0.5 here). `do/dw2` *is* zero, because `w2` was multiplied by `x2 = 0`: nudging it changes
# nothing.
#
# ## 3. The topological order
#
# `backward()` returned the order it used. Every value appears *after* the values it was made
# from; walking the list backwards therefore reaches each value only after every use of it has
# contributed its share of gradient. Here is the order, leaves first:

# %%
names = {id(v): k for k, v in leaves.items()}
print(" -> ".join(names.get(id(v), v._op) for v in order))
position = {id(v): i for i, v in enumerate(order)}
assert all(position[id(c)] < position[id(v)] for v in order for c in v._prev)
assert order[-1] is o


# %%
def draw_graph(root, labels, ax):
    """Draw the graph behind root, leaves on the left, each box showing data and grad."""
    order, seen = [], set()  # the same walk as Value.backward, without running backward

    def visit(v):
        if id(v) not in seen:
            seen.add(id(v))
            for c in v._prev:
                visit(c)
            order.append(v)
    visit(root)
    depth = {}
    for v in order:  # a node sits one column right of its deepest child
        depth[id(v)] = 1 + max((depth[id(c)] for c in v._prev), default=-1)
    rows = {}
    xy = {}
    for v in order:
        d = depth[id(v)]
        xy[id(v)] = (d, -rows.get(d, 0))
        rows[d] = rows.get(d, 0) + 1
    for v in order:
        for c in v._prev:
            ax.annotate("", xy=xy[id(v)], xytext=xy[id(c)],
                        arrowprops=dict(arrowstyle="->", color="gray", shrinkA=25, shrinkB=25))
    for v in order:
        name = labels.get(id(v), v._op)
        ax.text(*xy[id(v)], f"{name}\ndata {v.data:.3f}\ngrad {v.grad:.3f}", ha="center",
                va="center", fontsize=8, bbox=dict(boxstyle="round", fc="lightyellow"))
    ax.set_xlim(-0.6, max(depth.values()) + 0.6)
    ax.set_ylim(-max(rows.values()) + 0.4, 0.6)
    ax.axis("off")


fig, ax = plt.subplots(figsize=(11, 4))
draw_graph(o, names, ax)
ax.set_title("o = tanh(x1*w1 + x2*w2 + b): forward left to right, backward right to left")
lesson.save(fig, OUT / "01_graph.png")

# %% [markdown]
# ## 4. Why `+=`: a value used twice
#
# In `y = a * a + a` the value `a` feeds three places, and $dy/da = 2a + 1$. With `=` instead
# of `+=` in the closures, the last use to run would overwrite the others. The residual block
# of lesson 7, `F(x) + x`, uses its input twice in exactly this way.

# %%
a = Value(3.0)
y = a * a + a
y.backward()
print(f"dy/da = {a.grad} (expected 2a + 1 = {2 * 3.0 + 1})")
assert a.grad == 7.0

# %% [markdown]
# ## 5. Training with it: a tiny MLP learns XOR
#
# Gradients are all a training loop needs: compute the loss, `backward()`, step each weight
# against its gradient, reset the gradients to zero, repeat. A 2-4-1 network of tanh neurons
# learns XOR, which no single linear layer can.

# %%
rng = random.Random(0)
W1 = [[Value(rng.uniform(-1, 1)) for _ in range(2)] for _ in range(4)]  # (hidden, in)
b1 = [Value(0.0) for _ in range(4)]
W2 = [Value(rng.uniform(-1, 1)) for _ in range(4)]
b2 = Value(0.0)
params = [w for row in W1 for w in row] + b1 + W2 + [b2]
X = [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
T = [-1.0, 1.0, 1.0, -1.0]  # XOR, as -1/+1 to match tanh's range


def mlp(x):
    h = [sum((w * xi for w, xi in zip(row, x)), b).tanh() for row, b in zip(W1, b1)]
    return sum((w * hi for w, hi in zip(W2, h)), b2).tanh()


def xor_loss():
    return sum(((mlp(x) - t) ** 2 for x, t in zip(X, T)), Value(0.0)) * 0.25


# Keep the untrained weights: section 6 computes the same loss with minires from them.
initial = [p.data for p in params]
losses = []
for step in range(500):
    loss = xor_loss()
    for p in params:
        p.grad = 0.0  # gradients add up (+=), so clear them before each backward
    loss.backward()
    for p in params:
        p.data -= 0.2 * p.grad
    losses.append(loss.data)
print(f"loss: step 0 {losses[0]:.4f}, step {len(losses) - 1} {losses[-1]:.5f}")
print("outputs:", [round(mlp(x).data, 3) for x in X], "targets:", T)
assert losses[-1] < 0.01
assert all(np.sign(mlp(x).data) == t for x, t in zip(X, T))

fig, ax = plt.subplots(figsize=(5, 3))
ax.semilogy(losses)
ax.set_xlabel("step")
ax.set_ylabel("mean squared error")
ax.set_title("a 2-4-1 tanh MLP of Values learns XOR")
lesson.save(fig, OUT / "01_xor_loss.png")

# %% [markdown]
# ## 6. The same ideas in `minires.Tensor`
#
# `Value` builds one graph node per *number*: fine for 17 weights, hopeless for a ResNet.
# `minires.Tensor` builds one node per *array operation*. Read `minires/tensor.py` and
# `minires/function.py` now; they map onto what we just wrote:
#
# | Value (this lesson)            | minires                                            |
# |--------------------------------|----------------------------------------------------|
# | `out._backward` closure        | a `Function` subclass: `forward` and `backward`    |
# | `out._prev`                    | `out.creator.inputs`                               |
# | `visit()` (recursive)          | `_topological_order()` (iterative: ResNet-1202 is deep) |
# | `self.grad += ...`             | gradients summed per op, then into `leaf.grad`     |
#
# minires has no tanh, which gives us the chance to add an operation the way every op in
# `minires/ops/` is written: a class with `forward` and `backward` side by side, working on
# raw NumPy arrays.

# %%
class Tanh(Function):
    """y = tanh(x);  dx = dy * (1 - y^2)."""

    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, dy):
        return dy * (1 - self.y ** 2)


def tanh(x):
    return Tanh()(x)


# %% [markdown]
# The same XOR network, from the same *untrained* weights, as four matrix operations on the
# whole batch at once. The loss and every gradient must agree with the `Value` version.

# %%
for p, v in zip(params, initial):  # the Value network back to its untrained weights
    p.data = v
    p.grad = 0.0
value_loss = xor_loss()
value_loss.backward()

f64 = np.float64
W1_t = minires.tensor([[w.data for w in row] for row in W1], requires_grad=True, dtype=f64)
b1_t = minires.tensor([b.data for b in b1], requires_grad=True, dtype=f64)
W2_t = minires.tensor([[w.data for w in W2]], requires_grad=True, dtype=f64)  # (1, hidden)
b2_t = minires.tensor([b2.data], requires_grad=True, dtype=f64)
X_t = minires.tensor(X, dtype=f64)  # (4, 2)
T_t = minires.tensor(T, dtype=f64).reshape(4, 1)

h = tanh(X_t @ W1_t.T + b1_t)  # (4, hidden): b1 (hidden,) broadcasts over the batch
out = tanh(h @ W2_t.T + b2_t)  # (4, 1)
tensor_loss = ((out - T_t) ** 2).mean()
tensor_loss.backward(retain_graph=True)  # keep the graph: we walk it below

print(f"loss: Value {value_loss.data:.10f}   Tensor {tensor_loss.item():.10f}")
assert abs(value_loss.data - tensor_loss.item()) < 1e-12
value_grad_W1 = np.array([[w.grad for w in row] for row in W1])
print("dL/dW1 from Value:\n", value_grad_W1.round(5))
print("dL/dW1 from Tensor:\n", W1_t.grad.round(5))
assert np.allclose(value_grad_W1, W1_t.grad)
assert np.allclose([b.grad for b in b1], b1_t.grad)
assert np.allclose([w.grad for w in W2], W2_t.grad[0])
assert np.isclose(b2.grad, b2_t.grad[0])

# %% [markdown]
# ### The graph of a Tensor computation
#
# Every tensor made by an op remembers that op in `.creator`; each op keeps its inputs. Walking
# from the loss gives the ops in topological order, exactly like `visit()` above; backward runs
# them from the last to the first. (backward normally frees what each op saved for it, so we
# passed `retain_graph=True` above to walk the graph afterwards.)

# %%
from minires.tensor import _topological_order

ops = _topological_order(tensor_loss.creator)
print(" -> ".join(type(fn).__name__ for fn in ops))
assert type(ops[-1]).__name__ == "Mean"  # the loss is made last, so its backward runs first
assert [type(fn).__name__ for fn in ops].count("Tanh") == 2

# %% [markdown]
# ### Broadcasting has a gradient too
#
# `b1_t` has shape `(hidden,)` but was added to a `(4, hidden)` array: numpy copied it to every
# row of the batch. A copy used four times receives four gradients, summed, which is what
# `unbroadcast` in `minires/function.py` does for every binary op.

# %%
pre = X_t @ W1_t.T + b1_t  # (4, hidden)
upstream = np.random.default_rng(0).standard_normal(pre.shape)
b1_t.grad = None
pre.backward(upstream)
print("b1.grad            ", b1_t.grad.round(4))
print("upstream summed    ", upstream.sum(axis=0).round(4))
assert np.allclose(b1_t.grad, upstream.sum(axis=0))

# %% [markdown]
# ## What we have
#
# - Each operation knows only its local derivative; backward multiplies it by the gradient that
#   arrives (the chain rule) and passes the result on.
# - A topological order guarantees that a node's gradient is complete before it is passed on.
# - Gradients *add* where a value is used more than once (and where numpy broadcast it).
# - `minires` does the same per array op: `Function.forward`/`backward` in `minires/ops/`.
#
# How do we know a `backward` is right? We compared with numerical derivatives; lesson 2 turns
# that comparison into a reliable test, and shows how it can fool you.
