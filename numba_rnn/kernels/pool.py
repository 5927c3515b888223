"""Reused buffers for the CPU kernels' big arrays (states, δ, dx, projections).

A train step allocates a few activation-sized arrays and frees them by the next step.
glibc serves such sizes with ``mmap`` or from the top of its heap, and gives them back to
the system on ``free`` (its thresholds move with the history of the process), so the next
step touches fresh pages: ``perf`` of the tiny float64 train step showed ~25 % of the time
in the kernel's page-fault path (``exc_page_fault``, ``clear_page_erms``), 600–970 minor
faults a step depending on what the process had allocated before.

So a buffer of at least :data:`MIN_BYTES` is taken from this pool when one of its size
is idle — nothing outside the pool refers to it any more (its reference count says so:
every array made from it, a view of a view included, holds the buffer itself as its
``base``) — and made fresh otherwise; the pool keeps at most :data:`IDLE_PER_SIZE` idle
buffers of a size and :data:`SIZES` sizes (least recently used dropped), so what it holds
beyond the arrays in use is bounded. Everything runs under a lock: two threads never get
the same buffer. ``NUMBA_RNN_POOL=0`` turns it off.
"""
import collections
import os
import sys
import threading

import numpy as np

#: Buffers smaller than this come straight from NumPy.
MIN_BYTES = 1 << 16

#: Idle buffers kept per size, and sizes kept.
IDLE_PER_SIZE, SIZES = 4, 16

_lock = threading.Lock()
_buffers = collections.OrderedDict()        # nbytes -> [uint8 array, ...], most recent last
_enabled = os.environ.get("NUMBA_RNN_POOL", "1") != "0"

# References to an idle buffer while _take looks at it: the pool's list, the loop
# variable and getrefcount's own argument.
_IDLE_REFS = 3


def take(nbytes):
    """A uint8 buffer of ``nbytes`` that no array outside the pool uses: an idle one of
    the pool's, else a new one (kept in the pool when large enough)."""
    if not _enabled or nbytes < MIN_BYTES:
        return np.empty(nbytes, dtype=np.uint8)
    with _lock:
        same = _buffers.get(nbytes)
        if same is None:
            same = _buffers[nbytes] = []
            if len(_buffers) > SIZES:
                _buffers.popitem(last=False)
        else:
            _buffers.move_to_end(nbytes)
        found, idle = None, 0
        for buf in same:
            if sys.getrefcount(buf) == _IDLE_REFS:
                if found is None:
                    found = buf
                else:
                    idle += 1
        if idle >= IDLE_PER_SIZE:                       # drop idle ones beyond the limit
            keep, extra = [], idle - IDLE_PER_SIZE + 1
            for buf in same:
                if extra and buf is not found and sys.getrefcount(buf) == _IDLE_REFS:
                    extra -= 1
                    continue
                keep.append(buf)
            same[:] = keep
        if found is None:
            found = np.empty(nbytes, dtype=np.uint8)
            same.append(found)
        return found[:]                  # a view: the caller's reference, taken under the lock


def held():
    """(buffers, bytes) the pool holds, in use or idle (for tests and reports)."""
    with _lock:
        bufs = [b for same in _buffers.values() for b in same]
    return len(bufs), sum(b.nbytes for b in bufs)
