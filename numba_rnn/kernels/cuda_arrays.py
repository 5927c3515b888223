"""Small CUDA kernels that move and combine device arrays for the layer code.

The layer code in :mod:`numba_rnn.rnn` needs a handful of array operations between
kernel calls (layout changes, concatenating directions, masks). On the CPU they are
NumPy one-liners; here each is one launch over the elements, generic in dtype
(numba compiles one version per argument types). Every launch is asynchronous on
the default stream: nothing here waits for the GPU or copies to the host.
"""
import math
import warnings

from numba import cuda

THREADS = 256

SIMULATOR = not hasattr(cuda, "get_current_device")
if not SIMULATOR:
    from numba.core import config as _config
    SIMULATOR = bool(_config.ENABLE_CUDASIM)

# numba-cuda's warning for grids under 128 blocks: its own NumbaPerformanceWarning class,
# not numba.core's, so it is matched by message, which numba prefixes with a terminal
# highlight (the filter's regex is anchored at the start)
_LOW_OCCUPANCY = r".*Grid size \d+ will likely result in GPU under-utilization"
_configured = {}


def launch(kernel, blocks, threads, shared=0):
    """``kernel[blocks, threads]`` (with ``shared`` bytes of dynamic shared memory),
    configured once per (kernel, blocks, threads, shared).

    Our kernels run few blocks by design (a persistent recurrence owns the GPU with
    one block per slice; many launches cover a vector of a few hundred elements), and
    numba-cuda warns at every configuration of a grid under 128 blocks. The warning is
    ignored here, where the configuration is built, and nowhere else: a caller's own
    kernels and filters are left as they were. Reusing the configuration also skips
    numba's per-launch dimension checks. The simulator configures a kernel in place,
    so there it is configured at every call.
    """
    if SIMULATOR:
        return kernel[blocks, threads, 0, shared]
    key = (kernel, blocks, threads, shared)
    configured = _configured.get(key)
    if configured is None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LOW_OCCUPANCY)
            configured = _configured[key] = kernel[blocks, threads, 0, shared]
    return configured


def launch_1d(n, threads=THREADS):
    """``(blocks, threads)`` covering n elements, one element per thread (no more
    threads than whole warps need)."""
    threads = max(32, min(threads, 32 * math.ceil(n / 32)))
    return max(1, math.ceil(n / threads)), threads


def over(kernel, n, threads=THREADS):
    """``kernel`` configured (:func:`launch`) to cover n elements, one per thread."""
    return launch(kernel, *launch_1d(n, threads))


@cuda.jit
def copy3(src, swap01, dst):
    """``dst[i, j, k] = src[j, i, k]`` if ``swap01`` else ``src[i, j, k]``; any strides
    and dtypes (a cast when they differ)."""
    idx = cuda.grid(1)
    R0, J, K = dst.shape
    if idx < R0 * J * K:
        i = idx // (J * K)
        r = idx - i * J * K
        j = r // K
        k = r - j * K
        dst[i, j, k] = src[j, i, k] if swap01 else src[i, j, k]


@cuda.jit
def copy2(src, dst):
    """``dst[i, j] = src[i, j]`` (any strides; cast to dst's dtype)."""
    idx = cuda.grid(1)
    R0, J = dst.shape
    if idx < R0 * J:
        i = idx // J
        dst[i, idx - i * J] = src[i, idx - i * J]


@cuda.jit
def copy1(src, dst):
    """``dst[i] = src[i]`` (any stride; cast to dst's dtype)."""
    i = cuda.grid(1)
    if i < dst.shape[0]:
        dst[i] = src[i]


@cuda.jit
def fill(a, value):
    """``a[:] = value`` on a flat array."""
    i = cuda.grid(1)
    if i < a.size:
        a[i] = value


@cuda.jit
def add_(a, b):
    """``a += b`` on flat arrays."""
    i = cuda.grid(1)
    if i < a.size:
        a[i] += b[i]


@cuda.jit
def mul_(a, b):
    """``a *= b`` on flat arrays."""
    i = cuda.grid(1)
    if i < a.size:
        a[i] *= b[i]


@cuda.jit
def zero_padding(out, lengths):
    """``out[t, n, :] = 0`` where t ≥ lengths[n]; out is (T, N, F)."""
    idx = cuda.grid(1)
    T, N, F = out.shape
    if idx < T * N * F:
        t = idx // (N * F)
        n = (idx - t * N * F) // F
        if t >= lengths[n]:
            out[t, n, idx - (t * N + n) * F] = 0


@cuda.jit
def any_nonfinite(a, flags, slot):
    """``flags[slot] = 1`` if the flat array holds NaN or ±inf."""
    i = cuda.grid(1)
    if i < a.size:
        v = a[i]
        if v != v or v - v != 0:
            flags[slot] = 1
