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
import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS numba calls before we look for it)
from threadpoolctl import ThreadpoolController

_controller = None


def blas_single_threaded():
    """Context manager: BLAS runs on one thread inside."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
