"""CPU kernels: the two sequential recurrences in Numba, the batched products in BLAS.

Shapes (time-major): T time steps, N batch, D input size, H hidden size.

Only the recurrences are sequential in time. Each is **one compiled call for the
whole sequence**: no Python runs per time step. Everything else (the input
projection and the weight, bias and input gradients) is one matrix product over all
T·N rows, a BLAS call per row block from a Numba kernel — or, for the projection and dx
of a small W_ax, a register-tile product per block (:data:`TILE_OPERAND_MAX_BYTES`).

The recurrence kernels exist in a serial and a ``prange``-parallel variant compiled
from the same source (``prange`` is ``range`` when ``parallel=False``). A layer whose
step product is big enough is cut into **row blocks** of the batch
(:func:`recurrence_blocks`, up to :data:`RECURRENCE_BLOCKS`), each run through all T
steps on its own — on a thread of its own in the parallel variant: sequences never
depend on one another, so there is one parallel region per call and no barrier
between steps. (An earlier version cut the hidden units into one panel per thread,
with a parallel region per step: ~1 µs a step of region and barrier, which kept layers
below N·H·H = 2^18 on one core. The tiny shape's forward recurrence takes 0.27 ms in
two row blocks, 0.40 ms serially and 0.80 ms in per-step panels.) Within a block the
step product can still be cut into hidden-unit **panels** (contiguous ranges of
:data:`PANEL_ALIGN`-multiple width, one product each: register tiles, :mod:`.tiles`,
or MKL's packed GEMM for a big step where MKL is in use, :func:`mkl_packed_steps`). A
batch that does not split into blocks (a single sequence) is cut into
:data:`SHARED_PANELS` panels, which the threads share step by step
(:func:`_forward_panels`, :func:`_backward_panels`: tasks handed over through atomic
counters, no region per step).

How a layer is cut depends on its shape alone, never on the thread count or on
``parallel`` (:func:`_layout`): a BLAS may compute a row differently depending on where
it falls in a call (OpenBLAS's Haswell sgemm does), so serial and parallel runs make
the same calls, and the backward sums its norms in an order fixed by the unit index —
bitwise the same numbers on one thread or many.

Forward and backward are written as mirrors, line for line::

    forward, t = 0 .. T-1                    backward, t = T-1 .. 0
    z      = a<t-1>·W_aaᵀ                    carry  = δ<t+1>·W_aa          (= ∂L/∂a<t> from t+1)
    a<t>   = g(U<t> + z)                     g<t>   = dA<t> + carry        (= ∂L/∂a<t>)
                                             δ<t>   = g<t> ⊙ g'(a<t>)

and after the backward loop one more product, carry = δ<0>·W_aa, gives ∂L/∂a0. A
panel of the forward multiplies by columns ``lo:hi`` of W_aaᵀ; its mirror in the
backward by columns ``lo:hi`` of W_aa — each packed once per call into contiguous
panels (:func:`_packed`): register tiles (:mod:`.tiles`), or MKL's packed format for
big steps and, on the Xeon, a single sequence's row panels. A reverse
direction walks time the other way: its "previous" step is t+1.
"""
import functools
import threading
import types

import numpy as np
from numba import njit, prange
from numba import types as nbtypes
from numba.extending import overload

from . import mkl, openblas
from .activations import activate_row, activation_grad_row
from .atomics import fetch_add, wait_until
from .mkl import aligned_empty, packed_product
from . import tiles
from .tiles import pack_tiles, tile_columns
from .affinity import allowed_cores, pin_caller, unpin_caller
from .threads import blas_single_threaded, fast_regions, guard_enter, guard_exit


#: The BLAS a compiled variant's products (``_matprod``) call, by engine: SciPy's
#: through ``np.dot`` (no suffix), the OpenBLAS wheel's or MKL's ``cblas_?gemm``.
ENGINES = {"scipy": ("", None), "openblas": ("_openblas", openblas.gemm),
           "mkl": ("_mkl", mkl.gemm)}


def _compile(py_func, parallel, engine="scipy"):
    """Compile ``py_func`` serial or parallel, under its own name; its products
    (``_matprod``) call the BLAS of ``engine`` (:data:`ENGINES`).

    Numba's on-disk cache keys entries by the function's qualified name, not by its
    compile flags, so the variants are given distinct names to keep their cache
    entries apart.
    """
    tag, product = ENGINES[engine]
    suffix = ("_parallel" if parallel else "_serial") + tag
    scope = py_func.__globals__
    if product is not None:
        scope = dict(scope, _matprod=product)
    clone = types.FunctionType(py_func.__code__, scope,
                               py_func.__name__ + suffix, py_func.__defaults__,
                               py_func.__closure__)
    clone.__qualname__ = py_func.__qualname__ + suffix
    clone.__doc__ = py_func.__doc__
    return njit(parallel=parallel, cache=True, nogil=True, error_model="numpy")(clone)


def pack_rows(M, width, out):
    """Cut the columns of M (K, H) into panels of ``width`` for MKL's matrix-vector
    product ``M[:, panel]ᵀ·a``: fill ``out``, a zeroed (panels, width, K) array, with
    each panel's columns of M as rows, so every output is a contiguous dot product (the
    matrix-vector form was ~1.5× faster than the axpy form at H = 256, float64)."""
    H = M.shape[1]
    for p in range(out.shape[0]):
        lo, hi = p * width, min(H, (p + 1) * width)
        src = M[:, lo:hi].T
        if src.strides[1] == src.itemsize:
            out[p, :hi - lo] = src                          # rows to rows
        else:
            _transpose_into(src.T, out[p, :hi - lo])
    return out


@njit(cache=True, nogil=True)
def _transpose_into(src, dst):
    """``dst = srcᵀ`` in 16×16 tiles, writing ``dst`` row by row: 0.8 ms at H = 1024
    float32 where NumPy's copy of the transposed view takes 7 ms."""
    R, C = src.shape
    for i0 in range(0, R, 16):
        i1 = min(R, i0 + 16)
        for j0 in range(0, C, 16):
            for j in range(j0, min(C, j0 + 16)):
                for i in range(i0, i1):
                    dst[j, i] = src[i, j]


def _panel_product(a, Wp, buf, p, n):
    """``buf[p][:, :n] = a·M[:, panel p]`` for all rows ``a`` (N, H); returns ``buf[p]``
    (N, width). ``Wp`` holds M's panels, from :func:`_packed`: register tiles
    (panels, tiles, H, NC) for :func:`~.tiles.product`, or for MKL a uint8 array (its
    packed GEMM, or row panels for its GEMV when N = 1). Numba kernels only; each type
    of ``Wp`` compiles its own specialisation."""
    raise NotImplementedError("_panel_product runs inside Numba kernels only")


@overload(_panel_product, inline="always")
def _panel_product_impl(a, Wp, buf, p, n):
    if Wp.ndim == 4:                                        # register tiles (.tiles)
        tile = tiles.product()

        def tiled(a, Wp, buf, p, n):
            tile(a, Wp[p], buf[p])
            return buf[p]
        return tiled

    if Wp.dtype == nbtypes.uint8:                           # MKL's panels, raw bytes
        def packed(a, Wp, buf, p, n):
            packed_product(a, Wp[p], buf[p], n)
            return buf[p]
        return packed
    return None


