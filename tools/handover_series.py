"""The core-to-core hand-over against the single-sequence recurrence, over time.

``python tools/handover_series.py [ROUNDS] [DTYPE]`` alternates, ``ROUNDS`` times with a
pause, :func:`numba_rnn.bench.handover_ns` (the round trip of a counter between two of
Numba's threads on their own cores) and the median of 10 forward recurrences of the
stream shape (one sequence, H = 256, T = 1000: every step handed from one core to the
other), and prints the pairs. On a VM the round trip moves with where the host puts
the virtual CPUs, and the recurrence tends to move with it (README, Performance).
"""
import sys
import time

import numpy as np


def series(rounds=15, dtype="float32", H=256, T=1000, calls=10, pause=3.0):
    """``[(round trip ns or None, recurrence ms), ...]``."""
    from numba_rnn.bench import handover_ns
    from numba_rnn.kernels import cpu
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    U = rng.standard_normal((T, 1, H)).astype(dtype)
    a0 = np.zeros((1, H), dtype=dtype)

    def forward():
        with cpu.compute_context(True):
            cpu.recurrence_forward(U, W, a0, 0, parallel=True)
    for _ in range(3):
        forward()
    out = []
    for r in range(rounds):
        if r:
            time.sleep(pause)
        ns = handover_ns()
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            forward()
            times.append(time.perf_counter() - t0)
        out.append((ns, 1e3 * float(np.median(times))))
    return out


def main(argv):
    rounds = int(argv[0]) if argv else 15
    dtype = argv[1] if len(argv) > 1 else "float32"
    pairs = series(rounds, dtype)
    for ns, ms in pairs:
        print(f"hand-over {'—' if ns is None else f'{ns:5.0f}'} ns   "
              f"stream {dtype} forward recurrence {ms:.2f} ms", flush=True)
    return pairs


if __name__ == "__main__":
    main(sys.argv[1:])
