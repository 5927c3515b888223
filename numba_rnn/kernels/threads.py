"""Keep BLAS's thread pool out of the per-step products of the recurrences.

Inside the recurrence kernels ``np.dot`` calls SciPy's OpenBLAS once per time step
on small matrices ((N, H)·(H, H)). Waking OpenBLAS's thread pool for each of those
costs more than it saves, and with the ``prange``-parallel kernel its threads and
Numba's compete for the same cores. Measured on the 2-core CI machine (float32,
forward, ms, median of 5; shapes from BENCHMARKS.md):

=======  ==================  =================  ====================  ===================
shape    serial, BLAS 2 thr  serial, BLAS 1 thr  parallel, BLAS 2 thr  parallel, BLAS 1 thr
=======  ==================  =================  ====================  ===================
tiny     3.9                 3.9                8.2                   8.0
stream   7.1                 6.4                52.1                  27.1
medium   71.3                38.0               716.7                 112.4
large    162.9               118.7              436.9                 172.1
=======  ==================  =================  ====================  ===================

So while a recurrence kernel runs, BLAS is limited to one thread (threadpoolctl,
~10 µs to enter and leave); the batched GEMMs outside the recurrences keep every
thread.
"""
import contextlib
import threading

import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS numba calls before we look for it)
from threadpoolctl import ThreadpoolController

_blas = None            # threadpoolctl's controllers of the BLAS libraries, found once
_lock = threading.Lock()
_depth = 0              # how many of our calls are inside, over all Python threads
_saved = []             # their thread counts before the first of those calls entered


@contextlib.contextmanager
def blas_single_threaded():
    """Context manager: BLAS runs on one thread inside.

    BLAS's thread count is process-wide, so concurrent calls from several Python
    threads share one limit: the first to enter sets it, the last to leave restores
    the original (a plain nested ``limit`` per call would let a thread that leaves
    early restore the limit under another still running, or restore a stale one).
    """
    global _blas, _depth, _saved
    with _lock:
        if _blas is None:     # threadpoolctl's own ``limit`` re-reads every library: ~10 µs
            _blas = ThreadpoolController().select(user_api="blas").lib_controllers
        if _depth == 0:
            _saved = [lib.num_threads for lib in _blas]
            for lib in _blas:
                lib.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for lib, n in zip(_blas, _saved, strict=True):
                    lib.set_num_threads(n)


_parallel_lock = threading.RLock()


def _layer_is_thread_safe():
    """True once Numba's threading layer is known to be omp or tbb.

    numba's ``workqueue`` layer aborts the process when two threads enter parallel
    regions at once; before the first parallel region the layer is not yet chosen.
    """
    import numba
    try:
        return numba.threading_layer() in ("omp", "tbb")
    except ValueError:          # no parallel region has run yet: the layer is unknown
        return False


@contextlib.contextmanager
def parallel_guard(parallel):
    """Serialise ``prange`` kernels across Python threads unless the threading layer
    is known to be thread-safe (omp, tbb); serial kernels never wait."""
    if not parallel or _layer_is_thread_safe():
        yield
        return
    with _parallel_lock:
        yield
