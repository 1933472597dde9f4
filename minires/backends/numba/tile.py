"""The register tile: the micro-kernel that both GEMMs of the tiled convolution run on.

What it computes (the reference loop, for TILE_ROWS x TILE_COLS outputs; weight_grad_tile and
gemm_tile, the same with other layouts of the two operands, conv_tile and gemm_tile with
out = instead of +=):
    for k in range(K):  for i in range(TILE_ROWS):  for j in range(TILE_COLS):
        out[i, j] += rows[k, i] * cols[k, j]
It holds the whole tile in registers for the sum over k: each step adds the outer product of
TILE_ROWS numbers and TILE_COLS numbers, so TILE_ROWS + 1 loads feed TILE_ROWS * TILE_COLS
multiply-adds (BLAS's micro-kernels work the same way). A tile is a tuple of rows, each a tuple
of TILE_COLS numbers; tuples are values, which LLVM keeps in registers, and its SLP vectorizer
turns each row's operations into vector instructions (config.vectorized()).
"""

import numba

from .config import FMA, INLINE, LLVM_INLINE, TILE_COLS, TILE_ROWS

assert TILE_COLS == 16  # _fma_row, _load_row and _store_row spell out 16 columns


@numba.njit(**INLINE)
def _fma_row(row, s, v):
    """row + s * v: row is a tile row, s a number, v any TILE_COLS numbers."""
    return (row[0] + s * v[0], row[1] + s * v[1], row[2] + s * v[2], row[3] + s * v[3],
            row[4] + s * v[4], row[5] + s * v[5], row[6] + s * v[6], row[7] + s * v[7],
            row[8] + s * v[8], row[9] + s * v[9], row[10] + s * v[10], row[11] + s * v[11],
            row[12] + s * v[12], row[13] + s * v[13], row[14] + s * v[14], row[15] + s * v[15])


@numba.njit(**INLINE)
def _mul_row(s, v):
    """s * v: s a number, v any TILE_COLS numbers."""
    return (s * v[0], s * v[1], s * v[2], s * v[3], s * v[4], s * v[5], s * v[6], s * v[7],
            s * v[8], s * v[9], s * v[10], s * v[11], s * v[12], s * v[13], s * v[14], s * v[15])


@numba.njit(**LLVM_INLINE)
def _load_row(v):
    return (v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7],
            v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15])


@numba.njit(**LLVM_INLINE)
def _store_row(v, row):
    v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7] = row[:8]
    v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15] = row[8:]


if TILE_ROWS == 16:
    @numba.njit(**INLINE)
    def _tile_fma(t, s, v):
        """t[i][j] + s[i] * v[j]: the tile t plus the outer product of s and v."""
        return (_fma_row(t[0], s[0], v), _fma_row(t[1], s[1], v), _fma_row(t[2], s[2], v),
                _fma_row(t[3], s[3], v), _fma_row(t[4], s[4], v), _fma_row(t[5], s[5], v),
                _fma_row(t[6], s[6], v), _fma_row(t[7], s[7], v), _fma_row(t[8], s[8], v),
                _fma_row(t[9], s[9], v), _fma_row(t[10], s[10], v), _fma_row(t[11], s[11], v),
                _fma_row(t[12], s[12], v), _fma_row(t[13], s[13], v), _fma_row(t[14], s[14], v),
                _fma_row(t[15], s[15], v))

    @numba.njit(**INLINE)
    def _tile_mul(s, v):
        """s[i] * v[j]: the outer product of s and v, a tile's first step."""
        return (_mul_row(s[0], v), _mul_row(s[1], v), _mul_row(s[2], v), _mul_row(s[3], v),
                _mul_row(s[4], v), _mul_row(s[5], v), _mul_row(s[6], v), _mul_row(s[7], v),
                _mul_row(s[8], v), _mul_row(s[9], v), _mul_row(s[10], v), _mul_row(s[11], v),
                _mul_row(s[12], v), _mul_row(s[13], v), _mul_row(s[14], v), _mul_row(s[15], v))

    @numba.njit(**INLINE)
    def _store_tile(a, p, t):
        """Columns p .. p + TILE_COLS of the TILE_ROWS rows of a = the tile t."""
        _store_row(a[0, p:], t[0])
        _store_row(a[1, p:], t[1])
        _store_row(a[2, p:], t[2])
        _store_row(a[3, p:], t[3])
        _store_row(a[4, p:], t[4])
        _store_row(a[5, p:], t[5])
        _store_row(a[6, p:], t[6])
        _store_row(a[7, p:], t[7])
        _store_row(a[8, p:], t[8])
        _store_row(a[9, p:], t[9])
        _store_row(a[10, p:], t[10])
        _store_row(a[11, p:], t[11])
        _store_row(a[12, p:], t[12])
        _store_row(a[13, p:], t[13])
        _store_row(a[14, p:], t[14])
        _store_row(a[15, p:], t[15])
else:
    @numba.njit(**INLINE)
    def _tile_fma(t, s, v):
        """t[i][j] + s[i] * v[j]: the tile t plus the outer product of s and v."""
        return (_fma_row(t[0], s[0], v), _fma_row(t[1], s[1], v), _fma_row(t[2], s[2], v),
                _fma_row(t[3], s[3], v))

    @numba.njit(**INLINE)
    def _tile_mul(s, v):
        """s[i] * v[j]: the outer product of s and v, a tile's first step."""
        return _mul_row(s[0], v), _mul_row(s[1], v), _mul_row(s[2], v), _mul_row(s[3], v)

    @numba.njit(**INLINE)
    def _store_tile(a, p, t):
        """Columns p .. p + TILE_COLS of the TILE_ROWS rows of a = the tile t."""
        _store_row(a[0, p:], t[0])
        _store_row(a[1, p:], t[1])
        _store_row(a[2, p:], t[2])
        _store_row(a[3, p:], t[3])


