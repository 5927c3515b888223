"""CPU kernels: the two sequential recurrences in Numba, the batched products in BLAS.

Shapes (time-major): T time steps, N batch, D input size, H hidden size.

Only the recurrences are sequential in time. Each is **one compiled call for the
whole sequence**: no Python runs per time step. Everything else (the input
projection and the weight, bias and input gradients) is one matrix product over all
T·N rows, a BLAS call per row block from a Numba kernel.

The recurrence kernels exist in a serial and a ``prange``-parallel variant compiled
from the same source (``prange`` is ``range`` when ``parallel=False``). Both cut the
batch rows into blocks, and each block does its own matrix product and activations;
the parallel variant runs the blocks on separate threads (one per thread), the serial
one uses a single block. Given the same blocks both variants execute the same
instructions on every row, so they give bitwise the same numbers.

Forward and backward are written as mirrors, line for line::

    forward, t = 0 .. T-1                    backward, t = T-1 .. 0
    z      = a<t-1>·W_aaᵀ                    g<t>   = dA<t> + carry        (= ∂L/∂a<t>)
    a<t>   = g(U<t> + z)                     δ<t>   = g<t> ⊙ g'(a<t>)
                                             carry  = δ<t>·W_aa            (→ ∂L/∂a<t-1>)

A reverse direction walks time the other way: its "previous" step is t+1.
"""
import contextlib
import types

import numpy as np
from numba import njit, prange

from .activations import activate_row, activation_grad_row
from .threads import blas_single_threaded, parallel_guard


def _compile(py_func, parallel):
    """Compile ``py_func`` serial or parallel, under its own name.

    Numba's on-disk cache keys entries by the function's qualified name, not by its
    compile flags, so the two variants are given distinct names to keep their cache
    entries apart.
    """
    suffix = "_parallel" if parallel else "_serial"
    clone = types.FunctionType(py_func.__code__, py_func.__globals__,
                               py_func.__name__ + suffix, py_func.__defaults__,
                               py_func.__closure__)
    clone.__qualname__ = py_func.__qualname__ + suffix
    clone.__doc__ = py_func.__doc__
    return njit(parallel=parallel, cache=True, nogil=True, error_model="numpy")(clone)


@njit(cache=True, nogil=True, inline="always")
def _rows_times(a, M, out):
    """``out = a·M`` for a block of rows ``a`` (n, H); one row goes through GEMV."""
    if a.shape[0] == 1:
        np.dot(M.T, a[0], out[0])                           # (H,) = Mᵀ·a: matrix-vector
    else:
        np.dot(a, M, out)


def _forward(U, W_aa, a0, lengths, kind, reverse, blocks, A):
    """Forward recurrence of one layer-direction over the whole sequence.

    Parameters
    ----------
    U : (T, N, H) array
        Input projection ``x·W_axᵀ + b`` (computed by :func:`input_projection`).
    W_aa : (H, H) array
        Recurrent weights.
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
    blocks : int ≥ 1
        The batch rows are cut into this many blocks; each block does its own
        matrix product (a GEMV for a single row) and activations. The parallel
        variant runs the blocks on different threads.
    A : (T, N, H) C-contiguous array, written
        Every hidden state ``a<t>`` (the carried state at padding steps).
    """
    T, N, H = U.shape
    z = np.empty((N, H), dtype=A.dtype)
    W_aaT = W_aa.T
    prev = a0
    rows = (N + blocks - 1) // blocks
    for s in range(T):
        t = T - 1 - s if reverse else s
        for blk in prange(blocks):
            lo, hi = blk * rows, min(N, (blk + 1) * rows)
            if lo < hi:
                _rows_times(prev[lo:hi], W_aaT, z[lo:hi])   # z = a<t-1>·W_aaᵀ
                for n in range(lo, hi):
                    if t < lengths[n]:
                        activate_row(kind, U[t, n], z[n], A[t, n])  # a<t> = g(U<t> + z)
                    else:
                        A[t, n, :] = prev[n, :]             # padding: a<t> = a<t-1>
        prev = A[t]


