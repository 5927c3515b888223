"""The CPU kernels, one by one, against tests/reference.py."""
import os

import numpy as np
import pytest

from numba_rnn.kernels import NONLINEARITIES, cpu, get_backend
from numba_rnn.kernels.activations import activate_row, activation_grad_row

from . import reference as ref
from .conftest import fresh_recurrence_ir
from .panels import assert_default_cut_same_bits_any_threads, assert_cuts_agree


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_rows(nonlinearity, dtype, rng):
    kind = NONLINEARITIES[nonlinearity]
    u = rng.standard_normal(50).astype(dtype) * 3
    z = rng.standard_normal(50).astype(dtype)
    out = np.empty(50, dtype)
    z0 = z.copy()
    activate_row(kind, u, z, out)                        # z is scratch: it ends as u + z
    np.testing.assert_array_equal(z, u + z0)
    z = z0
    rtol = 2e-7 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(out, ref.act(u + z, nonlinearity), rtol=rtol)
    out_in_place = u.copy()                              # out may be u itself (overwrite_U)
    activate_row(kind, out_in_place, z0.copy(), out_in_place)
    np.testing.assert_array_equal(out_in_place, out)
    g = rng.standard_normal(50).astype(dtype)
    dz = np.empty(50, dtype)
    activation_grad_row(kind, out, g, dz)
    assert dz.dtype == dtype
    np.testing.assert_allclose(dz, g * ref.act_deriv((u + z).astype(np.float64), nonlinearity),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_activations_saturate_and_propagate_nan():
    u = np.array([-50.0, -20.0, 20.0, 50.0, np.nan, np.inf, -np.inf])
    out = np.empty_like(u)
    activate_row(NONLINEARITIES["tanh"], u, np.zeros_like(u), out)
    np.testing.assert_array_equal(out, [-1, -1, 1, 1, np.nan, 1, -1])
    dz = np.empty_like(u)
    activation_grad_row(NONLINEARITIES["tanh"], out, np.ones_like(u), dz)
    np.testing.assert_array_equal(dz[[0, 1, 2, 3, 5, 6]], 0.0)       # exact zero, no NaN
    activate_row(NONLINEARITIES["relu"], u, np.zeros_like(u), out)
    np.testing.assert_array_equal(out, [0, 0, 20, 50, np.nan, np.inf, 0])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("N,blocks,panels,H", [(3, 1, 1, 5), (3, 1, 2, 37), (5, 1, 3, 40),
                                                (1, 1, 1, 5), (1, 1, 2, 37), (6, 3, 1, 5),
                                                (4, 2, 2, 37)])
def test_recurrence_and_batched_products_match_reference(reverse, nonlinearity, parallel, N,
                                                         blocks, panels, H, rng):
    T, D = 6, 4
    x = rng.standard_normal((T, N, D))
    a0 = rng.standard_normal((N, H))
    W_ax, W_aa, b = (rng.standard_normal((H, D)) * 0.5, rng.standard_normal((H, H)) * 0.5,
                     rng.standard_normal(H))
    kind = NONLINEARITIES[nonlinearity]
    U = cpu.input_projection(x, W_ax, b)
    A = cpu.recurrence_forward(U, W_aa, a0, kind, reverse, parallel, blocks=blocks,
                               panels=panels)
    rA, rZ = ref.direction_forward(x, a0, W_ax, W_aa, b, nonlinearity, reverse)
    np.testing.assert_allclose(A, rA, atol=1e-12)

    dA, d_last = rng.standard_normal((T, N, H)), rng.standard_normal((N, H))
    delta, dh0, norms = cpu.recurrence_backward(dA, A, W_aa, d_last, kind, reverse, parallel,
                                                blocks=blocks, panels=panels)
    dW_ax, dW_aa, db = cpu.weight_grads(delta, x, A, a0, reverse)
    dx = cpu.input_grad(delta, W_ax)
    r = ref.direction_backward(dA, d_last, x, a0, rA, rZ, W_ax, W_aa, nonlinearity, reverse)
    for ours, theirs in zip((dW_ax, dW_aa, db, dx, dh0, norms), r, strict=False):
        np.testing.assert_allclose(ours, theirs, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,H", [(12, 40), (16, 64), (64, 256), (1, 256), (7, 128), (5, 40),
                                 (4, 1024), (64, 1024)])
