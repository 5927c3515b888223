"""Row-wise activations and their derivatives, shared by every CPU kernel.

Each function works on one row of ``H`` hidden units and writes into ``out``; they are
inlined into the recurrence kernels (``inline="always"``: a call per row cost ~17 % of
the tiny-shape forward). The branch on the activation code sits outside the inner
loop so that LLVM sees a plain loop per activation, which it vectorises
(``error_model="numpy"``: no division-by-zero checks to stop it). Constants take the array's dtype
(``out.dtype.type(1)``) so that float32 stays float32 throughout.

Activation codes (kept as small integers because kernels take plain scalars):

========  ====  =======================  ===========================
name      code  g(z)                     g'(z), written with a = g(z)
========  ====  =======================  ===========================
tanh      0     tanh(z) (vectorised,     1 - a²
                ≤ 2.6 ulp)
relu      1     max(z, 0) (NaN stays)    1 if a > 0 else 0
========  ====  =======================  ===========================
"""
from numba import njit

from .fast_tanh import fast_tanh

TANH = 0
RELU = 1
NONLINEARITIES = {"tanh": TANH, "relu": RELU}


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def activate_row(kind, u, z, out):
    """``out[j] = g(u[j] + z[j])`` for one row; ``u, z, out`` have shape (H,); ``z`` is
    used as scratch.

    Two passes — ``z += u``, then ``out = g(z)`` — because ``out`` may be ``u`` itself
    (the forward writes the states over the input projection): a single loop reading
    ``u`` and writing ``out`` makes LLVM's runtime alias check fail and fall back to
    the scalar loop, which measured 2.4× slower at the medium shape.
    """
    zero = out.dtype.type(0)
    for j in range(out.shape[0]):
        z[j] += u[j]
    if kind == TANH:
        for j in range(out.shape[0]):
            out[j] = fast_tanh(z[j])
    else:
        for j in range(out.shape[0]):
            v = z[j]
            out[j] = zero if v <= zero else v  # NaN is not <= 0, so it propagates


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def activation_grad_row(kind, a, g, out):
    """``out[j] = g[j] * g'(z[j])`` for one row, with ``a = g(z)``; shapes (H,)."""
    zero = out.dtype.type(0)
    one = out.dtype.type(1)
    if kind == TANH:
        for j in range(out.shape[0]):
            out[j] = g[j] * (one - a[j] * a[j])
    else:
        for j in range(out.shape[0]):
            out[j] = g[j] if a[j] > zero else zero