def _backward(dA, A, W_aa, dh_n, lengths, kind, reverse, blocks, delta, norms):
    """Backward recurrence (BPTT) of one layer-direction, the mirror of ``_forward``.

    Parameters
    ----------
    dA : (T, N, H) array
        ∂L/∂a<t> arriving from above (the output head or the next layer), not yet
        including what flows back through time. Ignored at padding steps.
    A : (T, N, H) array
        The hidden states saved by the forward pass.
    W_aa : (H, H) array
        Recurrent weights.
    dh_n : (N, H) C-contiguous array, overwritten (used as a work buffer)
        ∂L/∂(final state).
    lengths, kind, reverse, blocks
        As in ``_forward``.
    delta : (T, N, H) C-contiguous array, written
        δ<t> = ∂L/∂z<t>, the gradient at the pre-activation (0 at padding steps).
    norms : (T, N) array, written
        ‖∂L/∂a<t>‖₂ per sample: the per-timestep hidden-gradient norm (0 at padding).

    Returns
    -------
    (N, H) array
        ∂L/∂a0 (= dh0).
    """
    T, N, H = A.shape
    zero = delta.dtype.type(0)
    carry = dh_n
    nxt = np.empty_like(dh_n)
    rows = (N + blocks - 1) // blocks
    for s in range(T):
        t = s if reverse else T - 1 - s
        for blk in prange(blocks):
            lo, hi = blk * rows, min(N, (blk + 1) * rows)
            if lo < hi:
                for n in range(lo, hi):
                    if t < lengths[n]:
                        acc = zero
                        for j in range(H):
                            gj = dA[t, n, j] + carry[n, j]  # g<t> = dA<t> + δ<t+1>·W_aa
                            acc += gj * gj
                            carry[n, j] = gj
                        norms[t, n] = np.sqrt(acc)          # ‖∂L/∂a<t>‖
                        activation_grad_row(kind, A[t, n], carry[n], delta[t, n])  # δ<t>
                    else:
                        norms[t, n] = zero
                        delta[t, n, :] = zero
                _rows_times(delta[t, lo:hi], W_aa, nxt[lo:hi])   # nxt = δ<t>·W_aa
                for n in range(lo, hi):
                    if t >= lengths[n]:
                        nxt[n, :] = carry[n, :]             # padding: the gradient passes
        carry, nxt = nxt, carry
    return carry


_forward_kernels = {p: _compile(_forward, p) for p in (False, True)}
_backward_kernels = {p: _compile(_backward, p) for p in (False, True)}


def _lengths_or_full(lengths, T, N):
    if lengths is None:
        return np.full(N, T, dtype=np.int64)
    return np.ascontiguousarray(lengths, dtype=np.int64)


def parallel_products(parallel):
    """Whether the batched products run in row blocks on Numba's threads: always when
    there is more than one thread (one parallel region per product amortises well;
    measured on 2 cores, medium train step 1.6 → 1.05 of NumPy's time), and with
    ``parallel`` anyway."""
    import numba
    return bool(parallel) or numba.get_num_threads() > 1


def row_blocks(N, parallel):
    """How many row blocks a recurrence uses: one serially, one per thread in parallel
    (never more than the rows)."""
    if not parallel:
        return 1
    import numba
    return max(1, min(N, numba.get_num_threads()))


def recurrence_forward(U, W_aa, a0, kind, reverse=False, parallel=False, lengths=None,
                       blocks=None, overwrite_U=False):
    """Run the forward recurrence; return every hidden state ``A`` (T, N, H).

    ``U`` (T, N, H) and ``W_aa`` (H, H) share one float dtype; ``a0`` is (N, H);
    ``lengths`` (N,) valid steps per sequence (None: all T); ``blocks`` row blocks
    (default :func:`row_blocks`). With ``overwrite_U`` the states are written over
    ``U`` (each a<t> element replaces the U<t> element it is computed from), saving
    one activation-sized array.
    """
    T, N, _ = U.shape
    A = U if overwrite_U else np.empty(U.shape, dtype=U.dtype)
    a0 = np.array(a0, dtype=U.dtype, order="C", copy=True)
    blocks = row_blocks(N, parallel) if blocks is None else int(blocks)
    _forward_kernels[bool(parallel)](U, W_aa, a0, _lengths_or_full(lengths, T, N), kind,
                                     bool(reverse), blocks, A)
    return A


def recurrence_backward(dA, A, W_aa, dh_n, kind, reverse=False, parallel=False, lengths=None,
                        blocks=None):
    """Run BPTT through the recurrence.

    Returns ``(delta, dh0, norms)``: δ<t> (T, N, H), ∂L/∂a0 (N, H) and the
    per-sample hidden-gradient norms ‖∂L/∂a<t>‖ (T, N).
    """
    T, N, H = A.shape
    delta = np.empty_like(A)
    norms = np.empty((T, N), dtype=A.dtype)
    if dh_n is None:
        carry = np.zeros((N, H), dtype=A.dtype)
    else:
        carry = np.array(dh_n, dtype=A.dtype, order="C", copy=True)
    blocks = row_blocks(N, parallel) if blocks is None else int(blocks)
    dh0 = _backward_kernels[bool(parallel)](dA, A, W_aa, carry, _lengths_or_full(lengths, T, N),
                                            kind, bool(reverse), blocks, delta, norms)
    return delta, dh0, norms


# --- the batched products over all T·N rows ---------------------------------------
#
# One BLAS call per row block (a fixed number of blocks, see PRODUCT_BLOCKS): the
# parallel variant runs the blocks on Numba's threads (BLAS itself single-threaded), so
# the whole layer uses one thread pool and the cores are never oversubscribed.
# Reductions over rows (the weight gradients) give each block its own partial result
# and add them in block order afterwards.

