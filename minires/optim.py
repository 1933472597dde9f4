"""Stochastic gradient descent with momentum, and the learning-rate schedules (lesson 9).

SGD follows torch.optim.SGD exactly, so a run here and a run in PyTorch take the same steps.
The CIFAR recipe of He et al. 2015 (sec. 4.2): batch 128, lr 0.1 divided by 10 at 32k and 48k
iterations, stop at 64k; momentum 0.9, weight decay 1e-4; for ResNet-110 a warm-up at 0.01
until the training error falls below 80%. Schedules count iterations (mini-batches), not epochs.
"""

import math

import numpy as np

from .backends import get_array_module, get_backend, to_device


class SGD:
    """w -= lr * update, per parameter, with PyTorch's rule (dampening 0):

        g   = grad + weight_decay * w           (L2 weight decay, added to the gradient)
        buf = g                                 on the first step
        buf = momentum * buf + g                on later steps
        update = g + momentum * buf  if nesterov  else  buf

    The update works on the raw arrays (NumPy or CuPy), so it builds no graph.
    Parameters without a gradient (grad None) are skipped and keep their momentum.

    A backend with an `sgd_step` kernel (the CUDA backend) updates all parameters in one launch:
    the weights and momentum buffers become views of one flat array each (`flat_step`), and
    the gradients are gathered into a third. The loop in `step` is the specification.
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=1e-4, nesterov=False):
        self.params = list(params)
        if not self.params:
            raise ValueError("SGD: the parameter list is empty (did you pass model.parameters() "
                             "of a model without parameters, or an exhausted generator?)")
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum and weight_decay must be >= 0, got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.nesterov = nesterov
        self.momentum_buffers = [None] * len(self.params)  # made on each parameter's first step
        self._flat_w = self._flat_buf = None  # flat_step's buffers, made on its first step
        self._w_views = self._buf_views = []  # the views of them that flat_step handed out

    def zero_grad(self):
        """Forget the gradients (grad = None), before the next backward adds new ones."""
        for param in self.params:
            param.grad = None

    def step(self):
        """Update every parameter that has a gradient, in place."""
        if self._can_flat_step():
            self.flat_step()
            return
        for i, param in enumerate(self.params):
            if param.grad is None:
                continue
            g = param.grad
            if self.weight_decay != 0:
                g = g + self.weight_decay * param.data
            if self.momentum != 0:
                buf = self.momentum_buffers[i]
                if buf is None:
                    buf = self.momentum_buffers[i] = g.copy()
                else:
                    buf *= self.momentum
                    buf += g
                g = g + self.momentum * buf if self.nesterov else buf
            param.data -= self.lr * g

    def _can_flat_step(self):
        """One launch for all: every parameter float32 with a gradient, all on a backend that
        has the kernel, and the momentum buffers all made or none."""
        arrays = [p.data for p in self.params] + [p.grad for p in self.params]
        if any(a is None or a.dtype != np.float32 for a in arrays):
            return False
        made = sum(buf is not None for buf in self.momentum_buffers)
        backend = get_backend(*arrays)
        return hasattr(backend, "sgd_step") and made in (0, len(self.params))

    def flat_step(self):
        """step() in one kernel launch over flat buffers: w, gradient and momentum laid end to
        end, the parameters' .data and the momentum buffers views into them."""
        xp = get_array_module(self.params[0].data)
        if self._flat_w is None or any(p.data is not v for p, v in zip(self.params, self._w_views)):
            # The first step, or someone replaced a .data (module.to, load_state_dict)
            self._flat_w = xp.concatenate([p.data.reshape(-1) for p in self.params])  # (total,)
            self._w_views = self._views(self._flat_w)
            for param, view in zip(self.params, self._w_views):
                param.data = view
        first_step = self.momentum_buffers[0] is None
        if first_step:
            self._flat_buf = xp.empty_like(self._flat_w)  # not read on the first step
        elif any(b is not v for b, v in zip(self.momentum_buffers, self._buf_views)):
            self._flat_buf = xp.concatenate([b.reshape(-1) for b in self.momentum_buffers])
        grad = xp.concatenate([p.grad.reshape(-1) for p in self.params])  # (total,)
        get_backend(self._flat_w).sgd_step(self._flat_w, grad, self._flat_buf, self.lr,
                                           self.momentum, self.weight_decay, self.nesterov,
                                           first_step)
        self._buf_views = self._views(self._flat_buf)
        if self.momentum != 0:
            self.momentum_buffers = list(self._buf_views)

    def _views(self, flat):
        """Each parameter's piece of a flat buffer, in its shape."""
        views, offset = [], 0
        for param in self.params:
            views.append(flat[offset:offset + param.data.size].reshape(param.data.shape))
            offset += param.data.size
        return views

    def state_dict(self):
        """Settings and the momentum buffers ("momentum_buffer.<index in params>") as NumPy
        copies: a flat dict that np.savez and pickle store as it is."""
        state = {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                 "nesterov": self.nesterov}
        for i, buf in enumerate(self.momentum_buffers):
            if buf is not None:
                state[f"momentum_buffer.{i}"] = np.array(to_device(buf, "cpu"))
        return state

    def load_state_dict(self, state):
        """Restore what state_dict saved; buffers go to each parameter's device and dtype."""
        buffers = [None] * len(self.params)
        for key, value in state.items():
            if not key.startswith("momentum_buffer."):
                continue
            i = int(key[len("momentum_buffer."):])
            if not 0 <= i < len(self.params):
                raise ValueError(f"SGD.load_state_dict: {key} names no parameter; this "
                                 f"optimizer has {len(self.params)}")
            param = self.params[i]
            if np.shape(value) != param.shape:
                raise ValueError(f"SGD.load_state_dict: {key} has shape {np.shape(value)}, "
                                 f"parameter {i} has shape {param.shape}")
            buffers[i] = to_device(np.asarray(value, dtype=param.dtype), param.device)
        self.lr, self.momentum = float(state["lr"]), float(state["momentum"])
        self.weight_decay, self.nesterov = float(state["weight_decay"]), bool(state["nesterov"])
        self.momentum_buffers = buffers


