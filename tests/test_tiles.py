"""Register-tile step products (numba_rnn.kernels.tiles): against NumPy, bitwise the same
for a row wherever it falls, the packing, where the recurrences use them, and that the
compiled product is vectorised (the SLP switch took effect) — no timing here."""
import re

import numba
import numpy as np
import pytest
from llvmlite import binding as llvm

from numba_rnn.kernels import cpu, tiles

from . import reference as ref


def _product(a, M, width=None):
    """a·M through pack_tiles + tile_product, panel by panel."""
    width = width or -(-M.shape[1] // 16) * 16
    Mt = tiles.pack_tiles(M, width)
    out = np.full((a.shape[0], Mt.shape[0] * width), np.nan, dtype=a.dtype)
    panel = np.empty((a.shape[0], width), dtype=a.dtype)      # the kernels' (rows, width)
    for p in range(Mt.shape[0]):
        panel[...] = np.nan
        tiles.tile_product(np.ascontiguousarray(a), Mt[p], panel)
        out[:, p * width:(p + 1) * width] = panel
    return out[:, :M.shape[1]], out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 9, 16])
@pytest.mark.parametrize("K,H,width", [(64, 64, 64), (5, 40, 48), (33, 100, 32), (1, 16, 16),
                                      (7, 112, 112)])
def test_tile_product_matches_numpy(dtype, rows, K, H, width, rng):
    a = rng.standard_normal((rows, K)).astype(dtype)
    M = rng.standard_normal((K, H)).astype(dtype)
    got, padded = _product(a, M, width)
    want = a.astype(np.float64) @ M.astype(np.float64)
    tol = 1e-5 * np.sqrt(K) if dtype == np.float32 else 1e-13 * np.sqrt(K)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    assert not padded[:, H:].any()                           # zero-padded columns give 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_row_gives_the_same_bits_in_any_block(dtype, rng):
    """Each element is Σ_k in k order, one fused multiply-add a term, in a 4-row tile
    or a one-row tail alike: the recurrences' row blocks cannot change a bit."""
    a = rng.standard_normal((11, 64)).astype(dtype)
    M = rng.standard_normal((64, 64)).astype(dtype)
    whole = _product(a, M)[0]
    for lo, hi in [(0, 1), (3, 4), (2, 9), (7, 11), (4, 8), (10, 11)]:
        np.testing.assert_array_equal(_product(a[lo:hi], M)[0], whole[lo:hi])


def test_mismatched_operands_raise_instead_of_writing_past_out(rng):
    a = rng.standard_normal((4, 8)).astype(np.float32)
    Bt = tiles.pack_tiles(rng.standard_normal((8, 32)).astype(np.float32), 32)[0]
    with pytest.raises(ValueError, match="do not match"):
        tiles.tile_product(a, Bt, np.empty((4, 16), np.float32))      # 2 tiles, 16 columns
    with pytest.raises(ValueError, match="do not match"):
        tiles.tile_product(a[:, :5].copy(), Bt, np.empty((4, 32), np.float32))


def test_pack_tiles_reads_transposed_views_and_checks_the_width(rng):
    M = rng.standard_normal((24, 40)).astype(np.float32)
    np.testing.assert_array_equal(tiles.pack_tiles(M.T.copy().T, 48),
                                  tiles.pack_tiles(np.ascontiguousarray(M), 48))
    t = tiles.pack_tiles(M, 16)
    assert t.shape == (3, 1, 24, 16) and t.flags.c_contiguous
    np.testing.assert_array_equal(t[1, 0], M[:, 16:32])
    np.testing.assert_array_equal(t[2, 0, :, :8], M[:, 32:])
    assert not t[2, 0, :, 8:].any()
    with pytest.raises(ValueError, match="multiple of 8"):
        tiles.pack_tiles(M.astype(np.float64), 20)


def _fmas(dispatcher):
    """(256-bit packed, scalar) FMA instructions in each compiled signature."""
    for sig in dispatcher.signatures:
        asm = dispatcher.inspect_asm(sig)
        yield (len(re.findall(r"vfmadd\w+p[sd]\s[^\n]*ymm", asm)),
               len(re.findall(r"vfmadd\w+s[sd]\s", asm)))


