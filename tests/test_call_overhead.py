"""The per-call machinery around the CPU kernels: thread-local scratch, the BLAS thread
limit and ``compute_context``. What a caller receives must never be scratch that a
later call overwrites, and every limit must be undone on the way out, errors included."""
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import numba_rnn as nr
from numba_rnn.kernels import cpu, threads


def _blas_threads():
    return {i["filepath"]: i["num_threads"] for i in threadpool_info()
            if i["user_api"] == "blas"}


def test_blas_runs_on_one_thread_inside_and_is_restored_after():
    before = _blas_threads()
    with cpu.compute_context(True):
        inside = _blas_threads()
        with threads.blas_single_threaded():              # nested: still one, no restore
            assert _blas_threads() == inside
        assert _blas_threads() == inside
    assert set(inside.values()) == {1}
    assert _blas_threads() == before


def test_compute_context_undoes_everything_when_the_body_raises():
    before = _blas_threads()
    with pytest.raises(RuntimeError), cpu.compute_context(True):
        raise RuntimeError("inside")
    assert _blas_threads() == before
    assert threads._depth == 0


def test_scratch_is_kept_per_thread_and_per_shape():
    a = cpu._scratch("probe", (3, 5), np.dtype(np.float64), 0)
    assert a is cpu._scratch("probe", (3, 5), np.dtype(np.float64))
    assert not a.any() and a.ctypes.data % 64 == 0
    assert cpu._scratch("probe", (3, 6), np.dtype(np.float64)) is not a
    other = []
    t = threading.Thread(target=lambda: other.append(
        cpu._scratch("probe", (3, 5), np.dtype(np.float64))))
    t.start()
    t.join()
    assert other[0] is not a and not np.shares_memory(other[0], a)


def test_scratch_is_dropped_past_its_limit():
    first = cpu._scratch("limit", (1,), np.dtype(np.float32))
    for i in range(cpu.SCRATCH_ARRAYS + 1):
        cpu._scratch("limit", (i + 2,), np.dtype(np.float32))
    assert len(cpu._local.scratch) <= cpu.SCRATCH_ARRAYS
    assert cpu._scratch("limit", (1,), np.dtype(np.float32)) is not first


@pytest.mark.parametrize("parallel", [False, True])
def test_results_of_two_calls_share_no_memory(parallel):
    rnn = nr.RNN(5, 16, seed=0, parallel=parallel)
    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal((7, 4, 5)).astype(np.float32) for _ in range(2))
    out1, h1, c1 = rnn.forward(x1)
    g1, dx1, dh1 = rnn.backward(c1, np.ones_like(out1))
    kept = [a.copy() for a in (out1, h1, dx1, dh1, *g1.values(),
                               *c1.hidden_grad_norms.values())]
    out2, h2, c2 = rnn.forward(x2)
    g2, dx2, dh2 = rnn.backward(c2, np.ones_like(out2))
    for old, now in zip(kept, (out1, h1, dx1, dh1, *g1.values(),
                               *c1.hidden_grad_norms.values()), strict=True):
        np.testing.assert_array_equal(old, now)            # the second call changed nothing
    for a in (out1, h1, dx1, dh1, *g1.values()):
        for b in (out2, h2, dx2, dh2, *g2.values()):
            assert not np.shares_memory(a, b)