class Schedule:
    """A learning rate per iteration: `lr(iteration, train_error)` before each step, or
    `apply(optimizer, iteration, train_error)` to set it on the optimizer too."""

    iteration = 0  # the last iteration asked for: where a resumed run continues

    def lr(self, iteration, train_error=None):
        """The learning rate for this iteration. train_error (the recent training error, a
        fraction) matters only to schedules that react to it; the others ignore it."""
        raise NotImplementedError

    def apply(self, optimizer, iteration, train_error=None):
        """Set optimizer.lr for this iteration and return it."""
        optimizer.lr = self.lr(iteration, train_error)
        return optimizer.lr

    def state_dict(self):
        return {"iteration": self.iteration}

    def load_state_dict(self, state):
        self.iteration = int(state["iteration"])


class PaperSchedule(Schedule):
    """He et al. 2015 sec. 4.2: base_lr, multiplied by gamma at each milestone; the paper stops
    at total_iters. With warmup_lr set (ResNet-110: 0.01), the rate is warmup_lr until lr() is
    given a train_error below warmup_until_error (0.8: 80%), then base_lr's schedule."""

    def __init__(self, base_lr=0.1, milestones=(32000, 48000), gamma=0.1, total_iters=64000,
                 warmup_lr=None, warmup_until_error=0.8):
        self.base_lr, self.milestones, self.gamma = base_lr, tuple(milestones), gamma
        self.total_iters = total_iters
        self.warmup_lr, self.warmup_until_error = warmup_lr, warmup_until_error
        self.warming_up = warmup_lr is not None

    def lr(self, iteration, train_error=None):
        self.iteration = iteration
        # The warm-up ends for good the first time the error is low enough: the paper goes
        # "back to 0.1" once, it does not switch back and forth.
        if self.warming_up and train_error is not None and train_error < self.warmup_until_error:
            self.warming_up = False
        if self.warming_up:
            return self.warmup_lr
        passed = sum(iteration >= milestone for milestone in self.milestones)
        return self.base_lr * self.gamma ** passed

    def state_dict(self):
        return {"iteration": self.iteration, "warming_up": self.warming_up}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.warming_up = bool(state["warming_up"])


class CosineSchedule(Schedule):
    """Linear warm-up to base_lr over warmup_iters, then half a cosine from base_lr down to 0 at
    total_iters (Loshchilov & Hutter 2017, SGDR, without restarts): a common modern alternative
    to the paper's steps."""

    def __init__(self, base_lr, total_iters, warmup_iters=0):
        if not 0 <= warmup_iters < total_iters:
            raise ValueError(f"CosineSchedule: need 0 <= warmup_iters < total_iters, got "
                             f"warmup_iters={warmup_iters}, total_iters={total_iters}")
        self.base_lr, self.total_iters, self.warmup_iters = base_lr, total_iters, warmup_iters

    def lr(self, iteration, train_error=None):
        self.iteration = iteration
        if iteration < self.warmup_iters:
            return self.base_lr * (iteration + 1) / self.warmup_iters  # never 0, base_lr at the end
        progress = (iteration - self.warmup_iters) / (self.total_iters - self.warmup_iters)
        return 0.5 * self.base_lr * (1 + math.cos(math.pi * min(progress, 1.0)))
