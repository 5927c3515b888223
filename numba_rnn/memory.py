"""Fail fast when a forward or backward pass cannot fit in memory.

BPTT keeps every hidden state: a (T, N, H) array per layer-direction, so a long
sequence can ask for more memory than the machine has. Rather than start, allocate
part of it and die (or swap for minutes), :func:`check_fits` compares an estimate of
the pass's arrays with the memory available *before anything is allocated* and raises
:class:`ActivationMemoryError` saying what to change.
"""
import os

GiB = 1024 ** 3

#: Passes needing less than this are not checked: reading the available memory costs
#: ~15 µs, a few percent of a small forward, and such a pass cannot run a machine out
#: of memory by itself.
UNCHECKED_BYTES = 64 * 1024 ** 2


class ActivationMemoryError(MemoryError):
    """A pass's activations would not fit in the memory available."""


def _read_int(path):
    try:
        with open(path) as f:
            text = f.read().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def available_host_bytes():
    """Memory this process can still get: MemAvailable, capped by a cgroup limit
    (containers); None where neither can be read."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    limit = _read_int("/sys/fs/cgroup/memory.max")
    used = _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        room = max(0, limit - used)
        avail = room if avail is None else min(avail, room)
    return avail


def available_device_bytes():
    """Free GPU memory (None in the simulator or without a GPU)."""
    try:
        from numba import cuda
        return int(cuda.current_context().get_memory_info()[0])
    except Exception:           # simulator, no driver, or an API difference: skip the check
        return None


def check_fits(nbytes, what, device="cpu", advice=""):
    """Raise :class:`ActivationMemoryError` if ``nbytes`` exceed the memory available
    (passes under :data:`UNCHECKED_BYTES` are let through unchecked)."""
    if nbytes < UNCHECKED_BYTES:
        return
    avail = available_device_bytes() if device == "cuda" else available_host_bytes()
    if avail is not None and nbytes > avail:
        where = "GPU memory" if device == "cuda" else "memory"
        raise ActivationMemoryError(
            f"{what} needs about {nbytes / GiB:.3g} GiB, but only {avail / GiB:.3g} GiB of "
            f"{where} is available; nothing was allocated. {advice}".strip())
