"""How the numba kernels are compiled: the options, and the register tile's size for this CPU.

numba compiles a kernel on its first call, and caches the machine code on disk for the next run
(CACHE below; a ResNet-20's kernels take about 50 s to compile on 2 cores). fastmath stays off
but for FMA contraction in the convolutions' inner loops: every sum is computed in the order
written, in IEEE arithmetic; the orders differ from BLAS's, so float32 results agree with the
reference backend to rounding, not bit for bit.
This module is imported when the numba backend is first used, and reads the CPU's features then.
"""

import contextlib
import hashlib
import os
import threading
from pathlib import Path

import llvmlite.binding
import numba


def features_for_512_bit_vectors(host_features, environ):
    """What NUMBA_CPU_FEATURES to set on a CPU with host_features (LLVM's "+avx2,+avx512f,..."),
    or None to leave numba's choice alone. LLVM gives Intel's AVX-512 CPUs (Skylake-X to
    Sapphire Rapids) 256-bit vectors ("prefer-256-bit": their 512-bit instructions once lowered
    the clock). The register tile below then needs 32 registers for its 16 x 16 sums, all there
    are, and spills; AMD's Zen 4 and 5 get 512 bits already. The host's own features less that
    preference give 512-bit vectors wherever AVX-512 exists. A NUMBA_CPU_NAME or
    NUMBA_CPU_FEATURES of the user's stays as it is."""
    if "NUMBA_CPU_NAME" in environ or "NUMBA_CPU_FEATURES" in environ:
        return None
    if "+avx512f" not in host_features.split(","):
        return None
    return host_features + ",-prefer-256-bit"


def ask_for_512_bit_vectors():
    """Set NUMBA_CPU_FEATURES as features_for_512_bit_vectors says. numba reads it once, when
    the first @numba.njit function of the process is defined (any package's), so this runs at
    import, before this backend's kernels are; after another package's kernels it changes
    nothing (the kernels then run as before, with 256-bit vectors on Intel). The setting is the
    process's, like any NUMBA_ variable: other numba code compiled in it may get 512-bit vectors
    too, and child processes inherit it. Each lane's sums are the same at either width."""
    features = features_for_512_bit_vectors(
        llvmlite.binding.get_host_cpu_features().flatten(), os.environ)
    if features is not None:
        os.environ["NUMBA_CPU_FEATURES"] = features
        numba.core.config.CPU_FEATURES = features


ask_for_512_bit_vectors()


def compiles_for_avx512():
    """Whether numba generates AVX-512 code here: for this CPU, or what NUMBA_CPU_FEATURES says."""
    features = numba.core.config.CPU_FEATURES
    if features is None:
        features = llvmlite.binding.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


# The register tile (tile.py) holds TILE_ROWS x TILE_COLS outputs. TILE_COLS = 16 float32s fill
# one AVX-512 register, and 16 rows take 16 of its 32 registers; AVX2 has 16 registers of 8
# float32s, so there a tile has 4 rows (8 registers) and the rest hold the operands (16 rows
# would not fit: 10x slower).
TILE_COLS = 16


def tile_rows(environ):
    """16 where numba compiles AVX-512 code, else 4; MINIRES_TILE_ROWS (4 or 16) overrides it,
    so the tests run each tile's code on either kind of machine (a 16-row tile on AVX2 spills,
    slowly but correctly)."""
    chosen = environ.get("MINIRES_TILE_ROWS")
    if chosen is None:
        return 16 if compiles_for_avx512() else 4
    if chosen not in ("4", "16"):
        raise ValueError(f"MINIRES_TILE_ROWS must be 4 or 16 (the tiles tile.py spells out), "
                         f"got {chosen!r}")
    return int(chosen)


TILE_ROWS = tile_rows(os.environ)

# numba keys a cached kernel on its argument types and the CPU it was compiled for, not on the
# globals compiled into it: a kernel cached with one tile, loaded in a process with the other,
# would index its arrays with the wrong TILE_ROWS (wrong sums, or writes past their ends). So
# with MINIRES_TILE_ROWS overriding this CPU's tile, the kernels are compiled afresh in each
# process and never cached.
CACHE = TILE_ROWS == tile_rows({})

