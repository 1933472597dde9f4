"""The numba backend against the reference backend, through the ops.

conv2d (versions 1 and 2), forward, input gradient and weight gradient, on awkward shapes
(stride 2 and mixed strides, padding 0/1/2, batch 1, 1x1, 3x3 and 5x3 kernels, non-square
images), in float64 (to 1e-12) and float32 (to float32 rounding); batchnorm and ReLU the same
way. Then what is particular to the numba kernels: the register tile for AVX-512 and AVX2, the
vectorizer setting, non-contiguous inputs.
"""

import os
import subprocess
import sys

import llvmlite.binding
import numba
import numpy as np
import pytest

import minires.functional as F
from minires import backends, tensor
from minires.backends.numba import config as numba_config
from minires.backends.numba import conv

CONV_CASES = [
    # (N, C_in, H, W), (C_out, KH, KW), stride, padding
    ((2, 3, 7, 5), (4, 3, 3), (1, 1), (1, 1)),
    ((2, 3, 7, 5), (4, 3, 3), (2, 2), (1, 1)),
    ((1, 3, 6, 7), (5, 3, 3), (1, 1), (0, 0)),
    ((2, 2, 5, 6), (3, 1, 1), (1, 1), (0, 0)),
    ((2, 2, 5, 5), (3, 1, 1), (2, 2), (0, 0)),
    ((1, 2, 5, 5), (3, 1, 1), (1, 1), (1, 1)),  # padding wider than the kernel
    ((1, 3, 6, 5), (2, 5, 3), (1, 1), (2, 2)),
    ((2, 3, 8, 7), (3, 5, 3), (2, 1), (1, 2)),
    ((2, 3, 9, 7), (4, 3, 3), (3, 2), (2, 0)),
    ((1, 4, 6, 9), (2, 2, 4), (1, 3), (1, 2)),
    ((3, 16, 8, 8), (32, 3, 3), (2, 2), (1, 1)),  # the network's downsampling conv
    ((2, 8, 9, 9), (8, 3, 3), (1, 1), (1, 1)),  # and its stride-1 conv, odd size
]


def run_op(backend, op, inputs, dy):
    """op's output and the gradient of sum(op * dy) for each input, on backend."""
    tensors = [tensor(x, requires_grad=True) for x in inputs]
    with backends.using(backend):
        y = op(*tensors)
        y.backward(dy)
    return [y.data] + [t.grad for t in tensors]


def tolerance(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)


def assert_same_as_reference(backend, op, inputs, dy):
    dtype = inputs[0].dtype
    expected = run_op("reference", op, inputs, dy)
    for got, ref in zip(run_op(backend, op, inputs, dy), expected):
        assert got.shape == ref.shape and got.dtype == dtype
        np.testing.assert_allclose(got, ref, **tolerance(dtype))


@pytest.mark.parametrize("version", ["numba", "numba-v1"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONV_CASES)
def test_conv2d_matches_the_reference(version, x_shape, w_shape, stride, padding, dtype):
    rng = np.random.default_rng(0)
    C_out, KH, KW = w_shape
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((C_out, x_shape[1], KH, KW)).astype(dtype)
    b = rng.standard_normal(C_out).astype(dtype)

    def conv(x, w, b):
        return F.conv2d(x, w, b, stride=stride, padding=padding)

    dy = rng.standard_normal(conv(x, w, b).shape).astype(dtype)
    assert_same_as_reference(version, conv, [x, w, b], dy)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_the_reference(dtype, training):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 5, 4, 6)) * 2 + 1000).astype(dtype)  # far-off mean: no cancelling
    gamma, beta = rng.standard_normal(5).astype(dtype), rng.standard_normal(5).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    results, stats = {}, {}
    for name in ("reference", "numba"):  # each from the same running statistics, updated
        stats[name] = [np.full(5, 999.0, dtype), np.full(5, 3.0, dtype)]

        def norm(x, gamma, beta):
            return F.batch_norm(x, *stats[name], gamma, beta, training=training)

        results[name] = run_op(name, norm, [x, gamma, beta], dy)
    for got, ref in zip(results["numba"] + stats["numba"],
                        results["reference"] + stats["reference"]):
        assert got.shape == ref.shape and got.dtype == dtype
        np.testing.assert_allclose(got, ref, **tolerance(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_matches_the_reference(dtype):
    x = np.array([[-2.0, -0.0, 0.0, 3.0, np.nan, np.inf, -np.inf]], dtype=dtype)
    with backends.using("numba"):
        y = F.relu(tensor(x)).data
    np.testing.assert_array_equal(y, np.maximum(x, 0))  # NaN passes through, as in NumPy
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    assert_same_as_reference("numba", F.relu, [x], rng.standard_normal(x.shape).astype(dtype))


def test_conv2d_skips_the_input_gradient_nobody_wants(monkeypatch):
    """The network's first conv reads the images, which want no gradient: none is computed."""
    def fail(*args):
        raise AssertionError("conv2d computed an input gradient that nobody wants")

    monkeypatch.setattr(conv, "conv2d_input_grad", fail)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 5))
    w = tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    with backends.using("numba"):
        F.conv2d(tensor(x), w, padding=1).sum().backward()
    w_reference = tensor(w.data, requires_grad=True)
    with backends.using("reference"):
        F.conv2d(tensor(x), w_reference, padding=1).sum().backward()
    np.testing.assert_allclose(w.grad, w_reference.grad, rtol=1e-12)


