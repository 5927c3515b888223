"""MKL's packed GEMM for the step products of the recurrences (where MKL is installed).

A recurrence multiplies by the same weights at every time step: (N, H)·(H, width) per
panel, T times. OpenBLAS, the BLAS Numba calls through SciPy, re-packs the weight
panel into its kernel's layout on every call — at the large shape that is 2 MB per
step per thread — and reaches ~120 GFLOP/s a core on such a product. MKL can pack a
matrix once (``cblas_?gemm_pack``) and then multiply by the packed copy
(``cblas_?gemm_compute``). Measured on the 2-core Xeon, float32, one core, µs per
product (GFLOP/s):

=============  ============  ==============  ============
product        OpenBLAS      MKL ``?gemm``   MKL packed
=============  ============  ==============  ============
64×1024·1024   1164 (115)    1111 (121)      785 (171)
64×1024·512    551 (122)     448 (150)       389 (172)
64×256·256     66.8 (126)    59.5 (141)      52.9 (158)
64×256·128     34.8 (120)    33.1 (127)      30.9 (136)
16×64·64       0.80 (164)    —               0.92 (143)
=============  ============  ==============  ============

So a recurrence with more than one sequence (N > 1) packs each panel of its weights
once per call here and multiplies by the packed panels inside the Numba kernel; a
single sequence takes MKL's matrix-vector product on row panels. On the 2-core AMD
EPYC (MKL's code path there: CBWR branch 2), one core, µs per step product (f32):
16×64·64 2.2 packed against OpenBLAS's 4.1, 32×256·256 54 against 111, 64×1024·512 888
against 1103; f64 at parity. There a single sequence does not take MKL's GEMV
(:func:`gemv_steps`; it multiplies with register tiles, :mod:`.tiles`), float64's
batched products stay on OpenBLAS's GEMM (:func:`batched_products`), and the steps of
a batch multiply with register tiles too while W_aa takes at most 8 MiB
(:data:`~.cpu.TILE_MAX_WEIGHT_BYTES`: the large shape's recurrences, fwd / bwd, f32 65
/ 70 ms on MKL's packed GEMM against 56 / 62 on tiles, f64 159 / 158 against 111 /
128), each measured faster.

Determinism. The cut of a recurrence into row blocks and panels is fixed by its shape
(:mod:`.cpu`), so serial and parallel runs make the same calls. What is left is the
operands' alignment: on branch 2 a packed product called on its own changed its last
bit with where ``a`` and ``out`` start (2×40·48; not 32×256·256 or 7×300·160, and no
recurrence showed it even with its arrays misaligned on purpose), as MKL documents for
any path outside its CNR mode. Every array the products read or write is therefore ours and
starts on a cache line (:func:`aligned_empty`: the states, δ, the carried state and
the scratch), so every run of a layer hands MKL the same alignments — and the user's
arrays never enter a step product (short of passing one's own ``U`` to
:func:`~.cpu.recurrence_forward` with ``overwrite_U``).

MKL comes from the ``mkl`` wheel (a dependency on Linux x86-64), loaded from
``<prefix>/lib`` with its sequential threading layer: the parallelism is our own
panels on Numba's threads. ``NUMBA_RNN_BLAS=openblas`` turns it off; a process where
MKL cannot be loaded, or whose MKL already runs another threading layer, uses
OpenBLAS; so does one where another library loaded MKL first. The kernels call MKL's
functions by symbol name, bound to this library's addresses, so they stay in Numba's
on-disk cache.
"""
import ctypes
import glob
import math
import os
import sys
import threading

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import pool
from .cblas import NO_TRANS, ROW_MAJOR, TRANS, gemm_functions, gemm_overload
from .cblas import INT as _INT, PTR as _PTR, data as _data, keep_alive

B_MATRIX, PACKED = 162, 151
_SEQUENTIAL = 1                        # MKL_THREADING_SEQUENTIAL
ALIGN = 64                             # bytes: each packed panel starts on a cache line

