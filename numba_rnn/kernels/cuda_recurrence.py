"""CUDA recurrence kernels: the forward pass and BPTT as persistent launches.

Shapes (time-major): T time steps, N batch, H hidden size. Every kernel is the GPU
twin of :func:`numba_rnn.kernels.cpu._forward` / ``_backward`` and keeps their
contract: the same padding rule for ``lengths``, δ<t> = ∂L/∂z<t> and the per-sample
norms ‖∂L/∂a<t>‖ recorded on the way.

A numba.cuda launch from Python costs ~7–25 µs, more than a whole time step, so the
recurrence is **one launch per sequence** in two persistent variants, plus a
non-persistent fallback:

``block``  (small H: W_aa and a batch row's buffers fit in one block's shared memory)
    Block b owns a slice of the batch rows and *all* H units. W_aa lives in shared
    memory for the whole sequence, the previous state too (double-buffered), so a
    step needs only ``cuda.syncthreads()``: blocks never wait for one another.
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

Each dot is shared by P lanes (a power of two up to 32): lane p takes the products
k ≡ p (mod P), so consecutive lanes read consecutive addresses, and the P partial sums
meet in shared memory, halved with a ``syncthreads`` per level (``lane_sum``; warp
shuffles would be faster, but numba's simulator, which CI runs these kernels in, has
none). Serial dots over H made every thread wait on one L2 load per product: on the
H200 that was 17.7 µs a step at stream against 6.9 now.

Kernels are compiled per dtype; shared memory is dynamic, sized by each launch for its
shape. The tunables (rows or units per block, lanes, threads) are launch arguments,
never module globals. The kernels avoid Python's ``min``/``max``: numba 0.68's
built-in CUDA target fails to type ``min(int, int)`` in a kernel (numba-cuda does
not), so a conditional expression is used instead.
"""
import math

import numba
import numpy as np
from numba import cuda

from .activations import TANH

SMEM_BYTES = 46 * 1024   # dynamic shared memory a block may ask for (48 KB without opt-in)


def smem_elements(dtype):
    """How many elements of ``dtype`` one block may keep in shared memory (each launch
    asks for what its shape needs, so smaller blocks leave room for more per SM)."""
    return SMEM_BYTES // np.dtype(dtype).itemsize