def test_conv2d_keeps_no_columns():
    """The numba convolution saves its input for backward, not the (KH*KW times larger) columns."""
    x = np.ones((2, 3, 6, 6))
    with backends.using("numba"):
        y = F.conv2d(tensor(x, requires_grad=True), np.ones((4, 3, 3, 3)), padding=1)
    assert y.creator.saved[0] is x or y.creator.saved[0].shape == x.shape


def test_tile_rows_follow_the_vector_registers():
    """16 rows where numba compiles AVX-512 code (32 vector registers), 4 where it compiles AVX2,
    unless MINIRES_TILE_ROWS says otherwise (4 or 16, nothing else)."""
    features = numba.core.config.CPU_FEATURES or llvmlite.binding.get_host_cpu_features().flatten()
    native = 16 if "+avx512f" in features.split(",") else 4
    assert numba_config.tile_rows({}) == native
    assert numba_config.TILE_ROWS == int(os.environ.get("MINIRES_TILE_ROWS", native))
    assert numba_config.tile_rows({"MINIRES_TILE_ROWS": "16"}) == 16
    assert numba_config.tile_rows({"MINIRES_TILE_ROWS": "4"}) == 4
    with pytest.raises(ValueError, match="MINIRES_TILE_ROWS must be 4 or 16.*'8'"):
        numba_config.tile_rows({"MINIRES_TILE_ROWS": "8"})


def test_avx512_hosts_ask_numba_for_512_bit_vectors():
    """The host's features less LLVM's prefer-256-bit on an AVX-512 CPU; nothing on an AVX2 one,
    or where the user has chosen a CPU or its features."""
    skylake = "+avx,+avx2,+fma,+avx512f,+avx512vl"
    assert (numba_config.features_for_512_bit_vectors(skylake, {})
            == "+avx,+avx2,+fma,+avx512f,+avx512vl,-prefer-256-bit")
    assert numba_config.features_for_512_bit_vectors(AVX2, {}) is None
    for chosen in ({"NUMBA_CPU_FEATURES": skylake}, {"NUMBA_CPU_NAME": "skylake-avx512"}):
        assert numba_config.features_for_512_bit_vectors(skylake, chosen) is None


# Compiled (never run) in a fresh process for the CPU it names: conv_tile's FMAs by register.
COMPILE_CONV_TILE = r"""
import re
import numba
from minires.backends.numba import config, tile
assert config.TILE_ROWS == 16
f32, i64 = numba.float32, numba.int64
signature = (f32[::1], i64[::1], i64, f32[:, ::1], f32[:, ::1])
with config.vectorized():
    tile.conv_tile.compile(signature)
asm = tile.conv_tile.inspect_asm(signature)
lines = asm.splitlines()
fmas = [i for i, line in enumerate(lines) if re.search(r"vfmadd\w+ps", line)]
widths = [re.search(r"%([xyz])mm\d+$", lines[i]).group(1) for i in fmas]
# The loop over taps: from its first FMA to its last; a vector register to or from the stack
# there is a spill.
spills = [line for line in lines[fmas[0]:fmas[-1] + 1] if "(%rsp)" in line and "mm" in line]
print("zmm", widths.count("z"), "ymm", widths.count("y"), "spills", len(spills))
"""


