"""Time each CUDA recurrence variant at the GPU bench shapes, the cost of one launch, and
profile the tiny and medium model calls (run by tools/gpu_check.sh on a GPU machine).

Prints, per shape: the plan's choice, then forward and backward of the recurrence kernels
alone for every variant that can hold the shape (medians of 5). ``QUICK=1`` uses one toy
shape and skips the profiles (to try the script in numba's simulator); ``NO_STEP=1``
skips the one-launch-a-step fallback (seconds at the big shapes).
"""
import cProfile
import io
import os
import pstats
import time

import numpy as np
from numba import cuda

import numba_rnn as nr
from numba_rnn import bench_cuda
from numba_rnn.kernels import cuda_arrays as ca
from numba_rnn.kernels import get_backend

gpu = get_backend("cuda")
QUICK = bool(os.environ.get("QUICK"))


def median_ms(f, repeats=5):
    """The bench's timer (a warm-up call, then the median of synchronised calls)."""
    return bench_cuda._timed({"f": f}, repeats, cuda.synchronize)["f"]


@cuda.jit
def nop(x):
    pass


def launch_us(n=2000):
    x = cuda.device_array(1, np.float32)
    k = ca.launch(nop, 1, 32)
    k(x)
    cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        k(x)
    cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def variants(N, H, T, dtype=np.float32, lanes=(2, 4, 8)):
    """``{label: (forward ms, backward ms) or the error}`` of the recurrence kernels:
    every variant that can hold the shape, and ``block`` with each of ``lanes`` a unit."""
    rng = np.random.default_rng(0)
    U = cuda.to_device(rng.standard_normal((T, N, H)).astype(dtype))
    W = cuda.to_device((rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype))
    a0 = cuda.to_device(np.zeros((N, H), dtype))
    dA = cuda.to_device(np.ones((T, N, H), dtype))
    out = {}
    tries = [(v, None) for v in ("block", "grid", "step")[:2 if os.environ.get("NO_STEP") else 3]]
    if gpu.plan(N, H, dtype)[0] == "block":
        tries += [("block", S) for S in lanes]
    for v, S in tries:
        label = v if S is None else f"{v}/{S}"
        try:
            gpu.plan(N, H, dtype, variant=v)
        except ValueError:
            continue
        try:
            kw = dict(variant=v, lanes=S)
            A = gpu.recurrence_forward(U, W, a0, 0, **kw)
            out[label] = (median_ms(lambda kw=kw: gpu.recurrence_forward(U, W, a0, 0, **kw)),
                          median_ms(lambda kw=kw, A=A: gpu.recurrence_backward(dA, A, W, None, 0,
                                                                               **kw)))
        except Exception as err:        # report it and go on to the next variant
            out[label] = f"{type(err).__name__}: {str(err)[:160]}"
    return out


def profile(shape, calls=20):
    N, D, H, T = bench_cuda.SHAPES[shape]
    rnn = nr.RNN(D, H, dtype="float32", seed=0, device="cuda")
    x = cuda.to_device(np.random.default_rng(0).standard_normal((T, N, D)).astype(np.float32))
    dA = cuda.to_device(np.ones((T, N, H), np.float32))

    def train():
        _, _, cache = rnn.forward(x)
        rnn.backward(cache, dA)
    print(f"{shape}: forward {median_ms(lambda: rnn(x), 9):.3f} ms, "
          f"train {median_ms(train, 9):.3f} ms")
    for name, f in (("forward", lambda: rnn(x)), ("train", train)):
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(calls):
            f()
        cuda.synchronize()
        pr.disable()
        text = io.StringIO()
        pstats.Stats(pr, stream=text).sort_stats("tottime").print_stats(12)
        print(f"--- {shape} {name}, {calls} calls")
        print("\n".join(text.getvalue().splitlines()[4:22]))


def main():
    print(f"one launch (configured once, one array argument): {launch_us():.1f} µs")
    shapes = {"toy": (2, 4, 8, 3)} if QUICK else bench_cuda.SHAPES
    for shape, (N, _, H, T) in shapes.items():
        cells = [f"{shape:8s} plan={gpu.plan(N, H, np.float32)}"]
        for v, r in variants(N, H, T).items():
            cells.append(f"{v}: " + (r if isinstance(r, str) else
                                     f"fwd {r[0]:.3f} ms ({r[0] * 1e3 / T:.2f} µs/step), "
                                     f"bwd {r[1]:.3f} ms ({r[1] * 1e3 / T:.2f} µs/step)"))
        print(" | ".join(cells), flush=True)
    for shape in () if QUICK else ("tiny", "medium"):
        profile(shape)


if __name__ == "__main__":
    main()
