"""Where a CPU train step's time goes: the model's four kernel calls, timed inside it.

``python tools/cpu_step_parts.py SHAPE DTYPE [STEPS] [T]`` runs ``STEPS`` train steps
(forward with cache, then backward) of a one-layer model of a bench shape
(:data:`numba_rnn.bench.SHAPES`; ``T`` overrides its length, e.g. 2 for the fixed cost)
and prints the median ms of the whole step and of each of ``input_projection``,
``recurrence_forward``, ``recurrence_backward`` and ``layer_grads`` (the calls as the
model makes them, Python wrappers included) and of the rest of each step (the model's
own Python, validation and thread switches). Medians do not add up exactly.
"""
import collections
import sys
import time

import numpy as np

PARTS = ("input_projection", "recurrence_forward", "recurrence_backward", "layer_grads")


def measure(shape, dtype, steps=200, T=None, warm=20):
    """``{"step": ms, part: ms, ..., "rest": ms}``, medians over ``steps`` steps ("rest":
    of each step's time less its parts')."""
    import numba_rnn as nr
    from numba_rnn.bench import SHAPES
    from numba_rnn.kernels import cpu
    N, D, H, T0 = SHAPES[shape]
    T = T or T0
    spent = collections.defaultdict(float)
    originals = {name: getattr(cpu, name) for name in PARTS}

    def timed(name, f):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0
        return call

    model = nr.RNN(D, H, dtype=dtype, seed=0)
    x = np.random.default_rng(0).standard_normal((T, N, D)).astype(dtype)
    dA = np.ones((T, N, H), dtype=dtype)
    per_part = collections.defaultdict(list)
    totals = []
    try:
        for name, f in originals.items():
            setattr(cpu, name, timed(name, f))
        for i in range(warm + steps):
            spent.clear()
            t0 = time.perf_counter()
            _, _, cache = model.forward(x)
            model.backward(cache, dA)
            if i >= warm:
                totals.append(time.perf_counter() - t0)
                for name in PARTS:
                    per_part[name].append(spent[name])
    finally:
        for name, f in originals.items():
            setattr(cpu, name, f)
    res = {"step": 1e3 * float(np.median(totals))}
    for name in PARTS:
        res[name] = 1e3 * float(np.median(per_part[name]))
    rest = np.array(totals) - sum(np.array(per_part[name]) for name in PARTS)
    res["rest"] = 1e3 * float(np.median(rest))
    return res


def main(argv):
    shape, dtype = argv[0], argv[1]
    steps = int(argv[2]) if len(argv) > 2 else 200
    T = int(argv[3]) if len(argv) > 3 else None
    res = measure(shape, dtype, steps, T)
    print(f"{shape} {dtype}: train step {res['step']:.3f} ms (median of {steps})")
    for name in PARTS + ("rest",):
        print(f"  {name:20s} {res[name]:.3f}")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