@pytest.mark.skipif(not llvmlite.binding.get_process_triple().startswith("x86_64"),
                    reason="x86-64 code only")
def test_intel_avx512_cpus_get_the_tile_in_512_bit_vectors(tmp_path):
    """For Skylake-X (LLVM's prefer-256-bit), compiled but not run: by default each of the
    tile's 16 rows is two 256-bit halves, 32 FMAs a tap with spills; with the features that
    ask_for_512_bit_vectors sets, one 512-bit FMA per row and nothing spilled."""
    skylake = "+avx,+avx2,+fma,+f16c,+bmi,+bmi2,+avx512f,+avx512vl,+avx512bw,+avx512dq,+avx512cd"

    def compile_for(features):
        env = dict(os.environ, NUMBA_CPU_NAME="skylake-avx512", NUMBA_CPU_FEATURES=features,
                   NUMBA_CACHE_DIR=str(tmp_path))
        run = subprocess.run([sys.executable, "-c", COMPILE_CONV_TILE], env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        return run.stdout.split()

    assert compile_for(numba_config.features_for_512_bit_vectors(skylake, {})) == [
        "zmm", "16", "ymm", "0", "spills", "0"]
    _, zmm, _, ymm, _, spills = compile_for(skylake)
    assert (zmm, ymm) == ("0", "32") and int(spills) > 0


# What numba compiles for a Haswell CPU: AVX2 and FMA, no AVX-512.
AVX2 = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fsgsbase,+lzcnt,+mmx,+movbe,+pclmul,"
        "+popcnt,+rdrnd,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,+sahf,-avx512f")


def run_tests_in_a_fresh_process(test_file, selection, tmp_path, **environ):
    """Run the tests of test_file that `-k selection` picks in a new process, with environ added
    to this one's and numba's cache in tmp_path; some must run, and all pass."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), **environ)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(test_file), "-k", selection],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout


@pytest.mark.skipif(numba_config.TILE_ROWS != 16,
                    reason="the tests above already run the 4-row AVX2 tile here")
def test_convolutions_with_the_avx2_tile(tmp_path):
    """On an AVX-512 machine the tests above check the 16-row tile; here the 4-row tile that an
    AVX2 machine gets, compiled for Haswell in a fresh process, passes the same tests."""
    run_tests_in_a_fresh_process(__file__, "conv2d_matches or tile_rows or non_contiguous",
                                 tmp_path, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=AVX2)


@pytest.mark.skipif(numba_config.TILE_ROWS == 16,
                    reason="the tests above already run the 16-row AVX-512 tile here")
def test_convolutions_with_the_16_row_tile(tmp_path):
    """Here the tests above run the 4-row tile; in a fresh process, the 16-row tile that an
    AVX-512 machine gets passes them too (in AVX2 code its accumulators spill: slow, but the
    same sums). float32 only, on conv.py; test_winograd.py runs Winograd's kernels with it."""
    run_tests_in_a_fresh_process(__file__, "conv2d_matches and float32 and not v1 or tile_rows",
                                 tmp_path, MINIRES_TILE_ROWS="16")


SPLIT_WITH_THIS_TILE = """
import numpy as np
from minires.backends.numba import config, conv
x = np.arange(1, 81, dtype=np.float32).reshape(5, 4, 4)  # 5 channels: 2 blocks of 4, 1 of 16
phases = np.zeros((2, 1, 36, 16), np.float32)  # room for either tile's layout
conv._split_image_channels_last(x, 1, 1, 1, 1, 6, phases)
expected = np.zeros((5, 1, 36), np.float32)
conv.split_image(x, 1, 1, 1, 1, 6, expected)
rows = config.TILE_ROWS
assert all(np.array_equal(phases[c // rows, ..., c % rows], expected[c]) for c in range(5)), rows
"""


