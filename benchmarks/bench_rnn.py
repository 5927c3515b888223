"""asv benchmarks: nr.RNN forward and train step on the shapes of BENCHMARKS.md.

Crosses shape × dtype × backend (cpu auto — the default, parallel recurrences for big
steps only —, cpu serial, cpu parallel, cuda; cuda is skipped
without a real GPU, and :class:`CudaRatios` times it against cuDNN). ``setup`` builds
the data and calls everything once, so JIT compilation is never timed; ``track_*``
report ratios against peers timed in the same process (NotImplementedError skips a
combination when a peer is missing).
"""
import numpy as np

import numba_rnn as nr
from numba_rnn import bench, bench_cuda

SHAPES = list(bench.SHAPES)
DTYPES = ["float32", "float64"]
BACKENDS = ["auto", "serial", "parallel", "cuda"]
PARALLEL = {"auto": None, "serial": False, "parallel": True}


def _cuda_or_skip():
    """The CUDA backend on a real GPU, else NotImplementedError (asv skips)."""
    try:
        from numba_rnn.kernels import get_backend
        gpu = get_backend("cuda")
    except RuntimeError as err:
        raise NotImplementedError(str(err)) from err
    if gpu.SIMULATOR:
        raise NotImplementedError("the CUDA simulator is not timed")
    return gpu


def _model(shape, dtype, backend):
    N, D, H, T = bench.SHAPES[shape]
    x = np.random.default_rng(0).standard_normal((T, N, D)).astype(dtype)
    d_out = np.ones((T, N, H), dtype=dtype)
    if backend == "cuda":
        from numba import cuda
        _cuda_or_skip()
        rnn = nr.RNN(D, H, dtype=dtype, seed=0, device="cuda")
        return rnn, cuda.to_device(x), cuda.to_device(d_out)
    rnn = nr.RNN(D, H, dtype=dtype, seed=0, parallel=PARALLEL[backend])
    return rnn, x, d_out


def _sync(backend):
    if backend == "cuda":
        from numba import cuda
        cuda.synchronize()


class RNNStep:
    params = (SHAPES, DTYPES, BACKENDS)
    param_names = ["shape", "dtype", "backend"]
    timeout = 600

    def setup(self, shape, dtype, backend):
        self.rnn, self.x, self.d_out = _model(shape, dtype, backend)
        self.rnn(self.x)                                  # compile (or load the cache)
        self.time_train_step(shape, dtype, backend)

    def time_forward(self, shape, dtype, backend):
        self.rnn(self.x)
        _sync(backend)

    def time_train_step(self, shape, dtype, backend):
        _, _, cache = self.rnn.forward(self.x)
        self.rnn.backward(cache, self.d_out)
        _sync(backend)

    def peakmem_train_step(self, shape, dtype, backend):
        self.time_train_step(shape, dtype, backend)


class Ratios:
    """ours / peer, timed alternately in this process (median of 5)."""
    params = (SHAPES, DTYPES, ["forward", "train"])
    param_names = ["shape", "dtype", "op"]
    timeout = 900
    unit = "ratio"

    def setup_cache(self):
        rows = bench.run(SHAPES, DTYPES, repeats=5, progress=False)
        return {(r["shape"], r["dtype"], r["op"]): r for r in rows}

    def _row(self, rows, shape, dtype, op):
        return rows[(shape, dtype, op)]

    def track_ratio_numpy(self, rows, shape, dtype, op):
        return self._row(rows, shape, dtype, op)["ratio_numpy"]

    def track_ratio_torch(self, rows, shape, dtype, op):
        value = self._row(rows, shape, dtype, op)["ratio_torch"]
        if value is None:
            raise NotImplementedError("torch is not installed")
        return value

    def track_gemm_floor_fraction(self, rows, shape, dtype, op):
        return self._row(rows, shape, dtype, op)["floor_fraction"]

    def track_handover_ns(self, rows, shape, dtype, op):
        """The core-to-core round trip while the row was timed, the median of the
        readings taken after each pair of timed calls
        (:func:`numba_rnn.bench.handover_ns`): the single-sequence (stream) ratios
        tend to follow it (a hint: the VM's placement can change within a second)."""
        value = self._row(rows, shape, dtype, op)["handover_ns"]
        if value is None:
            raise NotImplementedError("fewer than two threads or cores")
        return value
    track_handover_ns.unit = "ns"


class FirstCall:
    """Import + first call in a fresh interpreter: compilation, or loading Numba's cache."""
    timeout = 300

    def timeraw_import_and_first_forward(self):
        return """
import numpy as np
import numba_rnn as nr
rnn = nr.RNN(8, 16, seed=0)
out, _, cache = rnn.forward(np.zeros((5, 2, 8), np.float32))
rnn.backward(cache, np.ones_like(out))
"""


class CudaRatios:
    """GPU: ours / cuDNN and µs per step, on the GPU shapes (skipped without a GPU)."""
    params = (list(bench_cuda.SHAPES), ["forward", "train"])
    param_names = ["shape", "op"]
    timeout = 900
    unit = "ratio"

    def setup_cache(self):
        try:
            _cuda_or_skip()
        except NotImplementedError:
            return {}
        rows = bench_cuda.run(repeats=5, progress=False)
        return {(r["shape"], r["op"]): r for r in rows}

    def _row(self, rows, shape, op):
        if (shape, op) not in rows or rows[(shape, op)]["ratio_cudnn"] is None:
            raise NotImplementedError("no GPU, or no torch with CUDA")
        return rows[(shape, op)]

    def track_ratio_cudnn(self, rows, shape, op):
        return self._row(rows, shape, op)["ratio_cudnn"]

    def track_us_per_step(self, rows, shape, op):
        return self._row(rows, shape, op)["ours_us_per_step"]
    track_us_per_step.unit = "µs"