_lib = None
_loaded = None                         # path of the loaded libmkl_rt, once tried
_why = "not looked for yet"


def _candidates():
    names = ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so")
    dirs = [os.path.join(sys.prefix, "lib")]
    if sys.base_prefix != sys.prefix:
        dirs.append(os.path.join(sys.base_prefix, "lib"))
    for d in dirs:
        for name in names:
            yield from sorted(glob.glob(os.path.join(d, name)))


#: The MKL functions the kernels call by name; :func:`load` binds each name to this
#: library's own address, so that no other copy of MKL in the process (torch's
#: libtorch_cpu exports ``cblas_sgemm_compute``, for one) can answer for it.
SYMBOLS = tuple(f"cblas_{p}{f}" for p in "sd"
                for f in ("gemm_compute", "gemm", "gemv", "gemm_pack"))


def _mkl_already_loaded():
    """Path of a libmkl_rt that some other library has already loaded here, or None."""
    from threadpoolctl import ThreadpoolController
    for lib in ThreadpoolController().select(internal_api="mkl").lib_controllers:
        return lib.filepath
    return None


def load():
    """Load MKL once per process; return True when the packed products can be used.

    Looks for ``libmkl_rt`` in ``<prefix>/lib`` (where the ``mkl`` wheel puts it),
    selects MKL's sequential threading layer and binds the functions the kernels call
    (:data:`SYMBOLS`) to its addresses for LLVM. Honours ``NUMBA_RNN_BLAS=openblas``
    (and ``=scipy``).
    Stays off when another library has loaded MKL first (a NumPy built on MKL: making
    that MKL sequential would slow the user's own NumPy). :func:`status` says why it
    is off.
    """
    global _lib, _loaded, _why
    if _loaded is not None:
        return _lib is not None
    _loaded = ""
    asked = os.environ.get("NUMBA_RNN_BLAS", "auto").lower()
    if asked in ("openblas", "scipy"):
        _why = f"NUMBA_RNN_BLAS={asked}"
        return False
    if sys.platform != "linux":
        _why = f"not looked for on {sys.platform}"
        return False
    other = _mkl_already_loaded()
    if other is not None:
        _why = f"MKL already loaded by another library here ({other})"
        return False
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            layer = lib.MKL_Set_Threading_Layer(_SEQUENTIAL)
        except (OSError, AttributeError) as err:
            _why = f"{path}: {err}"
            continue
        if layer != _SEQUENTIAL:       # someone else's MKL threads already run here
            _why = f"{path}: MKL already runs threading layer {layer}, not sequential"
            return False
        for name in SYMBOLS:
            llvm.add_symbol(name, ctypes.cast(getattr(lib, name), ctypes.c_void_p).value)
        _declare(lib)
        _lib, _loaded, _why = lib, path, ""
        return True
    _why = _why if _why != "not looked for yet" else "libmkl_rt not found in <prefix>/lib"
    return False


_branch = None


def branch():
    """MKL's code path (its CBWR branch number: 2 on AMD's CPUs here, 10 AVX2, 12
    AVX-512, 14 AVX-512 E1), or None when MKL is not loaded. Asked of MKL once: the
    engine choices below read it on every recurrence and batched product."""
    global _branch
    if not load():
        return None
    if _branch is None:
        _branch = int(_lib.MKL_CBWR_Get_Auto_Branch())
    return _branch


def packed_steps():
    """True when the recurrences' step products of N > 1 may use MKL's packed GEMM:
    MKL is loaded (on any of its code paths: the cut and the operands' alignment are
    fixed, see the module's docstring)."""
    return load()


