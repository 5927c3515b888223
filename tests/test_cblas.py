"""The CBLAS ``gemm`` both libraries share (kernels/cblas.py), as MKL's (kernels/mkl.py)
and the OpenBLAS wheel's (kernels/openblas.py): every operand layout, empty dimensions,
and arrays kept alive for the whole call."""
import numpy as np
import pytest
from numba import njit

from numba_rnn.kernels import mkl, openblas

from .conftest import run_python

LIBRARIES = {"mkl": mkl, "openblas": openblas}


def _compiled(lib):
    gemm = lib.gemm

    @njit
    def product(a, b, out):
        gemm(a, b, out)
    return product


@pytest.fixture(scope="module", params=sorted(LIBRARIES))
def product(request):
    lib = LIBRARIES[request.param]
    if not lib.load():
        pytest.skip(f"{request.param} not in use: {lib.status()[1]}")
    return _compiled(lib)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (9, 6, 5), (64, 1600, 32), (17, 0, 4),
                                   (0, 3, 4)])
def test_gemm_matches_numpy_for_each_layout(product, dtype, M, K, N, rng):
    """``out = a·b`` for C- and F-contiguous operands (an F one is read transposed, as
    the weight gradients' ``δᵀ`` is), empty dimensions included (K = 0 gives zeros,
    M = 0 makes no call)."""
    tol = 2e-5 if dtype == np.float32 else 1e-13
    for a_f in (False, True):
        for b_f in (False, True):
            a = rng.standard_normal((M, K)).astype(dtype)
            b = rng.standard_normal((K, N)).astype(dtype)
            a, b = (np.asfortranarray(a) if a_f else a), (np.asfortranarray(b) if b_f else b)
            out = np.full((M, N), np.nan, dtype)
            product(a, b, out)
            want = a.astype(np.float64) @ b.astype(np.float64)
            np.testing.assert_allclose(out, want, rtol=tol, atol=tol * max(1, K))


def test_a_temporary_handed_to_gemm_lives_through_the_call():
    """``gemm(a, b.copy(), out)``: the copy's last use in Numba's IR was ``data(b)``, so
    it was released before the BLAS read it — a 64 MiB one (beyond glibc's largest mmap
    threshold, so unmapped on release) segfaulted. ``cblas.keep_alive`` holds it to the
    end of the call. Each loaded library's ``gemm``, in a fresh process: a crash must
    not take the test run with it."""
    loaded = [name for name, lib in sorted(LIBRARIES.items()) if lib.load()]
    if not loaded:
        pytest.skip("neither MKL nor the OpenBLAS wheel is in use")
    code = ("import numpy as np\n"
            "from numba import njit\n"
            "from numba_rnn.kernels import mkl, openblas\n"
            "M = 1 << 22\n"
            "a, b = np.ones((2, M)), np.ones((M, 2))\n"
            f"for name in {loaded!r}:\n"
            "    lib = {'mkl': mkl, 'openblas': openblas}[name]\n"
            "    assert lib.load(), name\n"
            "    gemm = lib.gemm\n"
            "    @njit\n"
            "    def product_of_copy(a, b, out):\n"
            "        gemm(a, b.copy(), out)\n"
            "    out = np.zeros((2, 2))\n"
            "    product_of_copy(a, b, out)\n"
            "    print(name, bool((out == M).all()))\n")
    out = run_python(code)
    assert out.split() == [w for name in loaded for w in (name, "True")], out
