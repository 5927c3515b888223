"""Thread placement (numba_rnn.kernels.affinity): the OpenMP workers on cores of their
own, the calling thread on the remaining core only for the duration of a parallel call.
Each case runs in a fresh process: binding is decided once per process and team."""
import os
import sys

import pytest

from .conftest import run_python

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
needs_two_cores = pytest.mark.skipif(CORES < 2 or not sys.platform.startswith("linux"),
                                     reason="needs Linux and at least 2 allowed cores")

PROBE = """
    import os, threading
    import numpy as np
    import numba
    import numba_rnn as nr
    from numba_rnn.kernels import affinity
    before = os.sched_getaffinity(0)
    m = nr.RNN(8, 32, seed=0, parallel=True)
    x = np.random.default_rng(0).standard_normal((5, 8, 8))
    out, _, cache = m.forward(x)
    m.backward(cache, np.ones_like(out))
    pinned, why = affinity.status()
    print("layer", numba.threading_layer())
    print("pinned", pinned, why or "-")
    print("restored", os.sched_getaffinity(0) == before)
    core = affinity._teams.get(threading.get_ident())
    from numba_rnn.kernels import cpu
    with affinity.pinned(True):            # the caller on one core: the layout still sees 2
        print("inside", len(os.sched_getaffinity(0)), affinity.allowed_cores(),
              cpu._layout(1, 256, True, None, None)[0])
    if pinned:
        tids = np.zeros(numba.config.NUMBA_NUM_THREADS, dtype=np.int64)
        affinity._worker_tids(tids, 200_000)
        print("workers", [sorted(os.sched_getaffinity(int(t))) for t in tids[1:]])
        print("main", core)
"""


def _probe(**env):
    env = {**os.environ, "NUMBA_NUM_THREADS": "2", **env}
    for name in ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY"):
        if name not in env or not env[name]:
            env.pop(name, None)
    out = run_python(PROBE, env)
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


@needs_two_cores
def test_workers_get_their_own_core_and_the_caller_gets_its_affinity_back():
    got = _probe()
    if got["layer"] != "omp":
        assert got["pinned"].startswith("False threading layer")
        pytest.skip(f"threading layer {got['layer']}: nothing is bound")
    assert got["pinned"] == "True -"
    assert got["restored"] == "True"                 # the caller is bound only inside a call
    workers = eval(got["workers"])                   # noqa: S307 (our own printed list)
    cores = sorted(os.sched_getaffinity(0))
    assert workers == [[cores[1]]]                   # worker 1 alone on the second core
    assert int(got["main"]) == cores[0]              # the caller's core is not a worker's
    # bound to one core for the call, the caller still shares a single sequence's steps
    # with the worker (the layout once counted the caller's one core: never "shared")
    assert got["inside"] == "1 2 shared"


@needs_two_cores
@pytest.mark.parametrize("env,reason", [({"NUMBA_RNN_PIN_THREADS": "0"}, "NUMBA_RNN_PIN_THREADS=0"),
                                        ({"OMP_PROC_BIND": "false"}, "OMP_PROC_BIND is set"),
                                        ({"NUMBA_THREADING_LAYER": "workqueue"},
                                         "threading layer workqueue")])
def test_nothing_is_bound_when_the_user_places_threads_or_opts_out(env, reason):
    got = _probe(**env)
    assert got["pinned"].startswith("False " + reason), got
    assert got["restored"] == "True"


def test_serial_calls_bind_nothing():
    from numba_rnn.kernels import affinity
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    with affinity.pinned(False):
        if before is not None:
            assert os.sched_getaffinity(0) == before