def test_the_slp_switch_is_scoped_and_the_product_is_vectorised():
    features = llvm.get_host_cpu_features()
    if not (features.get("avx2") and features.get("fma")):
        pytest.skip("the 256-bit FMA check needs AVX2 and FMA")
    before = numba.core.config.SLP_VECTORIZE
    fresh = tiles._compiled(tiles._tile_product, cache=False)   # cached code: no asm
    assert numba.core.config.SLP_VECTORIZE == before             # switched back
    for packed, scalar in _fmas(fresh):
        assert packed >= 8 and packed > scalar, (packed, scalar)
    if not before:                       # Numba's default: the same source stays scalar
        plain = numba.njit(fresh.signatures, fastmath={"contract"},
                           error_model="numpy")(tiles._tile_product)
        for packed, scalar in _fmas(plain):
            assert scalar > packed, (packed, scalar)


def test_small_layers_take_tiles_and_big_ones_do_not(monkeypatch):
    W = np.ones((64, 64), np.float32)
    assert cpu._packed(W, 64, 16, 8).ndim == 4                     # the tiny shape
    assert cpu._packed(W.astype(np.float64), 64, 16, 8).ndim == 4
    stream = np.ones((256, 256))
    monkeypatch.setattr(cpu.mkl, "gemv_steps", lambda: False)
    assert cpu._packed(stream, 128, 1).ndim == 4                    # one row, four tiles
    monkeypatch.setattr(cpu.mkl, "gemv_steps", lambda: True)        # MKL's GEMV steps
    assert cpu._packed(stream, 128, 1).dtype == np.uint8
    big = np.ones((1024, 1024), np.float32)                         # 2^25 > TILE_MAX_MACS
    huge = np.ones((2048, 2048), np.float32)                        # 16 MB of W_aa
    if cpu.mkl.packed_steps():                  # MKL is in use (tests/test_mkl.py says where)
        for branch in (cpu.mkl.COMPATIBLE_BRANCH, 10):
            monkeypatch.setattr(cpu.mkl, "branch", lambda branch=branch: branch)
            on_mkl = branch != cpu.mkl.COMPATIBLE_BRANCH            # AMD: tiles up to 8 MB
            assert (cpu._packed(big, 512, 64, 64).dtype == np.uint8) == on_mkl
            assert (cpu._packed(big.astype(np.float64), 512, 64, 64).dtype == np.uint8) \
                == on_mkl                                            # 8 MB: still tiles
            assert cpu._packed(huge, 1024, 64, 64).dtype == np.uint8
            assert cpu._packed(big, 16, 64, 64).ndim == 4             # 2^20: tiles anywhere
        monkeypatch.undo()
    monkeypatch.setattr(cpu, "TILE_MAX_MACS", 0)                   # every step above it:
    monkeypatch.setattr(cpu, "TILE_MAX_WEIGHT_BYTES", 0)
    monkeypatch.setattr(cpu.mkl, "gemv_steps", lambda: False)
    assert cpu._packed(stream, 128, 1).ndim == 4                   # one row still tiles
    monkeypatch.setattr(cpu.mkl, "packed_steps", lambda: False)    # no MKL: tiles at any size
    assert cpu._packed(big, 512, 64, 64).ndim == 4


@pytest.mark.parametrize("N", [2, 6, 10, 16])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_recurrences_on_tiles_match_the_reference(N, dtype, rng):
    """Row blocks of 1, 3, 5 and 8 sequences: the one-row tail and the 4-row tiles."""
    T, H = 6, 24
    U = rng.standard_normal((T, N, H)).astype(dtype)
    W = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    a0 = rng.standard_normal((N, H)).astype(dtype)
    dA = rng.standard_normal((T, N, H)).astype(dtype)
    assert cpu._packed(W, cpu._layout(N, H, False, None, None)[3], N).ndim == 4
    A = cpu.recurrence_forward(U, W, a0, 0)
    delta, dh0, norms = cpu.recurrence_backward(dA, A, W, None, 0)
    f64 = [v.astype(np.float64) for v in (U, W, a0, dA)]
    eye = np.eye(H)                                   # x = U, W_ax = I: Z = U + a·W_aaᵀ
    A_ref, Z = ref.direction_forward(f64[0], f64[2], eye, f64[1], None, "tanh", False)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(A, A_ref, rtol=tol, atol=tol)
    *_, d_ref, dh0_ref, norms_ref = ref.direction_backward(
        f64[3], np.zeros((N, H)), f64[0], f64[2], A_ref, Z, eye, f64[1], "tanh", False)
    np.testing.assert_allclose(delta, d_ref, rtol=10 * tol, atol=10 * tol)
    np.testing.assert_allclose(dh0, dh0_ref, rtol=10 * tol, atol=10 * tol)
    np.testing.assert_allclose(norms, norms_ref, rtol=10 * tol, atol=10 * tol)