PARALLEL = dict(parallel=True, cache=CACHE, nogil=True)  # loops over images or channels: prange
SERIAL = dict(cache=CACHE, nogil=True)
# The convolution's inner loop may fuse each multiply and add into one FMA instruction (one
# rounding instead of two; no sum is reordered): twice the arithmetic per instruction.
FMA = dict(SERIAL, fastmath={"contract"})
# Two ways to compile a small function into its callers. INLINE: numba copies its code into each
# call site before typing it, which the register tile needs (its rows' multiply-adds left to
# LLVM's inliner, the weight gradients ran 3-4x slower). LLVM_INLINE: numba compiles it once and
# LLVM inlines the machine code where it is called; for the one-row loads, stores, sums and
# differences that Winograd's transforms call in hundreds of places, the same code in a fifth of
# the time (compiling the transforms of one dtype: 67 s -> 12 s).
INLINE = dict(inline="always", fastmath={"contract"})  # pieces of the tile, compiled into it
LLVM_INLINE = dict(fastmath={"contract"})


def round_up(n, multiple):
    return -(-n // multiple) * multiple


# numba leaves LLVM's SLP vectorizer off by default since it once miscompiled some code
# (numba#8852, LLVM 14), so only the tile kernels are compiled with it on, and the tests check
# them against the reference backend, with either tile.
_vectorizing = threading.Lock()
_vectorizing_calls = 0  # calls inside vectorized(), in any thread
_saved_setting = None  # NUMBA_SLP_VECTORIZE as it was before the first of them
_saved_config = None  # and numba's config.SLP_VECTORIZE


@contextlib.contextmanager
def vectorized():
    """Whatever numba compiles in this block gets LLVM's SLP vectorizer. numba rereads its
    settings (config.SLP_VECTORIZE among them) from the environment when it compiles. The
    setting is the process's: the first call in sets it, the last one out restores it. The
    block runs on every call of a kernel, compiled or not, so it only sets and restores two
    values (numba's reload_config() here cost 75 us a call: a quarter of lesson 8's step)."""
    global _vectorizing_calls, _saved_setting, _saved_config
    with _vectorizing:
        if _vectorizing_calls == 0:
            _saved_setting = os.environ.get("NUMBA_SLP_VECTORIZE")
            _saved_config = numba.core.config.SLP_VECTORIZE
            os.environ["NUMBA_SLP_VECTORIZE"] = "1"
            numba.core.config.SLP_VECTORIZE = 1
        _vectorizing_calls += 1
    try:
        yield
    finally:
        with _vectorizing:
            _vectorizing_calls -= 1
            if _vectorizing_calls == 0:
                if _saved_setting is None:
                    del os.environ["NUMBA_SLP_VECTORIZE"]
                else:
                    os.environ["NUMBA_SLP_VECTORIZE"] = _saved_setting
                numba.core.config.SLP_VECTORIZE = _saved_config


def drop_stale_compiled_kernels(cache_folder):
    """Delete the compiled kernels in cache_folder (where numba keeps this package's) unless they
    were compiled from the package's present sources; True if it deleted them. numba keys each
    kernel's cached machine code on the timestamp of its own file only, but a kernel compiles in
    the functions it calls from other files: after an edit to tile.py, conv.py's kernels would
    still run the old tile from the cache. So the folder also holds a fingerprint of every
    source file here, and a different one means compiling every kernel afresh (about a minute)."""
    sources = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        sources.update(path.name.encode() + b"\0" + path.read_bytes())
    cache_folder = Path(cache_folder)
    stamp = cache_folder / "minires-sources.sha256"
    try:
        if stamp.read_text() == sources.hexdigest():
            return False
    except OSError:
        pass  # no stamp yet: whatever is cached may be stale
    for path in [*cache_folder.glob("*.nbi"), *cache_folder.glob("*.nbc")]:
        path.unlink(missing_ok=True)
    try:
        cache_folder.mkdir(parents=True, exist_ok=True)
        stamp.write_text(sources.hexdigest())
    except OSError:
        pass  # a read-only install: numba then caches elsewhere, or not at all
    return True
