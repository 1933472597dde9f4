"""minires/backends/cuda/graph.py's capture path, without a GPU: a stand-in for the few CuPy calls
it makes (Stream, begin_capture, end_capture, Graph.launch, MemoryPool, using_allocator) records
their order. tests/test_cuda_backend.py and test_cli.py check the steps' numbers on the path
that runs without capture; on a GPU, benchmarks/gpu_check.sh runs the real one."""

import contextlib
import types

import numpy as np

from minires import models, nn, optim, tensor
from minires.backends.cuda import graph
from minires.ops.loss import cross_entropy
from minires.train import train_step


def fake_cupy(log):
    """The CuPy names graph.py uses, each call appended to log."""

    class Stream:
        def __init__(self, non_blocking=False):
            assert non_blocking  # capture is not allowed on the legacy default stream
            self.entered = self.capturing = False

        def __enter__(self):
            self.entered = True
            log.append("enter stream")
            return self

        def __exit__(self, *exc):
            assert not self.capturing, "the capture must end inside the with-block"
            self.entered = False
            log.append("exit stream")

        def begin_capture(self):
            assert self.entered, "capture on the stream made current"
            self.capturing = True
            log.append("begin_capture")

        def end_capture(self):
            self.capturing = False
            log.append("end_capture")
            return Graph()

    class Graph:
        def launch(self, stream=None):
            log.append(("launch", stream))

    class MemoryPool:
        def malloc(self, size):
            raise AssertionError("not called by the stand-in")

    @contextlib.contextmanager
    def using_allocator(allocator):
        assert isinstance(allocator.__self__, MemoryPool)  # the graph's own pool
        log.append("own pool")
        yield
        log.append("default pool")

    cuda = types.SimpleNamespace(Stream=Stream, MemoryPool=MemoryPool,
                                 using_allocator=using_allocator,
                                 get_current_stream=lambda: "current stream")
    return types.SimpleNamespace(cuda=cuda)


def test_the_capture_path_calls_cupy_in_the_right_order(monkeypatch):
    log = []
    monkeypatch.setattr(graph, "import_cupy", lambda: fake_cupy(log))
    # Arrays that are not NumPy's, as CuPy's would be (they compute with NumPy here).
    device = types.SimpleNamespace(empty_like=np.empty_like, asarray=np.asarray)
    monkeypatch.setattr(graph, "get_array_module", lambda *arrays: device)
    nn.init.manual_seed(0)
    model = models.resnet_cifar(8)
    sgd = optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 3, 8, 8)).astype(np.float32), rng.integers(0, 10, 2)
    step = graph.GraphedStep(train_step, cross_entropy)
    for _ in range(3):
        step(model, (tensor(x), y), sgd)
    sgd.lr = 0.01
    step(model, (tensor(x), y), sgd)
    capture = ["enter stream", "own pool", "begin_capture", "end_capture", "default pool",
               "exit stream"]
    replay = ("launch", "current stream")  # the current stream: after the copies on it
    assert log == capture + [replay, replay] + capture + [replay]
    assert (step.captures, step.replays) == (2, 3)
