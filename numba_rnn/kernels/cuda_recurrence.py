"""CUDA recurrence kernels: the forward pass and BPTT as persistent launches.

Shapes (time-major): T time steps, N batch, H hidden size. Every kernel is the GPU
twin of :func:`numba_rnn.kernels.cpu._forward` / ``_backward`` and keeps their
contract: the same padding rule for ``lengths``, δ<t> = ∂L/∂z<t> and the per-sample
norms ‖∂L/∂a<t>‖ recorded on the way.

A numba.cuda launch from Python costs ~7–25 µs, more than a whole time step, so the
recurrence is **one launch per sequence** in two persistent variants, plus a
non-persistent fallback:

``block``  (H ≤ 128: W_aa fits one block's registers)
    Block n owns batch row n and *all* H units. Thread (j, s) keeps W[j, k] for
    k ≡ s (mod S) in registers for the whole sequence (KW = ⌈H/S⌉ of them, rounded up
    to a multiple of four, compiled in); the previous state sits in shared memory,
    double-buffered, so a step is KW multiply-adds, a sum over the S lanes and one
    ``cuda.syncthreads()``: blocks never wait for one another.
``grid``   (larger H)
    Block g owns a slice of the hidden units for every batch row and keeps their rows
    of W_aa (of Wᵀ in the backward) in shared memory across all steps. The new state is exchanged
    through global memory with one ``cuda.cg.this_grid().sync()`` per step, so the
    grid must be co-resident (a cooperative launch).
``step``   (fallback, and for shapes neither persistent variant can hold)
    One launch per time step, weights read from global memory.

Forward and backward mirror each other (the backward holds Wᵀ where the forward holds
W, so both are the same row-times-vector dots)::

    forward  z<t>[n, j]   = Σ_k W [j, k] · a<t-1>[n, k]     a<t> = g(U<t> + z<t>)
    backward c<t-1>[n, k] = Σ_j Wᵀ[k, j] · δ<t>[n, j]       δ<t> = (dA<t> + c<t>) ⊙ g'(a<t>)

Each dot is shared by S (``block``) or P (``grid``) lanes, a power of two up to 32:
lane s takes the products k ≡ s (mod S), so consecutive lanes read consecutive
addresses. In ``block`` the lanes of one dot are consecutive threads of one warp and
their partial sums meet in a butterfly (``xor_sum``): on a GPU, warp shuffles with no
barrier; numba's simulator, which CI runs these kernels in, has no shuffles, so there
each thread reads the lanes' values from shared memory and adds them in the
butterfly's order (the same additions, so the same bits), between two barriers. In
``grid`` the P partial sums meet in shared memory, halved with a ``syncthreads`` per
level (``lane_sum``): shuffles there were measured no faster on the H200 and cost
registers (README, "On a GPU"). Serial dots over H made every thread wait on one L2
load per product: on the H200 that was 17.7 µs a step at stream.

Kernels are compiled per dtype (and per S and KW for ``block``, which
:func:`build_block` takes as arguments); shared memory is dynamic, sized by each launch
for its shape; units per block, lanes of ``grid`` and threads are launch arguments.
The kernels avoid Python's ``min``/``max``: numba 0.68's built-in CUDA target fails to
type ``min(int, int)`` in a kernel (numba-cuda does not), so a conditional expression
is used instead.
"""
import math

import numba
import numpy as np
from numba import cuda

from .activations import TANH
from .cuda_arrays import SIMULATOR

SMEM_BYTES = 46 * 1024   # dynamic shared memory a block may ask for (48 KB without opt-in)


def smem_elements(dtype):
    """How many elements of ``dtype`` one block may keep in shared memory (each launch
    asks for what its shape needs, so smaller blocks leave room for more per SM)."""
    return SMEM_BYTES // np.dtype(dtype).itemsize


FULL_MASK = 0xFFFFFFFF
BLOCK_KW = 16            # register weights a thread aims for in the ``block`` variant
BLOCK_KW_MAX = 32        # and the most it may hold


def scratch_elements(threads):
    """Shared elements a ``block`` launch needs for ``xor_sum``: one per thread in the
    simulator (its butterfly goes through shared memory), none on a GPU (shuffles)."""
    return threads if SIMULATOR else 0