def _forward(U, Wp, a0, lengths, kind, reverse, A, buf):
    """Forward recurrence of one layer-direction over the whole sequence, in row blocks.

    Parameters
    ----------
    U : (T, N, H) array
        Input projection ``x·W_axᵀ + b`` (computed by :func:`input_projection`).
    Wp : panels of W_aaᵀ, from :func:`_packed`
        Panel p holds the weights into hidden units ``p·width … p·width + width - 1``;
        each panel does its own slice of the step product and its own activations.
    a0 : (N, H) C-contiguous array
        Initial state (``a<-1>``; ``a<T>`` for the reverse direction).
    lengths : (N,) int64 array
        Valid steps per sequence, 1 ≤ lengths[n] ≤ T. Steps t ≥ lengths[n] are
        padding: the state is carried through them unchanged, so the forward
        direction ends on a<lengths[n]-1> and the reverse one starts from a0 at
        t = lengths[n]-1, as torch's packed sequences do.
    kind : int
        Activation code (:data:`~numba_rnn.kernels.activations.NONLINEARITIES`).
    reverse : bool
        Walk time from T-1 down to 0.
    A : (T, N, H) C-contiguous array, written (may be ``U`` itself)
        Every hidden state ``a<t>`` (the carried state at padding steps).
    buf : (blocks, panels, rows, width) array
        Scratch for the step product of each row block: the sequences are cut into
        ``blocks`` blocks of ``rows = N / blocks`` rows, each run through all T steps
        on its own (the parallel variant runs the blocks on different threads; a
        sequence never depends on another, so nothing is shared between them).
    """
    T = U.shape[0]
    blocks, panels, rows = buf.shape[0], buf.shape[1], buf.shape[2]
    for b in prange(blocks):
        r0 = b * rows
        prev = a0[r0:r0 + rows]
        for s in range(T):
            t = T - 1 - s if reverse else s
            for p in range(panels):
                _forward_panel(U, Wp, prev, lengths, kind, A, buf[b], t, p, r0)
            prev = A[t, r0:r0 + rows]


def _forward_panels(U, Wp, a0, lengths, kind, reverse, A, buf, workers, sync):
    """The forward recurrence with each step's panels shared by ``workers`` threads:
    for a batch too small to cut into row blocks (one sequence, say). Arguments as
    :func:`_forward`, with one block (``buf`` (1, panels, N, width)), and ``sync`` a
    zeroed int64 array of :data:`CLAIMS` + T·panels: a counter of finished tasks on a
    cache line of its own, then a claim flag per (step, panel) task.

    Worker w takes panel ``w mod panels`` of every step, then any panel of the step
    still unclaimed (:func:`_claim`), and a task waits until every panel of the step
    before is done. So each thread keeps multiplying by the same columns of W_aa, which
    stay in its own cache (claiming tasks in arrival order instead moved them between
    threads: the stream forward took 5.1 ms on two threads, as on one), and any number
    of threads — one included — finishes the work: a thread that never starts (no
    second core, or a nested region run serially) cannot hang it. Each panel's
    arithmetic is that of :func:`_forward`, whichever thread runs it: the same bits."""
    T = U.shape[0]
    panels = buf.shape[1]
    for w in prange(workers):
        for s in range(T):
            t = T - 1 - s if reverse else s
            prev = a0
            if s > 0:
                prev = A[t + 1] if reverse else A[t - 1]
            for j in range(panels):
                p = (w + j) % panels
                if _claim(sync, s * panels + p):
                    wait_until(sync, 0, s * panels)         # step s-1 complete
                    _forward_panel(U, Wp, prev, lengths, kind, A, buf[0], t, p, 0)
                    fetch_add(sync, 0, 1)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _forward_panel(U, Wp, prev, lengths, kind, A, buf, t, p, r0):
    """Panel p of forward step t for the rows r0 … r0+rows-1: ``a<t> = g(U<t> +
    a<t-1>·W_aaᵀ)`` on the panel's units, the state carried at padding steps; ``prev``
    (rows, H) is a<t-1> of those rows, ``buf`` (panels, rows, width) the block's
    scratch."""
    H = U.shape[2]
    rows, width = buf.shape[1], buf.shape[2]
    lo, hi = p * width, min(H, (p + 1) * width)
    z = _panel_product(prev, Wp, buf, p, hi - lo)            # a<t-1>·W_aaᵀ, own units
    for i in range(rows):
        n = r0 + i
        if t < lengths[n]:                                  # a<t> = g(U<t> + z)
            activate_row(kind, U[t, n, lo:hi], z[i, :hi - lo], A[t, n, lo:hi])
        else:
            A[t, n, lo:hi] = prev[i, lo:hi]                 # padding: a<t> = a<t-1>


def _backward(dA, A, Wp, dh_n, lengths, kind, reverse, delta, norms, partial, squares, buf):
    """Backward recurrence (BPTT) of one layer-direction in row blocks, the mirror of
    ``_forward``.

    Parameters
    ----------
    dA : (T, N, H) array
        ∂L/∂a<t> arriving from above (the output head or the next layer), not yet
        including what flows back through time. Ignored at padding steps.
    A : (T, N, H) array
        The hidden states saved by the forward pass.
    Wp : panels of W_aa (not transposed), from :func:`_packed`, as in ``_forward``.
    dh_n : (N, H) C-contiguous array, overwritten (the carried gradient)
        ∂L/∂(final state).
    lengths, kind, reverse
        As in ``_forward``.
    delta : (T, N, H) C-contiguous array, written
        δ<t> = ∂L/∂z<t>, the gradient at the pre-activation (0 at padding steps).
    norms : (T, N) array, written
        ‖∂L/∂a<t>‖₂ per sample: the per-timestep hidden-gradient norm (0 at padding).
    partial : (2, N, ceil(H / PANEL_ALIGN)) array
        Scratch: a step's Σ_j (∂L/∂a<t>)_j² over chunks of PANEL_ALIGN units (by
        :func:`_sum8`, panel by panel) in ``partial[s % 2]``, added up in chunk order
        once the step's panels are done. Panel widths are multiples of PANEL_ALIGN, so
        the norms are the same for any panel count.
    squares : (N, ceil(H / PANEL_ALIGN) · PANEL_ALIGN) array, zero past H
        Scratch: the step's (∂L/∂a<t>)_j², each panel writing its own units.
    buf : (blocks, panels, rows, width) array
        Scratch for the step product of each row block, as in ``_forward``.

    Returns
    -------
    (N, H) array
        ∂L/∂a0 (= dh0).
    """
    T = A.shape[0]
    blocks, panels, rows = buf.shape[0], buf.shape[1], buf.shape[2]
    for b in prange(blocks):
        r0 = b * rows
        for s in range(T + 1):        # s: finish step s-1's product, then step s
            for p in range(panels):
                _backward_panel(dA, A, Wp, dh_n, lengths, kind, reverse, delta, partial,
                                squares, buf[b], s, p, r0)
            if s < T:
                _step_norms(partial[s % 2], norms, T - 1 - s if not reverse else s, r0, rows)
    return dh_n


def _backward_panels(dA, A, Wp, dh_n, lengths, kind, reverse, delta, norms, partial,
                     squares, buf, workers, sync):
    """BPTT with each step's panels shared by ``workers`` threads, the mirror of
    :func:`_forward_panels` (arguments as :func:`_backward`, one block, plus
    ``workers`` and ``sync``, of :data:`CLAIMS` + (T+1)·panels). Whoever runs panel 0
    of step s adds up the norms of step s-1, whose panels are all done by then;
    ``partial`` alternates between steps, so step s's panels never write what is being
    added."""
    T = A.shape[0]
    panels = buf.shape[1]
    N = A.shape[1]
    for w in prange(workers):
        for s in range(T + 1):
            for j in range(panels):
                p = (w + j) % panels
                if _claim(sync, s * panels + p):
                    wait_until(sync, 0, s * panels)         # step s-1 complete
                    if p == 0 and s > 0:
                        _step_norms(partial[(s - 1) % 2], norms,
                                    s - 1 if reverse else T - s, 0, N)
                    _backward_panel(dA, A, Wp, dh_n, lengths, kind, reverse, delta,
                                    partial, squares, buf[0], s, p, 0)
                    fetch_add(sync, 0, 1)
    return dh_n


