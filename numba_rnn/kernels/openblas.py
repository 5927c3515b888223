"""OpenBLAS from the ``scipy-openblas32`` wheel, for the batched products MKL does not take.

Numba's ``np.dot`` calls the BLAS SciPy was built with: the OpenBLAS bundled in SciPy's
wheel (0.3.30 in SciPy 1.17.1). The weight gradients are products ``aᵀ·b`` summed over
many rows — at the tiny shape 64×1600·1600×64 and 64×1600·1600×32 per thread, at
stream 256×500·500×256 — and there the OpenBLAS 0.3.34 of the ``scipy-openblas32``
wheel (the same project's build of a newer release, a dependency on Linux x86-64) was
faster. 2-core AMD EPYC, float64, both threads at once as in ``layer_grads``, µs per
product, median of 11 interleaved rounds, SciPy's ÷ the wheel's: tiny dW_ax 299 / 242,
dW_aa 494 / 434; stream dW_ax 1022 / 880, dW_aa 1939 / 1797 (one thread alone: 236 /
206, 397 / 368, 841 / 778, 1612 / 1652). The plain products (``x·W_axᵀ``, ``δ·W_ax``)
ran at parity.

Where it is loaded, the batched products whose dtype MKL does not take
(:func:`.mkl.batched_products`: float64 on AMD's CPUs; every product without MKL)
call its ``cblas_?gemm`` by symbol name, bound to its own addresses under names of
ours (:data:`NAMES`; SciPy's bundled OpenBLAS exports the same ``scipy_cblas_*``
names). It is loaded with one thread (``OPENBLAS_NUM_THREADS=1`` while it starts, so
it starts no thread pool): the parallelism is our row blocks on Numba's threads.
``NUMBA_RNN_BLAS=scipy`` turns it off (and MKL, :mod:`.mkl`): every product then goes
through ``np.dot``.
"""
import ctypes
import os

from llvmlite import binding as llvm
from numba.extending import overload

from .cblas import gemm_functions, gemm_overload

#: The wheel's functions the kernels call, and the names :func:`load` binds them to.
NAMES = {"scipy_cblas_sgemm": "numba_rnn_openblas_sgemm",
         "scipy_cblas_dgemm": "numba_rnn_openblas_dgemm"}

_lib = None
_loaded = None                  # path of the loaded library, once tried
_why = "not looked for yet"


def turned_off():
    """True when ``NUMBA_RNN_BLAS=scipy`` asks for SciPy's BLAS alone."""
    return os.environ.get("NUMBA_RNN_BLAS", "auto").lower() == "scipy"


def load():
    """Load the wheel's OpenBLAS once per process; return True when the batched
    products may call it (:func:`status` says why not)."""
    global _lib, _loaded, _why
    if _loaded is not None:
        return _lib is not None
    _loaded = ""
    if turned_off():
        _why = "NUMBA_RNN_BLAS=scipy"
        return False
    try:
        import scipy_openblas32
        path = os.path.join(scipy_openblas32.get_lib_dir(),
                            scipy_openblas32.get_library(fullname=True))
    except (ImportError, OSError, IndexError) as err:
        _why = f"scipy-openblas32 not found: {err}"
        return False
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"           # read once, as it starts
    try:
        lib = ctypes.CDLL(path)
        lib.scipy_openblas_set_num_threads(1)
        addresses = {ours: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                     for name, ours in NAMES.items()}
    except (OSError, AttributeError) as err:
        _why = f"{path}: {err}"
        return False
    finally:
        if saved is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = saved
    for ours, address in addresses.items():
        llvm.add_symbol(ours, address)
    _lib, _loaded, _why = lib, path, ""
    return True


def status():
    """``(in use, path or reason)`` for reports."""
    used = load()
    return used, (_loaded if used else _why)


def version():
    """The wheel's OpenBLAS version (``"0.3.34"``), or None when it is not loaded."""
    if not load():
        return None
    _lib.scipy_openblas_get_config.restype = ctypes.c_char_p
    words = _lib.scipy_openblas_get_config().decode(errors="replace").split()
    release = words[1] if len(words) > 1 else "?"
    return ".".join(release.split(".")[:3])


def gemm(a, b, out):
    """``out = a·b`` through the wheel's ``cblas_?gemm`` (:func:`.cblas.gemm_overload`):
    the batched products of :mod:`.cpu` where MKL does not take them (Numba kernels
    only)."""
    raise NotImplementedError("gemm runs inside Numba kernels only")


overload(gemm, inline="always")(gemm_overload(gemm_functions(*NAMES.values())))
