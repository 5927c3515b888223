"""The OpenBLAS wheel (kernels/openblas.py): loading, its product inside Numba kernels,
which products take it, and a layer on it against the same layer on SciPy's BLAS."""
import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

from numba_rnn.kernels import cpu, mkl, openblas
from numba_rnn.kernels.openblas import gemm

from .conftest import expected_on_linux_x86


EXPECTED = expected_on_linux_x86("scipy-openblas32", off=("scipy",))
needs_wheel = pytest.mark.skipif(not openblas.load(),
                                 reason=f"OpenBLAS wheel not in use: {openblas.status()[1]}")


def test_loaded_where_it_is_a_dependency():
    """On Linux x86-64 scipy-openblas32 is one of our dependencies: it must load, with
    one thread of its own."""
    if not EXPECTED:
        pytest.skip("scipy-openblas32 is not installed here (a dependency on Linux x86-64)")
    used, where = openblas.status()
    assert used, where
    assert os.path.exists(where)
    assert openblas.version().split(".")[:2] >= ["0", "3"]
    assert openblas._lib.scipy_openblas_get_num_threads() == 1


@needs_wheel
def test_kernels_call_the_wheel_not_scipys_copy():
    """SciPy's bundled OpenBLAS exports the same ``scipy_cblas_*`` names: the names the
    kernels call are ours and resolve to the wheel's addresses."""
    from llvmlite import binding as llvm
    for name, ours in openblas.NAMES.items():
        want = ctypes.cast(getattr(openblas._lib, name), ctypes.c_void_p).value
        assert llvm.address_of_symbol(ours) == want, ours


@njit
def _gemm(a, b, out):
    gemm(a, b, out)


@needs_wheel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (3, 5, 7), (64, 1600, 32), (17, 0, 4),
                                   (0, 3, 4)])
def test_gemm_matches_numpy_for_each_layout(dtype, M, K, N, rng):
    """``out = a·b`` for C- and F-contiguous operands (an F one is read transposed, as
    the weight gradients' ``δᵀ`` is), empty dimensions included (K = 0 gives zeros)."""
    tol = 2e-5 if dtype == np.float32 else 1e-13
    for a_f in (False, True):
        for b_f in (False, True):
            a = rng.standard_normal((M, K)).astype(dtype)
            b = rng.standard_normal((K, N)).astype(dtype)
            a, b = (np.asfortranarray(a) if a_f else a), (np.asfortranarray(b) if b_f else b)
            out = np.full((M, N), np.nan, dtype)
            _gemm(a, b, out)
            want = a.astype(np.float64) @ b.astype(np.float64)
            np.testing.assert_allclose(out, want, rtol=tol, atol=tol * max(1, K))


@needs_wheel
def test_engine_choice():
    """MKL takes the dtypes it is faster in (:func:`mkl.batched_products`); the wheel
    the others; the compiled variants call what they are named for."""
    for dtype in (np.float32, np.float64):
        engine = cpu.product_engine(dtype)
        assert engine == ("mkl" if mkl.batched_products(dtype) else "openblas")
        kernel = cpu._product_kernel(cpu._gemm_rows, False, dtype)
        assert kernel.py_func.__name__ == "_gemm_rows_serial" + cpu.ENGINES[engine][0]


def _layer_products(rng):
    """A layer's batched products (projection, weight gradients, dx) in float64, serial
    (compiling each engine's parallel and float32 variants too took ~60 s of CI)."""
    T, N, D, H = 9, 5, 7, 48
    x = rng.standard_normal((T, N, D))
    W_ax, b = rng.standard_normal((H, D)), rng.standard_normal(H)
    delta, A = rng.standard_normal((T, N, H)), rng.standard_normal((T, N, H))
    a0 = rng.standard_normal((N, H))
    with cpu.compute_context(False):
        return (cpu.input_projection(x, W_ax, b),
                *cpu.layer_grads(delta, x, A, a0, W_ax, False))


