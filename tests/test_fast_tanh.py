"""The vectorised tanh: accuracy over the whole float range, special values, speed-free."""
import numba
import numpy as np
import pytest
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from numba_rnn.kernels.fast_tanh import _bits_to_float32 as _bits_to_f32
from numba_rnn.kernels.fast_tanh import fast_tanh

from .conftest import fresh_recurrence_ir

#: the stated bounds (README, kernels/fast_tanh.py), in units in the last place
ULP_BOUND = {np.float32: 2.5, np.float64: 2.6}


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


#: float32 values per task of the exhaustive check
_BLOCK = 4096


@numba.njit(error_model="numpy", parallel=True)
def _worst_float32_ulp(start, stop, stride):
    """max over every ``stride``-th float32 bit pattern in [start, stop) of the ulp error of
    fast_tanh, against float64 fast_tanh (itself within 2.6 float64 ulp, ~6e-16: exact at
    float32 resolution), plus a count of odd-symmetry violations.

    Each block of :data:`_BLOCK` values goes through tanh in plain loops that LLVM
    vectorises, as in the kernels (x and -x in one loop: two inlined float32 calls in one
    function trip Numba's SSA check): 11 s for every float32 on 2 cores, where a scalar
    call per value took 57 s."""
    n = (stop - start + stride - 1) // stride
    blocks = (n + _BLOCK - 1) // _BLOCK
    worst = np.zeros(blocks)
    asym = np.zeros(blocks, dtype=np.int64)
    for blk in numba.prange(blocks):
        lo = blk * _BLOCK
        m = min(n, lo + _BLOCK) - lo
        x = np.zeros(2 * _BLOCK, np.float32)              # x, then -x
        ours = np.empty(2 * _BLOCK, np.float32)
        truth = np.empty(_BLOCK, np.float64)
        for i in range(m):
            x[i] = _bits_to_f32(np.int32(start + (lo + i) * stride))
            x[_BLOCK + i] = -x[i]
        for i in range(2 * _BLOCK):
            ours[i] = fast_tanh(x[i])
        for i in range(m):
            truth[i] = fast_tanh(np.float64(x[i]))
        w, bad = 0.0, 0
        for i in range(m):
            t32 = np.float32(truth[i])
            up = _bits_to_f32(_f32_to_bits(t32) + np.int32(1))   # next float32 up
            ulp = np.float64(up) - np.float64(t32)
            w = max(w, abs(np.float64(ours[i]) - truth[i]) / ulp)
            if ours[_BLOCK + i] != -ours[i]:
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
    worst = rng.uniform(0.17, 0.27, 2_000_000)           # k = 1, m cancels: the worst
    x = np.concatenate([mags, dense, -dense, worst, -worst, [0.2036717703939206]])
    _, err = _ulp_error(x, np.float64)
    assert float(err.max()) <= ULP_BOUND[np.float64]    # last x: the worst found, 2.59


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
    for name, code in fresh_recurrence_ir().items():
        assert "x float>" in code and "@tanh" not in code, name
