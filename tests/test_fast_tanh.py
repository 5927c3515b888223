"""The vectorised tanh: accuracy over the whole float range, special values, speed-free."""
import numba
import numpy as np
import pytest
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from numba_rnn.kernels.fast_tanh import _bits_to_float32 as _bits_to_f32
from numba_rnn.kernels.fast_tanh import fast_tanh

#: the stated bounds (README, kernels/fast_tanh.py), in units in the last place
ULP_BOUND = {np.float32: 2.5, np.float64: 2.5}


@numba.njit(error_model="numpy")
def _apply(x, out):
    for i in range(x.size):
        out[i] = fast_tanh(x[i])


def _ulp_error(x, dtype):
    out = np.empty_like(x)
    _apply(x, out)
    truth = np.tanh(x.astype(np.longdouble))
    spacing = np.spacing(np.abs(truth).astype(dtype)).astype(np.longdouble)
    return out, np.abs(out.astype(np.longdouble) - truth) / spacing


@intrinsic
def _f32_to_bits(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@numba.njit(error_model="numpy")
def _tanh(x):
    return fast_tanh(x)          # a call, not inlined into the prange body below


@numba.njit(error_model="numpy", parallel=True)
def _worst_float32_ulp(start, stop, stride):
    """max over every ``stride``-th float32 bit pattern in [start, stop) of the ulp error of
    fast_tanh, against float64 fast_tanh (itself within 2.5 float64 ulp, ~3e-16: exact at
    float32 resolution), plus a count of odd-symmetry violations."""
    n = (stop - start + stride - 1) // stride
    worst = np.zeros(n // 4096 + 1)
    asym = np.zeros(n // 4096 + 1, dtype=np.int64)
    for blk in numba.prange(n // 4096 + 1):
        w, bad = 0.0, 0
        for i in range(blk * 4096, min(n, (blk + 1) * 4096)):
            x = _bits_to_f32(np.int32(start + i * stride))
            ours = _tanh(x)
            truth = _tanh(np.float64(x))
            t32 = np.float32(truth)
            up = _bits_to_f32(_f32_to_bits(t32) + np.int32(1))   # next float32 up
            ulp = np.float64(up) - np.float64(t32)
            err = abs(np.float64(ours) - truth) / ulp
            w = max(w, err)
            if _tanh(-x) != -ours:
                bad += 1
        worst[blk] = w
        asym[blk] = bad
    return worst.max(), asym.sum()


def test_float32_exhaustive_over_every_float():
    """Every finite non-negative float32 (2**31 - 2**23 values) — and, by the odd-symmetry
    check on each, every negative one."""
    worst, asymmetric = _worst_float32_ulp(0, 0x7F800000, 1)
    assert asymmetric == 0
    assert worst <= ULP_BOUND[np.float32], worst


def test_float64_over_the_whole_range():
    rng = np.random.default_rng(0)
    mags = 10.0 ** rng.uniform(-320, 3, 2_000_000)       # subnormals … far past saturation
    dense = rng.uniform(0, 25, 2_000_000)                # where the work happens
    x = np.concatenate([mags, dense, -dense])
    _, err = _ulp_error(x, np.float64)
    assert float(err.max()) <= ULP_BOUND[np.float64]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(dtype):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 20.0, -20.0, 50.0, 1e-30], dtype)
    out = np.empty_like(x)
    _apply(x, out)
    assert out[0] == 0 and not np.signbit(out[0])
    assert out[1] == 0 and np.signbit(out[1])
    np.testing.assert_array_equal(out[2:4], [1.0, -1.0])
    assert np.isnan(out[4])
    np.testing.assert_array_equal(out[5:8], [1.0, -1.0, 1.0])  # saturated: exactly ±1
    assert out[8] == x[8]
    assert out.dtype == dtype


def test_kernels_vectorise_the_row_loop():
    """The point of the exercise: LLVM emits SIMD code for the activation loop."""
    from numba_rnn.kernels.activations import activate_row
    for dtype, vec in ((np.float64, "x double>"), (np.float32, "x float>")):
        fresh = numba.njit(error_model="numpy")(activate_row.py_func)
        a = np.zeros(8, dtype)
        fresh(0, a, a, a.copy())
        assert vec in fresh.inspect_llvm(fresh.signatures[0])


def test_recurrence_kernels_keep_the_row_loops_vectorised():
    """The row functions are inlined into the recurrences (5–17 % faster at the tiny
    shape); the inlined loops must still be SIMD code, with no scalar tanh call."""
    from numba_rnn.kernels import cpu
    f = np.float32
    T, N, H = 3, 2, 32
    A, a = np.zeros((T, N, H), f), np.zeros((N, H), f)
    Wp = cpu.pack_panels(np.zeros((H, H), f), 16)
    fwd = numba.njit(error_model="numpy")(cpu._forward)
    bwd = numba.njit(error_model="numpy")(cpu._backward)
    fwd(A, Wp, a, np.full(N, T), 0, False, A.copy(), np.zeros((1, 2, N, 16), f))
    bwd(A, A, Wp, a.copy(), np.full(N, T), 0, False, A.copy(), np.zeros((T, N), f),
        np.zeros((2, N, 2), f), np.zeros((N, 32), f), np.zeros((1, 2, N, 16), f))
    for kernel in (fwd, bwd):
        ir = kernel.inspect_llvm(kernel.signatures[0])
        assert "x float>" in ir and "@tanh" not in ir, kernel.__name__
