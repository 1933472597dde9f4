"""CUDA graphs: a training step captured once and replayed, without Python's launch overhead.

A ResNet-20 step is a couple of hundred small launches, each costing ~10 us of Python and driver
time before the GPU sees it. CUDA can record a stream's work as a graph (stream capture) and
replay the whole graph with one call; CuPy exposes it as Stream.begin_capture()/end_capture()
and Graph.launch(). `train --cuda-graph` uses GraphedStep below (README, "Running on an NVIDIA
GPU", says what it buys and when it cannot be used; lesson 10 explains launches). Reference: the
CUDA C++ Programming Guide, "CUDA Graphs"; CuPy's cupy.cuda.Stream.begin_capture.
"""

import math

import numpy as np

from ..devices import get_array_module, import_cupy


class GraphedStep:
    """A drop-in for train.train_step(model, batch, optimizer) that replays a CUDA graph.

    The first call runs eager_step (so that everything a step allocates once exists before the
    capture: the optimizer's flat buffers and momentum, gemm's split-K counters, compiled
    kernels). The second captures one step (zero_grad, forward, loss, backward, SGD) reading
    static input and label buffers; from then on each call copies its batch into them and
    replays the graph. A batch of another shape (a last partial batch) runs eagerly; a new
    learning rate, which the graph holds as a kernel argument, is captured afresh, and so are
    parameters or buffers replaced by new arrays (load_state_dict): the graph holds addresses.
    On NumPy arrays (the CPU, the emulator) nothing is captured: "replay" runs the same step
    function on the same static buffers, so the tests run this code path without a GPU.
    """

    def __init__(self, eager_step, loss_function):
        self.eager_step, self.loss_function = eager_step, loss_function
        self.static_x = self.static_y = None  # the buffers the graph reads
        self.graph = None  # a cupy.cuda.Graph, or an _Emulated one
        self.pool = None  # the memory pool the graph's arrays live in (kept as long as it)
        self.captured = None  # the learning rate and arrays the graph holds (_holds)
        self.captures = 0
        self.replays = 0
        self.outputs = None  # (loss, logits) Tensors, rewritten by each replay

    def __call__(self, model, batch, optimizer):
        x, y = batch
        x_data = getattr(x, "data", x)
        if self.static_x is None:  # the warm-up step, eager; then the buffers, made once
            result = self.eager_step(model, batch, optimizer)
            xp = get_array_module(x_data)
            self.static_x = xp.empty_like(x_data)
            self.static_y = xp.empty_like(xp.asarray(y))  # on x's device, even if y is on the host
            return result
        if x_data.shape != self.static_x.shape or np.shape(y) != self.static_y.shape:
            return self.eager_step(model, batch, optimizer)  # a partial batch: not the graph's
        self.static_x[...] = x_data  # copies on the current stream, before the replay on it
        self.static_y[...] = get_array_module(self.static_y).asarray(y)  # host labels: moved
        if self.graph is None or not self._still_holds(model, optimizer):
            self._capture(model, optimizer)
        self._replay()
        loss, logits = self.outputs
        loss_value = float(loss.data)  # the one sync of a step, after the replay
        if not math.isfinite(loss_value):  # unlike train_step, after the update: the graph
            raise FloatingPointError(f"the loss became {loss_value}")  # cannot stop half-way
        return loss_value, logits

    @staticmethod
    def _holds(model, optimizer):
        """The learning rate and the arrays that a captured step reads and writes in place."""
        return optimizer.lr, [p.data for p in optimizer.params] + list(model.buffers())

    def _still_holds(self, model, optimizer):
        """Whether the graph's learning rate and arrays are still the model's and optimizer's."""
        lr, arrays = self._holds(model, optimizer)
        captured_lr, captured_arrays = self.captured
        return lr == captured_lr and len(arrays) == len(captured_arrays) and all(
            a is b for a, b in zip(arrays, captured_arrays))

    def _step_function(self, model, optimizer):
        from ...tensor import Tensor

        def step():
            optimizer.zero_grad()
            logits = model(Tensor(self.static_x))
            loss = self.loss_function(logits, self.static_y)
            loss.backward()
            optimizer.step()
            self.outputs = (loss, logits)

        return step

    def _capture(self, model, optimizer):
        step = self._step_function(model, optimizer)
        self.graph, self.pool = None, None  # drop an old graph before its memory
        self.captured = self._holds(model, optimizer)
        self.captures += 1
        if get_array_module(self.static_x) is np:
            self.graph = _Emulated(step)
            return
        cupy = import_cupy()
        # The graph's arrays come from a pool of their own, used only while capturing: blocks
        # freed during the capture (the activations) go back to it, where nothing outside the
        # graph can take them while the graph still writes them on every replay.
        self.pool = cupy.cuda.MemoryPool()
        stream = cupy.cuda.Stream(non_blocking=True)  # capture needs a stream other than 0
        with stream, cupy.cuda.using_allocator(self.pool.malloc):
            stream.begin_capture()  # relaxed mode: the pool may grow (cudaMalloc) meanwhile
            try:
                step()  # recorded, not run: no sync may happen in here
            finally:
                graph = stream.end_capture()
        self.graph = graph

    def _replay(self):
        """Run the captured step on the current stream (after the copies into the buffers)."""
        self.replays += 1
        if isinstance(self.graph, _Emulated):
            self.graph.launch()
            return
        cupy = import_cupy()
        self.graph.launch(stream=cupy.cuda.get_current_stream())


class _Emulated:
    """What a captured graph is without a GPU: the step itself, run again at each launch."""

    def __init__(self, step):
        self.step = step

    def launch(self, stream=None):
        self.step()