@njit(cache=True, nogil=True, inline="always")
def _claim(sync, task):
    """Claim (step, panel) ``task`` of a shared recurrence: True for the one thread
    that gets it first."""
    return fetch_add(sync, CLAIMS + task, 1) == 0


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _backward_panel(dA, A, Wp, dh_n, lengths, kind, reverse, delta, partial, squares, buf,
                    s, p, r0):
    """Panel p of backward region s for the rows r0 … r0+rows-1: finish step s-1's
    product (``carry = δ<t+1>·W_aa`` on the panel's units), then step s's ``g<t> = dA<t>
    + carry``, its squares per chunk and ``δ<t> = g ⊙ g'``; ``buf`` (panels, rows,
    width) is the block's scratch. Region T only finishes the last product (dh0)."""
    T, N, H = A.shape
    zero = delta.dtype.type(0)
    rows, width = buf.shape[1], buf.shape[2]
    chunk = PANEL_ALIGN
    t = s if reverse else T - 1 - s
    tp = t - 1 if reverse else t + 1                        # the step done before t
    part = partial[s % 2]
    lo, hi = p * width, min(H, (p + 1) * width)
    prod = buf[p]
    if s > 0:
        prod = _panel_product(delta[tp, r0:r0 + rows], Wp, buf, p, hi - lo)  # δ<t+1>·W_aa
    for i in range(rows):
        n = r0 + i
        fresh = s > 0 and tp < lengths[n]                   # else the gradient passes
        if s < T and t < lengths[n]:                        # g<t> = dA<t> + carry
            _gradient_row(dA[t, n, lo:hi], prod[i, :hi - lo] if fresh else dh_n[n, lo:hi],
                          dh_n[n, lo:hi], squares[n, lo:hi])
            for c in range(lo // chunk, (hi + chunk - 1) // chunk):
                part[n, c] = _sum8(squares[n, c * chunk:(c + 1) * chunk])
            activation_grad_row(kind, A[t, n, lo:hi], dh_n[n, lo:hi],
                                delta[t, n, lo:hi])         # δ<t> = g ⊙ g'
        else:
            if fresh:
                for j in range(lo, hi):
                    dh_n[n, j] = prod[i, j - lo]
            if s < T:
                for c in range(lo // chunk, (hi + chunk - 1) // chunk):
                    part[n, c] = zero
                for j in range(lo, hi):
                    delta[t, n, j] = zero


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _step_norms(part, norms, t, r0, rows):
    """``norms[t, n] = ‖∂L/∂a<t>‖`` for rows r0 … r0+rows-1: the chunk sums of ``part``
    (N, chunks) added in chunk order."""
    zero = norms.dtype.type(0)
    for n in range(r0, r0 + rows):
        acc = zero
        for c in range(part.shape[1]):
            acc += part[n, c]
        norms[t, n] = np.sqrt(acc)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _gradient_row(d, carry_in, carry, squares):
    """``carry = d + carry_in`` (may be ``carry`` itself) and ``squares = carry²``, for
    one row. Rows are passed as slices so that the loop runs from 0: indexing with
    ``range(lo, hi)`` kept Numba's negative-index wraparound in the loop, which LLVM
    could not vectorise (the tiny backward step was ~0.2 ms slower)."""
    for j in range(carry.shape[0]):
        g = d[j] + carry_in[j]
        carry[j] = g
        squares[j] = g * g


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _sum8(row):
    """Σ row in a fixed order that SIMD code can follow: eight running sums, lane
    ``j mod 8`` over the chunks of 8 in order, then folded pairwise; ``row`` has a
    multiple of 8 elements."""
    zero = row.dtype.type(0)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
    for c in range(0, row.shape[0], 8):
        s0 += row[c]
        s1 += row[c + 1]
        s2 += row[c + 2]
        s3 += row[c + 3]
        s4 += row[c + 4]
        s5 += row[c + 5]
        s6 += row[c + 6]
        s7 += row[c + 7]
    return ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))


_forward_kernels = {p: _compile(_forward, p) for p in (False, True)}
_backward_kernels = {p: _compile(_backward, p) for p in (False, True)}
_forward_panels_kernel = _compile(_forward_panels, True)
_backward_panels_kernel = _compile(_backward_panels, True)

#: Where the claim flags of a panel-shared recurrence start in its ``sync`` array, after
#: the finished-task counter: 64 bytes on, so claiming a task does not disturb the
#: cache line a waiting thread reads.
CLAIMS = 8


def _aligned_copy(a, dtype, shape=None):
    """A C-contiguous copy of ``a`` (broadcast to ``shape``, default its own) in
    ``dtype`` that starts on a cache line (:func:`~.mkl.aligned_empty`: MKL's products
    can round by alignment)."""
    out = aligned_empty(np.shape(a) if shape is None else shape, dtype)
    out[...] = a
    return out


_local = threading.local()      # .scratch: this thread's scratch arrays, by (tag, shape, dtype)

#: Most scratch arrays a thread keeps (:func:`_scratch`); past that they are all dropped.
SCRATCH_ARRAYS = 64


def _scratch(tag, shape, dtype, fill=None):
    """This thread's scratch array for ``tag`` (what it is for), of ``shape`` and
    ``dtype``, cache-aligned (:func:`~.mkl.aligned_empty`); ``fill`` its value when it
    is made (else uninitialised). Kept for the thread's next call of the same shape:
    the kernels' scratch (step-product buffers, partial sums, the copied initial
    state) was ~10 allocations of ~4 µs in each tiny-shape train step. Only the calling
    thread uses it, and only within one kernel call, so concurrent calls from other
    Python threads have their own; nothing a caller receives is scratch."""
    arrays = getattr(_local, "scratch", None)
    if arrays is None:
        arrays = _local.scratch = {}
    key = (tag, shape, dtype)
    out = arrays.get(key)
    if out is None:
        if len(arrays) >= SCRATCH_ARRAYS:
            arrays.clear()
        out = arrays[key] = aligned_empty(shape, dtype)
        if fill is not None:
            out[...] = fill
    return out


def _lengths_or_full(lengths, T, N):
    """``lengths`` as an int64 array; None: every sequence T steps long (scratch: the
    kernels only read it)."""
    if lengths is None:
        return _scratch(("lengths", T), (N,), _INT64, T)
    return np.ascontiguousarray(lengths, dtype=np.int64)


_INT64 = np.dtype(np.int64)


#: Per-step multiply-adds (N·H·H) from which a layer's recurrence is cut into row
#: blocks (:func:`recurrence_blocks`) and ``parallel=None`` (the default: auto) runs it
#: on Numba's threads. Measured on 2 cores, a model with D = H and T = 100,
#: parallel ÷ serial time, forward / train step (f32; f64), ±0.1 run to run: N=4 H=16
#: (2^10) 1.09/1.03; 1.14/1.27, N=8 H=16 (2^11) 1.17/1.28; 1.03/1.12, N=4 H=32 (2^12)
#: 1.12/1.19; 1.00/1.01, N=16 H=16 (2^12) 0.90/1.05; 0.89/1.02, N=8 H=32 (2^13)
#: 0.85/0.87; 0.99/0.86, N=4 H=64 (2^14) 0.93/1.07; 0.86/0.88, N=16 H=32 (2^14)
#: 0.95/0.98; 0.72/0.55, N=64 H=16 (2^14) 0.58/0.65; 0.63/1.17, N=8 H=64 (2^15)
#: 0.79/0.87; 0.72/0.74, N=32 H=32 (2^15) 0.76/0.76; 0.69/1.04, N=16 H=64 (2^16)
#: 0.78/0.84; 0.55/0.48, N=4 H=128 (2^16) 0.81/0.85; 0.68/0.56.
PARALLEL_MIN_MACS = 1 << 13