#: MKL's "compatible" code path (``MKL_CBWR_COMPATIBLE``), the one it takes on AMD's
#: CPUs. There its plain ``?gemm`` was slower than OpenBLAS's Haswell kernels in float64
#: and at least as fast in float32, run as our batched products run (row blocks on 2
#: threads, interleaved medians, MKL ÷ OpenBLAS, 2-core EPYC): float32 products
#: 0.89–1.06 (6400×32·64 to 3200×1024·512), weight gradients (Σ over rows) 0.70–0.98;
#: float64 products 1.02–1.74, weight gradients 1.13–1.47. (A one-core float32 test
#: before had MKL slower: 6400×128·256 8.0 ms against 5.7.) Its packed product was 2×
#: faster at float32 and at parity at float64.
COMPATIBLE_BRANCH = 2


def specific_path():
    """True when MKL is loaded and runs one of its CPU-specific code paths, not the
    compatible one (:data:`COMPATIBLE_BRANCH`)."""
    return load() and branch() != COMPATIBLE_BRANCH


def batched_products(dtype):
    """True when the batched products (projection, weight and input gradients) of
    ``dtype`` call MKL's ``?gemm``: on its CPU-specific paths (:func:`specific_path`),
    and in float32 on the compatible one too — there float64 stays on OpenBLAS."""
    return specific_path() or (load() and np.dtype(dtype) == np.float32)


def gemv_steps():
    """True when the step products of a single sequence (N = 1) use MKL's ``?gemv``:
    MKL is loaded on a CPU-specific code path. On the Xeon (AVX-512) it was faster
    than OpenBLAS's (float64 stream step 3.3 µs against 4.7); on the compatible path
    (:data:`COMPATIBLE_BRANCH`) slower: the shared-panel recurrence of one sequence on
    2 threads, MKL ÷ OpenBLAS, fwd / bwd, 2-core EPYC, H = 128–1024: float32
    1.16–1.35 / 1.16–1.31, float64 1.17–1.52 / 1.18–1.55."""
    return specific_path()


def status():
    """``(in use, path or reason)`` for reports (``numba-rnn bench`` prints it)."""
    used = load()
    return used, (_loaded if used else _why)


def version():
    """MKL's version (``"2026.2"``), or None when it is not loaded."""
    if not load():
        return None
    _lib.MKL_Get_Version_String.argtypes = [ctypes.c_char_p, ctypes.c_int]
    buf = ctypes.create_string_buffer(256)
    _lib.MKL_Get_Version_String(buf, len(buf))
    words = buf.value.decode(errors="replace").split()
    number = next((w for w in words if w[:1].isdigit()), " ".join(words))
    return number.split("-")[0]


def _declare(lib):
    for pre in "sd":
        size = getattr(lib, f"cblas_{pre}gemm_pack_get_size")
        size.restype, size.argtypes = ctypes.c_size_t, [ctypes.c_int] * 4


_sizes = {}             # (dtype char, rows, width, K, H) -> bytes per packed panel


