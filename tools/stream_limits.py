"""The stream recurrence's step product against what one core of this machine can do.

``python tools/stream_limits.py [DTYPE] [H] [ROUNDS]`` measures, on one core:

- the clock: a chain of dependent multiply-xorshifts (``x = (m·x) ^ (x >> 13)``, m known
  only at run time: 4 cycles an iteration on x86-64 — a 3-cycle ``imul``, then a
  1-cycle ``xor``; the shift runs alongside the multiply);
- the L2 read rate: summing an array of a half panel's size (``H·H/2`` elements, the
  part of W_aa each of the two cores streams every step of a single sequence) over
  and over, so that it is read from the core's L2;
- the one-row step product of the shared recurrences (``a·W_aa[:, panel]``, 1×H·H/2,
  the register tiles of :mod:`numba_rnn.kernels.tiles`), chained in a loop.

It prints each, the product's share of the L2 rate, and what that rate alone costs the
forward and the backward recurrence of the stream shape (T = 1000). Defaults: float32,
H = 256, 5 rounds of 5 timed calls; each figure is the fastest call (what the core can
do, not what it usually does).
"""
import sys
import time

import numpy as np
from numba import njit

T_STREAM = 1000


@njit(cache=True, nogil=True)
def _multiply_chain(m, n):
    x = np.uint64(1)
    for _ in range(n):
        x = (x * m) ^ (x >> np.uint64(13))
    return x


@njit(cache=True, nogil=True, fastmath=True)
def _sum_repeatedly(a, reps):
    total = a.dtype.type(0)
    for _ in range(reps):
        s = a.dtype.type(0)
        for i in range(a.shape[0]):
            s += a[i]
        total += s
    return total


def _chained_product():
    from numba_rnn.kernels.tiles import product
    tile = product()

    @njit(nogil=True)
    def chained(a, Bt, out, reps):
        for _ in range(reps):
            tile(a, Bt, out)
            a[0, 0] = out[0, 0]          # each product waits on the one before
        return out
    return chained


def _per_call(f, reps, rounds, *args):
    """Seconds per repetition: the fastest of ``rounds`` × 5 timed calls of ``reps``."""
    f(*args, 1)
    best = np.inf
    for _ in range(5 * rounds):
        t0 = time.perf_counter()
        f(*args, reps)
        best = min(best, time.perf_counter() - t0)
    return best / reps


def measure(dtype="float32", H=256, rounds=5):
    """``{"ghz", "l2_gbps", "product_us", "product_gbps", "product_of_l2",
    "recurrence_floor_ms"}`` for one core (see the module's docstring)."""
    from numba_rnn.kernels.tiles import pack_tiles, tile_columns
    dtype = np.dtype(dtype)
    n = 20_000_000
    chain = _per_call(lambda k, reps: _multiply_chain(np.uint64(0x9E3779B97F4A7C15), k * reps),
                      1, rounds, n)
    ghz = 4 * n / chain / 1e9
    half = np.ones(H * H // 2, dtype=dtype)
    nbytes = half.nbytes
    reps = max(1, (32 << 20) // nbytes)
    l2 = nbytes / _per_call(_sum_repeatedly, reps, rounds, half) / 1e9
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    width = H // 2 // tile_columns(dtype) * tile_columns(dtype)
    Bt = np.ascontiguousarray(pack_tiles(W, width)[0])
    a = rng.standard_normal((1, H)).astype(dtype)
    out = np.empty((1, width), dtype=dtype)
    product = _per_call(_chained_product(), reps, rounds, a, Bt, out)
    return {"ghz": ghz, "l2_gbps": l2, "product_us": 1e6 * product,
            "product_gbps": Bt.nbytes / product / 1e9,
            "product_of_l2": Bt.nbytes / product / 1e9 / l2,
            "recurrence_floor_ms": 1e3 * T_STREAM * nbytes / l2 / 1e9}


def main(argv):
    dtype = argv[0] if argv else "float32"
    H = int(argv[1]) if len(argv) > 1 else 256
    rounds = int(argv[2]) if len(argv) > 2 else 5
    res = measure(dtype, H, rounds)
    print(f"clock {res['ghz']:.2f} GHz; L2 read rate {res['l2_gbps']:.1f} GB/s "
          f"({res['l2_gbps'] / res['ghz']:.1f} B a cycle) over {H * H // 2} {dtype} values")
    print(f"one-row step product 1x{H}.{H // 2}: {res['product_us']:.3f} us, "
          f"{res['product_gbps']:.1f} GB/s of W_aa, {100 * res['product_of_l2']:.0f} % of "
          f"the L2 rate")
    print(f"the L2 rate alone: {res['recurrence_floor_ms']:.2f} ms a recurrence "
          f"(T = {T_STREAM}, half of W_aa a core a step)")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
