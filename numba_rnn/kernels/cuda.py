"""CUDA backend: the GPU twins of :mod:`numba_rnn.kernels.cpu`, same names and contracts.

Everything the layer code calls between two kernels stays on the device: arrays are
numba device arrays (anything with ``__cuda_array_interface__`` is taken without a
copy), parameters and optimizer state live on the GPU, and no function here copies
to the host except :func:`to_host` and the scalar results of clipping.

- recurrences: :mod:`.cuda_recurrence` (one persistent launch per layer-direction);
- batched products, norm reduction and clipping: :mod:`.cuda_products`;
- optimizer updates: :mod:`.cuda_optim`; array plumbing: :mod:`.cuda_arrays`.

``recurrence_forward``/``recurrence_backward`` choose their variant by shape (see
:func:`plan`); ``variant=`` forces one (tests use it to cover every path).
"""
import contextlib
import math

import numpy as np
from numba import cuda

from .. import _validate as V
from . import CudaUnavailableError
from . import cuda_arrays as ca
from . import cuda_layers as cl
from . import cuda_products as cp
from . import cuda_recurrence as cr
from .cuda_optim import adagrad_, adam_, rmsprop_, sgd_  # noqa: F401

SIMULATOR = ca.SIMULATOR

if SIMULATOR:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as DeviceArray
else:
    from numba.cuda.cudadrv import driver as _driver
    from numba.cuda.cudadrv.devicearray import DeviceNDArray as DeviceArray

# threads per block of the recurrence kernels (the simulator runs a Python thread for
# each, so it gets fewer: the tests force every lane and round count anyway)
MAX_THREADS = 64 if SIMULATOR else 1024
BLOCK_THREADS = 1024    # a GPU's threads per block: what ``plan`` sizes the block variant by
VARIANTS = ("block", "grid", "step")


def check_available():
    """Raise :class:`CudaUnavailableError` unless a GPU (or the simulator) is usable."""
    if not cuda.is_available():
        raise CudaUnavailableError(
            "device='cuda' needs an NVIDIA GPU with a working driver, and numba finds none "
            "(numba.cuda.is_available() is False); use device='cpu', or set "
            "NUMBA_ENABLE_CUDASIM=1 before importing numba to run the CUDA simulator")


_built = {}


def _kernels(dtype, lanes=None, H=None):
    """The per-dtype kernels (recurrences and GEMM), or with ``lanes`` and ``H`` the
    ``block`` variant's for that many lanes a unit (and :func:`_block_kw` weights a
    thread); each built once."""
    KW = None if lanes is None else _block_kw(H, lanes)
    key = (np.dtype(dtype), lanes, KW)
    if key not in _built:
        dt = np.dtype(dtype)
        _built[key] = (cr.build_block(dt, KW, lanes) if lanes else
                       {**cr.build(dt), **cp.build(dt)})
    return _built[key]


# ---------------------------------------------------------------------- arrays
def is_array(value):
    """True for a device array of this backend."""
    return isinstance(value, DeviceArray)


def on_device(value):
    """True if ``value`` lives on the GPU (a device array or ``__cuda_array_interface__``)."""
    return is_array(value) or hasattr(value, "__cuda_array_interface__")


def _copy(src, dst, swap01=False):
    """``dst[...] = src`` (or src with axes 0 and 1 swapped), any strides and dtypes."""
    n = int(np.prod(dst.shape))
    if n == 0:
        return dst
    if dst.ndim == 3:
        ca.over(ca.copy3, n)(src, bool(swap01), dst)
    elif dst.ndim == 2:
        ca.over(ca.copy2, n)(src, dst)
    elif dst.ndim == 1:
        ca.over(ca.copy1, n)(src, dst)
    else:
        raise ValueError(f"device arrays of {dst.ndim} dimensions are not supported here")
    return dst


def _contiguous(a):
    return a.is_c_contiguous() if callable(getattr(a, "is_c_contiguous", None)) else False


