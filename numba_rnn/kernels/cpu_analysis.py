"""Numba kernel for temporal credit: every per-step loss propagated back at once.

C[t, k, n] = ‖∂L⟨t⟩/∂a⟨k⟩‖ for one layer-direction, where L⟨t⟩ is the loss at step t
alone. Instead of T separate backward passes, the gradients of all sources t ≥ k are
carried together: at step k each active source's gradient is one row block of a
single (rows, H)·(H, H) product, so the work is one GEMM per step.
"""
import math

import numpy as np
from numba import njit

from .activations import activation_grad_row


@njit(cache=True, nogil=True)
def temporal_credit(A, W_aa, dA, kind, reverse, C):
    """Fill C (T, T, N) with ‖∂L⟨t⟩/∂a⟨k⟩‖ (zero where k comes after t).

    A (T, N, H): the forward states; dA (T, N, H): ∂L⟨t⟩/∂a⟨t⟩ from above at each
    step (the loss at step t reaches a⟨t⟩ directly only through dA[t]).
    """
    T, N, H = A.shape
    G = np.zeros((T, N, H), dtype=A.dtype)     # G[t]: ∂L<t>/∂a<k> as k walks back
    D = np.zeros((T, N, H), dtype=A.dtype)
    C[:] = 0
    for s in range(T):
        k = s if reverse else T - 1 - s
        G[k] = dA[k]                           # source k starts at its own step
        lo, hi = (0, k + 1) if reverse else (k, T)   # active sources
        for t in range(lo, hi):
            for n in range(N):
                acc = 0.0
                for j in range(H):
                    acc += G[t, n, j] * G[t, n, j]
                C[t, k, n] = math.sqrt(acc)
                activation_grad_row(kind, A[k, n], G[t, n], D[t, n])    # δ = g ⊙ g'(a<k>)
        rows = (hi - lo) * N
        np.dot(D[lo:hi].reshape(rows, H), W_aa, G[lo:hi].reshape(rows, H))  # → a<k-1>
