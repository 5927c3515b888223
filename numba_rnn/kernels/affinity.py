"""Keep Numba's OpenMP workers and the calling thread on different cores.

After the process has been idle for ~50 ms or more, Numba's OpenMP worker is asleep
(libgomp spins only briefly after a region). The next parallel region wakes it, and
on the 2-core VMs this project runs on the scheduler often wakes it onto the core of
the calling thread, which is already running its own share of the region and then
spins at the region's end: the two share one core until the next scheduler tick.
Measured on the tiny shape's model forward (0.4 ms), timed right after an untimed
call, each pair after a 0.12 s pause: 11 of 25 calls took 8–16 ms instead of 0.4.

So, on the omp threading layer, each worker is bound to a core of its own
(:func:`pin_workers`, once per calling thread's team: worker i to the i-th allowed
core), and for the duration of a parallel call the calling thread is bound to the
core no worker has (:func:`pinned`), its own affinity restored afterwards. With that,
the same measurement gave 0.35–0.5 ms in 24 of 25 calls. Nothing is bound when the
user controls placement (``OMP_PROC_BIND``, ``OMP_PLACES``, ``GOMP_CPU_AFFINITY``),
when there are more threads than allowed cores, on other threading layers or systems,
or with ``NUMBA_RNN_PIN_THREADS=0``; :func:`status` says which.
"""
import contextlib
import os
import sys
import threading

import numpy as np
from numba import get_thread_id, njit, prange, types

_USER_PLACEMENT = ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY")
_gettid = types.ExternalFunction("gettid", types.intc())

_lock = threading.Lock()
_local = threading.local()  # .saved: the calling thread's own cores while pinned()
_teams = {}            # calling thread's ident -> its workers' cores, or None: not pinned
_why = "no parallel call yet"
_UNSEEN = object()


@njit(parallel=True, cache=True, nogil=True)
def _worker_tids(tids, spin):
    """Each thread of the calling thread's team writes its OS thread id at its Numba
    thread index; ``spin`` is busy work that keeps one thread from taking every
    iteration before the others start."""
    for i in prange(tids.shape[0]):
        tids[get_thread_id()] = _gettid()
        acc = 0
        for k in range(spin):
            acc += k ^ i
        if acc == -1:
            tids[0] = 0


def _reason_not_to_pin():
    """Why the workers stay where the scheduler puts them, or None."""
    import numba

    from .threads import fast_regions
    fast_regions()                              # starts Numba's threads: the layer is known
    if os.environ.get("NUMBA_RNN_PIN_THREADS", "1") == "0":
        return "NUMBA_RNN_PIN_THREADS=0"
    if not sys.platform.startswith("linux"):
        return f"not on {sys.platform}"
    for name in _USER_PLACEMENT:
        if os.environ.get(name):
            return f"{name} is set: the user places the threads"
    try:
        layer = numba.threading_layer()
    except ValueError:
        return "no parallel region has run yet"
    if layer != "omp":
        return f"threading layer {layer}, not omp"
    threads = numba.config.NUMBA_NUM_THREADS
    if threads < 2:
        return "one thread"
    if threads > len(os.sched_getaffinity(0)):
        return f"{threads} threads on {len(os.sched_getaffinity(0))} allowed cores"
    return None


def pin_workers():
    """Bind the OpenMP workers of the calling thread's team to cores of their own (once
    per calling thread); returns the core left for the calling thread, or None when
    nothing is bound (:func:`status` says why)."""
    global _why
    me = threading.get_ident()
    core = _teams.get(me, _UNSEEN)              # decided already: no lock needed to read it
    if core is not _UNSEEN:
        return core
    with _lock:
        if me in _teams:
            return _teams[me]
        _teams[me] = None
        why = _reason_not_to_pin()
        if why is not None:
            _why = why
            return None
        import numba
        cores = sorted(os.sched_getaffinity(0))
        tids = np.zeros(numba.config.NUMBA_NUM_THREADS, dtype=np.int64)
        saved = numba.get_num_threads()
        numba.set_num_threads(tids.size)
        try:
            _worker_tids(tids, 200_000)
        finally:
            numba.set_num_threads(saved)
        if np.any(tids == 0) or len(set(tids.tolist())) != tids.size:
            _why = "could not find every worker thread"
            return None
        try:
            for i in range(1, tids.size):
                os.sched_setaffinity(int(tids[i]), {cores[i]})
        except OSError as err:
            _why = f"binding a worker failed: {err}"
            return None
        _teams[me] = cores[0]
        _why = ""
        return cores[0]


def pin_caller(parallel):
    """Bind the calling thread, for a parallel call, to the core its workers leave it
    (:func:`pin_workers`); returns the affinity to restore with :func:`unpin_caller`, or
    None when nothing was bound (serial calls, nothing pinned, that core not allowed)."""
    core = pin_workers() if parallel else None
    if core is None:
        return None
    saved = os.sched_getaffinity(0)
    if core not in saved:                       # this thread is kept off that core
        return None
    os.sched_setaffinity(0, {core})
    _local.saved = saved
    return saved


def unpin_caller(saved):
    """Undo :func:`pin_caller` (``saved``: what it returned)."""
    if saved is not None:
        _local.saved = None
        os.sched_setaffinity(0, saved)


@contextlib.contextmanager
def pinned(parallel):
    """Context manager around a parallel call: the workers on cores of their own
    (:func:`pin_workers`) and the calling thread on the remaining core until the call
    ends, then back on the cores it was allowed before. Serial calls: nothing."""
    saved = pin_caller(parallel)
    try:
        yield
    finally:
        unpin_caller(saved)


def allowed_cores():
    """How many cores the calling thread may run on — those it was allowed before
    :func:`pinned` bound it to one, while it is pinned."""
    saved = getattr(_local, "saved", None)
    if saved is not None:
        return len(saved)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def status():
    """``(pinned, reason)`` for the calling thread's team: whether its workers are bound
    to their own cores, and if not, why."""
    core = _teams.get(threading.get_ident())
    return core is not None, ("" if core is not None else _why)
