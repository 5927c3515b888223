"""Small step products ``a·B`` with a register tile, for the recurrences of small layers.

A recurrence's step product is small — the tiny shape's is (8, 64)·(64, 64) per row
block — and a BLAS call spends about half its time on that size around the arithmetic:
``perf`` of the tiny forward recurrence on MKL's packed GEMM showed its GEMM kernel at 27 %
of the time and copying the unpacked operand, scaling C, checking arguments and
dispatching at another ~30 %. This module's product has no such cost. B's columns are
packed once per call into tiles of :func:`tile_columns` (NC) columns, (tiles, K, NC)
(:func:`pack_tiles`), and each (MR = 4 rows) × NC block of the output is accumulated over
k in a tile held in registers: per k, one load of B's NC values, a broadcast of each
row's ``a[i, k]`` and MR·NC fused multiply-adds. Rows past the last multiple of four —
and a single sequence, whose step is a matrix-vector product — take one row across
four tiles of columns at a time (the same eight registers: one tile alone would wait on
its two accumulators' FMA latency every k), with the same arithmetic.

Every output element is ``Σ_k a[i, k]·B[k, j]`` summed in the order of k, one fused
multiply-add per term (LLVM's ``fmuladd``: fused where the CPU has FMA), whatever tile or
row position it falls in — so a row gives the same bits in any block, any panel and any
batch, and the serial and parallel recurrences agree bitwise as they must.

Numba turns LLVM's SLP vectoriser off by default (numba#8705: miscompilations in other
code), and without it the tile compiled to scalar FMAs (64 ``vfmadd…ss``, 1.6–1.8
GMAC/s). :func:`_compiled` switches it on for this one function while it compiles, from
explicit signatures, so no later call can compile it without (:func:`product`, at its
first use); the result is tested
against NumPy in float64 and float32 at every row remainder and tile count
(``tests/test_tiles.py``) and through every recurrence test. Measured on the 2-core AMD
EPYC (AVX2), µs per product, alone in a loop (tile ÷ MKL's packed GEMM; OpenBLAS):

===========  =====================  =====================
product      float32                float64
===========  =====================  =====================
4×64·64      0.54 (0.39; 3.36)      0.87 (0.29; 3.41)
8×64·64      0.82 (0.44; 3.96)      1.48 (0.31; 4.08)
16×64·64     2.05 (0.70; 5.66)      3.58 (0.50; 6.20)
8×128·128    3.50 (0.60; 15.5)      7.00 (0.47; 15.4)
32×256·256   55.2 (0.80; 147)       —
2×256·256    5.8 (see below)        13.2
===========  =====================  =====================

A single row (the stream shape's step, one panel of two), µs per product against
OpenBLAS's matrix-vector product on the same panel, one core: 1×256·128 float32 1.57
against 1.77, float64 3.27 against 3.71; 1×1024·512 29.2 against 35.0 and 56.8 against
64.8. One tile at a time, as before, took 2.34 and 4.70 µs at 1×256·128, and 10.2 µs
at 2×256·256 float32 (0.74 of MKL's packed product then; OpenBLAS 60.3).
"""
import numba
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

#: Rows of a register tile.
TILE_ROWS = 4

#: Bytes of a tile row: two 256-bit registers (AVX2), so 16 float32 or 8 float64 columns;
#: a tile is then TILE_ROWS · 2 = 8 accumulator registers of the 16 there are.
TILE_ROW_BYTES = 64


def tile_columns(dtype):
    """Columns of a tile (NC) for ``dtype``: 16 for float32, 8 for float64."""
    return TILE_ROW_BYTES // np.dtype(dtype).itemsize


@intrinsic
def _stack_tile(typingctx, ref):
    """A (TILE_ROWS, NC) array of ``ref``'s dtype on the stack (``alloca``), its shape
    constants in the IR: LLVM unrolls the loops over it and keeps it in registers."""
    dt = ref.dtype
    arrty = types.Array(dt, 2, "C")

    def codegen(context, builder, sig, args):
        lty = context.get_data_type(dt)
        size = context.get_abi_sizeof(lty)
        cols = TILE_ROW_BYTES // size
        ptr = cgutils.alloca_once(builder, lty, size=TILE_ROWS * cols)
        ary = context.make_array(arrty)(context, builder)

        def const(v):
            return context.get_constant(types.intp, v)
        context.populate_array(ary, data=ptr,
                               shape=cgutils.pack_array(builder, [const(TILE_ROWS), const(cols)]),
                               strides=cgutils.pack_array(builder, [const(cols * size),
                                                                    const(size)]),
                               itemsize=const(size), meminfo=None)
        return ary._getvalue()
    return arrty(ref), codegen