def asarray(value, name, dtype):
    """``value`` as a C-contiguous device array of float ``dtype``.

    Device inputs (numba, CuPy, torch, …) are used in place when they already have
    the dtype and layout, otherwise copied on the device; host inputs are validated
    as on the CPU and copied over once.
    """
    dtype = np.dtype(dtype)
    if on_device(value):
        arr = value if is_array(value) else cuda.as_cuda_array(value)
        if np.dtype(arr.dtype).kind != "f":
            raise TypeError(f"{name} must hold floating-point numbers (float32 or float64), "
                            f"got a device array of dtype {arr.dtype}")
        if np.dtype(arr.dtype) == dtype and _contiguous(arr):
            return arr
        return _copy(arr, cuda.device_array(arr.shape, dtype=dtype))
    return cuda.to_device(V.float_array(value, name, dtype))


def inplace_view(value, name):
    """A numba device-array view of ``value`` that shares its memory, for in-place
    updates (clipping, optimizers); non-contiguous arrays raise ValueError."""
    arr = value if is_array(value) else cuda.as_cuda_array(value)
    if not _contiguous(arr):
        raise ValueError(f"{name} must be a C-contiguous device array to be updated in place")
    return arr


def from_host(a):
    """A host array → a new device array (a copy)."""
    return cuda.to_device(np.ascontiguousarray(a))


def to_host(a):
    """A device array → a NumPy array (one copy); NumPy arrays pass through."""
    return a.copy_to_host() if is_array(a) else np.asarray(a)


def empty(shape, dtype):
    return cuda.device_array(tuple(shape), dtype=np.dtype(dtype))


def zeros(shape, dtype):
    """A new device array of zeros: a stream-ordered memset (no kernel launch: numba's
    launch costs ~20 µs of Python, the driver call a few)."""
    a = empty(shape, dtype)
    if a.size:
        if SIMULATOR:
            ca.over(ca.fill, a.size)(a.reshape(a.size), 0)
        else:
            _driver.driver.cuMemsetD8Async(_driver.device_pointer(a), 0, a.nbytes, 0)
    return a


def _c_contiguous(a):
    """C-contiguous, judged from shape and strides (cheaper than numba's flags)."""
    step = a.dtype.itemsize
    for n, st in zip(reversed(a.shape), reversed(a.strides), strict=True):
        if n > 1 and st != step:
            return False
        step *= n
    return True


def rows_view(a, lo, hi):
    """``a[lo:hi]`` of a device array, a view. For C-contiguous arrays the view is built
    from the parent's memory directly: numba-cuda's general slicing costs ~40 µs of
    Python on the H200's host, several times a launch."""
    if SIMULATOR or not 0 <= lo < hi <= a.shape[0] or not _c_contiguous(a):
        return a[lo:hi]
    step = a.strides[0]
    return DeviceArray((hi - lo,) + tuple(a.shape[1:]), a.strides, a.dtype,
                       gpu_data=a.gpu_data.view(lo * step, hi * step))


def row_view(a, i):
    """``a[i]`` of a device array, a view (built directly, as :func:`rows_view`)."""
    if SIMULATOR or not 0 <= i < a.shape[0] or not _c_contiguous(a):
        return a[i]
    step = a.strides[0]
    return DeviceArray(tuple(a.shape[1:]), a.strides[1:], a.dtype,
                       gpu_data=a.gpu_data.view(i * step, (i + 1) * step))


def assign_(dst, src):
    """``dst[...] = src`` for a device ``dst`` and a device or host ``src``."""
    if on_device(src):
        _copy(src if is_array(src) else cuda.as_cuda_array(src), dst)
    else:
        dst.copy_to_device(np.ascontiguousarray(src, dtype=dst.dtype))
    return dst


def copy(a):
    return _copy(a, empty(a.shape, a.dtype))


def swap01(a):
    """(I, J, K) → a contiguous (J, I, K) copy (the batch_first layout change)."""
    R0, J, K = a.shape
    return _copy(a, empty((J, R0, K), a.dtype), swap01=True)


def concat_last(arrays):
    """Concatenate (T, N, H_i) arrays along the last axis."""
    T, N = arrays[0].shape[:2]
    out = empty((T, N, sum(a.shape[2] for a in arrays)), arrays[0].dtype)
    lo = 0
    for a in arrays:
        _copy(a, out[:, :, lo:lo + a.shape[2]])
        lo += a.shape[2]
    return out


def take_last(a, lo, hi):
    """``a[:, :, lo:hi]`` as a contiguous copy."""
    T, N = a.shape[:2]
    return _copy(a[:, :, lo:hi], empty((T, N, hi - lo), a.dtype))