def build(dtype):
    """Compile-on-first-use kernels for one float dtype; returns a namespace dict."""
    dt = np.dtype(dtype).type
    sdt = numba.from_dtype(np.dtype(dtype))            # the simulator's shared arrays want it
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

    # ------------------------------------------------------------------ shared pieces
    @cuda.jit(device=True)
    def dot_shared(sm, a, b, n, p, P):
        """Σ over k ≡ p (mod P), k < n, of sm[a + k]·sm[b + k]: lane p's share of a dot."""
        acc = zero
        for k in range(p, n, P):
            acc += sm[a + k] * sm[b + k]
        return acc

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

    # ------------------------------------------------------------------ block variant
    @cuda.jit
    def forward_block(U, W, a0, lengths, kind, reverse, nb, P, A):
        """Block b: batch rows [b·nb, b·nb + nb), all H units.

        Shared: W (rows padded to H + 1, so lanes of different rows fall in different
        banks), two (nb, H) state buffers and P lanes' partial dots. Each output
        (r, j) is P lanes' partial dots over k ≡ p (mod P), summed by ``lane_sum``.
        """
        T, N, H = U.shape
        sm = cuda.shared.array(0, sdt)
        tid, nt = cuda.threadIdx.x, cuda.blockDim.x
        n0 = cuda.blockIdx.x * nb
        rows = nb if nb < N - n0 else N - n0
        M = rows * H
        HP = H + 1
        for i in range(tid, H * H, nt):                   # sm[j·HP + k] = W[j, k]
            j = i // H
            sm[j * HP + i - j * H] = W[j, i - j * H]
        cur, nxt = H * HP, H * HP + nb * H                # two (nb, H) state buffers
        buf = H * HP + 2 * nb * H                         # (P, M) partial dots
        for i in range(tid, M, nt):
            r = i // H
            sm[cur + i] = a0[n0 + r, i - r * H]
        cuda.syncthreads()
        p, o0, ostep = tid % P, tid // P, nt // P
        for s in range(T):
            t = T - 1 - s if reverse else s
            u = U[t, n0 + tid // H, tid % H] if tid < M else zero   # in flight meanwhile
            for o in range(o0, M, ostep):                 # z = a<t-1>·Wᵀ, P lanes each
                r = o // H
                sm[buf + p * M + o] = dot_shared(sm, (o - r * H) * HP, cur + r * H, H, p, P)
            cuda.syncthreads()
            lane_sum(sm, buf, M, P, tid, nt)
            for i in range(tid, M, nt):
                r = i // H
                j = i - r * H
                n = n0 + r
                if t < lengths[n]:
                    v = act(kind, (u if i == tid else U[t, n, j]) + sm[buf + i])  # g(U + z)
                else:
                    v = sm[cur + i]                            # padding: a<t> = a<t-1>
                A[t, n, j] = v
                sm[nxt + i] = v
            cuda.syncthreads()
            cur, nxt = nxt, cur

    @cuda.jit
    def backward_block(dA, A, W, dh_n, lengths, kind, reverse, nb, P, delta, norms, dh0):
        """Mirror of ``forward_block`` with Wᵀ: c<t-1>[r, k] = Σ_j Wᵀ[k, j]·δ<t>[r, j].

        Shared: Wᵀ (padded rows), the carry, δ<t> and g<t> of nb rows, and P lanes'
        partial dots for the rows·H carry entries plus one ‖g<t>‖² per row.
        """
        T, N, H = A.shape
        sm = cuda.shared.array(0, sdt)
        tid, nt = cuda.threadIdx.x, cuda.blockDim.x
        n0 = cuda.blockIdx.x * nb
        rows = nb if nb < N - n0 else N - n0
        M = rows * H
        HP = H + 1
        for i in range(tid, H * H, nt):                   # sm[k·HP + j] = W[j, k]
            j = i // H
            sm[(i - j * H) * HP + j] = W[j, i - j * H]
        C = H * HP                                        # carry, δ, g buffers (nb, H)
        D, G = C + nb * H, C + 2 * nb * H
        buf = C + 3 * nb * H                              # (P, M + rows) partial dots
        width = M + rows
        for i in range(tid, M, nt):
            r = i // H
            sm[C + i] = dh_n[n0 + r, i - r * H]
        cuda.syncthreads()
        p, o0, ostep = tid % P, tid // P, nt // P
        for s in range(T):
            t = s if reverse else T - 1 - s
            for i in range(tid, M, nt):
                r = i // H
                j = i - r * H
                n = n0 + r
                d = zero
                g = zero
                if t < lengths[n]:
                    g = dA[t, n, j] + sm[C + i]           # g<t> = dA<t> + c<t>
                    d = act_grad(kind, g, A[t, n, j])     # δ<t> = g<t> ⊙ g'(a<t>)
                sm[D + i] = d
                sm[G + i] = g
                delta[t, n, j] = d
            cuda.syncthreads()
            for o in range(o0, width, ostep):             # c<t-1> = δ<t>·W; then ‖g<t>‖²
                if o < M:
                    r = o // H
                    part = dot_shared(sm, (o - r * H) * HP, D + r * H, H, p, P)
                else:
                    r = o - M
                    part = dot_shared(sm, G + r * H, G + r * H, H, p, P)
                sm[buf + p * width + o] = part
            cuda.syncthreads()
            lane_sum(sm, buf, width, P, tid, nt)
            for i in range(tid, M, nt):
                r = i // H
                if t < lengths[n0 + r]:                   # padding: the carry passes
                    sm[C + i] = sm[buf + i]
            for r in range(tid, rows, nt):
                norms[t, n0 + r] = math.sqrt(sm[buf + M + r])
            cuda.syncthreads()
        for i in range(tid, M, nt):
            r = i // H
            dh0[n0 + r, i - r * H] = sm[C + i]

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

    return dict(forward_block=forward_block, backward_block=backward_block,
                forward_grid=forward_grid, backward_grid=backward_grid,
                finish_norms=finish_norms, forward_step=forward_step,
                backward_step_delta=backward_step_delta,
                backward_step_carry=backward_step_carry)
