"""Function: one differentiable operation, with its forward and its backward side by side.

Calling a Function runs forward on raw arrays and, when gradients are wanted, links the result
into the graph (result.creator = the function, function.inputs = its input tensors) so that
Tensor.backward can walk it in reverse. Lesson 1 builds the same idea for scalars first.
"""

import contextlib

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Run without building a graph (evaluation, optimizer steps, numerical gradients)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    return _grad_enabled


def unbroadcast(grad, shape):
    """Sum grad down to shape: the gradient of numpy broadcasting (a broadcast copy is a sum)."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


class Function:
    """Base class of every op: subclasses define forward(*arrays) and backward(dy).

    forward gets the inputs' arrays (None stays None) and returns one array; backward gets the
    output's gradient and returns one gradient per input (None where no gradient flows).
    Non-tensor settings (stride, axis, ...) go to __init__.
    """

    inputs = None  # the input tensors, linked by __call__ when a graph is built
    released = False  # set by release(): what backward needed is gone

    def __call__(self, *inputs):
        from .tensor import Tensor, as_tensor

        inputs = [None if x is None else as_tensor(x) for x in inputs]
        present = [x for x in inputs if x is not None]
        devices = {x.device for x in present}
        if len(devices) > 1:
            shown = ", ".join(f"{x.shape} on {x.device}" for x in present)
            raise RuntimeError(
                f"{type(self).__name__}: inputs are on different devices ({shown}); "
                "move them with .to('cpu') or .to('gpu') first"
            )
        y = self.forward(*[None if x is None else x.data for x in inputs])
        requires_grad = _grad_enabled and any(x.requires_grad for x in present)
        out = Tensor(y, requires_grad=requires_grad)
        if requires_grad:
            self.inputs = inputs
            out.creator = self
        else:
            self.release()  # without a graph nothing will call backward
        return out

    def needs_input_grad(self, i):
        """Whether input i wants a gradient (always, for an op whose forward and backward are
        called by hand, as the exercises do), so that backward can skip work nobody uses."""
        return self.inputs is None or (self.inputs[i] is not None and self.inputs[i].requires_grad)

    def release(self):
        """Drop everything forward saved (and the links to the inputs): the arrays are freed, and
        the op can no longer run backward. Tensor.backward calls it on each op it is done with."""
        vars(self).clear()
        self.released = True

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__}>"
