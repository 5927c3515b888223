"""MKL's packed GEMM (kernels/mkl.py): loading, the products themselves, and the
recurrences and batched products on MKL against the NumPy reference and against a run
without MKL."""
import os

import numpy as np
import pytest
from numba import njit

from numba_rnn.kernels import cpu, mkl, openblas
from numba_rnn.kernels.mkl import packed_product

from . import reference as ref
from .conftest import expected_on_linux_x86, run_python
from .panels import assert_cuts_agree, assert_default_cut_same_bits_any_threads, run_layer

MKL_EXPECTED = expected_on_linux_x86("mkl", off=("openblas", "scipy"))
needs_mkl = pytest.mark.skipif(not mkl.load(), reason=f"MKL not in use: {mkl.status()[1]}")
needs_packed = pytest.mark.skipif(not mkl.packed_steps(),
                                  reason=f"MKL's packed steps not in use (branch {mkl.branch()})")


@pytest.fixture(autouse=True)
def _no_tiles(monkeypatch):
    """These tests are about MKL's step products: register tiles (which take the small
    steps and the batched products of a small operand by default, kernels/tiles.py)
    stay out of them — every step of N > 1 goes to MKL's packed GEMM where it is in use,
    on any of its code paths, and every batched product to its BLAS."""
    monkeypatch.setattr(cpu, "TILE_MAX_MACS", 0)
    monkeypatch.setattr(cpu, "TILE_MAX_WEIGHT_BYTES", 0)
    monkeypatch.setattr(cpu, "TILE_OPERAND_MAX_BYTES", 0)     # batched products: MKL's too


def test_mkl_is_used_where_it_is_a_dependency():
    """On Linux x86-64 the mkl wheel is one of our dependencies: it must load."""
    if not MKL_EXPECTED:
        pytest.skip("mkl is not installed here (a dependency on Linux x86-64 only)")
    used, where = mkl.status()
    assert used, where
    assert os.path.exists(where)
    assert mkl.version()[:1].isdigit()


@needs_mkl
def test_kernels_call_our_mkl_whatever_else_is_loaded():
    """Every function the kernels call by name resolves to our libmkl_rt's address."""
    import ctypes

    from llvmlite import binding as llvm
    for name in mkl.SYMBOLS:
        ours = ctypes.cast(getattr(mkl._lib, name), ctypes.c_void_p).value
        assert llvm.address_of_symbol(name) == ours, name


def test_stays_off_when_another_library_loaded_mkl_first():
    """A process whose MKL was loaded by someone else (here: by hand, before us) keeps
    OpenBLAS rather than switching that MKL to sequential, and says why."""
    if not MKL_EXPECTED:
        pytest.skip("mkl is not installed here")
    code = ("import ctypes, glob, os, sys\n"
            "path = sorted(glob.glob(os.path.join(sys.prefix, 'lib', 'libmkl_rt.so*')))[0]\n"
            "ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)\n"
            "import numpy as np, numba_rnn as nr\n"
            "from numba_rnn.kernels import mkl\n"
            "rnn = nr.RNN(3, 8, seed=0)\n"
            "out, h = rnn(np.ones((4, 2, 3)))\n"
            "print(mkl.status())\n")
    out = run_python(code)
    assert "(False, 'MKL already loaded by another library here" in out, out


@njit
def _packed(a, packed, out, n):
    packed_product(a, packed, out, n)


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("N,K,H,width", [(3, 5, 7, 16), (7, 40, 40, 16), (16, 64, 64, 64),
                                         (2, 100, 100, 48), (1, 40, 70, 32),
                                         (1, 256, 256, 128)])