def test_default_cut_bitwise_equal_serial_or_parallel_any_thread_count(dtype, N, H, rng):
    """The cut of a layer depends on its shape alone, so serial, parallel and
    ``parallel=None`` on 1 or 2 threads make the same products: states, δ, dh0 and
    the norms are the same bits (padding included) on whatever the default picks
    (register tiles at these shapes; MKL's packed steps: tests/test_mkl.py).
    Shapes: two row blocks (12, 16, 64), two shared panels (1, 7; 4 and 64 at H = 1024,
    which split but are not cut in rows: 64 is the large bench shape, on register tiles
    where MKL is on its compatible path), neither (5)."""
    T = 9
    U = rng.standard_normal((T, N, H)).astype(dtype)
    W = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    a0 = rng.standard_normal((N, H)).astype(dtype)
    dA = rng.standard_normal((T, N, H)).astype(dtype)
    lengths = np.resize([9, 3, 9, 1, 5, 9, 8, 2, 9, 7, 9, 4], N)
    A = assert_default_cut_same_bits_any_threads(U, W, a0, dA, lengths)[0]
    a, want = a0.astype(np.float64), []                              # and right
    for t in range(T):
        live = (t < lengths)[:, None]
        a = np.where(live, np.tanh(U[t] + a @ W.T.astype(np.float64)), a)
        want.append(a)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(A, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("panels", [2, 3])
def test_any_cut_gives_the_same_numbers_up_to_rounding(dtype, panels, rng):
    """Other cuts than the default — one block and one panel, 2 or 3 panels, 2, 3, 4 or
    6 row blocks, serial or parallel — agree to rounding (a BLAS may round a row
    differently where it falls in a call), padding included."""
    T, N, H = 9, 12, 40                  # 2 panels: 32 + 8 units; 3 panels: 16 + 16 + 8
    U = rng.standard_normal((T, N, H)).astype(dtype)
    W = (rng.standard_normal((H, H)) / 4).astype(dtype)
    a0 = rng.standard_normal((N, H)).astype(dtype)
    dA = rng.standard_normal((T, N, H)).astype(dtype)
    lengths = np.array([9, 3, 9, 1, 5, 9, 8, 2, 9, 7, 9, 4])
    tol = 2e-5 if dtype == np.float32 else 1e-13
    assert_cuts_agree(U, W, a0, dA, lengths,
                      ((False, 1, 1), (False, 1, panels), (True, 2, panels),
                       (True, 3, 1), (True, 6, panels), (False, 4, 1),
                       (None, None, None)), rtol=tol, atol=tol)


@pytest.mark.parametrize("workers", [1, 3, 7])
def test_shared_panels_finish_with_any_number_of_workers(workers, rng):
    """The panel-shared kernels claim each (step, panel) task by a flag, each worker its
    own panel first: one worker does them all, more workers than threads or panels
    just find them taken — the same bits as the serial kernel either way, every task
    done exactly once, and nothing hangs."""
    T, N, H = 8, 1, 48
    U = rng.standard_normal((T, N, H))
    W = rng.standard_normal((H, H)) / 6
    a0, dA = rng.standard_normal((N, H)), rng.standard_normal((T, N, H))
    lengths = np.full(N, T, dtype=np.int64)
    A = cpu.recurrence_forward(U, W, a0, 0, parallel=False)
    delta, dh0, norms = cpu.recurrence_backward(dA, A, W, a0, 0, parallel=False)
    width = 16                                                   # 3 panels
    A2, buf = np.empty_like(U), np.empty((1, 3, N, width))
    sync = np.zeros(cpu.CLAIMS + (T + 1) * 3, dtype=np.int64)
    cpu._forward_panels_kernel(U, cpu._packed(W.T, width, N), a0.copy(), lengths, 0, False,
                               A2, buf, workers, sync)
    assert sync[0] == T * 3                                      # every task done once
    claims = sync[cpu.CLAIMS:cpu.CLAIMS + T * 3]
    assert np.all(claims >= 1) and np.all(claims <= workers)     # claimed, by one each
    np.testing.assert_array_equal(A, A2)
    d2, n2, carry = np.empty_like(U), np.empty((T, N)), a0.copy()
    sync[:] = 0
    cpu._backward_panels_kernel(dA, A, cpu._packed(W, width, N), carry, lengths, 0, False,
                                d2, n2, np.empty((2, N, 3)), np.zeros((N, 48)), buf,
                                workers, sync)
    assert sync[0] == (T + 1) * 3
    for ours, want in ((d2, delta), (carry, dh0), (n2, norms)):
        np.testing.assert_array_equal(ours, want)


def test_single_time_step():
    rng = np.random.default_rng(0)
    x, a0 = rng.standard_normal((1, 2, 3)), rng.standard_normal((2, 4))
    W_ax, W_aa, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 4)), np.zeros(4)
    for reverse in (False, True):
        A = cpu.recurrence_forward(cpu.input_projection(x, W_ax, b), W_aa, a0, 0, reverse)
        np.testing.assert_allclose(A[0], np.tanh(x[0] @ W_ax.T + a0 @ W_aa.T), atol=1e-14)
        delta, dh0, _ = cpu.recurrence_backward(np.ones_like(A), A, W_aa, None, 0, reverse)
        dW_ax, dW_aa, db = cpu.weight_grads(delta, x, A, a0, reverse)
        np.testing.assert_allclose(dW_aa, delta[0].T @ a0, atol=1e-14)
        np.testing.assert_allclose(dh0, delta[0] @ W_aa, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_layer_grads_are_weight_grads_and_input_grad(dtype, parallel, reverse):
    """The fused backward products give the separate kernels' results bitwise: the same
    BLAS calls on the same row blocks (T = 1, one row, odd row counts, a zero and a
    non-zero initial state)."""
    rng = np.random.default_rng(11)
    for T, N, D, H in ((1, 3, 5, 16), (2, 1, 3, 16), (7, 3, 6, 32), (40, 16, 32, 64)):
        delta, A = (rng.standard_normal((T, N, H)).astype(dtype) for _ in range(2))
        x, W_ax = rng.standard_normal((T, N, D)).astype(dtype), \
            rng.standard_normal((H, D)).astype(dtype)
        for a0 in (np.zeros((N, H), dtype), rng.standard_normal((N, H)).astype(dtype)):
            with cpu.compute_context(parallel):
                want = (*cpu.weight_grads(delta, x, A, a0, reverse, parallel),
                        cpu.input_grad(delta, W_ax, parallel))
                got = cpu.layer_grads(delta, x, A, a0, W_ax, reverse, parallel)
            for g, w in zip(got, want, strict=True):
                assert g.dtype == dtype and g.shape == w.shape
                np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parallel", [False, True])
def test_sums_over_rows_at_every_row_count(dtype, parallel):
    """The sums over rows (``aᵀ·b``, and the fused backward's dW_ax, dW_aa and db) leave
    their first row block's partial in the output and add the other's: right with no
    rows (zeros, even in a reused buffer that held a result before), one row (an empty
    second block), and odd and even row counts."""
    rng = np.random.default_rng(5)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    with cpu.compute_context(parallel):
        for M in (0, 1, 2, 3, 8):
            a, b = (rng.standard_normal((M, k)).astype(dtype) for k in (128, 160))
            cpu._matmul_tn(rng.standard_normal((5, 128)).astype(dtype),
                           rng.standard_normal((5, 160)).astype(dtype), parallel)
            got = cpu._matmul_tn(a, b, parallel)            # 80 KB or more: from the pool
            np.testing.assert_allclose(got, a.T.astype(np.float64) @ b, **tol)
            assert M or not got.any()
        for T, N in ((1, 1), (1, 3), (2, 1), (3, 2)):
            delta, A = (rng.standard_normal((T, N, 8)).astype(dtype) for _ in range(2))
            x, W_ax = rng.standard_normal((T, N, 5)).astype(dtype), \
                rng.standard_normal((8, 5)).astype(dtype)
            dW_ax, dW_aa, db, dx = cpu.layer_grads(delta, x, A, np.zeros((N, 8), dtype),
                                                   W_ax, False, parallel)
            d2, x2 = delta.reshape(T * N, 8).astype(np.float64), x.reshape(T * N, 5)
            np.testing.assert_allclose(dW_ax, d2.T @ x2, **tol)
            np.testing.assert_allclose(dW_aa, sum((delta[t].T.astype(np.float64) @ A[t - 1]
                                                   for t in range(1, T)), np.zeros((8, 8))),
                                       **tol)
            np.testing.assert_allclose(db, d2.sum(axis=0), **tol)
            np.testing.assert_allclose(dx.reshape(T * N, 5), d2 @ W_ax, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_products_take_tiles_for_a_small_operand_and_the_blas_otherwise(dtype,
                                                                                monkeypatch):
    """``a·b (+ bias)`` multiplies with register tiles when b is at most
    TILE_OPERAND_MAX_BYTES and its width a multiple of a tile's columns, else with the
    BLAS; either way the product of NumPy, the same bits serial and parallel, and the
    same whatever ``a``'s memory layout, read-only included."""
    rng = np.random.default_rng(5)
    nc = cpu.tiles.tile_columns(dtype)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for M, K, H, tiled in ((37, 32, 64, True), (3, 5, 2 * nc, True), (37, 32, 60, False),
                           (1, 7, nc, True)):
        a = rng.standard_normal((M, K)).astype(dtype)
        b = rng.standard_normal((K, H)).astype(dtype)
        bias = rng.standard_normal(H).astype(dtype)
        assert (cpu._row_tiles(b, "test").shape[0] > 0) == tiled
        outs = []
        for parallel in (False, True):
            with cpu.compute_context(parallel):
                outs += [cpu._matmul(a, b, bias, parallel), cpu._matmul(a, b, None, parallel),
                         cpu._matmul(np.asfortranarray(a), b.T.copy().T, bias, parallel)]
        for got in outs[::3] + outs[2::3]:
            np.testing.assert_allclose(got, a @ b + bias, rtol=tol, atol=tol)
        np.testing.assert_allclose(outs[1], a @ b, rtol=tol, atol=tol)
        for x, y in zip(outs[:3], outs[3:], strict=True):
            np.testing.assert_array_equal(x, y)                     # serial = parallel
        np.testing.assert_array_equal(outs[0], outs[2])             # any layout of a
        ro = a.copy()
        ro.flags.writeable = False                                   # a read-only a too
        np.testing.assert_array_equal(cpu._matmul(ro, b, bias), outs[0])
    big = np.ones((1024, 64), dtype)                                 # 256 / 512 KB
    assert (cpu._row_tiles(big, "test").shape[0] > 0) == (big.nbytes <= 256 << 10)
    monkeypatch.setattr(cpu, "TILE_OPERAND_MAX_BYTES", 0)
    assert cpu._row_tiles(b, "test").shape[0] == 0
    np.testing.assert_allclose(cpu._matmul(a, b, bias), a @ b + bias, rtol=tol, atol=tol)


@pytest.mark.parametrize("reverse", [False, True])
def test_single_step_dW_aa_keeps_nonfinite_delta_with_zero_state(reverse):
    """At T = 1, dW_aa = δ<0>ᵀ·a0 alone: with a zero a0 the term is still computed, so
    an inf or NaN in δ gives NaN in its row, as the reference's product does (found by
    the fuzz driver when a review skipped zero-state terms at T = 1 too)."""
    N, D, H = 3, 2, 4
    delta = np.ones((1, N, H))
    delta[0, 1, 2], delta[0, 0, 0] = np.inf, np.nan
    x, A, a0, W_ax = np.ones((1, N, D)), np.ones((1, N, H)), np.zeros((N, H)), np.ones((H, D))
    with np.errstate(invalid="ignore"):
        want = np.isnan(delta[0].T @ a0)
    assert want[0].all() and want[2].all() and not want[1].any()
    for dW_aa in (cpu.weight_grads(delta, x, A, a0, reverse)[1],
                  cpu.layer_grads(delta, x, A, a0, W_ax, reverse)[1]):
        np.testing.assert_array_equal(np.isnan(dW_aa), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_flags(dtype):
    big, tiny = np.finfo(dtype).max, np.finfo(dtype).smallest_subnormal
    finite = np.array([[0.0, -0.0, big, -big], [tiny, -tiny, 1.0, -1.0]], dtype)
    arrays = [finite, finite[:, ::2], np.zeros(0, dtype)]
    for bad in (np.inf, -np.inf, np.nan):
        a = finite.copy()
        a[1, 2] = bad
        arrays += [a, a[:, ::2], a.T]                # contiguous, strided, Fortran order
    got = cpu.nonfinite(arrays)
    np.testing.assert_array_equal(got, [False, False, False] + [True, True, True] * 3)


def test_float32_stays_float32(rng):
    T, N, D, H = 4, 2, 3, 5
    f = np.float32
    x = rng.standard_normal((T, N, D)).astype(f)
    W_ax, W_aa, b = (rng.standard_normal((H, D)).astype(f), rng.standard_normal((H, H)).astype(f),
                     np.zeros(H, f))
    U = cpu.input_projection(x, W_ax, b)
    A = cpu.recurrence_forward(U, W_aa, np.zeros((N, H), f), 0)
    delta, dh0, norms = cpu.recurrence_backward(np.ones_like(A), A, W_aa, None, 0)
    outs = (U, A, delta, dh0, norms, *cpu.weight_grads(delta, x, A, np.zeros((N, H), f)),
            cpu.input_grad(delta, W_ax))
    assert all(o.dtype == np.float32 for o in outs)
    # no silent upcast inside the compiled float32 kernels: no float -> double extension
    for name, ir in fresh_recurrence_ir().items():
        for op in ("fpext float", "fadd double", "fmul double", "fsub double", "@tanh("):
            assert op not in ir, (name, op)


def test_backend_selection():
    assert get_backend("cpu") is cpu
    with pytest.raises(ValueError, match="device must be one of"):
        get_backend("tpu")


@pytest.mark.parametrize("reverse", [False, True])
def test_forward_in_place_over_U_equals_out_of_place(reverse, rng):
    U = rng.standard_normal((6, 4, 8))
    W = rng.standard_normal((8, 8)) / 3
    a0 = rng.standard_normal((4, 8))
    lengths = np.array([6, 2, 5, 1])
    A = cpu.recurrence_forward(U, W, a0, 0, reverse, lengths=lengths)
    U2 = U.copy()
    A2 = cpu.recurrence_forward(U2, W, a0, 0, reverse, lengths=lengths, overwrite_U=True)
    assert A2 is U2
    np.testing.assert_array_equal(A, A2)


def test_parallel_is_resolved_from_the_batch_and_step_size(monkeypatch):
    import numba
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    monkeypatch.setattr(cpu, "fast_regions", lambda: True)
    assert cpu.resolve_parallel(None, 16, 64) and cpu.recurrence_blocks(16, 64) == 2
    assert not cpu.resolve_parallel(None, 4, 16)                    # too small a step
    assert not cpu.resolve_parallel(None, 1, 128)                   # 2^14 < SHARED_MIN_MACS
    assert cpu.resolve_parallel(None, 1, 256) and cpu.resolve_parallel(None, 3, 1024)
    assert not cpu.resolve_parallel(None, 7, 64)          # 7 has no blocks: shared-panel bar
    assert cpu.resolve_parallel(None, 8, 64)              # 8 = 2 blocks of 4: the block bar
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert cpu._shared_workers() == 2 and cpu._shared_workers(1) == 1
    assert cpu._layout(1, 256, None, None, None) == ("shared", 1, 1, 128)  # panels shared
    assert cpu._layout(3, 1024, None, None, 3) == ("shared", 1, 3, 352)
    assert cpu._layout(7, 128, True, None, None) == ("shared", 1, 7, 64)   # 7: no blocks
    assert cpu._layout(7, 64, True, None, None) == (True, 1, 7, 64)   # below the panel bar
    assert cpu._layout(1, 16, True, None, None) == (True, 1, 1, 16)   # one panel: nothing
    assert cpu._layout(16, 64, None, None, None) == (True, 2, 8, 64)     # row blocks
    assert cpu._layout(16, 64, False, None, 2) == (False, 2, 8, 32)  # the same cut, serial
    assert cpu._layout(16, 64, False, 1, 2) == (False, 1, 16, 32)
    assert cpu._layout(1, 256, False, None, None) == (False, 1, 1, 128)  # serial, 2 panels
    assert cpu.recurrence_blocks(4, 512) == 2
    assert cpu.recurrence_blocks(64, 1024) == 1                     # H ≥ SHARED_MIN_UNITS:
    assert cpu._layout(64, 1024, None, None, None) == ("shared", 1, 64, 512)  # shared
    assert cpu._layout(64, 1024, False, None, None) == (False, 1, 64, 512)    # same cut
    assert cpu.recurrence_blocks(8, 16) == 1                        # 2^11: one block
    assert cpu.resolve_parallel(True, 1, 4) and not cpu.resolve_parallel(False, 64, 1024)
    assert cpu.recurrence_blocks(1, 4) == 1                         # never a 1-row block
    assert cpu.recurrence_blocks(7, 64) == 1                        # 7 has no equal split
    cuts = {}
    for threads in (1, 2, 4, 16):                # the cut never depends on the threads
        monkeypatch.setattr(numba, "get_num_threads", lambda threads=threads: threads)
        cuts[threads] = [cpu._layout(N, H, p, None, None)[1:]
                         for N, H in ((16, 64), (12, 40), (1, 256), (7, 128), (6, 64),
                                      (64, 1024))
                         for p in (None, True, False)]
        assert cpu.recurrence_blocks(12, 64) == 2 and cpu.recurrence_blocks(6, 64) == 2
        assert cpu.recurrence_blocks(9, 64) == 1                    # 9 = 3 blocks: too many
    assert cuts[1] == cuts[2] == cuts[4] == cuts[16]
    assert cpu._shared_workers() == 2           # no more spinning workers than cores
    for N, blocks in ((10, 3), (4, 4), (4, 0)):
        with pytest.raises(ValueError, match=f"blocks must divide the batch N={N}"):
            cpu.recurrence_forward(np.zeros((2, N, 4)), np.zeros((4, 4)), np.zeros((N, 4)),
                                   0, blocks=blocks)
    monkeypatch.setattr(numba, "get_num_threads", lambda: 1)
    assert not cpu.resolve_parallel(None, 64, 1024)                 # one thread: serial
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    monkeypatch.setattr(cpu, "fast_regions", lambda: False)
    assert not cpu.resolve_parallel(None, 64, 1024)                 # workqueue: serial
    assert cpu.resolve_parallel(True, 64, 1024)


def test_panels_are_aligned_and_packed():
    assert cpu._panel_width(1024, 2) == 512 and cpu._panel_width(100, 2) == 64
    assert cpu._panel_width(16, 2) == 16                 # aligned: one panel is all there is
    M = np.arange(20.0).reshape(4, 5)
    R = cpu.pack_rows(M, 2, np.zeros((3, 2, 4)))                    # panel p: its columns
    np.testing.assert_array_equal(np.concatenate(list(R), axis=0)[:5], M.T)   # as rows
    np.testing.assert_array_equal(R[2, 1], 0)                        # zero padding
    W = np.random.default_rng(0).standard_normal((37, 37))
    for M in (W, W.T):                                               # blocked transposes
        P = cpu.pack_rows(M, 16, np.zeros((3, 16, 37)))
        cols = np.concatenate([P[p].T for p in range(3)], axis=1)
        np.testing.assert_array_equal(cols[:, :37], M)