def pack_panels(M, width, rows, reuse=False):
    """Pack the columns of M (K, H) in panels of ``width`` for the products ``a·M``
    with ``a`` of ``rows`` rows; returns a (panels, bytes) uint8 array, one packed
    panel per row (the last panel holds the H - lo remaining columns).

    MKL's packed format for ``cblas_?gemm_compute``; M may be a transposed view
    (``W_aa.T``): the packing reads it either way. (One row multiplies by plain row
    panels instead, :func:`numba_rnn.kernels.cpu.pack_rows` in
    :func:`aligned_panels`.) With ``reuse`` the panels go into this thread's scratch
    buffer (:func:`_scratch`), overwritten by its next ``reuse`` packing: for a
    recurrence call, which packs once and is done with them when it returns. The
    panels' size is asked of MKL once per shape and the packing calls are made from
    Numba (:func:`_pack_into`): ~3 µs a call where ctypes calls took ~15.
    """
    K, H = M.shape
    item = M.dtype.itemsize
    if M.strides[1] == item and M.strides[0] % item == 0:
        trans, ld = NO_TRANS, M.strides[0] // item
    elif M.strides[0] == item and M.strides[1] % item == 0:
        trans, ld = TRANS, M.strides[1] // item
    else:
        M = np.ascontiguousarray(M)
        trans, ld = NO_TRANS, H
    panels = -(-H // width)
    key = (M.dtype.char, rows, width, K, H)
    nbytes = _sizes.get(key)
    if nbytes is None:
        size = getattr(_lib, f"cblas_{ {4: 's', 8: 'd'}[item]}gemm_pack_get_size")
        # MKL asks for room far beyond the panel (5.8 MB for 8 rows · 64×64 float32 on
        # its branch 2) and writes only what it packs: left uninitialised — zeroing it
        # took ~180 µs a call — untouched pages are never even mapped in.
        nbytes = _sizes[key] = -(-max(
            size(B_MATRIX, rows, min(H, (p + 1) * width) - p * width, K)
            for p in range(panels)) // ALIGN) * ALIGN
    out = _scratch(panels * nbytes) if reuse else aligned_empty(panels * nbytes, np.uint8)
    out = out.reshape(panels, nbytes)
    _pack_into(M, trans, max(1, ld), rows, width, out)
    return out


_local = threading.local()


def _scratch(nbytes):
    """The first ``nbytes`` of this thread's packing buffer (cache-aligned uint8), grown
    when too small and kept between calls. A fresh multi-megabyte buffer per recurrence
    call (MKL's size) cost its allocation, its release and the page faults of every
    page MKL wrote: ~20 µs a call at the median and 50 on average (tails of 100s of µs)
    on the EPYC, for a tiny-shape train step whose fixed cost is ~0.8 ms."""
    buf = getattr(_local, "buffer", None)
    if buf is None or buf.size < nbytes:
        buf = _local.buffer = aligned_empty(nbytes, np.uint8)
    return buf[:nbytes]


def aligned_panels(panels, nbytes):
    """Zeroed (panels, nbytes rounded up to :data:`ALIGN`) uint8 array whose rows
    start on cache lines: the buffers :func:`packed_product` reads."""
    nbytes = -(-nbytes // ALIGN) * ALIGN
    out = aligned_empty((panels, nbytes), np.uint8)
    out[...] = 0
    return out


def aligned_empty(shape, dtype):
    """An uninitialised C-contiguous array that starts on a cache line (:data:`ALIGN`
    bytes), like ``np.empty``: MKL may round a product differently for operands that
    start elsewhere, so every array a step product reads or writes comes from here.
    Big ones reuse idle buffers (:mod:`.pool`)."""
    dtype = np.dtype(dtype)
    shape = tuple(shape) if np.iterable(shape) else (int(shape),)
    nbytes = math.prod(shape) * dtype.itemsize          # (math.prod and _address: ~2 µs
    raw = pool.take(nbytes + ALIGN)                      # a call; np.prod and .ctypes, 12)
    start = -_address(raw) % ALIGN
    return raw[start:start + nbytes].view(dtype).reshape(shape)


@intrinsic
def _address_of(typingctx, a):
    """The data pointer of an array, as an integer."""
    def codegen(context, builder, sig, args):
        ary = cgutils.create_struct_proxy(sig.args[0])(context, builder, value=args[0])
        return builder.ptrtoint(ary.data, ir.IntType(64))
    return types.int64(a), codegen


@njit(cache=True, nogil=True)
def _address(a):
    """Where ``a``'s data starts (0.4 µs; ``a.ctypes.data`` takes 2)."""
    return _address_of(a)


# --- the product inside Numba kernels ------------------------------------------------

_compute32 = types.ExternalFunction("cblas_sgemm_compute", types.void(
    _INT, _INT, _INT, _INT, _INT, _INT, _PTR, _INT, _PTR, _INT, types.float32, _PTR, _INT))
_compute64 = types.ExternalFunction("cblas_dgemm_compute", types.void(
    _INT, _INT, _INT, _INT, _INT, _INT, _PTR, _INT, _PTR, _INT, types.float64, _PTR, _INT))
_gemv32 = types.ExternalFunction("cblas_sgemv", types.void(
    _INT, _INT, _INT, _INT, types.float32, _PTR, _INT, _PTR, _INT, types.float32, _PTR, _INT))
_gemv64 = types.ExternalFunction("cblas_dgemv", types.void(
    _INT, _INT, _INT, _INT, types.float64, _PTR, _INT, _PTR, _INT, types.float64, _PTR, _INT))


_pack32 = types.ExternalFunction("cblas_sgemm_pack", types.void(
    _INT, _INT, _INT, _INT, _INT, _INT, types.float32, _PTR, _INT, _PTR))
_pack64 = types.ExternalFunction("cblas_dgemm_pack", types.void(
    _INT, _INT, _INT, _INT, _INT, _INT, types.float64, _PTR, _INT, _PTR))


def _pack_call(M, trans, ld, rows, n, dst):
    """``cblas_?gemm_pack`` of the first ``n`` columns of M (K, ·) into ``dst`` (Numba
    kernels only)."""
    raise NotImplementedError("_pack_call runs inside Numba kernels only")


@overload(_pack_call, inline="always")
def _pack_call_impl(M, trans, ld, rows, n, dst):
    pack = {types.float32: _pack32, types.float64: _pack64}.get(M.dtype)
    if pack is None:
        return None
    one = np.float32(1) if M.dtype == types.float32 else np.float64(1)

    def impl(M, trans, ld, rows, n, dst):
        pack(ROW_MAJOR, B_MATRIX, trans, rows, n, M.shape[0], one, _data(M), ld, _data(dst))
        keep_alive(M, dst, dst)
    return impl


@njit(cache=True, nogil=True)
def _pack_into(M, trans, ld, rows, width, out):
    """Pack M's columns (M (K, H), read transposed with ``trans``, leading dimension
    ``ld``) in panels of ``width`` into the rows of ``out`` (panels, bytes)."""
    H = M.shape[1]
    for p in range(out.shape[0]):
        lo = p * width
        _pack_call(M[:, lo:], trans, ld, rows, min(H, lo + width) - lo, out[p])


def packed_product(a, packed, out, n):
    """``out[:, :n] = a·B`` with B (K, n) packed by :func:`pack_panels`; ``a`` (rows, K)
    and ``out`` (rows, ≥ n) C-contiguous (Numba kernels only). One row goes through
    MKL's matrix-vector product on the row panel (1.0–1.4× faster than OpenBLAS's at
    H = 256 here); more through the packed GEMM."""
    raise NotImplementedError("packed_product runs inside Numba kernels only")


@overload(packed_product, inline="always")
def _packed_product(a, packed, out, n):
    compute = {types.float32: _compute32, types.float64: _compute64}.get(a.dtype)
    if compute is None or a.layout != "C" or out.layout != "C":
        return None
    gemv = _gemv32 if a.dtype == types.float32 else _gemv64
    one, zero = (np.float32(1), np.float32(0)) if a.dtype == types.float32 else \
        (np.float64(1), np.float64(0))

    def impl(a, packed, out, n):
        K = a.shape[1]
        if a.shape[0] == 1:                               # rows of the panel · a
            gemv(ROW_MAJOR, NO_TRANS, n, K, one, _data(packed), K, _data(a), 1, zero,
                 _data(out), 1)
        else:
            compute(ROW_MAJOR, NO_TRANS, PACKED, a.shape[0], n, K, _data(a), K,
                    _data(packed), n, zero, _data(out), out.shape[1])
        keep_alive(a, packed, out)
    return impl


def gemm(a, b, out):
    """``out = a·b`` through MKL's ``cblas_?gemm`` (:func:`.cblas.gemm_overload`): the
    products of :mod:`.cpu` where MKL takes them (Numba kernels only)."""
    raise NotImplementedError("gemm runs inside Numba kernels only")


overload(gemm, inline="always")(gemm_overload(gemm_functions("cblas_sgemm", "cblas_dgemm")))
