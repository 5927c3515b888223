"""asv benchmarks: forward and train step of nr.RNN on the shapes of BENCHMARKS.md.

The peers (torch, a competent NumPy RNN, the GEMM floor) and ratio tracking come with
the performance work; these time our own engine across shape × dtype × backend.
"""
import numpy as np

import numba_rnn as nr

SHAPES = {  # name: (N, D, H, T)
    "tiny": (16, 32, 64, 200),
    "stream": (1, 128, 256, 1000),
    "medium": (64, 128, 256, 100),
    "large": (64, 512, 1024, 50),
}


class RNNStep:
    params = (list(SHAPES), ["float32", "float64"], ["serial", "parallel"])
    param_names = ["shape", "dtype", "backend"]
    timeout = 300

    def setup(self, shape, dtype, backend):
        N, D, H, T = SHAPES[shape]
        self.rnn = nr.RNN(D, H, dtype=dtype, seed=0, parallel=backend == "parallel")
        self.x = np.random.default_rng(0).standard_normal((T, N, D)).astype(dtype)
        out, _, cache = self.rnn.forward(self.x)        # compiles (or loads the cache)
        self.d_out = np.ones_like(out)
        self.rnn.backward(cache, self.d_out)

    def time_forward(self, shape, dtype, backend):
        self.rnn(self.x)

    def time_train_step(self, shape, dtype, backend):
        _, _, cache = self.rnn.forward(self.x)
        self.rnn.backward(cache, self.d_out)

    def peakmem_train_step(self, shape, dtype, backend):
        _, _, cache = self.rnn.forward(self.x)
        self.rnn.backward(cache, self.d_out)