def add_(a, b):
    """``a += b`` (same shapes, contiguous)."""
    if a.size:
        ca.over(ca.add_, a.size)(a.reshape(a.size), b.reshape(b.size))
    return a


def mul_(a, b):
    """``a *= b`` (same shapes, contiguous)."""
    if a.size:
        ca.over(ca.mul_, a.size)(a.reshape(a.size), b.reshape(b.size))
    return a


_full_lengths = {}


def lengths_array(lengths, T, N):
    """Valid steps per sequence as a device int64 array (all T when ``lengths`` is None:
    one array per (T, N), made once and only ever read by the kernels)."""
    if lengths is None:
        out = _full_lengths.get((T, N))
        if out is None:
            if len(_full_lengths) >= 64:
                _full_lengths.clear()
            out = _full_lengths[T, N] = cuda.to_device(np.full(N, T, dtype=np.int64))
        return out
    if is_array(lengths):
        return lengths
    return cuda.to_device(np.ascontiguousarray(lengths, dtype=np.int64))


def kernel_lengths(lengths):
    """Host ``lengths`` as a device int64 array, once per pass (None stays None)."""
    return None if lengths is None else lengths_array(lengths, 0, 0)


def zero_padding(out, lengths):
    """A copy of ``out`` (T, N, F) with steps t ≥ lengths[n] set to zero."""
    res = copy(out)
    ca.over(ca.zero_padding, res.size)(res, lengths_array(lengths, *out.shape[:2]))
    return res


def dropout_mask(rng, shape, p, dtype):
    """Inverted-dropout multipliers drawn on the host from ``rng`` (so a seed gives the
    same masks on every device) and copied to the GPU once."""
    keep = rng.random(shape) >= p
    return cuda.to_device((keep / (1.0 - p)).astype(dtype))


def resolve_parallel(parallel, N, H):
    """A CPU notion: the GPU's recurrences and products are always one kernel each."""
    return False


def compute_context(parallel=False):
    """Nothing to set up around a GPU forward or backward."""
    return contextlib.nullcontext()


def synchronize():
    cuda.synchronize()


# ---------------------------------------------------------------------- recurrences
def _device_info():
    if SIMULATOR:
        return 1
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


