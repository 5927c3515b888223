"""The buffer pool behind the CPU kernels' big arrays (numba_rnn.kernels.pool): a buffer
is reused only once nothing outside the pool refers to it, never by two callers at once,
and what the pool keeps idle is bounded."""
import threading
import time

import numpy as np
import pytest

from numba_rnn.kernels import mkl, pool

N = pool.MIN_BYTES + 4096                   # a size of its own, pooled


def _addr(a):
    return a.__array_interface__["data"][0]


def test_a_buffer_in_use_is_never_handed_out_again():
    a = pool.take(N)
    b = pool.take(N)
    assert not np.shares_memory(a, b)
    view = a[100:200].view(np.float32)       # a view of a view keeps the buffer in use
    del a
    c = pool.take(N)
    assert not np.shares_memory(c, view) and not np.shares_memory(c, b)


def test_an_idle_buffer_is_reused():
    a = pool.take(N + 64)
    where = _addr(a)
    del a
    assert _addr(pool.take(N + 64)) == where


def test_small_buffers_and_a_disabled_pool_are_plain_numpy(monkeypatch):
    small = pool.take(pool.MIN_BYTES - 1)
    assert small.base is None                # straight from np.empty
    monkeypatch.setattr(pool, "_enabled", False)
    a = pool.take(N + 128)
    del a
    b = pool.take(N + 128)
    assert b.base is None and b.nbytes == N + 128
    assert (N + 128) not in pool._buffers


def test_idle_buffers_and_sizes_are_bounded():
    size = N + 256
    bufs = [pool.take(size) for _ in range(3 * pool.IDLE_PER_SIZE)]
    del bufs                                  # all idle now
    pool.take(size)
    assert len(pool._buffers[size]) <= pool.IDLE_PER_SIZE
    for i in range(pool.SIZES + 3):
        pool.take(N + 1024 * (i + 2))
    assert len(pool._buffers) <= pool.SIZES


def test_threads_never_share_a_buffer():
    size, got, errors = N + 512, [], []

    def worker():
        try:
            for _ in range(200):
                a = pool.take(size)
                a[:8] = threading.get_ident() % 251
                time.sleep(0)                  # let another thread take a buffer meanwhile
                got.append(int(a[0]))
                if a[0] != threading.get_ident() % 251:
                    errors.append("overwritten")
                del a
        except Exception as err:             # pragma: no cover - reported below
            errors.append(repr(err))
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 800


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_aligned_empty_from_the_pool_is_aligned_and_distinct(dtype):
    a = mkl.aligned_empty((100, 64), dtype)
    b = mkl.aligned_empty((100, 64), dtype)
    assert _addr(a) % mkl.ALIGN == 0 and _addr(b) % mkl.ALIGN == 0
    assert not np.shares_memory(a, b) and a.flags.c_contiguous