def _device_functions(dtype):
    """The device functions every kernel of ``dtype`` shares: act, act_grad, xor_sum."""
    dt = np.dtype(dtype).type
    zero = dt(0)
    one = dt(1)

    @cuda.jit(device=True)
    def act(kind, v):
        """g(v): tanh, or relu (NaN propagates: NaN <= 0 is false)."""
        if kind == TANH:
            return math.tanh(v)
        return zero if v <= zero else v

    @cuda.jit(device=True)
    def act_grad(kind, g, a):
        """g · g'(z), written with a = g(z)."""
        if kind == TANH:
            return g * (one - a * a)
        return g if a > zero else zero

    if SIMULATOR:
        def tree(sm, i, o, lo):
            """Lane i's value after the butterfly levels lo … o, from the lanes' inputs
            (lanes past the block's threads hold zero, as idle lanes do on a GPU)."""
            if o < lo:
                return sm[i] if i < cuda.blockDim.x else sm.dtype.type(0)
            return tree(sm, i, o // 2, lo) + tree(sm, i ^ o, o // 2, lo)

        @cuda.jit(device=True)
        def xor_sum(v, lo, hi, sm, scratch, tid):
            """The GPU version's butterfly (v summed over the lanes tid ^ o, o = lo,
            2·lo, … < hi), the same additions in the same order, from the lanes' values
            in sm[scratch + tid]: two barriers a call. Every thread of the block must
            call it."""
            if lo >= hi:
                return v
            sm[scratch + tid] = v
            cuda.syncthreads()
            o = lo
            while 2 * o < hi:
                o *= 2
            v = tree(sm[scratch:], tid, o, lo)
            cuda.syncthreads()
            return v

    else:
        @cuda.jit(device=True)
        def xor_sum(v, lo, hi, sm, scratch, tid):
            """v summed over the lanes tid ^ o, o = lo, 2·lo, … < hi (≤ 32), by warp
            shuffles; every lane ends with the same sum. Every thread of the warp must
            call it."""
            o = lo
            while o < hi:
                v = v + cuda.shfl_xor_sync(FULL_MASK, v, o)
                o *= 2
            return v

    return act, act_grad, xor_sum


def build_block(dtype, KW, S):
    """The ``block`` variant's kernels for ``dtype`` with S lanes a unit and KW (a
    multiple of four) weights in each thread's registers, both compiled in (so every
    shared-memory offset of the unrolled dots is a constant); returns a namespace dict."""
    dt = np.dtype(dtype).type
    sdt = numba.from_dtype(np.dtype(dtype))            # the simulator's arrays want it
    zero = dt(0)
    act, act_grad, xor_sum = _device_functions(dtype)

    @cuda.jit(device=True)
    def lane_dot(w, a):
        """Σ_i w[i]·a[S·i]: lane s's share of a dot, with a = the state buffer from
        offset s (so every offset is a constant and each product one shared load), in
        four running sums. Inlined: ``w`` stays in registers (tests/ptx_check.py)."""
        z0 = zero
        z1 = zero
        z2 = zero
        z3 = zero
        for i in range(0, KW, 4):
            z0 += w[i] * a[S * i]
            z1 += w[i + 1] * a[S * i + S]
            z2 += w[i + 2] * a[S * i + 2 * S]
            z3 += w[i + 3] * a[S * i + 3 * S]
        return (z0 + z1) + (z2 + z3)

    @cuda.jit
    def forward_block(U, W, a0, lengths, kind, reverse, A):
        """Block n: batch row n. Thread (j, s) = (tid // S, tid % S) holds
        W[j, s + S·i], i < KW, in registers (zero past H).

        Shared: two state buffers of S·KW (a<t-1> read, a<t> written, zero past H),
        then ``xor_sum``'s scratch.
        """
        T, N, H = U.shape
        sm = cuda.shared.array(0, sdt)
        tid = cuda.threadIdx.x
        n = cuda.blockIdx.x
        j = tid // S
        s = tid - j * S
        live = j < H
        HS = S * KW
        w = cuda.local.array(KW, sdt)
        for i in range(KW):
            w[i] = W[j, s + S * i] if live and s + S * i < H else zero
        for i in range(tid, 2 * HS, cuda.blockDim.x):
            sm[i] = a0[n, i] if i < H else zero
        L = lengths[n]
        prev = a0[n, j] if live else zero                 # padding: a<t> = a<t-1>
        u = U[T - 1 if reverse else 0, n, j] if live and T > 0 else zero
        cur, nxt = 0, HS
        cuda.syncthreads()
        for step in range(T):
            t = T - 1 - step if reverse else step
            ut = u
            if live and step + 1 < T:                     # the next step's, in flight
                u = U[t - 1 if reverse else t + 1, n, j]
            z = xor_sum(lane_dot(w, sm[cur + s:]), 1, S, sm, 2 * HS, tid)  # W[j, :]·a<t-1>
            if live:
                v = act(kind, ut + z) if t < L else prev  # g(U + z)
                prev = v
                if s == 0:
                    A[t, n, j] = v
                    sm[nxt + j] = v
            cuda.syncthreads()
            cur, nxt = nxt, cur

    @cuda.jit
    def backward_block(dA, A, W, dh_n, lengths, kind, reverse, delta, partial, dh0):
        """Mirror of ``forward_block`` with Wᵀ: thread (k, s) holds W[s + S·i, k] and
        keeps the carry c<t>[n, k] in a register; δ<t> goes through the state buffers.

        ``partial[t, n, w]`` receives Σ g<t>² over warp w's units (``finish_norms``
        adds the warps).
        """
        T, N, H = A.shape
        sm = cuda.shared.array(0, sdt)
        tid = cuda.threadIdx.x
        n = cuda.blockIdx.x
        k = tid // S
        s = tid - k * S
        live = k < H
        HS = S * KW
        w = cuda.local.array(KW, sdt)
        for i in range(KW):
            w[i] = W[s + S * i, k] if live and s + S * i < H else zero
        for i in range(tid, 2 * HS, cuda.blockDim.x):
            sm[i] = zero
        L = lengths[n]
        c = dh_n[n, k] if live else zero                  # the carry into step t
        t = 0 if reverse else T - 1
        da = dA[t, n, k] if live and T > 0 else zero
        a = A[t, n, k] if live and T > 0 else zero
        cur, nxt = 0, HS
        cuda.syncthreads()
        for step in range(T):
            t = step if reverse else T - 1 - step
            dat = da
            at = a
            if live and step + 1 < T:                     # the next step's, in flight
                da = dA[t + 1 if reverse else t - 1, n, k]
                a = A[t + 1 if reverse else t - 1, n, k]
            g = zero
            d = zero
            if live and t < L:
                g = dat + c                               # g<t> = dA<t> + c<t>
                d = act_grad(kind, g, at)                 # δ<t> = g<t> ⊙ g'(a<t>)
            if live and s == 0:
                delta[t, n, k] = d
                sm[cur + k] = d
            q = xor_sum(g * g if s == 0 else zero, S, 32, sm, 2 * HS, tid)
            if tid % 32 == 0:
                partial[t, n, tid // 32] = q
            cuda.syncthreads()
            cn = xor_sum(lane_dot(w, sm[cur + s:]), 1, S, sm, 2 * HS, tid)  # Wᵀ[k, :]·δ<t>
            if t < L:                                     # padding: the carry passes
                c = cn
            cur, nxt = nxt, cur
        if live and s == 0:
            dh0[n, k] = c

    return dict(forward_block=forward_block, backward_block=backward_block)


def build(dtype):
    """Compile-on-first-use kernels for one float dtype (all but the ``block``
    variant's); returns a namespace dict."""
    dt = np.dtype(dtype).type
    sdt = numba.from_dtype(np.dtype(dtype))            # the simulator's shared arrays want it
    zero = dt(0)
    act, act_grad, _ = _device_functions(dtype)

    @cuda.jit(device=True)
    def dot4_global(sm, base, H, src, n, p, P):
        """Lane p's share of four dots: rows base, base+H, +2H, +3H of ``sm`` against
        src[n, :] (global, read once per k for all four; lanes read consecutive k)."""
        z0 = zero
        z1 = zero
        z2 = zero
        z3 = zero
        for k in range(p, H, P):
            v = src[n, k]
            z0 += sm[base + k] * v
            z1 += sm[base + H + k] * v
            z2 += sm[base + 2 * H + k] * v
            z3 += sm[base + 3 * H + k] * v
        return z0, z1, z2, z3

    @cuda.jit(device=True)
    def lane_sum(sm, buf, width, P, tid, nt):
        """sm[buf + p·width + i] summed over the P lanes (a power of two) into
        sm[buf + i], halving with a block barrier per level. The caller has synchronised
        after writing the partials; the sums are ready for every thread on return."""
        half = P // 2
        while half > 0:
            for i in range(tid, half * width, nt):
                sm[buf + i] += sm[buf + i + half * width]
            cuda.syncthreads()
            half //= 2

    # ------------------------------------------------------------------ grid variant
    @cuda.jit(device=True)
    def grid_dots(sm, H, src, N, G4, P, buf, tid, nt):
        """The block's N·4·G4 dots of src rows (global) against its 4·G4 shared weight
        rows, P lanes each, summed into sm[buf + (n·G4 + g)·4 + q] (g·4 + q = unit)."""
        p, o0, ostep = tid % P, tid // P, nt // P
        width = N * G4 * 4
        for o in range(o0, N * G4, ostep):
            n = o // G4
            z0, z1, z2, z3 = dot4_global(sm, (o - n * G4) * 4 * H, H, src, n, p, P)
            at = buf + p * width + o * 4
            sm[at] = z0
            sm[at + 1] = z1
            sm[at + 2] = z2
            sm[at + 3] = z3
        cuda.syncthreads()
        lane_sum(sm, buf, width, P, tid, nt)

    @cuda.jit
    def forward_grid(U, W, a0, lengths, kind, reverse, R, P, A):
        """Block g: hidden units [g·R, g·R + R) of every row.

        Shared: those rows of W (padded with zero rows to a multiple of four, so one
        read of a<t-1>[n, k] serves four units), and P lanes' partial dots.
        """
        T, N, H = U.shape
        sm = cuda.shared.array(0, sdt)
        tid, nt = cuda.threadIdx.x, cuda.blockDim.x
        j0 = cuda.blockIdx.x * R
        cols = R if R < H - j0 else H - j0
        G4 = (cols + 3) // 4
        for i in range(tid, G4 * 4 * H, nt):              # sm[jj·H + k] = W[j0 + jj, k]
            jj = i // H
            sm[i] = W[j0 + jj, i - jj * H] if jj < cols else zero
        buf = G4 * 4 * H
        cuda.syncthreads()
        grid = cuda.cg.this_grid()
        for s in range(T):
            t = T - 1 - s if reverse else s
            tp = t + 1 if reverse else t - 1
            u = U[t, tid // cols, j0 + tid % cols] if tid < N * cols else zero
            if s == 0:                                    # z = a<t-1>·Wᵀ for our units
                grid_dots(sm, H, a0, N, G4, P, buf, tid, nt)
            else:
                grid_dots(sm, H, A[tp], N, G4, P, buf, tid, nt)
            for i in range(tid, N * cols, nt):
                n = i // cols
                jj = i - n * cols
                j = j0 + jj
                if t < lengths[n]:
                    z = sm[buf + (n * G4 + jj // 4) * 4 + jj % 4]
                    v = act(kind, (u if i == tid else U[t, n, j]) + z)
                else:
                    v = a0[n, j] if s == 0 else A[tp, n, j]
                A[t, n, j] = v
            grid.sync()                                   # a<t> complete before step t+1

    @cuda.jit
    def backward_grid(dA, A, W, lengths, kind, reverse, R, P, carry, delta, partial):
        """Mirror of ``forward_grid`` with Wᵀ: block g owns units [g·R, g·R + R) of the carry.

        ``carry`` (N, H) starts as ∂L/∂h_n and ends as ∂L/∂a0; each block touches its
        own columns only. ``partial[t, n, g]`` receives Σ g<t>² over the block's units.
        """
        T, N, H = A.shape
        sm = cuda.shared.array(0, sdt)
        tid, nt = cuda.threadIdx.x, cuda.blockDim.x
        blk = cuda.blockIdx.x
        k0 = blk * R
        cols = R if R < H - k0 else H - k0
        G4 = (cols + 3) // 4
        for i in range(tid, G4 * 4 * H, nt):              # sm[kk·H + j] = W[j, k0 + kk]
            kk = i // H
            sm[i] = W[i - kk * H, k0 + kk] if kk < cols else zero
        S = G4 * 4 * H                                    # g² buffer (N, cols)
        buf = S + N * cols
        cuda.syncthreads()
        grid = cuda.cg.this_grid()
        for s in range(T):
            t = s if reverse else T - 1 - s
            for i in range(tid, N * cols, nt):
                n = i // cols
                j = k0 + i - n * cols
                d = zero
                g = zero
                if t < lengths[n]:
                    g = dA[t, n, j] + carry[n, j]
                    d = act_grad(kind, g, A[t, n, j])
                delta[t, n, j] = d
                sm[S + i] = g * g
            cuda.syncthreads()
            for n in range(tid, N, nt):
                acc = zero
                for kk in range(cols):
                    acc += sm[S + n * cols + kk]
                partial[t, n, blk] = acc
            grid.sync()                                   # δ<t> complete before c<t-1>
            grid_dots(sm, H, delta[t], N, G4, P, buf, tid, nt)
            for i in range(tid, N * cols, nt):
                n = i // cols
                kk = i - n * cols
                if t < lengths[n]:
                    carry[n, k0 + kk] = sm[buf + (n * G4 + kk // 4) * 4 + kk % 4]
            cuda.syncthreads()

    @cuda.jit
    def finish_norms(partial, norms):
        """norms[t, n] = sqrt(Σ_g partial[t, n, g])."""
        i = cuda.grid(1)
        T, N, G = partial.shape
        if i < T * N:
            t = i // N
            n = i - t * N
            acc = zero
            for g in range(G):
                acc += partial[t, n, g]
            norms[t, n] = math.sqrt(acc)

    # ------------------------------------------------------------------ step variant
    @cuda.jit
    def forward_step(U, W, prev, lengths, kind, t, A):
        """One time step: thread (n, j), weights from global memory."""
        T, N, H = U.shape
        i = cuda.grid(1)
        if i < N * H:
            n = i // H
            j = i - n * H
            if t < lengths[n]:
                z = zero
                for k in range(H):
                    z += W[j, k] * prev[n, k]
                v = act(kind, U[t, n, j] + z)
            else:
                v = prev[n, j]
            A[t, n, j] = v

    @cuda.jit
    def backward_step_delta(dA, A, carry, lengths, kind, t, delta, gsq):
        """One step, first half: δ<t> and g<t>² per element."""
        T, N, H = A.shape
        i = cuda.grid(1)
        if i < N * H:
            n = i // H
            j = i - n * H
            d = zero
            g = zero
            if t < lengths[n]:
                g = dA[t, n, j] + carry[n, j]
                d = act_grad(kind, g, A[t, n, j])
            delta[t, n, j] = d
            gsq[n, j] = g * g

    @cuda.jit
    def backward_step_carry(W, lengths, t, delta, gsq, carry, norms):
        """One step, second half: c<t-1> = δ<t>·W, and ‖g<t>‖ (thread k = 0 of a row)."""
        T, N, H = delta.shape
        i = cuda.grid(1)
        if i < N * H:
            n = i // H
            k = i - n * H
            if t < lengths[n]:
                c = zero
                for j in range(H):
                    c += W[j, k] * delta[t, n, j]
                carry[n, k] = c
            if k == 0:
                acc = zero
                for j in range(H):
                    acc += gsq[n, j]
                norms[t, n] = math.sqrt(acc)

    return dict(forward_grid=forward_grid, backward_grid=backward_grid,
                finish_norms=finish_norms, forward_step=forward_step,
                backward_step_delta=backward_step_delta,
                backward_step_carry=backward_step_carry)
