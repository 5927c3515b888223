"""Calling a CBLAS ``?gemm`` from Numba kernels by symbol name: what MKL
(:mod:`.mkl`) and the OpenBLAS wheel (:mod:`.openblas`) share.

Each library binds its functions' names to its own addresses (``llvm.add_symbol``)
when it is loaded; a kernel compiled against a name then calls that library, and
stays in Numba's on-disk cache (the name, not the address, is in the cached code).
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
INT, PTR = types.intc, types.voidptr


@intrinsic
def data(typingctx, a):
    """The data pointer of an array, as ``void*``."""
    def codegen(context, builder, sig, args):
        ary = cgutils.create_struct_proxy(sig.args[0])(context, builder, value=args[0])
        return builder.bitcast(ary.data, ir.IntType(8).as_pointer())
    return types.voidptr(a), codegen


@intrinsic
def keep_alive(typingctx, a, b, c):
    """No code: a use of ``a``, ``b`` and ``c`` after a call that was handed their
    pointers (:func:`data`). Numba releases an array after its last use in the IR, and
    ``data(x)`` is a use of ``x`` but the call that reads the pointer is not: a
    temporary passed straight in (``gemm(a, b.copy(), out)``) was freed before the
    call read it (a 64 MiB one, unmapped, segfaulted; small ones in ``prange`` gave a
    wrong product about once in 300 calls). Called after every such call here and in
    :mod:`.mkl`."""
    def codegen(context, builder, sig, args):
        return context.get_dummy_value()
    return types.none(a, b, c), codegen


def gemm_functions(name32, name64):
    """``{float32: ?, float64: ?}``: the ``cblas_sgemm`` and ``cblas_dgemm`` of a
    library, under the names it bound them to."""
    return {t: types.ExternalFunction(name, types.void(
        INT, INT, INT, INT, INT, INT, t, PTR, INT, PTR, INT, t, PTR, INT))
        for t, name in ((types.float32, name32), (types.float64, name64))}


def gemm_overload(functions):
    """The typing function of an ``out = a·b`` overload that calls ``functions``
    (:func:`gemm_functions`): ``a`` (M, K) and ``b`` (K, N) C- or F-contiguous (an
    F-contiguous operand is read as a transposed one), ``out`` (M, N) C-contiguous."""
    def typer(a, b, out):
        call = functions.get(a.dtype)
        if call is None or out.layout != "C" or a.layout not in "CF" or \
                b.layout not in "CF":
            return None
        one, zero = (np.float32(1), np.float32(0)) if a.dtype == types.float32 else \
            (np.float64(1), np.float64(0))
        ta = NO_TRANS if a.layout == "C" else TRANS     # F: the transpose is row-major
        tb = NO_TRANS if b.layout == "C" else TRANS
        a_cols, b_cols = a.layout == "C", b.layout == "C"

        def impl(a, b, out):
            M, K = a.shape
            lda = max(1, a.shape[1] if a_cols else a.shape[0])
            ldb = max(1, b.shape[1] if b_cols else b.shape[0])
            if M > 0 and out.shape[1] > 0:
                call(ROW_MAJOR, ta, tb, M, out.shape[1], K, one, data(a), lda, data(b),
                     ldb, zero, data(out), max(1, out.shape[1]))
            keep_alive(a, b, out)
        return impl
    return typer
