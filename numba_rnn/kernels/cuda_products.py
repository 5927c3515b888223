"""CUDA twins of the batched products: tiled GEMM, column sums and norm reductions.

The input projection and the weight, bias and input gradients are one product each
over all T·N rows (see :mod:`numba_rnn.kernels.cpu`). Here they are one launch of a
shared-memory tiled GEMM: block (bx, by) computes a TILE × TILE tile of the output,
streaming TILE-wide slabs of both operands through shared memory. Each output
element sums its k-terms in a fixed order, so results are deterministic.

The norm reduction for clipping is two launches: per-block partial sums in float64
into a device buffer, then one block that adds them in order and writes the
clipping coefficient to device memory, where the scaling kernel reads it — the
host never sees a per-parameter number.
"""
import math

import numpy as np
from numba import cuda
from numba.core import config

# 16 × 16 threads per GEMM block on a GPU; 8 × 8 in the simulator, which runs every
# thread as a Python thread (the kernel code is the same)
TILE = 8 if config.ENABLE_CUDASIM else 16
REDUCE_THREADS = 128


def build(dtype):
    """Compile-on-first-use GEMM for one float dtype (shared tiles need the dtype)."""
    dt = np.dtype(dtype).type
    zero = dt(0)

    @cuda.jit
    def gemm(a, b, ta, tb, bias, has_bias, accumulate, out):
        """``out = op(a)·op(b) (+ bias) (+ out)``, op(x) = xᵀ when its flag is set."""
        M, P = out.shape
        K = a.shape[0] if ta else a.shape[1]
        As = cuda.shared.array((TILE, TILE), dt)
        Bs = cuda.shared.array((TILE, TILE), dt)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        row = cuda.blockIdx.y * TILE + ty
        col = cuda.blockIdx.x * TILE + tx
        acc = zero
        for k0 in range(0, K, TILE):
            ka = k0 + tx
            v = zero
            if row < M and ka < K:
                v = a[ka, row] if ta else a[row, ka]
            As[ty, tx] = v
            kb = k0 + ty
            v = zero
            if kb < K and col < P:
                v = b[col, kb] if tb else b[kb, col]
            Bs[ty, tx] = v
            cuda.syncthreads()
            for kk in range(TILE):
                acc += As[ty, kk] * Bs[kk, tx]
            cuda.syncthreads()
        if row < M and col < P:
            if has_bias:
                acc += bias[col]
            if accumulate:
                acc += out[row, col]
            out[row, col] = acc

    @cuda.jit
    def scale_by(g, coef):
        """``g *= coef[1]`` on a flat array, in g's dtype; skipped when it is 1."""
        if coef[1] != 1.0:
            c = dt(coef[1])
            i = cuda.grid(1)
            stride = cuda.gridsize(1)
            while i < g.size:
                g[i] *= c
                i += stride

    @cuda.jit
    def clamp(g, c, moved):
        """Clamp a flat array to [-c, c] in place (NaN stays); ``moved[0]`` counts changes."""
        i = cuda.grid(1)
        stride = cuda.gridsize(1)
        hi = dt(c)
        lo = -hi
        while i < g.size:
            v = g[i]
            if v > hi:
                g[i] = hi
                cuda.atomic.add(moved, 0, 1)
            elif v < lo:
                g[i] = lo
                cuda.atomic.add(moved, 0, 1)
            i += stride

    return dict(gemm=gemm, scale_by=scale_by, clamp=clamp)


@cuda.jit
def colsum(a, out):
    """``out[j] = Σ_i a[i, j]`` (rows added in order: deterministic)."""
    j = cuda.grid(1)
    if j < a.shape[1]:
        acc = a[0, j] - a[0, j]
        for i in range(a.shape[0]):
            acc += a[i, j]
        out[j] = acc


@cuda.jit
def norm_partial(g, p, partial, slot):
    """``partial[slot + block]`` = the block's Σ|g|^p (or max|g| for p = inf), in float64.

    A block reduces a grid-strided share of the flat array ``g`` through shared
    memory in a fixed tree order; NaN wins in the max.
    """
    sm = cuda.shared.array(REDUCE_THREADS, np.float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < g.size:
        v = abs(float(g[i]))
        if p == math.inf:
            if v > acc or v != v:
                acc = v if acc == acc else acc
        elif p == 2.0:
            acc += v * v
        elif p == 1.0:
            acc += v
        else:
            acc += v ** p
        i += stride
    sm[tid] = acc
    cuda.syncthreads()
    width = REDUCE_THREADS // 2
    while width > 0:
        if tid < width:
            x, y = sm[tid], sm[tid + width]
            if p == math.inf:
                sm[tid] = x if (x != x or x >= y) else y
            else:
                sm[tid] = x + y
        cuda.syncthreads()
        width //= 2
    if tid == 0:
        partial[slot + cuda.blockIdx.x] = sm[0]


@cuda.jit
def finish_norm(partial, p, max_norm, out):
    """One thread: ``out[0]`` = the total p-norm, ``out[1]`` = the clipping coefficient.

    The coefficient is ``max_norm / (norm + 1e-6)`` when that is below 1, else 1;
    it is 1 for a non-finite norm (the gradients are left as they are and the host
    reports the norm). With ``max_norm`` ≤ 0 only the norm is computed.
    """
    if cuda.grid(1) == 0:
        acc = 0.0
        for i in range(partial.size):
            v = partial[i]
            if p == math.inf:
                if v > acc or v != v:
                    acc = v if acc == acc else acc
            else:
                acc += v
        if p != math.inf and p != 1.0 and acc == acc and acc != math.inf:
            acc = acc ** (1.0 / p)
        out[0] = acc
        coef = 1.0
        if max_norm > 0 and acc == acc and acc != math.inf:
            c = max_norm / (acc + 1e-6)
            if c < 1.0:
                coef = c
        out[1] = coef
