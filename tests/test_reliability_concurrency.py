"""Reliability, concurrency: forward/backward from many Python threads at once.

Results must equal the single-threaded ones bitwise (serial kernels release the GIL
and share nothing; parallel kernels are serialised across threads unless the
threading layer is thread-safe), and the process must never abort — also under
numba's workqueue layer, which aborts on concurrent parallel regions.
"""
import os
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import numba_rnn as nr

from .conftest import run_python


def _job(rnn, x, d_out):
    out, h_n, cache = rnn.forward(x)
    grads, dx, dh0 = rnn.backward(cache, d_out)
    return out, h_n, grads, dx, dh0, cache.hidden_grad_norms


def _assert_same(a, b):
    for u, v in zip(a, b, strict=True):
        if isinstance(u, dict):
            for k in u:
                np.testing.assert_array_equal(u[k], v[k])
        else:
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("parallel", [False, True])
def test_threads_give_the_serial_numbers(parallel):
    rnn = nr.RNN(6, 16, num_layers=2, bidirectional=True, parallel=parallel, seed=0,
                 dtype=np.float64)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((30, 4, 6)) for _ in range(6)]
    d_out = rng.standard_normal((30, 4, 32))
    expected = [_job(rnn, x, d_out) for x in xs]                 # one after another
    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(3):
            got = list(pool.map(lambda x: _job(rnn, x, d_out), xs))
            for e, g in zip(expected, got, strict=True):
                _assert_same(e, g)


def test_blas_thread_limit_is_restored_after_concurrent_calls():
    before = {i["internal_api"]: i["num_threads"] for i in threadpool_info()}
    rnn = nr.RNN(4, 8, seed=0)
    x = np.ones((20, 3, 4), dtype=np.float32)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: _job(rnn, x, np.ones((20, 3, 8), np.float32)), range(40)))
    after = {i["internal_api"]: i["num_threads"] for i in threadpool_info()}
    assert after == before


def test_concurrent_parallel_calls_under_workqueue_do_not_abort():
    """workqueue aborts the process on concurrent parallel regions: the guard must
    serialise them (run in a subprocess, so an abort is a failure, not a lost run)."""
    code = textwrap.dedent("""
        import numpy as np, numba
        from concurrent.futures import ThreadPoolExecutor
        import numba_rnn as nr
        rnn = nr.RNN(4, 8, parallel=True, seed=0, dtype=np.float64)
        x = np.random.default_rng(0).standard_normal((40, 4, 4))
        def job(_):
            out, _, cache = rnn.forward(x)
            return rnn.backward(cache, np.ones_like(out))[1]
        ref = job(0)
        with ThreadPoolExecutor(max_workers=4) as pool:
            res = list(pool.map(job, range(24)))
        assert all(np.array_equal(r, ref) for r in res)
        print("layer", numba.threading_layer(), "ok")
    """)
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue", NUMBA_NUM_THREADS="2")
    assert "layer workqueue ok" in run_python(code, env)


def test_models_give_the_same_bits_for_any_thread_count():
    """Batched products in a fixed row blocking, recurrences in panels whose results do
    not depend on the cut: a model's numbers do not depend on how many Numba threads
    run it. N·H·H = 2^18 here, so the default runs it in parallel on several threads
    and serially on one."""
    import numba
    rnn = nr.RNN(5, 128, num_layers=2, bidirectional=True, seed=0)
    rng = np.random.default_rng(1)
    x, d_out = rng.standard_normal((40, 16, 5)), rng.standard_normal((40, 16, 256))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _job(rnn, x, d_out)
    finally:
        numba.set_num_threads(threads)
    _assert_same(one, _job(rnn, x, d_out))


def _run_layer(layer, code):
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer, NUMBA_NUM_THREADS="2")
    return run_python(code, env)


def test_default_stays_serial_on_the_slow_workqueue_layer():
    """A region per step costs 28-84 µs on workqueue: parallel=None must not use it."""
    out = _run_layer("workqueue", """
        import numba
        from numba_rnn.kernels import cpu
        print(cpu.resolve_parallel(None, 64, 1024), cpu.resolve_parallel(True, 64, 1024),
              numba.threading_layer())
    """)
    assert out.split() == ["False", "True", "workqueue"]


def test_tbb_layer_loads_from_the_wheel_when_asked_for():
    """The tbb wheel puts libtbb where Numba does not look; we load it for Numba."""
    from numba_rnn.kernels import threads
    if threads._tbb_runtime() is None:
        pytest.skip("the tbb wheel is not installed here")
    out = _run_layer("tbb", """
        import numpy as np, numba
        import numba_rnn as nr
        rnn = nr.RNN(16, 128, seed=0)
        x = np.random.default_rng(0).standard_normal((5, 16, 16)).astype(np.float32)
        out, _, cache = rnn.forward(x)
        rnn.backward(cache, np.ones_like(out))
        print(numba.threading_layer())
    """)
    assert out.split()[-1] == "tbb"


def test_without_libgomp_the_default_layer_is_tbb_not_workqueue():
    """A system without libgomp (simulated: find_library finds nothing) gets the tbb
    layer from the wheel instead of falling to workqueue."""
    from numba_rnn.kernels import threads
    if threads._tbb_runtime() is None:
        pytest.skip("the tbb wheel is not installed here")
    out = _run_layer("default", """
        import ctypes.util
        ctypes.util.find_library = lambda name: None
        import numba
        from numba_rnn.kernels import cpu
        print(cpu.resolve_parallel(None, 64, 1024), numba.threading_layer())
    """)
    assert out.split() == ["True", "tbb"]
