"""Keep BLAS's thread pool out of the products our kernels call from Numba's threads.

The batched products call BLAS once per row block, the blocks on Numba's threads: a
threaded BLAS inside them would compete with Numba's threads for the same cores. It
was measured when the recurrence kernels still called SciPy's OpenBLAS once per time
step on small matrices ((N, H)·(H, H); their steps are now register tiles or MKL on its
sequential layer), where waking OpenBLAS's thread pool for each product cost more
than it saved — 2-core CI machine, float32, forward, ms, median of 5; shapes from
BENCHMARKS.md:

=======  ==================  =================  ====================  ===================
shape    serial, BLAS 2 thr  serial, BLAS 1 thr  parallel, BLAS 2 thr  parallel, BLAS 1 thr
=======  ==================  =================  ====================  ===================
tiny     3.9                 3.9                8.2                   8.0
stream   7.1                 6.4                52.1                  27.1
medium   71.3                38.0               716.7                 112.4
large    162.9               118.7              436.9                 172.1
=======  ==================  =================  ====================  ===================

So while a model's call runs its kernels, BLAS is limited to one thread (~1.5 µs to
enter and leave).
"""
import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading

import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS numba calls before we look for it)
from threadpoolctl import ThreadpoolController

_controls = None        # (get, set) thread-count functions of each BLAS library, found once
_lock = threading.Lock()
_depth = 0              # how many of our calls are inside, over all Python threads
_saved = []             # their thread counts before the first of those calls entered


def _blas_controls():
    """``(get, set)`` of each BLAS library's thread count, found once: OpenBLAS's own
    functions through ctypes where its threads are its own (~0.3 µs a call), else
    threadpoolctl's controller (~3 µs; threadpoolctl's ``limit`` re-reads every library,
    ~10 µs)."""
    global _controls
    if _controls is None:
        from . import openblas
        openblas.load()                 # among them, with the rest (kept at one thread)
        found = []
        for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
            direct = None
            if type(lib).__name__ == "OpenBLASController" and \
                    getattr(lib, "threading_layer", None) == "pthreads":
                try:
                    pre, post = lib._find_affixes()
                    direct = (getattr(lib.dynlib, f"{pre}openblas_get_num_threads{post}"),
                              getattr(lib.dynlib, f"{pre}openblas_set_num_threads{post}"))
                except (AttributeError, TypeError):
                    direct = None
            found.append(direct or (lambda lib=lib: lib.num_threads, lib.set_num_threads))
        _controls = found
    return _controls


class _BlasSingleThreaded:
    """The context manager :func:`blas_single_threaded` returns (stateless: the state is
    the module's, shared by every Python thread)."""
    __slots__ = ()

    def __enter__(self):
        global _depth, _saved
        with _lock:
            if _depth == 0:
                controls = _blas_controls()
                _saved = [get() for get, _ in controls]
                for (_, set_), n in zip(controls, _saved, strict=True):
                    if n != 1:
                        set_(1)
            _depth += 1
        return self

    def __exit__(self, *exc):
        global _depth
        with _lock:
            _depth -= 1
            if _depth == 0:
                for (_, set_), n in zip(_blas_controls(), _saved, strict=True):
                    if n != 1:
                        set_(n)
        return False


_BLAS_SINGLE_THREADED = _BlasSingleThreaded()


def blas_single_threaded():
    """Context manager: BLAS runs on one thread inside.

    BLAS's thread count is process-wide, so concurrent calls from several Python
    threads share one limit: the first to enter sets it, the last to leave restores
    the original (a plain nested ``limit`` per call would let a thread that leaves
    early restore the limit under another still running, or restore a stale one).
    ~1.5 µs to enter and leave (a ``contextlib`` generator with threadpoolctl's
    controllers took ~8).
    """
    return _BLAS_SINGLE_THREADED


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


def guard_enter(parallel):
    """Take the lock that serialises ``prange`` kernels across Python threads, unless
    the call is serial or the threading layer is known to be thread-safe (omp, tbb);
    returns whether it was taken (pass that to :func:`guard_exit`)."""
    if not parallel or _layer_is_thread_safe():
        return False
    _parallel_lock.acquire()
    return True


def guard_exit(taken):
    if taken:
        _parallel_lock.release()


@contextlib.contextmanager
def parallel_guard(parallel):
    """Serialise ``prange`` kernels across Python threads unless the threading layer
    is known to be thread-safe (omp, tbb); serial kernels never wait."""
    taken = guard_enter(parallel)
    try:
        yield
    finally:
        guard_exit(taken)


# --- Numba's threading layer ----------------------------------------------------------
#
# A parallel region per time step is affordable only with a fast threading layer.
# Measured here (2 threads, an empty ``prange`` region): omp 1.7 µs, tbb 1.1 µs,
# workqueue 28 µs (84 µs on the older 2-core machine). Numba tries tbb, then omp, then
# workqueue. omp needs the system's libgomp; tbb needs libtbb, which the ``tbb`` wheel
# (one of our dependencies on x86-64) installs into ``<prefix>/lib`` — where Numba does
# not look, so without help a pip environment lacking libgomp ends on workqueue.

_layer_prepared = False

#: The fast layers: per-step parallel regions are used by default only with these.
FAST_LAYERS = ("omp", "tbb")


def _tbb_runtime():
    """The TBB runtime installed by the ``tbb`` wheel, or None."""
    name = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib"}.get(sys.platform)
    path = os.path.join(sys.prefix, "lib", name) if name else None
    return path if path and os.path.exists(path) else None


def prepare_threading_layer():
    """Before Numba starts its threads, make a fast layer loadable (once per process).

    Nothing happens when libgomp is on the system (Numba then picks omp) or when
    ``NUMBA_THREADING_LAYER`` names omp or workqueue. Otherwise — no libgomp, or tbb
    asked for — the wheel's libtbb is loaded globally so that Numba's tbb layer finds
    it. Returns the path loaded, or None.
    """
    global _layer_prepared
    if _layer_prepared:
        return None
    _layer_prepared = True
    wanted = os.environ.get("NUMBA_THREADING_LAYER", "default").lower()
    if wanted in ("omp", "workqueue"):
        return None
    if wanted in ("default", "threadsafe") and ctypes.util.find_library("gomp"):
        return None
    path = _tbb_runtime()
    if path is None:
        return None
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return None
    return path


_fast = None


def fast_regions():
    """True when Numba's threading layer (started here if it was not) is omp or tbb;
    the answer is kept, since a process's layer never changes once chosen."""
    global _fast
    if _fast is None:
        import numba
        prepare_threading_layer()
        numba.get_num_threads()                   # starts the threads: the layer is chosen
        try:
            _fast = numba.threading_layer() in FAST_LAYERS
        except ValueError:
            _fast = False
    return _fast

