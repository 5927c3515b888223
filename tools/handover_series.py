"""The core-to-core hand-over against the single-sequence recurrences, over time.

``python tools/handover_series.py [ROUNDS] [DTYPE]`` alternates, ``ROUNDS`` times with a
pause, :func:`numba_rnn.bench.handover_ns` (the round trip of a counter between two of
Numba's threads on their own cores) and the recurrences of the stream shape (one
sequence, H = 256, T = 1000), forward and backward, each run two ways in turn: its
steps shared by the two cores (every step handed from one core to the other, as
``parallel=None`` runs it) and on one core alone (``parallel=False``: the same cut,
the same bits, no hand-over). It prints, per round, the round trip and the median ms
of each. On a VM the round trip moves with where the host puts the virtual CPUs, and
the shared recurrences tend to move with it; the one-core ones show what the
machine does without any hand-over (README, Performance).
"""
import sys
import time

import numpy as np

#: The timings of a round, in the order they alternate.
RUNS = ("forward_shared", "forward_one_core", "backward_shared", "backward_one_core")


def series(rounds=15, dtype="float32", H=256, T=1000, calls=10, pause=3.0):
    """``[{"ns": round trip ns or None, run: median ms for each of RUNS}, ...]``."""
    from numba_rnn.bench import handover_ns
    from numba_rnn.kernels import cpu
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    U = rng.standard_normal((T, 1, H)).astype(dtype)
    dA = rng.standard_normal((T, 1, H)).astype(dtype)
    a0 = np.zeros((1, H), dtype=dtype)
    A = cpu.recurrence_forward(U, W, a0, 0, parallel=False)

    def run(name):
        shared = name.endswith("shared")
        with cpu.compute_context(shared):
            if name.startswith("forward"):
                cpu.recurrence_forward(U, W, a0, 0, parallel=shared)
            else:
                cpu.recurrence_backward(dA, A, W, a0, 0, parallel=shared)
    for name in RUNS * 3:
        run(name)
    out = []
    for r in range(rounds):
        if r:
            time.sleep(pause)
        row = {"ns": handover_ns()}
        times = {name: [] for name in RUNS}
        for _ in range(calls):
            for name in RUNS:
                t0 = time.perf_counter()
                run(name)
                times[name].append(time.perf_counter() - t0)
        row.update({name: 1e3 * float(np.median(t)) for name, t in times.items()})
        out.append(row)
    return out


def main(argv):
    rounds = int(argv[0]) if argv else 15
    dtype = argv[1] if len(argv) > 1 else "float32"
    print(f"stream {dtype}, ms (median of 10 calls each):  hand-over ns | "
          + " | ".join(RUNS), flush=True)
    rows = []
    for row in series(rounds, dtype):
        ns = "—" if row["ns"] is None else f"{row['ns']:.0f}"
        print(f"{ns:>6} | " + " | ".join(f"{row[name]:.2f}" for name in RUNS), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