@needs_wheel
def test_layer_products_agree_with_scipys_blas(monkeypatch):
    """The same layer products on the wheel and on SciPy's OpenBLAS: equal to rounding.
    (Serial and parallel runs on the wheel give the same bits: test_kernels' bitwise
    tests, whose float64 products run on it wherever MKL does not take them; float32
    on it against MKL: test_mkl.)"""
    monkeypatch.setattr(cpu, "product_engine", lambda d: "openblas")
    on_wheel = _layer_products(np.random.default_rng(3))
    monkeypatch.setattr(cpu, "product_engine", lambda d: "scipy")
    on_scipy = _layer_products(np.random.default_rng(3))
    for w, s in zip(on_wheel, on_scipy, strict=True):
        np.testing.assert_allclose(w, s, rtol=1e-12, atol=1e-12)


@needs_wheel
def test_kept_at_one_thread_inside_our_calls():
    """A user's ``threadpool_limits`` over every BLAS reaches the wheel too; inside our
    calls it runs on one thread all the same (our row blocks are the parallelism)."""
    from threadpoolctl import threadpool_limits
    get = openblas._lib.scipy_openblas_get_num_threads
    with threadpool_limits(2, user_api="blas"):
        outside = get()
        with cpu.compute_context(True):
            inside = get()
    assert outside == 2                 # threadpoolctl sees it (its scipy_ prefix: 3.5+)
    assert inside == 1
    assert get() == 1


def test_scipys_blas_when_asked_for():
    """NUMBA_RNN_BLAS=scipy: neither MKL nor the wheel is loaded, each says why, and the
    layer products run on SciPy's BLAS (in a fresh process: loading is decided once per
    process; the serial float64 products' kernels come from the disk cache the test
    above filled)."""
    code = ("import numpy as np\n"
            "from numba_rnn.kernels import cpu, mkl, openblas\n"
            "from numba_rnn import bench\n"
            "r = np.random.default_rng(3)\n"
            "x, W_ax = r.standard_normal((9, 5, 7)), r.standard_normal((48, 7))\n"
            "delta, A = r.standard_normal((2, 9, 5, 48))\n"
            "a0 = r.standard_normal((5, 48))\n"
            "with cpu.compute_context(False):\n"
            "    products = (cpu.input_projection(x, W_ax, None),\n"
            "                *cpu.layer_grads(delta, x, A, a0, W_ax, False))\n"
            "print(mkl.status(), openblas.status(), cpu.product_engine(np.float64))\n"
            "print(bench.blas_name(), all(np.isfinite(p).all() for p in products))\n")
    env = dict(os.environ, NUMBA_RNN_BLAS="scipy")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "(False, 'NUMBA_RNN_BLAS=scipy') (False, 'NUMBA_RNN_BLAS=scipy') scipy" \
        in res.stdout
    assert "OpenBLAS via SciPy: float32 float64 batched products" in res.stdout
    assert res.stdout.strip().endswith("True")


def test_a_temporary_handed_to_gemm_lives_through_the_call():
    """``gemm(a, b.copy(), out)``: the copy's last use in Numba's IR was ``data(b)``, so
    it was released before the BLAS read it — a 64 MiB one (beyond glibc's largest mmap
    threshold, so unmapped on release) segfaulted. ``cblas.keep_alive`` holds it to the
    end of the call. Both libraries' ``gemm`` (where loaded), in a fresh process: a
    crash must not take the test run with it."""
    code = ("import numpy as np\n"
            "from numba import njit\n"
            "from numba_rnn.kernels import mkl, openblas\n"
            "libs = [m for m in (openblas, mkl) if m.load()]\n"
            "M = 1 << 22\n"
            "a, b = np.ones((2, M)), np.ones((M, 2))\n"
            "for lib in libs:\n"
            "    gemm = lib.gemm\n"
            "    @njit\n"
            "    def product_of_copy(a, b, out):\n"
            "        gemm(a, b.copy(), out)\n"
            "    out = np.zeros((2, 2))\n"
            "    product_of_copy(a, b, out)\n"
            "    print(lib.__name__, bool((out == M).all()))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    lines = res.stdout.split()
    assert lines[1::2] == ["True"] * (len(lines) // 2), res.stdout
    if openblas.load():
        assert "numba_rnn.kernels.openblas" in lines
