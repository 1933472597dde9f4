"""The fast backend trains as the reference does: benchmarks/bench_accuracy.py, run small.

150 steps of ResNet-8 at batch 8 from the same weights on the same batches, under the reference
in float64 (the exact curve), the reference in float32 and the numba backend in float32: the
numba curve must stay as close to the exact one as float32's own rounding keeps the reference
(issue 16: "the same loss curve within float32 noise"). The benchmark's full size is ResNet-20 at
batch 32; here it is shrunk to fit the suite. And the check is not vacuous: over the first 20
steps, convolution weight gradients 0.1% too large fail it and the right ones pass. (Over all 150
steps that error stayed inside the band for 2 of 3 seeds: by then every float32 curve, training
being chaotic, is about as far from the exact one as the others.)
"""

import importlib.util
import pathlib

import numpy as np

from minires import backends

PATH = pathlib.Path(__file__).parents[1] / "benchmarks" / "bench_accuracy.py"
spec = importlib.util.spec_from_file_location("bench_accuracy", PATH)
bench_accuracy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_accuracy)


def curves(steps):
    return [bench_accuracy.loss_curve(backend, dtype, depth=8, batch=8, steps=steps)
            for backend, dtype in [("reference", np.float64), ("reference", np.float32),
                                   ("numba", np.float32)]]


def test_150_steps_of_numba_stay_within_float32_noise_of_the_reference():
    exact, reference32, fast32 = curves(150)
    assert len(fast32) == 150 and np.isfinite(fast32).all()
    assert exact[-30:].mean() < exact[:30].mean() - 0.2  # it learns: the curve is not flat
    assert bench_accuracy.within_float32_noise(exact, reference32, fast32)


def test_a_slightly_wrong_backward_leaves_the_band(monkeypatch):
    exact, reference32, right32 = curves(20)
    assert bench_accuracy.within_float32_noise(exact, reference32, right32)
    numba = backends.backend("numba")
    conv2d_backward = type(numba).conv2d_backward

    def slightly_wrong(*args, **options):
        dx, dw, db = conv2d_backward(numba, *args, **options)
        return dx, dw * np.float32(1.001), db

    monkeypatch.setattr(numba, "conv2d_backward", slightly_wrong)
    wrong32 = bench_accuracy.loss_curve("numba", np.float32, depth=8, batch=8, steps=20)
    assert not bench_accuracy.within_float32_noise(exact, reference32, wrong32)