def test_a_kernel_cached_with_one_tile_never_runs_with_the_other(tmp_path):
    """numba keys its cached kernels on types and CPU, not on TILE_ROWS: a kernel cached by a
    process with this CPU's tile, loaded by one with MINIRES_TILE_ROWS set to the other, would
    put channels where the other tile's code never looks. Such a process compiles its own."""
    env = {k: v for k, v in os.environ.items() if k != "MINIRES_TILE_ROWS"}
    env["NUMBA_CACHE_DIR"] = str(tmp_path)
    other = "4" if numba_config.tile_rows({}) == 16 else "16"
    for overrides in [{}, {"MINIRES_TILE_ROWS": other}]:
        run = subprocess.run([sys.executable, "-c", SPLIT_WITH_THIS_TILE],
                             env=dict(env, **overrides), capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, (overrides, run.stderr[-3000:])
        assert list(tmp_path.rglob("*.nbi")), "the first process cached nothing"


def test_ops_take_non_contiguous_inputs():
    """Views (here transposed ones) go through the kernels as the same values, copied or not."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3, 6, 4)).transpose(0, 1, 3, 2)  # (5, 3, 4, 6), not C-ordered
    w = rng.standard_normal((2, 3, 3, 3))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    for op in [F.relu, lambda t: F.conv2d(t, w, padding=1),
               lambda t: F.batch_norm(t, None, None, gamma, beta, training=True)]:
        view, copy = tensor(x, requires_grad=True), tensor(x.copy(), requires_grad=True)
        y_view, y_copy = op(view), op(copy)
        np.testing.assert_allclose(y_view.data, y_copy.data, rtol=1e-12, atol=1e-12)
        dy = rng.standard_normal(y_view.shape).T.copy().T  # a non-C-ordered gradient too
        y_view.backward(dy)
        y_copy.backward(dy)
        np.testing.assert_allclose(view.grad, copy.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_arrays_stay_in_the_process(monkeypatch):
    """The numba backend raises glibc's mmap and trim thresholds when it starts
    (backends/memory.py), unless MINIRES_KEEP_MEMORY=0."""
    from minires.backends import memory

    assert memory.keep_freed_memory()
    monkeypatch.setenv("MINIRES_KEEP_MEMORY", "0")
    assert not memory.keep_freed_memory()


def test_the_vectorizer_setting_is_restored_after_concurrent_calls():
    """Convolutions in several threads at once: numba's SLP setting is back as it was after."""
    import threading

    before = (os.environ.get("NUMBA_SLP_VECTORIZE"), numba.core.config.SLP_VECTORIZE)
    x, w = np.ones((2, 3, 6, 6), np.float32), np.ones((4, 3, 3, 3), np.float32)
    threads = [threading.Thread(target=conv.conv2d, args=(x, w, (1, 1), (1, 1)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (os.environ.get("NUMBA_SLP_VECTORIZE"), numba.core.config.SLP_VECTORIZE) == before


def test_compiled_kernels_from_other_sources_are_dropped(tmp_path):
    """numba's cache keys a kernel on its own file only, so a kernel that compiles in tile.py's
    functions would outlive an edit to tile.py: the backend's cache folder carries a fingerprint
    of all its sources, and kernels cached under another fingerprint (or none) are deleted."""
    cached = [tmp_path / "conv._conv-104.py311.nbi", tmp_path / "conv._conv-104.py311.1.nbc"]
    other = tmp_path / "conv.cpython-311.pyc"
    for path in [*cached, other]:
        path.write_bytes(b"compiled")
    assert numba_config.drop_stale_compiled_kernels(tmp_path)  # no fingerprint: stale
    assert not any(path.exists() for path in cached) and other.exists()
    for path in cached:
        path.write_bytes(b"compiled")  # compiled again, from these sources
    assert not numba_config.drop_stale_compiled_kernels(tmp_path)
    assert all(path.exists() for path in cached)
    stamp = tmp_path / "minires-sources.sha256"
    stamp.write_text(stamp.read_text()[::-1])  # a source file changed since
    assert numba_config.drop_stale_compiled_kernels(tmp_path)
    assert not any(path.exists() for path in cached)


def test_the_backend_keeps_the_fingerprint_beside_its_compiled_kernels():
    from minires.backends.numba import conv

    backends.backend("numba")
    cache_folder = conv._conv._cache.cache_path
    assert not numba_config.drop_stale_compiled_kernels(cache_folder)  # already checked
