"""Where a GPU call's time goes: the Python cost of each operation, and the marginal
cost of a ``block`` recurrence step (run on a GPU machine, last in tools/gpu_check.sh).

``python tools/gpu_host_costs.py [default|async]`` prints, per operation of the tiny
shape, the µs of Python to enqueue it (no synchronisation inside the loop) and with the
drain; then the ``block`` kernels' µs a step as the difference of CUDA-event times at
T = 200 and T = 2000. ``async`` first installs a stream-ordered allocator
(``cuMemAllocAsync``/``cuMemFreeAsync`` through numba's memory-manager plugin, which
must be set before the CUDA context exists) to measure what allocation costs; the
package itself does not install it (numba's manager is process-wide, and frees on the
default stream are unsafe for a caller's own streams). ``QUICK=1``: toy sizes and few
calls, to try the script in numba's simulator.
"""
import contextlib
import os
import sys
import time

import numpy as np
from numba import cuda

QUICK = bool(os.environ.get("QUICK"))


def stream_ordered_manager():
    """A numba memory-manager plugin class that allocates with cuMemAllocAsync."""
    from numba.cuda.cudadrv import driver as drv

    class StreamOrdered(drv.HostOnlyCUDAMemoryManager):
        def memalloc(self, size):
            ptr = drv.driver.cuMemAllocAsync(size, 0)

            def free(ptr=ptr):
                drv.driver.cuMemFreeAsync(ptr, 0)
            return drv.MemoryPointer(self.context, ptr, size, finalizer=free)

        def get_memory_info(self):
            free, total = drv.driver.cuMemGetInfo()
            return drv.MemoryInfo(free=free, total=total)

        def get_ipc_handle(self, memory):
            raise NotImplementedError("no IPC handles for stream-ordered memory")

        def reset(self):
            pass

        def defer_cleanup(self):
            return contextlib.nullcontext()

        @property
        def interface_version(self):
            return 1

    return StreamOrdered


def per_call_us(f, n):
    """(µs per call to enqueue, µs per call with the final synchronisation)."""
    f()
    cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    t1 = time.perf_counter()
    cuda.synchronize()
    t2 = time.perf_counter()
    return 1e6 * (t1 - t0) / n, 1e6 * (t2 - t0) / n


def host_costs(N=16, D=32, H=64, T=200, calls=300):
    """``{operation: (enqueue µs, with the drain µs)}`` at one shape, float32."""
    import numba_rnn as nr
    from numba_rnn.kernels import cuda_arrays as ca
    from numba_rnn.kernels import get_backend
    gpu = get_backend("cuda")
    f32 = np.float32
    rng = np.random.default_rng(0)
    rnn = nr.RNN(D, H, dtype="float32", seed=0, device="cuda")
    P = rnn.params
    x = cuda.to_device(rng.standard_normal((T, N, D)).astype(f32))
    dA = cuda.to_device(np.ones((T, N, H), f32))
    h = gpu.zeros((2, N, H), f32)
    small = cuda.device_array(1024, f32)
    U = gpu.input_projection(x, P["W_ax_l0"], P["b_a_l0"])
    a0 = gpu.zeros((N, H), f32)
    A = gpu.recurrence_forward(U, P["W_aa_l0"], a0, 0)

    def train():
        _, _, cache = rnn.forward(x)
        rnn.backward(cache, dA)
    ops = {
        f"device_array(({N}, {H}))": lambda: cuda.device_array((N, H), f32),
        "one configured launch": lambda: ca.over(ca.fill, 1024)(small, 0),
        f"gpu.zeros((2, {N}, {H}))": lambda: gpu.zeros((2, N, H), f32),
        "numba-cuda slice h[1]": lambda: h[1],
        "row_view(h, 1)": lambda: gpu.row_view(h, 1),
        "lengths_array(None)": lambda: gpu.lengths_array(None, T, N),
        "input_projection": lambda: gpu.input_projection(x, P["W_ax_l0"], P["b_a_l0"]),
        "recurrence_forward": lambda: gpu.recurrence_forward(U, P["W_aa_l0"], a0, 0),
        "recurrence_backward": lambda: gpu.recurrence_backward(dA, A, P["W_aa_l0"], None, 0),
        "layer_grads": lambda: gpu.layer_grads(dA, x, A, a0, P["W_ax_l0"]),
        "nonfinite (3 arrays)": lambda: gpu.nonfinite([A, A, A]),
        "rnn(x)": lambda: rnn(x),
        "forward + backward": train,
    }
    return {name: per_call_us(f, max(1, calls // (3 if "x)" in name or "+" in name else 1)))
            for name, f in ops.items()}


def block_step_us(N=16, H=64, lanes=(2, 4, 8), T=(200, 2000), repeats=7):
    """``{lanes: (forward, backward µs a step)}`` of the ``block`` kernels: the
    difference of CUDA-event times (whole Python call included) at the two lengths."""
    from numba_rnn.kernels import get_backend
    gpu = get_backend("cuda")
    rng = np.random.default_rng(0)
    W = cuda.to_device((rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32))
    a0 = cuda.to_device(np.zeros((N, H), np.float32))

    def event_ms(f):
        f()
        cuda.synchronize()
        out = []
        for _ in range(repeats):
            start, stop = cuda.event(), cuda.event()
            start.record()
            f()
            stop.record()
            stop.synchronize()
            out.append(start.elapsed_time(stop))
        return float(np.median(out))
    out = {}
    for S in lanes:
        if H / S > 32:
            continue
        ms = []
        for steps in T:
            U = cuda.to_device(rng.standard_normal((steps, N, H)).astype(np.float32))
            dA = cuda.to_device(np.ones((steps, N, H), np.float32))
            kw = dict(variant="block", lanes=S)
            A = gpu.recurrence_forward(U, W, a0, 0, **kw)
            ms.append((event_ms(lambda U=U, kw=kw: gpu.recurrence_forward(U, W, a0, 0, **kw)),
                       event_ms(lambda dA=dA, A=A, kw=kw:
                                gpu.recurrence_backward(dA, A, W, None, 0, **kw))))
        out[S] = tuple(1e3 * (ms[1][i] - ms[0][i]) / (T[1] - T[0]) for i in range(2))
    return out


def main(mode):
    if mode == "async":
        cuda.set_memory_manager(stream_ordered_manager())
    print(f"allocator: {mode}; µs per call: enqueue, with the drain")
    shape = dict(N=2, D=3, H=4, T=3, calls=2) if QUICK else {}
    for name, (enq, drain) in host_costs(**shape).items():
        print(f"  {name:28s} {enq:9.1f} {drain:9.1f}", flush=True)
    steps = dict(N=2, H=4, lanes=(2,), T=(2, 4), repeats=1) if QUICK else {}
    for S, (fwd, bwd) in block_step_us(**steps).items():
        print(f"block, {S} lanes a unit: forward {fwd:.3f} µs a step, backward {bwd:.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "default")