def test_packed_panels_multiply_like_numpy(dtype, transposed, N, K, H, width, rng):
    """Every panel, the last (narrower) one included, read from a C array or from a
    transposed view, gives ``a·M[:, lo:hi]`` (one row: MKL's GEMV on row panels)."""
    M = rng.standard_normal((H, K)).astype(dtype).T if transposed else \
        rng.standard_normal((K, H)).astype(dtype)
    a = rng.standard_normal((N, K)).astype(dtype)
    packed = cpu._gemv_panels(M, width) if N == 1 else mkl.pack_panels(M, width, N)
    assert packed.dtype == np.uint8 and packed.shape[0] == -(-H // width)
    assert packed.ctypes.data % mkl.ALIGN == 0 and packed.strides[0] % mkl.ALIGN == 0
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for p in range(packed.shape[0]):
        lo, hi = p * width, min(H, (p + 1) * width)
        out = np.full((N, width), np.nan, dtype=dtype)
        _packed(a, packed[p], out, hi - lo)
        np.testing.assert_allclose(out[:, :hi - lo], a @ M[:, lo:hi], rtol=tol, atol=tol)
        assert np.isnan(out[:, hi - lo:]).all()        # columns past the panel untouched


@needs_packed
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("parallel,blocks,panels", [(False, 1, 1), (True, 1, 2), (True, 1, 3),
                                                   (True, 2, 1), (True, 3, 2)])
def test_recurrences_on_mkl_match_reference(reverse, parallel, blocks, panels, rng):
    T, N, D, H = 6, 6, 4, 40
    x = rng.standard_normal((T, N, D))
    a0 = rng.standard_normal((N, H))
    W_ax, W_aa, b = (rng.standard_normal((H, D)) * 0.5, rng.standard_normal((H, H)) * 0.3,
                     rng.standard_normal(H))
    assert cpu._packed(W_aa, 16, N).dtype == np.uint8        # the MKL path is the one run
    U = cpu.input_projection(x, W_ax, b, parallel)
    A = cpu.recurrence_forward(U, W_aa, a0, 0, reverse, parallel, blocks=blocks, panels=panels)
    rA, rZ = ref.direction_forward(x, a0, W_ax, W_aa, b, "tanh", reverse)
    np.testing.assert_allclose(A, rA, atol=1e-12)
    dA, d_last = rng.standard_normal((T, N, H)), rng.standard_normal((N, H))
    delta, dh0, norms = cpu.recurrence_backward(dA, A, W_aa, d_last, 0, reverse, parallel,
                                                blocks=blocks, panels=panels)
    dW_ax, dW_aa, db = cpu.weight_grads(delta, x, A, a0, reverse, parallel)
    dx = cpu.input_grad(delta, W_ax, parallel)
    r = ref.direction_backward(dA, d_last, x, a0, rA, rZ, W_ax, W_aa, "tanh", reverse)
    for ours, theirs in zip((dW_ax, dW_aa, db, dx, dh0, norms), r, strict=False):
        np.testing.assert_allclose(ours, theirs, rtol=1e-11, atol=1e-12)


@needs_packed
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,H", [(8, 40), (64, 256), (16, 300), (64, 1024)])
def test_mkl_recurrences_bitwise_for_any_thread_count_and_close_across_cuts(
        dtype, N, H, rng):
    """On MKL's packed product: the default cut the same bits serial, parallel and
    auto on 1 and 2 threads; other cuts (panels, row blocks) equal to rounding."""
    T = 9
    U = rng.standard_normal((T, N, H)).astype(dtype)
    W = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    a0 = rng.standard_normal((N, H)).astype(dtype)
    dA = rng.standard_normal((T, N, H)).astype(dtype)
    lengths = np.resize([9, 3, 9, 1, 5, 9, 8], N)
    assert cpu._packed(W, 16, N).dtype == np.uint8
    assert_default_cut_same_bits_any_threads(U, W, a0, dA, lengths)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    assert_cuts_agree(U, W, a0, dA, lengths,
                      ((False, 1, 1), (True, 1, 2), (True, 1, 3), (True, 2, 1),
                       (True, 4, 2)), rtol=tol, atol=tol)


@needs_packed
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,H", [(2, 40), (6, 24)])
def test_mkl_recurrences_do_not_depend_on_the_callers_alignment(dtype, N, H, rng):
    """MKL can round a product by its operands' alignment (a 2×40·48 packed product
    called on its own, branch 2), so the step products read and write only arrays of
    ours that start on cache lines: every A, δ and dh0 does, and inputs at any offset
    from a cache line give the same bits. (Through the recurrences no offset changed a
    bit here even with our arrays misaligned on purpose: the alignment is insurance.)"""
    T = 6
    item = np.dtype(dtype).itemsize

    def at(a, offset):                           # a copy of ``a`` starting ``offset`` past a line
        raw = np.empty(a.nbytes + 128, np.uint8)
        start = (-raw.ctypes.data) % 64 + offset
        out = raw[start:start + a.nbytes].view(dtype).reshape(a.shape)
        out[...] = a
        return out
    U = rng.standard_normal((T, N, H)).astype(dtype)
    W = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    a0 = rng.standard_normal((N, H)).astype(dtype)
    dA = rng.standard_normal((T, N, H)).astype(dtype)
    outs = [run_layer(at(U, o), at(W, o), at(a0, o), at(dA, o), None, False, None, None)
            for o in range(0, 64, item)]
    for other in outs[1:]:
        for x, y in zip(outs[0], other, strict=True):
            np.testing.assert_array_equal(x, y)
    for out in outs:                             # A, δ and dh0: ours, on cache lines
        assert all(x.ctypes.data % mkl.ALIGN == 0 for x in out[:3])


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H", [40, 300, 1024])
def test_single_sequence_on_mkl_gemv_bitwise_for_any_panel_count(monkeypatch, dtype, H, rng):
    """N = 1 on MKL's matrix-vector product on row panels (its default on MKL's
    CPU-specific code paths, forced here on any): right against the reference, and the
    same bits for 1, 2 or 3 panels."""
    T, N = 7, 1
    monkeypatch.setattr(mkl, "gemv_steps", lambda: True)
    assert cpu._packed(np.zeros((H, H), dtype), 16, 1).dtype == np.uint8
    U = rng.standard_normal((T, N, H)).astype(dtype)
    W = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    a0 = rng.standard_normal((N, H)).astype(dtype)
    dA = rng.standard_normal((T, N, H)).astype(dtype)
    A = assert_cuts_agree(U, W, a0, dA)[0]
    a, want = a0[0].astype(np.float64), []
    for t in range(T):
        a = np.tanh(U[t, 0] + W.astype(np.float64) @ a)
        want.append(a)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(A[:, 0], want, rtol=tol, atol=tol)


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mkl_and_openblas_agree(monkeypatch, dtype, rng):
    """The same layer on MKL (step and batched products) and without it (register tiles
    for the steps, OpenBLAS for the batched products): equal to rounding (float32
    within 1e-5 relative, float64 1e-12)."""
    T, N, D, H = 7, 6, 5, 48
    x = rng.standard_normal((T, N, D)).astype(dtype)
    a0 = rng.standard_normal((N, H)).astype(dtype)
    W_ax = (rng.standard_normal((H, D)) * 0.5).astype(dtype)
    W_aa = (rng.standard_normal((H, H)) * 0.2).astype(dtype)
    b = rng.standard_normal(H).astype(dtype)
    dA = rng.standard_normal((T, N, H)).astype(dtype)

    def layer():
        U = cpu.input_projection(x, W_ax, b)
        A = cpu.recurrence_forward(U, W_aa, a0, 0)
        delta, dh0, norms = cpu.recurrence_backward(dA, A, W_aa, None, 0)
        return (A, delta, dh0, norms, *cpu.weight_grads(delta, x, A, a0),
                cpu.input_grad(delta, W_ax))
    on_mkl = layer()
    monkeypatch.setattr(mkl, "load", lambda: False)
    assert cpu._packed(W_aa, 16, N).ndim == 4                # register tiles now
    on_openblas = layer()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for m, o in zip(on_mkl, on_openblas, strict=True):
        np.testing.assert_allclose(m, o, rtol=tol, atol=tol)


def test_openblas_when_asked_for():
    """NUMBA_RNN_BLAS=openblas: MKL is not loaded, the reason is reported, and a model
    still trains (in a fresh process: loading is decided once per process)."""
    code = ("import numpy as np, numba_rnn as nr\n"
            "from numba_rnn.kernels import mkl\n"
            "from numba_rnn import bench\n"
            "rnn = nr.RNN(3, 40, seed=0)\n"
            "x = np.random.default_rng(0).standard_normal((5, 8, 3))\n"
            "out, h, c = rnn.forward(x)\n"
            "g, dx, dh0 = rnn.backward(c, np.ones_like(out))\n"
            "print(mkl.status(), bench.blas_name(), bool(np.isfinite(g['W_aa_l0']).all()))\n")
    env = dict(os.environ, NUMBA_RNN_BLAS="openblas")
    out = run_python(code, env)
    assert "(False, 'NUMBA_RNN_BLAS=openblas')" in out
    assert "float32 float64 batched products (MKL off: NUMBA_RNN_BLAS=openblas)" in out
    assert out.strip().endswith("True")


@needs_mkl
def test_batched_products_on_openblas_on_mkls_compatible_path(monkeypatch):
    """MKL's plain ?gemm was slower than OpenBLAS in float64 on its compatible code path
    (AMD's CPUs: branch 2), and its ?gemv in both dtypes: there float64's batched
    products compile for OpenBLAS and a single sequence's steps on register tiles;
    float32's batched products and everything elsewhere on MKL; the packed steps of
    N > 1 stay on MKL."""
    other = "_serial" + ("_openblas" if openblas.load() else "")   # not MKL's: see there
    for branch, f64 in ((2, other), (10, "_serial_mkl"), (14, "_serial_mkl")):
        monkeypatch.setattr(mkl, "branch", lambda branch=branch: branch)
        assert mkl.batched_products(np.float32) and mkl.packed_steps()
        assert mkl.batched_products(np.float64) == (branch != 2)
        assert mkl.gemv_steps() == (branch != 2)           # one sequence: its GEMV too
        one = cpu._packed(np.ones((64, 64), np.float32), 32, 1)
        assert (one.dtype == np.uint8) == (branch != 2)     # MKL's panels are raw bytes
        for dtype, engine in ((np.float32, "_serial_mkl"), (np.float64, f64)):
            assert cpu._product_kernel(cpu._gemm_rows, False, dtype).py_func.__name__ == \
                "_gemm_rows" + engine


@needs_mkl
def test_recurrence_packing_reuses_one_buffer_per_thread(rng):
    """A recurrence's packed panels go into its thread's scratch buffer (no multi-MB
    allocation per call): the next packing in the thread reuses it, another thread has
    its own, and recurrences in two threads at once still match a lone run."""
    import threading
    W = rng.standard_normal((64, 64)).astype(np.float32)
    first = mkl.pack_panels(W, 64, 8, reuse=True)
    second = mkl.pack_panels(W.T, 64, 8, reuse=True)
    assert np.shares_memory(first, second) and first.ctypes.data % mkl.ALIGN == 0
    assert not np.shares_memory(mkl.pack_panels(W, 64, 8), second)   # not asked: fresh
    other = []
    t = threading.Thread(target=lambda: other.append(mkl.pack_panels(W, 64, 8, reuse=True)))
    t.start()
    t.join()
    assert not np.shares_memory(other[0], second)
    U = rng.standard_normal((20, 8, 64)).astype(np.float32)
    a0 = np.zeros((8, 64), np.float32)
    want = cpu.recurrence_forward(U, W, a0, 0, parallel=False)
    got = [None, None]

    def run(i, M):
        for _ in range(20):
            got[i] = cpu.recurrence_forward(U, M, a0, 0, parallel=False)
    threads = [threading.Thread(target=run, args=(0, W)),
               threading.Thread(target=run, args=(1, W.T.copy()))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], cpu.recurrence_forward(U, W.T.copy(), a0, 0,
                                                                 parallel=False))