@numba.njit(**FMA)
def conv_tile(image, tap_starts, p, weights, out):
    """out[i, p + j] = sum over taps k of weights[k, i] * image[tap_starts[k] + p + j]:
    TILE_ROWS channels i by TILE_COLS neighbouring wide positions p + j, written, not added to
    (out need not be zeroed). Each tap: TILE_ROWS weights (broadcast) times TILE_COLS inputs
    that sit side by side in the flattened image. out is C-contiguous (TILE_ROWS, wide
    positions), so each row of the tile is one contiguous store (with unknown strides, LLVM
    would scatter). There is at least one tap."""
    start = tap_starts[0] + p
    t = _tile_mul(weights[0], image[start:start + TILE_COLS])
    for k in range(1, tap_starts.size):
        start = tap_starts[k] + p
        t = _tile_fma(t, weights[k], image[start:start + TILE_COLS])
    _store_tile(out, p, t)


# The two GEMMs below work on the tile in halves of HALF_ROWS = 8 rows: with 16, numba's LLVM on
# Intel's AVX-512 CPUs, when it gave them 256-bit vectors (two per row; config.py now asks for
# 512), needed 32 accumulators and 16 broadcast numbers in 32 registers, and spilled half of them
# at every step: 55-60 GFLOP/s on one core against 90-105 with 8 rows (Winograd's GEMMs,
# benchmarks/PROFILE.md). conv_tile, whose inputs change with every tap, measured no faster in
# halves. AVX2's 4 rows are one half. With 512-bit vectors 16 rows would fit; not yet measured.
HALF_ROWS = min(TILE_ROWS, 8)


@numba.njit(**INLINE)
def _half_fma(t, s, first, v):
    """t[i][j] + s[first + i] * v[j] for HALF_ROWS rows i."""
    if HALF_ROWS == 8:
        return (_fma_row(t[0], s[first], v), _fma_row(t[1], s[first + 1], v),
                _fma_row(t[2], s[first + 2], v), _fma_row(t[3], s[first + 3], v),
                _fma_row(t[4], s[first + 4], v), _fma_row(t[5], s[first + 5], v),
                _fma_row(t[6], s[first + 6], v), _fma_row(t[7], s[first + 7], v))
    return (_fma_row(t[0], s[first], v), _fma_row(t[1], s[first + 1], v),
            _fma_row(t[2], s[first + 2], v), _fma_row(t[3], s[first + 3], v))


@numba.njit(**INLINE)
def _half_mul(s, first, v):
    """s[first + i] * v[j] for HALF_ROWS rows i: a tile's first step, with no sum to add to."""
    if HALF_ROWS == 8:
        return (_mul_row(s[first], v), _mul_row(s[first + 1], v), _mul_row(s[first + 2], v),
                _mul_row(s[first + 3], v), _mul_row(s[first + 4], v), _mul_row(s[first + 5], v),
                _mul_row(s[first + 6], v), _mul_row(s[first + 7], v))
    return (_mul_row(s[first], v), _mul_row(s[first + 1], v), _mul_row(s[first + 2], v),
            _mul_row(s[first + 3], v))


@numba.njit(**INLINE)
def _load_half(a, first):
    """Rows first .. first + HALF_ROWS of a as a tile."""
    if HALF_ROWS == 8:
        return (_load_row(a[first]), _load_row(a[first + 1]), _load_row(a[first + 2]),
                _load_row(a[first + 3]), _load_row(a[first + 4]), _load_row(a[first + 5]),
                _load_row(a[first + 6]), _load_row(a[first + 7]))
    return (_load_row(a[first]), _load_row(a[first + 1]), _load_row(a[first + 2]),
            _load_row(a[first + 3]))


@numba.njit(**INLINE)
def _store_half(a, first, t):
    """a[first + i] = row i of the tile t."""
    for i in range(HALF_ROWS):
        _store_row(a[first + i], t[i])


@numba.njit(**FMA)
def weight_grad_tile(inputs, dy, out):
    """out[i, j] += sum over positions q of inputs[q, i] * dy[q, j]: TILE_ROWS input channels of
    one tap by TILE_COLS output channels, HALF_ROWS at a time. Each position: HALF_ROWS inputs
    (broadcast) times TILE_COLS channels of dy."""
    for first in range(0, TILE_ROWS, HALF_ROWS):
        t = _load_half(out, first)
        for q in range(dy.shape[0]):
            t = _half_fma(t, inputs[q], first, dy[q])
        _store_half(out, first, t)


@numba.njit(**FMA)
def gemm_tile(a, b, out):
    """out[i, j] = sum over k of a[i, k] * b[k, j]: TILE_ROWS rows of a by TILE_COLS columns of
    b, HALF_ROWS at a time, as weight_grad_tile with a read across its rows, but out is written,
    not added to (so it need not be zeroed first). Each k: HALF_ROWS numbers of a (broadcast)
    times TILE_COLS neighbouring numbers of b. b has at least one row."""
    for first in range(0, TILE_ROWS, HALF_ROWS):
        t = _half_mul(a[:, 0], first, b[0])
        for k in range(1, b.shape[0]):
            t = _half_fma(t, a[:, k], first, b[k])
        _store_half(out, first, t)