def resolve_parallel(parallel, N, H):
    """Whether a layer with batch N and H hidden units runs on Numba's threads — its
    recurrences and its batched products (fixed row blocks): ``parallel`` itself when
    a bool; for ``None``, when there is more than one thread, the threading layer is a
    fast one (omp or tbb) and the layout has work for two threads: row blocks
    (:func:`recurrence_blocks`, N·H·H ≥ :data:`PARALLEL_MIN_MACS`), or shared
    hidden-unit panels (:func:`default_panels`, N·H·H ≥ :data:`SHARED_MIN_MACS`, a
    batch that does not split: one sequence, or N prime).

    This decides only *where* the blocks and panels run, never how the layer is cut:
    the numbers are the same either way."""
    if parallel is not None:
        return bool(parallel)
    if N * H * H < PARALLEL_MIN_MACS or not fast_regions() or _threads() < 2:
        return False
    return recurrence_blocks(N, H) > 1 or default_panels(N, H) > 1


def _threads():
    """Numba's thread count, its threads started with a fast layer made loadable first
    (:func:`~.threads.fast_regions`: the tbb wheel's library where there is no libgomp)."""
    import numba
    fast_regions()
    return numba.get_num_threads()


#: Per-step multiply-adds (N·H·H) from which a batch that does not split into row
#: blocks (one sequence, N prime) has its step cut into :data:`SHARED_PANELS`
#: hidden-unit panels, which ``parallel=None`` runs on that many threads sharing each
#: step (:func:`_forward_panels`). Forward recurrence, 2 threads against one (ms, T =
#: 1000, N = 1): H = 128 f32 0.69 → 0.89, f64 1.24 → 1.28; H = 256 f32 2.08 → 1.67, f64
#: 4.10 → 2.80.
SHARED_MIN_MACS = 1 << 16


#: Fewest sequences in a row block of a recurrence: one row would take the
#: matrix-vector product instead of the GEMM.
MIN_BLOCK_ROWS = 2

#: Most row blocks a recurrence is cut into, and the hidden-unit panels of a shared
#: step: constants, never the thread count. A BLAS computes a row of a product
#: differently depending on where the row falls in its call: OpenBLAS's Haswell sgemm
#: (an AMD EPYC here) gives row 0 of a 1-, a 2–3- and a ≥ 4-row call three different
#: last bits, and dgemm a lone last row its own. So the layer is cut the same way
#: whether its blocks run one after another or on several threads — the same BLAS
#: calls, the same bits for any ``parallel`` setting and any thread count. Two suits
#: the 2-core machines this is tuned on; more threads than blocks sit out the
#: recurrence (the batched products still use up to :data:`PRODUCT_BLOCKS`).
RECURRENCE_BLOCKS = SHARED_PANELS = 2


def recurrence_blocks(N, H):
    """Row blocks (of N / blocks sequences each) that a layer's recurrence is cut into:
    the most, up to :data:`RECURRENCE_BLOCKS`, that divide N into blocks of at least
    :data:`MIN_BLOCK_ROWS` rows when N·H·H ≥ :data:`PARALLEL_MIN_MACS`; 1 below that,
    when there is no such split (N prime, say), and from H = :data:`SHARED_MIN_UNITS`
    (shared panels instead).

    Each block runs its sequences through all T steps with no synchronisation, one
    thread a block in parallel (one region per call, no barrier per step — the
    per-step region over hidden-unit panels this replaced cost ~1 µs a step and kept
    layers below N·H·H = 2^18 on one core), one after another serially: the same
    BLAS calls either way."""
    if H >= SHARED_MIN_UNITS or N * H * H < PARALLEL_MIN_MACS:
        return 1
    return _split(N)


#: Hidden units from which a layer is cut into shared hidden-unit panels
#: (:func:`default_panels`) instead of row blocks even when its batch splits: each
#: thread then multiplies by half of W_aa every step, not all of it (4 MB in float32 at
#: H = 1024, far beyond a core's L2), and its products have all N rows. Recurrence on 2
#: threads, shared panels ÷ row blocks (fwd / bwd, interleaved medians, 2-core EPYC,
#: MKL's packed steps): N=64 H=1024 f32 0.94/0.94, f64 0.87/0.86; N=32 H=512 f32
#: 0.90/0.95, f64 0.92/0.92; N=64 H=512 0.98–1.02; N=64 H=256 f32 1.01/1.13, f64
#: 1.14/1.18.
SHARED_MIN_UNITS = 1024


def default_panels(N, H):
    """Hidden-unit panels of each step when none are asked for: :data:`SHARED_PANELS`
    for a batch that is not cut into row blocks (:func:`recurrence_blocks`: it does not
    split, or H ≥ :data:`SHARED_MIN_UNITS`) with N·H·H ≥ :data:`SHARED_MIN_MACS` —
    threads can share its steps — else 1."""
    return SHARED_PANELS if recurrence_blocks(N, H) == 1 and N * H * H >= SHARED_MIN_MACS \
        else 1


