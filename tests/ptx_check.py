"""Compile every CUDA kernel to PTX for sm_90 with NVVM, without a GPU.

Run by ``tests/test_cuda.py`` in a subprocess without the simulator (which does no
type inference): it catches typing errors that only the real CUDA target sees, and
checks that float32 kernels contain no float64 arithmetic. Prints ``FAILURES <n>``.
"""
import re

import numpy as np
import numba.cuda.dispatcher as _dispatcher
from numba import cuda, types

from numba_rnn.kernels import cuda_arrays as ca
from numba_rnn.kernels import cuda_layers as cl
from numba_rnn.kernels import cuda_optim as co
from numba_rnn.kernels import cuda_products as cp
from numba_rnn.kernels import cuda_recurrence as cr


class _Device:          # device functions ask the current device for its compute capability
    compute_capability = (9, 0)


_dispatcher.get_current_device = lambda: _Device()
i64, b1, f64 = types.int64, types.boolean, types.float64
failures = 0


def arr(dt, nd, layout="C"):
    return types.Array(dt, nd, layout)


def check(kernel, sig, name, float32, registers=False):
    """Compile ``kernel`` for ``sig``; with ``float32``, no float64 instruction may
    appear; with ``registers``, no local memory (its arrays must live in registers)."""
    global failures
    try:
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
    except Exception as err:             # report every kernel, not just the first
        failures += 1
        print("FAIL", name, type(err).__name__, str(err)[:2000])
        return
    if float32 and re.search(r"\.f64\b", ptx):
        failures += 1
        print("FAIL", name, "float32 kernel has float64 instructions")
    elif registers and re.search(r"\.local\b", ptx):
        failures += 1
        print("FAIL", name, "keeps an array in local memory instead of registers")
    else:
        print("ok", name)


for dt in (types.float32, types.float64):
    f32 = dt == types.float32
    K = {**cr.build(np.dtype(str(dt))), **cp.build(np.dtype(str(dt)))}
    A3, A2, A1, L = arr(dt, 3), arr(dt, 2), arr(dt, 1), arr(i64, 1)
    for KW, S in ((4, 1), (16, 4), (cr.BLOCK_KW_MAX, 2)):   # the fewest and most weights
        B = cr.build_block(np.dtype(str(dt)), KW, S)
        check(B["forward_block"], (A3, A2, A2, L, i64, b1, A3),
              f"forward_block[{dt}, KW={KW}, S={S}]", f32, registers=True)
        check(B["backward_block"], (A3, A3, A2, A2, L, i64, b1, A3, A3, A2),
              f"backward_block[{dt}, KW={KW}, S={S}]", f32, registers=True)
    sigs = {
        "forward_grid": (A3, A2, A2, L, i64, b1, i64, i64, A3),
        "backward_grid": (A3, A3, A2, L, i64, b1, i64, i64, A2, A3, A3),
        "finish_norms": (A3, A2),
        "forward_step": (A3, A2, A2, L, i64, i64, A3),
        "backward_step_delta": (A3, A3, A2, L, i64, i64, A3, A2),
        "backward_step_carry": (A2, L, i64, A3, A2, A2, A2),
        "gemm": (arr(dt, 2, "A"), arr(dt, 2, "A"), b1, b1, arr(dt, 1, "A"), b1, b1,
                 arr(dt, 2, "A")),
    }
    for name, sig in sigs.items():
        check(K[name], sig, f"{name}[{dt}]", f32)
    check(K["clamp"], (A1, f64, L), f"clamp[{dt}]", False)
    check(K["scale_by"], (A1, arr(f64, 1)), f"scale_by[{dt}]", False)   # reads a float64 coef
    check(cp.colsum, (A2, A1), f"colsum[{dt}]", f32)
    check(cp.norm_partial, (A1, f64, arr(f64, 1), i64), f"norm_partial[{dt}]", False)
    check(ca.copy3, (arr(types.float32, 3, "A"), b1, arr(dt, 3, "A")), f"copy3[{dt}]", False)
    check(ca.copy2, (arr(dt, 2, "A"), arr(dt, 2, "A")), f"copy2[{dt}]", f32)
    check(ca.copy1, (arr(dt, 1, "A"), arr(dt, 1, "A")), f"copy1[{dt}]", f32)
    check(ca.fill, (A1, i64), f"fill[{dt}]", False)
    check(ca.add_, (A1, A1), f"add_[{dt}]", f32)
    check(ca.mul_, (A1, A1), f"mul_[{dt}]", f32)
    check(ca.zero_padding, (A3, L), f"zero_padding[{dt}]", f32)
    check(ca.any_nonfinite, (A1, arr(types.int32, 1), i64), f"any_nonfinite[{dt}]", f32)
    check(co._sgd, (A1, A1, A1, dt, dt, dt, b1, dt, b1), f"sgd[{dt}]", f32)
    check(co._adam, (A1,) * 5 + (dt,) * 9 + (b1, b1), f"adam[{dt}]", f32)
    check(co._rmsprop, (A1,) * 4 + (dt,) * 6, f"rmsprop[{dt}]", f32)
    check(co._adagrad, (A1,) * 3 + (dt,) * 3, f"adagrad[{dt}]", f32)
for dt in (types.float32, types.float64):
    A3, A2, A1, L, R = arr(dt, 3), arr(dt, 2), arr(dt, 1), arr(i64, 1), arr(f64, 1)
    check(cl.act_, (A1, i64), f"act_[{dt}]", False)
    check(cl.act_grad_, (A1, A1, i64), f"act_grad_[{dt}]", False)
    check(cl.softmax_rows, (A2, A2), f"softmax_rows[{dt}]", False)
    check(cl.sigmoid_, (A1,), f"sigmoid_[{dt}]", False)
    check(cl.gather_steps, (A3, L, A2), f"gather_steps[{dt}]", False)
    check(cl.scatter_steps, (A2, L, A3), f"scatter_steps[{dt}]", False)
    check(cl.softmax_xent, (A2, L, R, A2, R), f"softmax_xent[{dt}]", False)
    check(cl.mse_rows, (A2, A2, R, A2, R), f"mse_rows[{dt}]", False)
    check(cl.bce_rows, (A2, A2, R, A2, R), f"bce_rows[{dt}]", False)
check(cp.finish_norm, (arr(f64, 1), f64, f64, arr(f64, 1)), "finish_norm", False)
print("FAILURES", failures)