def _gemm_rows(a, b, bias, blocks, out):
    """``out = a·b (+ bias)``; a (M, K), b (K, H), bias (H,) or empty, out (M, H)."""
    M = a.shape[0]
    rows = (M + blocks - 1) // blocks
    for blk in prange(blocks):
        lo, hi = blk * rows, min(M, (blk + 1) * rows)
        if lo < hi:
            np.dot(a[lo:hi], b, out[lo:hi])
            if bias.size:
                for i in range(lo, hi):
                    for j in range(out.shape[1]):
                        out[i, j] += bias[j]


def _gemm_tn(a, b, blocks, partial, out):
    """``out = aᵀ·b`` summed over the M rows; a (M, H), b (M, K), partial (blocks, H, K)."""
    M = a.shape[0]
    rows = (M + blocks - 1) // blocks
    for blk in prange(blocks):
        lo, hi = blk * rows, min(M, (blk + 1) * rows)
        if lo < hi:
            np.dot(a[lo:hi].T, b[lo:hi], partial[blk])
        else:
            partial[blk][:] = 0
    out[:] = partial[0]
    for blk in range(1, blocks):
        out += partial[blk]


def _colsum(a, blocks, partial, out):
    """``out = Σ_rows a``; a (M, H), partial (blocks, H)."""
    M, H = a.shape
    rows = (M + blocks - 1) // blocks
    for blk in prange(blocks):
        lo, hi = blk * rows, min(M, (blk + 1) * rows)
        acc = partial[blk]
        acc[:] = 0
        for i in range(lo, hi):
            for j in range(H):
                acc[j] += a[i, j]
    out[:] = partial[0]
    for blk in range(1, blocks):
        out += partial[blk]


_gemm_rows_kernels = {p: _compile(_gemm_rows, p) for p in (False, True)}
_gemm_tn_kernels = {p: _compile(_gemm_tn, p) for p in (False, True)}
_colsum_kernels = {p: _compile(_colsum, p) for p in (False, True)}


#: Row blocks of the batched products. Fixed — never the thread count — so that serial
#: and parallel runs, and runs with any NUMBA_NUM_THREADS, give bitwise the same
#: products (the parallel variant runs the same blocks on several threads). Sums over
#: rows keep one partial result per block, hence fewer blocks there.
PRODUCT_BLOCKS, SUM_BLOCKS = 4, 2


def _blocks(M, most):
    return max(1, min(M, most))


def _matmul(a, b, bias=None, parallel=False):
    """``a·b (+ bias)`` for 2-D a (M, K), b (K, H), in row blocks."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    no_bias = np.empty(0, dtype=a.dtype)
    _gemm_rows_kernels[bool(parallel)](a, b, no_bias if bias is None else bias,
                                       _blocks(a.shape[0], PRODUCT_BLOCKS), out)
    return out


def _matmul_tn(a, b, parallel=False):
    """``aᵀ·b`` for a (M, H), b (M, K): a sum over the M rows, in row blocks."""
    blocks = _blocks(a.shape[0], SUM_BLOCKS)
    out = np.empty((a.shape[1], b.shape[1]), dtype=a.dtype)
    partial = np.empty((blocks, a.shape[1], b.shape[1]), dtype=a.dtype)
    _gemm_tn_kernels[bool(parallel)](a, b, blocks, partial, out)
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
    if reverse:   # a<t+1> pairs with δ<t> for t < T-1; a0 pairs with δ<T-1>
        dW_aa = _matmul_tn(delta[T - 1], a0)
        if T > 1:
            dW_aa += _matmul_tn(delta[:-1].reshape(-1, H), A[1:].reshape(-1, H), parallel)
    else:         # a<t-1> pairs with δ<t> for t > 0; a0 pairs with δ<0>
        dW_aa = _matmul_tn(delta[0], a0)
        if T > 1:
            dW_aa += _matmul_tn(delta[1:].reshape(-1, H), A[:-1].reshape(-1, H), parallel)
    blocks = _blocks(T * N, SUM_BLOCKS)
    db = np.empty(H, dtype=delta.dtype)
    _colsum_kernels[bool(parallel)](d2, blocks, np.empty((blocks, H), delta.dtype), db)
    return dW_ax, dW_aa, db


@contextlib.contextmanager
def compute_context(parallel=False):
    """Enter around a whole forward or backward: BLAS runs single-threaded inside
    (our own row blocks are the only parallelism), and with ``parallel`` the call
    waits for other Python threads' parallel calls unless Numba's threading layer is
    thread-safe (see :mod:`.threads`). Serial kernels release the GIL and run
    concurrently from any number of threads."""
    with blas_single_threaded(), parallel_guard(parallel):
        yield


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
                         on_device, swap01, synchronize, take_last, to_host, zero_padding,
                         zeros)
from .cpu_arrays import (act_, act_grad_, gather_steps, linear, linear_backward,  # noqa: E402,F401
                         scatter_steps)
from .cpu_arrays import argmax_rows, one_hot, sample_rows, stack  # noqa: E402,F401
from .cpu_arrays import apply_eos, cols_to_layers, layers_to_cols  # noqa: E402,F401
from .cpu_arrays import kernel_lengths  # noqa: E402,F401