def _tile_product(a, Bt, out):
    """``out[:, :tiles·NC] = a·B`` for ``a`` (rows, K) and B's columns packed by
    :func:`pack_tiles` into ``Bt`` (tiles, K, NC); ``out`` (rows, ≥ tiles·NC)."""
    rows, K = a.shape
    if Bt.shape[1] != K or out.shape[0] < rows or out.shape[1] < Bt.shape[0] * Bt.shape[2]:
        raise ValueError("tile_product: a (rows, K), Bt (tiles, K, NC) and out "
                         "(rows, >= tiles*NC) do not match")
    zero = a.dtype.type(0)
    tiles = Bt.shape[0]
    i = 0
    while i + TILE_ROWS <= rows:                    # four rows, one tile of columns
        for p in range(tiles):
            c = _stack_tile(a)
            MR, NC = c.shape
            for r in range(MR):
                for j in range(NC):
                    c[r, j] = zero
            for k in range(K):
                for r in range(MR):
                    x = a[i + r, k]
                    for j in range(NC):
                        c[r, j] += x * Bt[p, k, j]
            for r in range(MR):
                for j in range(NC):
                    out[i + r, p * NC + j] = c[r, j]
        i += TILE_ROWS
    while i < rows:                                 # one row, four tiles at a time
        p = 0
        while p < tiles:
            c = _stack_tile(a)
            MR, NC = c.shape
            if p + MR <= tiles:
                for g in range(MR):
                    for j in range(NC):
                        c[g, j] = zero
                for k in range(K):
                    x = a[i, k]
                    for g in range(MR):
                        for j in range(NC):
                            c[g, j] += x * Bt[p + g, k, j]
                for g in range(MR):
                    for j in range(NC):
                        out[i, (p + g) * NC + j] = c[g, j]
                p += MR
            else:                                   # the last tiles, one at a time
                for j in range(NC):
                    c[0, j] = zero
                for k in range(K):
                    x = a[i, k]
                    for j in range(NC):
                        c[0, j] += x * Bt[p, k, j]
                for j in range(NC):
                    out[i, p * NC + j] = c[0, j]
                p += 1
        i += 1


def _compiled(py_func, cache=True):
    """``py_func`` compiled for C-contiguous float32 and float64 operands, with LLVM's SLP
    vectoriser on for this compilation only (see the module's docstring); ``cache``:
    Numba's disk cache (code loaded from it cannot be inspected)."""
    sigs = [types.void(types.Array(t, 2, "C"), types.Array(t, 3, "C"), types.Array(t, 2, "C"))
            for t in (types.float32, types.float64)]
    saved = numba.core.config.SLP_VECTORIZE
    numba.core.config.SLP_VECTORIZE = 1
    try:
        return njit(sigs, cache=cache, nogil=True, error_model="numpy",
                    fastmath={"contract"})(py_func)
    finally:
        numba.core.config.SLP_VECTORIZE = saved


_product = None


def tile_product(a, Bt, out):
    """``out[:, :tiles·NC] = a·B`` (:func:`_tile_product`), through :func:`product`.
    For calls from Python (tests); Numba kernels call ``product()`` itself."""
    product()(a, Bt, out)


def product():
    """The compiled tile product, compiled at its first use — when a kernel that
    multiplies with tiles is itself compiled, not at import (two signatures under
    the SLP switch took ~2 s of a cold import) — or loaded from Numba's disk cache."""
    global _product
    if _product is None:
        _product = _compiled(_tile_product)
    return _product


def pack_tiles(M, width, out=None):
    """Cut the columns of M (K, H) into panels of ``width`` (a multiple of
    :func:`tile_columns`) and each panel into tiles: a C-contiguous (panels, width / NC, K,
    NC) array, past H zero. Panel p's product ``a·M[:, p·width:…]`` is then
    ``tile_product(a, tiles[p], out)``. ``out``: an array of that shape to fill."""
    K, H = M.shape
    nc = tile_columns(M.dtype)
    if width % nc:
        raise ValueError(f"width must be a multiple of {nc}, got {width}")
    panels = -(-H // width)
    shape = (panels, width // nc, K, nc)
    out = np.empty(shape, dtype=M.dtype) if out is None else out
    flat = out.reshape(panels * (width // nc), K, nc)       # tile q holds columns q·nc …
    full = H // nc
    flat[:full] = M[:, :full * nc].reshape(K, full, nc).transpose(1, 0, 2)
    if full < flat.shape[0]:
        flat[full:] = 0
        flat[full, :, :H - full * nc] = M[:, full * nc:]
    return out
