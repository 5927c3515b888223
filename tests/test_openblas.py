"""The OpenBLAS wheel (kernels/openblas.py): loading, which products take it, and a
layer on it against the same layer on SciPy's BLAS (its ``gemm`` itself: test_cblas)."""
import ctypes
import os

import numpy as np
import pytest

from numba_rnn.kernels import cpu, mkl, openblas

from .conftest import expected_on_linux_x86, run_python

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
    monkeypatch.setattr(cpu, "TILE_OPERAND_MAX_BYTES", 0)     # every product on a BLAS
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
    out = run_python(code, env)
    assert "(False, 'NUMBA_RNN_BLAS=scipy') (False, 'NUMBA_RNN_BLAS=scipy') scipy" \
        in out
    assert "OpenBLAS via SciPy: float32 float64 batched products" in out
    assert out.strip().endswith("True")

