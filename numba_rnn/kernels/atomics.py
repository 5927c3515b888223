"""Atomic counters for Numba kernels whose threads hand work to each other step by step.

A recurrence over a single sequence has no batch rows to split, so its threads share
the hidden units of every step instead (:func:`numba_rnn.kernels.cpu._forward_panels`),
and a step can start only when the previous one is complete. A ``prange`` region per
step costs ~1–2 µs; two threads passing a counter through a cache line ~0.1–0.2 µs.
These intrinsics are that counter: :func:`fetch_add` (sequentially consistent, so the
stores before it are visible to whoever sees its result), :func:`load_acquire` and
:func:`spin_pause`, plus :func:`wait_until`, which spins and then yields the core so
that a waiting thread never starves the one it waits for.
"""
import platform

from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_sched_yield = types.ExternalFunction("sched_yield", types.intc())


def _element_pointer(context, builder, arrty, arr, index):
    ary = context.make_array(arrty)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [index])


@intrinsic
def fetch_add(typingctx, counters, index, value):
    """``counters[index] += value`` atomically (int64 array); returns the old value."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0],
                               context.cast(builder, args[1], sig.args[1], types.intp))
        inc = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", ptr, inc, "seq_cst")
    return types.int64(counters, index, value), codegen


@intrinsic
def load_acquire(typingctx, counters, index):
    """``counters[index]`` (int64 array), read atomically with acquire ordering."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0],
                               context.cast(builder, args[1], sig.args[1], types.intp))
        return builder.load_atomic(ptr, "acquire", 8)
    return types.int64(counters, index), codegen


@intrinsic
def spin_pause(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``); nothing elsewhere."""
    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.none(), codegen


#: Spins before :func:`wait_until` gives the core away (``sched_yield``) and spins again.
SPINS_BEFORE_YIELD = 4096


@njit(cache=True, nogil=True, inline="always")
def wait_until(counters, index, target):
    """Spin until ``counters[index] >= target``; every :data:`SPINS_BEFORE_YIELD` spins
    yield the core, so a thread waiting on one that shares its core lets it run."""
    spins = 0
    while load_acquire(counters, index) < target:
        spin_pause()
        spins += 1
        if spins >= SPINS_BEFORE_YIELD:
            _sched_yield()
            spins = 0


@njit(parallel=True, cache=True, nogil=True)
def ping_pong(sync, rounds, patience):
    """Two threads pass a counter back and forth ``rounds`` times (``sync``: zeroed
    int64, ≥ 9 elements): thread w waits for ``sync[0] = 2i + w`` and adds one — the
    hand-over of a shared recurrence's step, with no arithmetic around it. A side
    that spins ``patience`` times without its turn gives up and sets ``sync[8]`` (the
    other iteration is not running: one thread, or a nested region run serially), so
    the call always returns; ``sync[8] != 0`` then means no measurement."""
    for w in prange(2):
        i = 0
        while i < rounds and load_acquire(sync, 8) == 0:
            spins = 0
            while load_acquire(sync, 0) < 2 * i + w and spins < patience:
                spin_pause()
                spins += 1
            if spins >= patience:
                fetch_add(sync, 8, 1)
            else:
                fetch_add(sync, 0, 1)
            i += 1