def plan(N, H, dtype, variant=None, blocks=None):
    """Choose the recurrence variant for (N, H, dtype): ``(variant, lanes_or_units)``.

    ``block`` (one block per batch row) when W_aa fits the registers of one block: S
    lanes per unit, the least power of two that leaves each thread at most
    ``BLOCK_KW`` weights, within ``BLOCK_THREADS`` (so H ≤ 128); else ``grid`` with
    R hidden units per block such that R rows of W_aa (padded to a multiple of four),
    the N·R squares and one lane's partial dots fit; else ``step``. A forced
    ``variant`` that cannot hold the shape raises ValueError. ``blocks`` asks for that
    many ``grid`` blocks where shared memory allows (``block`` runs one per row).
    """
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    S = cr.smem_elements(dtype)
    sms = _device_info()
    R_max = max([R for R in (4 * (S // (4 * (H + 2 * N))), 3, 2, 1)
                 if _grid_smem(N, H, R) <= S], default=0)
    lanes = _block_lanes(H, BLOCK_THREADS)
    if variant in (None, "block") and lanes:
        return "block", lanes
    if variant in (None, "grid") and R_max >= 1:
        R = max(1, min(R_max, math.ceil(H / (blocks or sms))))
        R4 = 4 * math.ceil(R / 4)                           # whole groups of four units
        return "grid", R4 if R4 <= R_max else R - R % 4 if R > 4 else R
    if variant in (None, "step"):
        return "step", 0
    raise ValueError(f"variant={variant!r} cannot hold N={N}, H={H} in {S} shared-memory "
                     f"elements of {np.dtype(dtype)} or {MAX_THREADS} threads")


def _past_block(N, H, dtype, blocks):
    """The plan when the ``block`` variant cannot launch: ``grid``, else ``step``."""
    try:
        return plan(N, H, dtype, "grid", blocks)
    except ValueError:
        return "step", 0


def _block_lanes(H, cap, lanes=None):
    """S, the lanes per unit of the ``block`` variant (0 when H does not fit): the least
    power of two with ⌈H/S⌉ ≤ ``BLOCK_KW`` weights a thread, or ``lanes`` when given,
    such that the H·S threads (whole warps) fit ``cap``."""
    if lanes is not None:
        S = int(lanes)
        if S < 1 or S > 32 or S & (S - 1) or math.ceil(H / S) > cr.BLOCK_KW_MAX:
            raise ValueError(f"lanes must be a power of two in [1, 32] leaving at most "
                             f"{cr.BLOCK_KW_MAX} weights a thread for H={H}, got {lanes!r}")
    else:
        S = 1
        while S < 32 and math.ceil(H / S) > cr.BLOCK_KW:
            S *= 2
    return S if 32 * math.ceil(H * S / 32) <= cap and math.ceil(H / S) <= cr.BLOCK_KW_MAX else 0


def _block_threads(H, S):
    """Threads of a ``block`` launch: H·S in whole warps on a GPU (the lane sums shuffle
    within warps); exactly H·S in the simulator, which runs a Python thread for each and
    sums the lanes in shared memory, the missing lanes counted as zero."""
    return H * S if SIMULATOR else 32 * math.ceil(H * S / 32)


def _block_kw(H, S):
    """Weights a thread holds: ⌈H/S⌉ rounded up to a power of two, at least four."""
    return max(4, 1 << (math.ceil(H / S) - 1).bit_length())


def _grid_smem(N, H, R, P=1):
    """Shared elements of a ``grid`` block: R rows of W (padded to a multiple of four),
    the backward's N·R squares and P lanes' partial sums of N·R (padded) dots."""
    R4 = 4 * math.ceil(R / 4)
    return R4 * H + N * R + P * N * R4


def _lanes(outputs, slots, H, cap, room, lanes=None):
    """``(P, threads)``: P lanes share each output's dot (a power of two ≤ 32 with at
    least four products a lane) while P·outputs threads fit ``cap`` and P·slots partial
    sums fit ``room`` shared elements; threads are whole warps, at most ``cap``.
    ``lanes`` forces P (tests use it to cover every reduction depth)."""
    cap = 32 * max(1, int(cap) // 32)
    P = 1
    if lanes is not None:
        P = int(lanes)
        if P < 1 or P > 32 or P & (P - 1) or P * slots > room:
            raise ValueError(f"lanes must be a power of two in [1, 32] whose {slots} partial "
                             f"sums each fit {room} shared elements, got {lanes!r}")
    else:
        while 2 * P <= 32 and 8 * P <= H and 2 * P * outputs <= cap and 2 * P * slots <= room:
            P *= 2
    return P, min(cap, 32 * math.ceil(P * outputs / 32))


def _block_launch(kernel, args, N, H, dtype, S, threads):
    """``(blocks, threads, shared bytes)`` of the ``block`` variant, or None when its
    H·S threads exceed the compiled kernel's limit (its registers) or ``threads``."""
    th = _block_threads(H, S)
    cap = min(MAX_THREADS if threads is None else threads, _compiled(kernel, args)[0])
    if th > cap:
        return None
    HS = S * _block_kw(H, S)
    return N, th, (2 * HS + cr.scratch_elements(th)) * np.dtype(dtype).itemsize


def _grid_launch(kernel, args, N, H, dtype, R, threads, lanes, backward):
    """``(blocks, P, threads, shared bytes)`` of the ``grid`` variant, or None when its
    blocks cannot all be resident at once (threads are halved until they can, down to
    one warp)."""
    G = math.ceil(H / R)
    G4 = math.ceil(min(R, H) / 4)
    fixed = G4 * 4 * H + (N * R if backward else 0)
    per_sm = math.ceil(G / _device_info())
    limit, co_resident = _compiled(kernel, args)
    cap = min(MAX_THREADS // per_sm if threads is None else threads, limit)
    while True:
        P, th = _lanes(N * G4, N * G4 * 4, H, cap, cr.smem_elements(dtype) - fixed, lanes)
        shared = (fixed + P * N * G4 * 4) * np.dtype(dtype).itemsize
        if G <= co_resident(th, shared):
            return G, P, th, shared
        if th <= 32:
            return None
        cap = th // 2


_compiled_kernels = {}


def _compiled(kernel, args):
    """``(max threads per block, co-resident blocks(threads, shared bytes))`` of the
    kernel compiled for ``args`` (looked up by the arguments' dtypes: numba's typeof of
    every argument costs more than the launch). The simulator has no limits but runs
    cooperative grids of one block only."""
    if SIMULATOR:
        return MAX_THREADS, lambda threads, shared: 1
    key = (id(kernel), tuple(getattr(a, "dtype", None) or type(a) for a in args))
    if key not in _compiled_kernels:
        compiled = kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))
        _compiled_kernels[key] = (compiled.max_threads_per_block,
                                  compiled.max_cooperative_grid_blocks)
    return _compiled_kernels[key]


def recurrence_forward(U, W_aa, a0, kind, reverse=False, parallel=False, lengths=None,
                       blocks=None, overwrite_U=False, variant=None, threads=None, lanes=None):
    """Run the forward recurrence on the GPU; return every hidden state ``A`` (T, N, H).

    Same contract as :func:`numba_rnn.kernels.cpu.recurrence_forward` (``parallel``
    is ignored). ``variant`` forces ``"block"``, ``"grid"`` or ``"step"``;
    ``blocks`` asks for a number of blocks (see :func:`plan`); ``threads`` caps the
    threads per block and ``lanes`` forces the lanes per dot product.
    """
    T, N, H = U.shape
    A = U if overwrite_U else empty(U.shape, U.dtype)
    lens = lengths_array(lengths, T, N)
    k = _kernels(U.dtype)
    which, size = plan(N, H, U.dtype, variant, blocks)
    if which == "block":
        S = _block_lanes(H, BLOCK_THREADS, lanes) if lanes is not None else size
        kb = _kernels(U.dtype, S, H)["forward_block"] if S else None
        args = (U, W_aa, a0, lens, kind, bool(reverse), A)
        fit = _block_launch(kb, args, N, H, U.dtype, S, threads) if S else None
        if fit is not None:
            ca.launch(kb, *fit)(*args)
            return A
        if variant == "block":
            raise ValueError(f"variant='block' needs {H}·{S or lanes} threads, more than "
                             f"the {threads or MAX_THREADS} allowed for H={H}")
        which, size = _past_block(N, H, U.dtype, blocks)
    if which == "grid":
        args = (U, W_aa, a0, lens, kind, bool(reverse), size, 1, A)
        fit = _grid_launch(k["forward_grid"], args, N, H, U.dtype, size, threads, lanes, False)
        if fit is not None:
            G, P, th, shared = fit
            ca.launch(k["forward_grid"], G, th, shared)(*args[:7], P, A)
            return A
        if variant == "grid":
            raise ValueError(f"variant='grid' needs {math.ceil(H / size)} co-resident blocks "
                             f"for H={H}")
    step = ca.over(k["forward_step"], N * H)
    for s in range(T):                                     # fallback: a launch per step
        t = T - 1 - s if reverse else s
        prev = a0 if s == 0 else A[t + 1 if reverse else t - 1]
        step(U, W_aa, prev, lens, kind, t, A)
    return A


def recurrence_backward(dA, A, W_aa, dh_n, kind, reverse=False, parallel=False, lengths=None,
                        blocks=None, variant=None, threads=None, lanes=None):
    """Run BPTT on the GPU; returns ``(delta, dh0, norms)`` as the CPU twin does."""
    T, N, H = A.shape
    delta = empty(A.shape, A.dtype)
    norms = empty((T, N), A.dtype)
    lens = lengths_array(lengths, T, N)
    k = _kernels(A.dtype)
    which, size = plan(N, H, A.dtype, variant, blocks)
    if which == "block":                                   # reads dh_n, writes dh0
        S = _block_lanes(H, BLOCK_THREADS, lanes) if lanes is not None else size
        kb = _kernels(A.dtype, S, H)["backward_block"] if S else None
        dh0 = empty((N, H), A.dtype)
        partial = empty((T, N, math.ceil(_block_threads(H, S) / 32)), A.dtype)
        if dh_n is None:
            dh_in = zeros((N, H), A.dtype)
        elif is_array(dh_n) and dh_n.dtype == A.dtype and _c_contiguous(dh_n):
            dh_in = dh_n                                   # read in place, never written
        else:
            dh_in = _copy(dh_n, empty((N, H), A.dtype))
        args = (dA, A, W_aa, dh_in, lens, kind, bool(reverse), delta, partial, dh0)
        fit = _block_launch(kb, args, N, H, A.dtype, S, threads) if S else None
        if fit is not None:
            ca.launch(kb, *fit)(*args)
            if T * N:
                ca.over(k["finish_norms"], T * N)(partial, norms)
            return delta, dh0, norms
        if variant == "block":
            raise ValueError(f"variant='block' needs {H}·{S or lanes} threads, more than "
                             f"the {threads or MAX_THREADS} allowed for H={H}")
        which, size = _past_block(N, H, A.dtype, blocks)
    carry = zeros((N, H), A.dtype) if dh_n is None else _copy(dh_n, empty((N, H), A.dtype))
    if which == "grid":
        partial = empty((T, N, math.ceil(H / size)), A.dtype)
        args = (dA, A, W_aa, lens, kind, bool(reverse), size, 1, carry, delta, partial)
        fit = _grid_launch(k["backward_grid"], args, N, H, A.dtype, size, threads, lanes, True)
        if fit is not None:
            G, P, th, shared = fit
            ca.launch(k["backward_grid"], G, th, shared)(*args[:7], P, *args[8:])
            ca.over(k["finish_norms"], T * N)(partial, norms)
            return delta, carry, norms
        if variant == "grid":
            raise ValueError(f"variant='grid' needs {math.ceil(H / size)} co-resident blocks "
                             f"for H={H}")
    gsq = empty((N, H), A.dtype)
    step_delta = ca.over(k["backward_step_delta"], N * H)
    step_carry = ca.over(k["backward_step_carry"], N * H)
    for s in range(T):                                     # fallback: two launches per step
        t = s if reverse else T - 1 - s
        step_delta(dA, A, carry, lens, kind, t, delta, gsq)
        step_carry(W_aa, lens, t, delta, gsq, carry, norms)
    return delta, carry, norms


# ---------------------------------------------------------------------- products
_no_bias = {}


def gemm(a, b, trans_a=False, trans_b=False, bias=None, out=None, accumulate=False):
    """``op(a)·op(b) (+ bias)``, written into (or, with ``accumulate``, added to) ``out``."""
    M = a.shape[1] if trans_a else a.shape[0]
    P = b.shape[0] if trans_b else b.shape[1]
    if out is None:
        out = empty((M, P), a.dtype)
    if M == 0 or P == 0:
        return out
    has_bias = bias is not None
    if not has_bias:                 # the kernel ignores it: one per dtype, not a slice of out
        bias = _no_bias.get(out.dtype)
        if bias is None:
            bias = _no_bias[out.dtype] = zeros((1,), out.dtype)
    grid = (math.ceil(P / cp.TILE), math.ceil(M / cp.TILE))
    tiles = ca.launch(_kernels(a.dtype)["gemm"], grid, (cp.TILE, cp.TILE))
    tiles(a, b, bool(trans_a), bool(trans_b), bias, has_bias, bool(accumulate), out)
    return out


def input_projection(x, W_ax, b, parallel=False):
    """``U = x·W_axᵀ + b``: (T, N, D) → (T, N, H), one GEMM over all T·N rows."""
    T, N, D = x.shape
    return gemm(x.reshape(T * N, D), W_ax, trans_b=True, bias=b).reshape(T, N, W_ax.shape[0])


def input_grad(delta, W_ax, parallel=False):
    """``dx = δ·W_ax``: (T, N, H) → (T, N, D), one GEMM."""
    T, N, H = delta.shape
    return gemm(delta.reshape(T * N, H), W_ax).reshape(T, N, W_ax.shape[1])


def layer_grads(delta, x, A, a0, W_ax, reverse=False, parallel=False):
    """``(dW_ax, dW_aa, db, dx)``: :func:`weight_grads` and :func:`input_grad` (see the
    CPU twin, which runs them as one kernel)."""
    return (*weight_grads(delta, x, A, a0, reverse, parallel),
            input_grad(delta, W_ax, parallel))


def weight_grads(delta, x, A, a0, reverse=False, parallel=False):
    """``(dW_ax (H, D), dW_aa (H, H), db (H,))`` of one layer-direction (see the CPU twin)."""
    T, N, H = delta.shape
    D = x.shape[2]
    d2 = delta.reshape(T * N, H)
    dW_ax = gemm(d2, x.reshape(T * N, D), trans_a=True)
    M = (T - 1) * N
    if reverse:   # a<t+1> pairs with δ<t> for t < T-1; a0 pairs with δ<T-1>
        dW_aa = gemm(row_view(delta, T - 1), a0, trans_a=True)
        if T > 1:
            gemm(rows_view(delta, 0, T - 1).reshape(M, H), rows_view(A, 1, T).reshape(M, H),
                 trans_a=True, out=dW_aa, accumulate=True)
    else:         # a<t-1> pairs with δ<t> for t > 0; a0 pairs with δ<0>
        dW_aa = gemm(row_view(delta, 0), a0, trans_a=True)
        if T > 1:
            gemm(rows_view(delta, 1, T).reshape(M, H), rows_view(A, 0, T - 1).reshape(M, H),
                 trans_a=True, out=dW_aa, accumulate=True)
    db = empty((H,), delta.dtype)
    ca.over(cp.colsum, H)(d2, db)
    return dW_ax, dW_aa, db


# ---------------------------------------------------------------------- clipping
REDUCE_BLOCKS = 64


def _flat(g):
    return g.reshape(g.size)


def norm_and_coef(arrays, p, max_norm=0.0):
    """The joint p-norm of device ``arrays`` and the clipping coefficient, on the device.

    Returns a device float64 array ``[norm, coef]`` (see
    :func:`~numba_rnn.kernels.cuda_products.finish_norm`): two launches per array
    plus one, and no transfer.
    """
    arrays = [a for a in arrays if a.size]
    partial = cuda.device_array(max(1, REDUCE_BLOCKS * len(arrays)), dtype=np.float64)
    ca.launch(ca.fill, 1, 1)(partial[:1], 0)
    for i, g in enumerate(arrays):
        blocks = min(REDUCE_BLOCKS, math.ceil(g.size / cp.REDUCE_THREADS))
        if blocks < REDUCE_BLOCKS:     # unused slots of this array's range must be zero
            ca.launch(ca.fill, 1, REDUCE_BLOCKS)(partial[i * REDUCE_BLOCKS:(i + 1) * REDUCE_BLOCKS],
                                                 0)
        ca.launch(cp.norm_partial, blocks, cp.REDUCE_THREADS)(_flat(g), float(p), partial,
                                                   i * REDUCE_BLOCKS)
    out = cuda.device_array(2, dtype=np.float64)
    ca.launch(cp.finish_norm, 1, 1)(partial, float(p), float(max_norm), out)
    return out


def scale_by_(arrays, norm_coef):
    """``g *= coef`` for every array, the coefficient read from device memory."""
    for g in arrays:
        if g.size:
            ca.over(_kernels(g.dtype)["scale_by"], g.size)(_flat(g), norm_coef)


def clamp_(g, c):
    """Clamp a device array to [-c, c] in place; returns how many entries moved."""
    if not g.size:
        return 0
    moved = cuda.to_device(np.zeros(1, dtype=np.int64))
    ca.over(_kernels(g.dtype)["clamp"], g.size)(_flat(g), float(c), moved)
    return int(moved.copy_to_host()[0])


def nonfinite(arrays):
    """Per array, True if it holds NaN or ±inf: one kernel each, one copy back."""
    flags = zeros((len(arrays),), np.int32)
    for i, a in enumerate(arrays):
        if a.size:
            ca.over(ca.any_nonfinite, a.size)(_flat(a), flags, i)
    return flags.copy_to_host().astype(bool)


# ---------------------------------------------------------------------- output heads
def linear(h, W, b):
    """``h·Wᵀ + b``: (M, F) → (M, O), one GEMM."""
    return gemm(h, W, trans_b=True, bias=b)


def linear_backward(d, h_in, W):
    """Gradients of :func:`linear` from ``d`` (M, O): ``(dW, db, d_in)``."""
    db = empty((d.shape[1],), d.dtype)
    ca.over(cp.colsum, d.shape[1])(d, db)
    return gemm(d, h_in, trans_a=True), db, gemm(d, W)


def act_(h, kind):
    """tanh (kind 0) or relu (kind 1) in place."""
    if h.size:
        ca.over(cl.act_, h.size)(_flat(h), kind)
    return h


def act_grad_(d, h, kind):
    """``d *= g'(z)`` in place, written with h = g(z)."""
    if d.size:
        ca.over(cl.act_grad_, d.size)(_flat(d), _flat(h), kind)
    return d


def softmax(z):
    """Row softmax of a 2-D device array (a new array)."""
    out = empty(z.shape, z.dtype)
    ca.over(cl.softmax_rows, z.shape[0])(z, out)
    return out


def sigmoid(z):
    out = copy(z)
    if out.size:
        ca.over(cl.sigmoid_, out.size)(_flat(out))
    return out


def gather_steps(out, last):
    """``out[last[n], n]`` for every n: (T, N, F) → (N, F)."""
    N, F = out.shape[1], out.shape[2]
    feats = empty((N, F), out.dtype)
    ca.over(cl.gather_steps, N * F)(out, lengths_array(last, 0, N), feats)
    return feats


def scatter_steps(d_feats, last, shape):
    """A zero (T, N, F) array with ``[last[n], n] = d_feats[n]``."""
    d_out = zeros(shape, d_feats.dtype)
    N, F = d_feats.shape
    ca.over(cl.scatter_steps, N * F)(d_feats, lengths_array(last, 0, N), d_out)
    return d_out


def row_loss(name, z, y, w):
    """Loss rows on the device: ``(L, dL/dz)`` for ``name`` in cross_entropy/mse/bce.

    ``z`` (M, C) device logits or predictions; ``y`` (M,) int64 ids or (M, C) floats and
    ``w`` (M,) float64 row weights, from the host (one copy each); the per-row losses
    come back (M float64) and are added in order on the host, as on the CPU.
    """
    M, C = z.shape
    y = cuda.to_device(np.ascontiguousarray(y))
    w = cuda.to_device(np.ascontiguousarray(w, dtype=np.float64))
    grad = empty((M, C), z.dtype)
    rows = cuda.device_array(M, dtype=np.float64)
    kernel = {"cross_entropy": cl.softmax_xent, "mse": cl.mse_rows, "bce": cl.bce_rows}[name]
    ca.over(kernel, M)(z, y, w, grad, rows)
    return float(np.sum(rows.copy_to_host())), grad


# ---------------------------------------------------------------------- generation
def argmax_rows(z):
    ids = cuda.device_array(z.shape[0], dtype=np.int64)
    ca.over(cl.argmax_rows, z.shape[0])(z, ids)
    return ids


def sample_rows(z, temperature, u):
    """Class ids drawn from softmax(z / temperature) with the host's uniforms ``u``."""
    ids = cuda.device_array(z.shape[0], dtype=np.int64)
    u = cuda.to_device(np.ascontiguousarray(u, dtype=np.float64).reshape(-1))
    ca.over(cl.sample_rows, z.shape[0])(z, float(temperature), u, ids)
    return ids


def one_hot(ids, D, dtype):
    out = empty((ids.shape[0], D), dtype)
    ca.over(cl.one_hot, ids.shape[0] * D)(ids, out)
    return out


def stack(arrays):
    """Stack same-shaped device arrays along a new first axis."""
    out = empty((len(arrays), *arrays[0].shape), arrays[0].dtype)
    for i, a in enumerate(arrays):
        _copy(a, out[i])
    return out


# ---------------------------------------------------------------------- bridges
def layers_to_cols(a):
    """(L, N, W) → (N, L·W): each block of W columns is one layer's slice."""
    L, N, W = a.shape
    out = empty((N, L * W), a.dtype)
    for layer in range(L):
        _copy(a[layer], out[:, layer * W:(layer + 1) * W])
    return out


def cols_to_layers(a, L, W):
    """(N, L·W) → (L, N, W), the inverse of :func:`layers_to_cols`."""
    out = empty((L, a.shape[0], W), a.dtype)
    for layer in range(L):
        _copy(a[:, layer * W:(layer + 1) * W], out[layer])
    return out


def apply_eos(tok, done, eos):
    """After ``eos`` a sequence keeps emitting it (``tok``, ``done`` updated in place)."""
    ca.over(cl.apply_eos, tok.shape[0])(tok, done, int(eos))
    return tok