def _split(N):
    """The most row blocks, up to :data:`RECURRENCE_BLOCKS`, that cut N sequences into
    equal blocks of at least :data:`MIN_BLOCK_ROWS`; 1 when there is no such split."""
    for blocks in range(min(RECURRENCE_BLOCKS, N // MIN_BLOCK_ROWS), 1, -1):
        if N % blocks == 0:
            return blocks
    return 1


#: Panels start on multiples of this many units (64 bytes of float32); the backward
#: sums the squared gradient lane-wise over chunks of this many units, so the
#: per-timestep norms — like everything else — are bitwise the same for any panel
#: count.
PANEL_ALIGN = 16


def _panel_width(H, panels):
    """Units per panel: ``ceil(H / panels)`` rounded up to a multiple of
    :data:`PANEL_ALIGN` (so a small H may use fewer panels than asked for)."""
    width = -(-H // max(1, int(panels)))
    return -(-width // PANEL_ALIGN) * PANEL_ALIGN


#: Multiply-adds of a step product (N·H·width: the whole batch times one panel) up to which a
#: batch multiplies with register tiles (:mod:`.tiles`) where MKL's packed GEMM is in use; above
#: it, MKL's (on MKL's compatible code path only beyond :data:`TILE_MAX_WEIGHT_BYTES`). Per
#: product, tile ÷ the faster of MKL's packed GEMM and OpenBLAS (2-core EPYC, one core, f32 /
#: f64): 4×128·128 0.38 / 0.31, 8×64·64 0.52 / 0.53, 16×256·256 0.78 / 0.69, 32×256·256 0.89 /
#: 0.84, 8×1024·512 0.53 / 0.56, 32×512·512 0.86 / 1.07, 32×1024·512 0.93 / 1.19. Without MKL
#: every step product is a tile product: tile ÷ OpenBLAS (GEMM for a batch, GEMV for one row, on
#: panels packed for it; one core, µs per product, f32 / f64) 1×256·128 1.57 vs 1.77 / 3.27 vs
#: 3.71, 1×4096·2048 1027 vs 1285 / 2670 vs 3266, 32×1024·512 482 vs 792 / 919 vs 1241,
#: 64×1024·1024 1939 vs 2499 / 3520 vs 4162, 128×1024·1024 3810 vs 4382 / 7583 vs 8129 — faster
#: at every size measured, so OpenBLAS no longer multiplies the steps (its panels were a third
#: specialisation of every recurrence kernel to compile). The stream recurrence (H = 256, f64, 2
#: threads sharing the steps) went from 5.7 / 6.2 ms (fwd / bwd) on OpenBLAS's GEMV to 4.6 / 5.0
#: on tiles.
TILE_MAX_MACS = 1 << 22

#: On MKL's compatible code path (:data:`~.mkl.COMPATIBLE_BRANCH`, AMD's CPUs) the steps
#: multiply with tiles at any size while W_aa takes at most this many bytes (it then stays in
#: the L3 cache, which the tile product re-reads for every four rows). The whole recurrence in
#: the default cut (:func:`recurrence_forward` and :func:`recurrence_backward` under
#: :class:`compute_context`, 2 threads), interleaved in one process, MKL's packed GEMM against
#: tiles, ms fwd / bwd (2-core EPYC, 2026-11-30; the per-product timings above had MKL ahead at
#: 32×1024·512 in f64, the whole recurrence did not): N=64 H=1024 T=50 (the large shape) f32
#: 64.8 / 70.3 against 55.5 / 61.5, f64 158.8 / 158.1 against 111.1 / 128.4; N=32 H=1024 f32
#: 37.9 / 40.5 against 33.8 / 37.5, f64 87.3 / 89.8 against 50.8 / 54.4; N=16 H=1024 f64 44.0 /
#: 54.0 against 29.2 / 35.1; N=128 H=1024 T=20 f32 42.8 / 43.2 against 42.7 / 42.8, f64 118.6 /
#: 119.8 against 101.1 / 109.4; N=64 H=512 f32 16.8 / 17.1 against 13.3 / 14.2, f64 38.8 / 40.3
#: against 33.2 / 31.8. Beyond it MKL: N=64 H=2048 T=10 (16 and 32 MB) f32 59.2 / 54.3 against
#: 75.3 / 71.0, f64 129.6 / 129.8 against 205.3 / 226.7 — though N=8 H=2048 T=20 was faster on
#: tiles (f32 21.7 / 28.1 against 40.9 / 37.9, f64 61.5 / 74.5 against 106.3 / 99.8), a batch
#: that re-reads W_aa fewer times. On MKL's CPU-specific paths (the Xeon, AVX-512) its packed
#: GEMM was the faster above :data:`TILE_MAX_MACS` (:mod:`.mkl`) and takes those steps at any
#: W_aa.
TILE_MAX_WEIGHT_BYTES = 8 << 20


def mkl_packed_steps(N, M, width):
    """Whether the step products ``a·M[:, panel]`` (``width`` units a panel) of a layer
    of batch N multiply with MKL's packed GEMM: N > 1, MKL in use
    (:func:`mkl.packed_steps`), N·K·width > :data:`TILE_MAX_MACS` (M is (K, H)) and, on
    MKL's compatible code path, M over :data:`TILE_MAX_WEIGHT_BYTES` bytes; else register
    tiles. Decided by the shape, the dtype and the MKL in use alone — never by the row
    blocks or the threads — so serial and parallel runs multiply alike."""
    if N == 1 or N * M.shape[0] * width <= TILE_MAX_MACS or not mkl.packed_steps():
        return False
    return mkl.specific_path() or M.nbytes > TILE_MAX_WEIGHT_BYTES


def _packed(M, width, N, rows=None):
    """M's column panels for the step products ``a·M`` of ``rows`` rows (default N)
    in a layer of batch ``N`` — for MKL's matrix-vector product when N = 1 and it is in
    use (:func:`mkl.gemv_steps`: the Xeon); for MKL's packed product
    (:func:`mkl.pack_panels`) where :func:`mkl_packed_steps` says so; else register
    tiles (:func:`~.tiles.pack_tiles`, in this thread's scratch; ``width`` is a multiple
    of :data:`PANEL_ALIGN`, so of a tile's columns). Which product depends on N only,
    never on the row blocks, so serial and parallel runs multiply alike."""
    rows = N if rows is None else rows
    if N == 1 and mkl.gemv_steps():
        return _gemv_panels(M, width)
    if mkl_packed_steps(N, M, width):
        return mkl.pack_panels(M, width, rows, reuse=True)   # used within the call only
    nc = tile_columns(M.dtype)
    return pack_tiles(M, width, _scratch(
        "tiles", (-(-M.shape[1] // width), width // nc, M.shape[0], nc), M.dtype))


def _gemv_panels(M, width):
    """M's row panels for MKL's GEMV (:func:`pack_rows`), as a (panels, bytes) uint8
    array whose rows start on cache lines."""
    K, H = M.shape
    raw = mkl.aligned_panels(-(-H // width), width * K * M.dtype.itemsize)
    pack_rows(M, width, raw.view(M.dtype).reshape(raw.shape[0], width, K))
    return raw


def _layout(N, H, parallel, blocks, panels):
    """How a recurrence call runs: ``(kernel, blocks, rows, width)``.

    The cut — ``blocks`` row blocks of ``rows`` sequences (default
    :func:`recurrence_blocks`), hidden-unit panels of ``width`` (``panels`` default
    :func:`default_panels`) — depends on the shape alone (and on ``blocks`` and
    ``panels`` when given), never on ``parallel`` or the thread count, so every run of
    a layer makes the same BLAS calls. ``kernel`` says where they run: ``"shared"``
    when the threads share each step's panels (:func:`_forward_panels`: a parallel
    layer of one row block and several panels, with two or more threads and cores),
    else whether the ``prange`` variant of the row-block kernel runs
    (:func:`resolve_parallel`)."""
    blocks = recurrence_blocks(N, H) if blocks is None else int(blocks)
    if blocks < 1 or N % blocks or (blocks > 1 and N // blocks < MIN_BLOCK_ROWS):
        raise ValueError(f"blocks must divide the batch N={N} into equal row blocks of "
                         f"at least {MIN_BLOCK_ROWS} rows, got {blocks}")
    if panels is None:
        panels = default_panels(N, H) if blocks == 1 else 1
    width = _panel_width(H, panels)
    kernel = resolve_parallel(parallel, N, H)
    if kernel and blocks == 1 and width < H and _shared_workers() > 1:
        kernel = "shared"
    return kernel, blocks, N // blocks, width


def _shared_workers(panels=None):
    """Threads that share a step's panels: Numba's thread count, at most one per core
    this process may use — the workers spin while they wait for each other, and with
    more than the cores (4 threads on 2) the stream forward took 6.2 ms, not 2.1 —
    and at most one per panel when ``panels`` is given."""
    cores = allowed_cores()        # not the one core pinned() binds the caller to
    return max(1, min(_threads(), cores, panels or cores))


def _run(kernels, shared, kernel, *args):
    """Call the recurrence ``kernel`` chose by :func:`_layout`: the panel-shared one
    with :func:`_shared_workers` workers (one per panel at most; ``args[-1]`` is the
    (blocks, panels, rows, width) scratch) and fresh claim flags, else the serial or
    ``prange`` row-block variant. No BLAS thread pool is involved: the step products
    are register tiles or MKL on its sequential threading layer."""
    if kernel == "shared":
        T, panels = args[0].shape[0], args[-1].shape[1]
        tasks = (T + 1) * panels                            # the backward's, one more step
        return shared(*args, _shared_workers(panels),
                      np.zeros(CLAIMS + tasks, dtype=np.int64))
    return kernels[kernel](*args)


def recurrence_forward(U, W_aa, a0, kind, reverse=False, parallel=None, lengths=None,
                       blocks=None, panels=None, overwrite_U=False):
    """Run the forward recurrence; return every hidden state ``A`` (T, N, H).

    ``U`` (T, N, H) and ``W_aa`` (H, H) share one float dtype; ``a0`` is (N, H);
    ``lengths`` (N,) valid steps per sequence (None: all T); ``blocks`` row blocks of
    the batch (default :func:`recurrence_blocks`), ``panels`` hidden-unit panels of
    the step product (default :func:`default_panels`): other cuts than the default
    give the same numbers up to rounding (the same bits on BLAS kernels that compute
    a row alike wherever it falls in a call, as MKL's AVX-512 paths do). With
    ``overwrite_U`` the states are written over ``U`` (each a<t> element replaces the
    U<t> element it is computed from), saving one activation-sized array.
    """
    T, N, H = U.shape
    A = U if overwrite_U else aligned_empty(U.shape, U.dtype)
    start = _scratch("a0", (N, H), U.dtype)
    start[...] = a0
    kernel, blocks, rows, width = _layout(N, H, parallel, blocks, panels)
    Wp = _packed(W_aa.T, width, N, rows)                          # panels of W_aaᵀ
    _run(_forward_kernels, _forward_panels_kernel, kernel, U, Wp, start,
         _lengths_or_full(lengths, T, N), kind, bool(reverse), A,
         _scratch("buf", (blocks, Wp.shape[0], rows, width), U.dtype))
    return A


def recurrence_backward(dA, A, W_aa, dh_n, kind, reverse=False, parallel=None, lengths=None,
                        blocks=None, panels=None):
    """Run BPTT through the recurrence (``blocks``, ``panels``: as
    :func:`recurrence_forward`).

    Returns ``(delta, dh0, norms)``: δ<t> (T, N, H), ∂L/∂a0 (N, H) and the
    per-sample hidden-gradient norms ‖∂L/∂a<t>‖ (T, N).
    """
    T, N, H = A.shape
    delta = aligned_empty(A.shape, A.dtype)
    carry = _aligned_copy(0 if dh_n is None else dh_n, A.dtype, (N, H))
    kernel, blocks, rows, width = _layout(N, H, parallel, blocks, panels)
    Wp = _packed(W_aa, width, N, rows)                            # panels of W_aa
    norms = np.empty((T, N), dtype=A.dtype)
    chunks = -(-H // PANEL_ALIGN)
    partial = _scratch("partial", (2, N, chunks), A.dtype)
    squares = _scratch("squares", (N, chunks * PANEL_ALIGN), A.dtype, 0)  # 0 past H: kept
    dh0 = _run(_backward_kernels, _backward_panels_kernel, kernel, dA, A, Wp, carry,
               _lengths_or_full(lengths, T, N), kind, bool(reverse), delta, norms, partial,
               squares, _scratch("buf", (blocks, Wp.shape[0], rows, width), A.dtype))
    return delta, dh0, norms


# --- the batched products over all T·N rows ---------------------------------------
#
# One BLAS call per row block (a fixed number of blocks, see PRODUCT_BLOCKS; a register
# tile product instead where the right operand is small, TILE_OPERAND_MAX_BYTES): the
# parallel variant runs the blocks on Numba's threads (BLAS itself single-threaded), so
# the whole layer uses one thread pool and the cores are never oversubscribed.
# Reductions over rows (the weight gradients) give each block its own partial result
# and add them in block order afterwards.

@njit(cache=True, nogil=True, inline="always")
def _matprod(a, b, out):
    """``out = a·b`` with OpenBLAS (the ``mkl`` variants put :func:`mkl.gemm` here)."""
    np.dot(a, b, out)


def _tile_rows(a, Bt, out):
    """``out[:, :tiles·NC] = a·B`` with the register tile product (:mod:`.tiles`), B's
    columns packed by :func:`_row_tiles` into ``Bt``. Numba kernels only."""
    raise NotImplementedError("_tile_rows runs inside Numba kernels only")


@overload(_tile_rows, inline="always")
def _tile_rows_impl(a, Bt, out):
    tile = tiles.product()

    def impl(a, Bt, out):
        tile(a, Bt, out)
    return impl


@njit(cache=True, nogil=True, inline="always")
def _block_rows(M, blocks, b):
    """Rows ``lo:hi`` of block b when M rows are cut into ``blocks`` blocks of
    ``ceil(M / blocks)`` (the last may be short or empty): the cut of every batched
    product here."""
    rows = (M + blocks - 1) // blocks
    return b * rows, min(M, (b + 1) * rows)


@njit(cache=True, nogil=True, inline="always")
def _block_sum(partial, out, b):
    """Where block b of a sum over rows leaves its partial result: in ``out`` itself for
    block 0, in ``partial[b - 1]`` for the others (so ``partial`` holds blocks - 1)."""
    return out if b == 0 else partial[b - 1]


@njit(cache=True, nogil=True, inline="always")
def _add_partials(partial, M, blocks, out):
    """``out += partial[0] + partial[1] + …`` over the non-empty blocks after the first
    of ``blocks`` blocks of M rows, in block order; ``out`` holds block 0's sum
    (:func:`_block_sum`), or is zeroed here when M = 0. The bits of adding every
    block's partial in order, without copying the first (a copy and a zeroing of the
    output that took ~0.1–0.2 ms of the stream float64 weight gradients, ~4 %)."""
    if M == 0:
        out[...] = 0
    for b in range(1, blocks):
        lo, hi = _block_rows(M, blocks, b)
        if lo < hi:
            out += partial[b - 1]


@njit(cache=True, nogil=True, inline="always")
def _colsum_rows(a, lo, hi, acc):
    """``acc = Σ a[lo:hi]`` over rows, in row order."""
    acc[:] = 0
    for i in range(lo, hi):
        for j in range(a.shape[1]):
            acc[j] += a[i, j]


def _gemm_rows(a, b, Bt, bias, blocks, out):
    """``out = a·b (+ bias)``; a (M, K), b (K, H), bias (H,) or empty, out (M, H); b's
    tiles in ``Bt`` when it multiplies with them (:func:`_row_tiles`), else empty."""
    for blk in prange(blocks):
        lo, hi = _block_rows(a.shape[0], blocks, blk)
        if lo < hi:
            if Bt.shape[0]:
                _tile_rows(a[lo:hi], Bt, out[lo:hi])
            else:
                _matprod(a[lo:hi], b, out[lo:hi])
            if bias.size:
                for i in range(lo, hi):
                    for j in range(out.shape[1]):
                        out[i, j] += bias[j]


def _gemm_tn(a, b, blocks, partial, out):
    """``out = aᵀ·b`` summed over the M rows; a (M, H), b (M, K), partial (blocks - 1, H,
    K)."""
    M = a.shape[0]
    for blk in prange(blocks):
        lo, hi = _block_rows(M, blocks, blk)
        if lo < hi:
            _matprod(a[lo:hi].T, b[lo:hi], _block_sum(partial, out, blk))
    _add_partials(partial, M, blocks, out)


def _colsum(a, blocks, partial, out):
    """``out = Σ_rows a``; a (M, H), partial (blocks - 1, H)."""
    M = a.shape[0]
    for blk in prange(blocks):
        lo, hi = _block_rows(M, blocks, blk)
        _colsum_rows(a, lo, hi, _block_sum(partial, out, blk))
    _add_partials(partial, M, blocks, out)


def _product_kernel(py_func, parallel, dtype):
    """The compiled variant of a batched-product kernel: parallel or serial, on the BLAS
    :func:`product_engine` names for ``dtype``."""
    return _variant_of(py_func, bool(parallel), product_engine(dtype))


def product_engine(dtype):
    """Whose ``?gemm`` the batched products of ``dtype`` call: ``"mkl"`` where
    :func:`mkl.batched_products` says so (each product ~10–40 % faster than OpenBLAS
    on the Xeon; float32 only on AMD's CPUs), else ``"openblas"`` where the wheel's
    OpenBLAS is loaded (:mod:`.openblas`: its weight gradients 12–19 % faster than
    SciPy's here), else ``"scipy"``."""
    if mkl.batched_products(dtype):
        return "mkl"
    return "openblas" if openblas.load() else "scipy"


@functools.cache
def _variant_of(py_func, parallel, engine):
    return _compile(py_func, parallel, engine)


_colsum_kernels = {p: _compile(_colsum, p) for p in (False, True)}


#: Row blocks of the batched products. Fixed — never the thread count — so that serial
#: and parallel runs, and runs with any NUMBA_NUM_THREADS, give bitwise the same
#: products (the parallel variant runs the same blocks on several threads). Sums over
#: rows keep one partial result per block, hence fewer blocks there.
PRODUCT_BLOCKS, SUM_BLOCKS = 4, 2


def _blocks(M, most):
    return max(1, min(M, most))


#: Bytes of a batched product's right operand b (K, H) up to which the product multiplies
#: with register tiles (:mod:`.tiles`), b packed once per call, rather than the BLAS (when
#: H is a multiple of a tile's columns): the operand then stays in a core's L2 while the
#: tile product re-reads it for every four rows. Whole calls on 2 threads (4 row blocks,
#: the packing included), ms, BLAS against tiles (2-core EPYC, 2026-11-30): the projection
#: and dx of the tiny shape float64 0.321 / 0.248 and 0.308 / 0.225, float32 0.218 / 0.189
#: and 0.190 / 0.173 (MKL); medium float64 6.64 / 6.07 and 6.02 / 5.81, float32 3.67 /
#: 2.88 and 3.35 / 2.84; stream (256 KB in float64) at parity, 0.97 / 0.94 and 0.92 /
#: 0.93. The sums over rows (the weight gradients) stay on the BLAS: a tile kernel of our
#: own for them, unpacked, ran at 7–8 GMAC/s in float64 against OpenBLAS's 15–18.
TILE_OPERAND_MAX_BYTES = 256 << 10


def _row_tiles(b, tag):
    """b (K, H) packed for :func:`_tile_rows`, (H / NC, K, NC) in this thread's scratch
    ``tag``, when it takes at most :data:`TILE_OPERAND_MAX_BYTES` and H is a multiple of
    a tile's columns (NC); else an empty array (the BLAS multiplies). Decided by the shape
    and dtype alone, so serial and parallel runs multiply alike."""
    K, H = b.shape
    nc = tile_columns(b.dtype)
    if not K or not H or H % nc or b.nbytes > TILE_OPERAND_MAX_BYTES:
        return _NO_TILES[b.dtype]
    return pack_tiles(b, H, _scratch(tag, (1, H // nc, K, nc), b.dtype))[0]


def _matmul(a, b, bias=None, parallel=False, tiles=True):
    """``a·b (+ bias)`` for 2-D a (M, K), b (K, H), in row blocks: with register tiles
    where :func:`_row_tiles` takes b (and ``tiles``), else the BLAS."""
    out = aligned_empty((a.shape[0], b.shape[1]), a.dtype)
    Bt = _row_tiles(b, "row_tiles") if tiles else _NO_TILES[a.dtype]
    _product_kernel(_gemm_rows, parallel, a.dtype)(
        _tile_operand(a), b, Bt, _NO_BIAS[a.dtype] if bias is None else bias,
        _blocks(a.shape[0], PRODUCT_BLOCKS), out)
    return out


def _tile_operand(a):
    """``a`` as the tile product takes its rows — C-contiguous and writeable, the type
    its compiled signatures name — copied only when it is not (a read-only or strided
    input): a kernel that may call the tile product compiles that call for whatever
    ``a`` it is given, taken or not."""
    return a if a.flags.c_contiguous and a.flags.writeable else np.array(a, order="C")


_NO_BIAS = {np.dtype(t): np.empty(0, dtype=t) for t in (np.float32, np.float64)}
_NO_TILES = {np.dtype(t): np.empty((0, 0, 0), dtype=t) for t in (np.float32, np.float64)}


def _matmul_tn(a, b, parallel=False):
    """``aᵀ·b`` for a (M, H), b (M, K): a sum over the M rows, in row blocks."""
    blocks = _blocks(a.shape[0], SUM_BLOCKS)
    out = aligned_empty((a.shape[1], b.shape[1]), a.dtype)
    partial = aligned_empty((blocks - 1, a.shape[1], b.shape[1]), a.dtype)
    _product_kernel(_gemm_tn, parallel, a.dtype)(a, b, blocks, partial, out)
    return out


def input_projection(x, W_ax, b, parallel=False):
    """``U = x·W_axᵀ + b``: (T, N, D) → (T, N, H), one GEMM over all T·N rows."""
    T, N, D = x.shape
    return _matmul(x.reshape(T * N, D), W_ax.T, b, parallel).reshape(T, N, W_ax.shape[0])


def input_grad(delta, W_ax, parallel=False):
    """``dx = δ·W_ax``: (T, N, H) → (T, N, D), one GEMM."""
    T, N, H = delta.shape
    return _matmul(delta.reshape(T * N, H), W_ax, None, parallel).reshape(T, N, W_ax.shape[1])


def weight_grads(delta, x, A, a0, reverse=False, parallel=False):
    """Weight and bias gradients of one layer-direction.

    ``dW_ax = Σ_t δ<t>ᵀ x<t>``, ``dW_aa = Σ_t δ<t>ᵀ a<t-1>``, ``db = Σ_t Σ_n δ<t>``;
    ``a<t-1>`` is ``a<t+1>`` for the reverse direction and ``a0`` at the sequence
    start. Returns ``(dW_ax (H, D), dW_aa (H, H), db (H,))``.
    """
    T, N, H = delta.shape
    D = x.shape[2]
    d2 = delta.reshape(T * N, H)
    dW_ax = _matmul_tn(d2, x.reshape(T * N, D), parallel)
    dW_aa = _with_initial_state(_matmul_tn(*_recurrent_pairs(delta, A, reverse), parallel),
                                delta, a0, reverse)
    blocks = _blocks(T * N, SUM_BLOCKS)
    db = np.empty(H, dtype=delta.dtype)
    _colsum_kernels[bool(parallel)](d2, blocks, np.empty((blocks - 1, H), delta.dtype), db)
    return dW_ax, dW_aa, db


def layer_grads(delta, x, A, a0, W_ax, reverse=False, parallel=False):
    """Every batched product of one layer-direction's backward in one kernel call:
    ``(dW_ax, dW_aa, db, dx)``, as :func:`weight_grads` and :func:`input_grad` give
    them, bitwise (the same BLAS calls on the same row blocks, added up in the same
    order).

    One call and one parallel region instead of four: a region costs ~15 µs to start
    here and each call ~10 µs of Python, ~0.1 ms of a tiny-shape train step whose
    fixed cost is ~0.6 ms."""
    T, N, H = delta.shape
    D = x.shape[2]
    d2 = _tile_operand(delta.reshape(T * N, H))
    d_later, a_earlier = _recurrent_pairs(delta, A, reverse)
    dt = delta.dtype
    sums, sums_aa = _blocks(T * N, SUM_BLOCKS), _blocks(d_later.shape[0], SUM_BLOCKS)
    dW_ax, dW_aa = aligned_empty((H, D), dt), aligned_empty((H, H), dt)
    db, dx = np.empty(H, dtype=dt), aligned_empty((T * N, D), dt)
    _product_kernel(_layer_grads, parallel, dt)(
        d2, x.reshape(T * N, D), d_later, a_earlier, W_ax, _row_tiles(W_ax, "dx_tiles"),
        sums, sums_aa,
        _blocks(T * N, PRODUCT_BLOCKS), _scratch("part_ax", (SUM_BLOCKS - 1, H, D), dt),
        _scratch("part_aa", (SUM_BLOCKS - 1, H, H), dt),
        _scratch("part_b", (SUM_BLOCKS - 1, H), dt),
        dW_ax, dW_aa, db, dx)
    return dW_ax, _with_initial_state(dW_aa, delta, a0, reverse), db, dx.reshape(T, N, D)


def _recurrent_pairs(delta, A, reverse):
    """The rows of ``dW_aa = Σ_t δ<t>ᵀ a<t-1>`` whose previous state is in ``A``:
    ``(δ<1…T-1>, a<0…T-2>)`` as ((T-1)·N, H) arrays (δ<0…T-2> with a<1…T-1> for the
    reverse direction, whose previous state is a<t+1>); no rows when T = 1."""
    T, N, H = delta.shape
    later, earlier = (slice(0, T - 1), slice(1, T)) if reverse else \
        (slice(1, T), slice(0, T - 1))
    return delta[later].reshape(-1, H), A[earlier].reshape(-1, H)


def _with_initial_state(dW_aa, delta, a0, reverse):
    """``dW_aa`` plus the term of the step whose previous state is ``a0`` (step 0, or
    T-1 for the reverse direction). A zero initial state adds exactly nothing — except
    when its term is the only one (T = 1): δᵀ·0 is NaN where δ is ±inf or NaN, as in
    the reference, and a model fed NaN must not report a finite dW_aa."""
    if delta.shape[0] == 1 or a0.any():
        dW_aa += _matmul_tn(delta[delta.shape[0] - 1 if reverse else 0], a0)
    return dW_aa


def _layer_grads(d2, x2, d_later, a_earlier, W_ax, Bt, sums, sums_aa, row_blocks,
                 part_ax, part_aa, part_b, dW_ax, dW_aa, db, dx):
    """Body of :func:`layer_grads`: worker w does block w of each sum over rows
    (``dW_ax = d2ᵀ·x2``, ``dW_aa = d_laterᵀ·a_earlier``, ``db = Σ_rows d2``; ``sums``,
    ``sums_aa`` blocks) and its share of the ``row_blocks`` blocks of ``dx =
    d2·W_ax`` (with W_ax's tiles ``Bt`` where :func:`_row_tiles` gives them): the blocks
    of :func:`_gemm_tn`, :func:`_colsum` and :func:`_gemm_rows`."""
    M = d2.shape[0]
    Ma = d_later.shape[0]
    per_worker = (row_blocks + SUM_BLOCKS - 1) // SUM_BLOCKS
    for w in prange(SUM_BLOCKS):
        if w < sums:
            lo, hi = _block_rows(M, sums, w)
            if lo < hi:
                _matprod(d2[lo:hi].T, x2[lo:hi], _block_sum(part_ax, dW_ax, w))
            _colsum_rows(d2, lo, hi, _block_sum(part_b, db, w))
        if w < sums_aa:
            lo, hi = _block_rows(Ma, sums_aa, w)
            if lo < hi:
                _matprod(d_later[lo:hi].T, a_earlier[lo:hi], _block_sum(part_aa, dW_aa, w))
        for blk in range(w * per_worker, min(row_blocks, (w + 1) * per_worker)):
            lo, hi = _block_rows(M, row_blocks, blk)
            if lo < hi:
                if Bt.shape[0]:
                    _tile_rows(d2[lo:hi], Bt, dx[lo:hi])
                else:
                    _matprod(d2[lo:hi], W_ax, dx[lo:hi])
    _add_partials(part_ax, M, sums, dW_ax)
    _add_partials(part_aa, Ma, sums_aa, dW_aa)
    _add_partials(part_b, M, sums, db)


class compute_context:
    """Enter around a whole forward or backward: BLAS runs single-threaded inside
    (our own row blocks are the only parallelism), and with ``parallel`` the call
    waits for other Python threads' parallel calls unless Numba's threading layer is
    thread-safe (see :mod:`.threads`) and the calling thread is kept off its workers'
    cores (:func:`~.affinity.pin_caller`). Serial kernels release the GIL and run
    concurrently from any number of threads.

    A class, not a ``contextlib`` generator around three others: ~4 µs to enter and
    leave where that took ~40, twice in every train step."""
    __slots__ = ("parallel", "_taken", "_saved")

    def __init__(self, parallel=False):
        self.parallel = parallel

    def __enter__(self):
        blas_single_threaded().__enter__()
        try:
            self._taken = guard_enter(self.parallel)
            try:
                self._saved = pin_caller(self.parallel)
            except BaseException:
                guard_exit(self._taken)
                raise
        except BaseException:
            blas_single_threaded().__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        try:
            unpin_caller(self._saved)
        finally:
            try:
                guard_exit(self._taken)
            finally:
                blas_single_threaded().__exit__(None, None, None)
        return False


# --- clipping: reductions and in-place updates over flat gradient arrays ----------

@njit(cache=True, nogil=True)
def norm_partial(g, p):
    """Partial p-norm of a flat array, accumulated in float64.

    Returns ``max|g|`` for ``p = inf``, else ``Σ|g|^p`` (combine partials with
    :func:`numba_rnn.clip.clip_grad_norm`). NaN anywhere gives NaN.
    """
    acc = 0.0
    if p == np.inf:
        for i in range(g.size):
            v = abs(np.float64(g[i]))
            if v > acc or v != v:
                acc = v
            if acc != acc:
                return acc
    elif p == 2.0:
        for i in range(g.size):
            v = np.float64(g[i])
            acc += v * v
    elif p == 1.0:
        for i in range(g.size):
            acc += abs(np.float64(g[i]))
    else:
        for i in range(g.size):
            acc += abs(np.float64(g[i])) ** p
    return acc


@njit(cache=True, nogil=True)
def scale_(g, c):
    """``g *= c`` in place on a flat array."""
    c = g.dtype.type(c)
    for i in range(g.size):
        g[i] *= c


@njit(cache=True, nogil=True)
def clamp_(g, c):
    """Clamp a flat array to ``[-c, c]`` in place; NaN stays. Returns how many moved."""
    hi = g.dtype.type(c)
    lo = -hi
    moved = 0
    for i in range(g.size):
        v = g[i]
        if v > hi:
            g[i] = hi
            moved += 1
        elif v < lo:
            g[i] = lo
            moved += 1
    return moved


# --- losses and optimizer updates live in their own small modules ------------------
from .cpu_loss import softmax_xent  # noqa: E402,F401
from .cpu_optim import adagrad_, adam_, rmsprop_, sgd_  # noqa: E402,F401
from .cpu_analysis import temporal_credit  # noqa: E402,F401
from .cpu_arrays import (add_, asarray, assign_, concat_last, copy, dropout_mask,  # noqa: E402,F401
                         empty, from_host, inplace_view, is_array, mul_, nonfinite,
                         on_device, row_view, rows_view, swap01, synchronize, take_last, to_host,
                         zero_padding, zeros)
from .cpu_arrays import (act_, act_grad_, gather_steps, linear, linear_backward,  # noqa: E402,F401
                         scatter_steps)
from .cpu_arrays import argmax_rows, one_hot, sample_rows, stack  # noqa: E402,F401
from .cpu_arrays import apply_eos, cols_to_layers, layers_to_cols  # noqa: E402,F401
from .cpu_arrays import kernel_lengths  # noqa: E402,F401
