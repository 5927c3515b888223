"""Whose BLAS should take the batched products: a train step on each engine, interleaved.

``python tools/blas_engines.py SHAPE DTYPE [ROUNDS] [ENGINE ...]`` times train steps
(forward with cache, then backward) of a one-layer model of a bench shape
(:data:`numba_rnn.bench.SHAPES`) with its batched products (projection, weight
gradients, dx) on each ENGINE in turn — ``scipy`` (SciPy's OpenBLAS through
``np.dot``), ``openblas`` (the scipy-openblas32 wheel), ``mkl`` — in one process,
round after round (default: every engine loaded here), by swapping
:func:`numba_rnn.kernels.cpu.product_engine`; the step products are unchanged. Prints
each engine's median ms over the rounds and, per round, its time ÷ the default engine's
(median and range). Measured with it (2-core EPYC, 2026-11-30): float64 wheel ÷ SciPy's
0.95–0.96 at tiny, 0.97–1.00 at stream, 0.97–1.01 at medium and large; float32 wheel ÷ MKL 0.99 at
tiny and stream, 1.04 at medium.
"""
import sys
import time

import numpy as np


def available():
    """The engines this process can run."""
    from numba_rnn.kernels import mkl, openblas
    return ["scipy"] + (["openblas"] if openblas.load() else []) + \
        (["mkl"] if mkl.load() else [])


def measure(shape, dtype, rounds=9, engines=None, steps=None, T=None):
    """``{engine: [ms per round]}``: the median train step of ``steps`` steps (default
    20 at tiny, 5 elsewhere) per round, the engines taken in turn within each round."""
    import numba_rnn as nr
    from numba_rnn.bench import SHAPES
    from numba_rnn.kernels import cpu
    N, D, H, T0 = SHAPES[shape]
    T = T or T0
    engines = engines or available()
    steps = steps or (20 if shape == "tiny" else 5)
    model = nr.RNN(D, H, dtype=dtype, seed=0)
    x = np.random.default_rng(0).standard_normal((T, N, D)).astype(dtype)
    dA = np.ones((T, N, H), dtype=dtype)

    def step():
        _, _, cache = model.forward(x)
        model.backward(cache, dA)
    default = cpu.product_engine
    res = {e: [] for e in engines}
    try:
        for _ in range(rounds):
            for engine in engines:
                cpu.product_engine = lambda d, engine=engine: engine
                step()
                step()
                times = []
                for _ in range(steps):
                    t0 = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - t0)
                res[engine].append(1e3 * float(np.median(times)))
    finally:
        cpu.product_engine = default
    return res


def main(argv):
    from numba_rnn.kernels import cpu
    shape, dtype = argv[0], argv[1]
    rounds = int(argv[2]) if len(argv) > 2 else 9
    engines = argv[3:] or None
    res = measure(shape, dtype, rounds, engines)
    base = cpu.product_engine(np.dtype(dtype))
    print(f"{shape} {dtype}, {rounds} rounds (default engine here: {base})")
    for engine, ms in res.items():
        line = f"  {engine:9s} {np.median(ms):9.3f} ms"
        if base in res and engine != base:
            q = np.array(ms) / np.array(res[base])
            line += f"   ÷ {base}: {np.median(q):.3f} ({q.min():.3f}–{q.max():.3f})"
        print(line)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
