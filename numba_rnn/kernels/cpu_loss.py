"""Numba kernels for the per-step losses that are hot: fused softmax cross-entropy.

Rows are (time step, sequence) pairs flattened to M = T·N; ``w`` carries the mask
and the reduction's scale, so one kernel serves every reduction.
"""
import math

from numba import njit


def xent_row(z, y, w, dz, m):
    """Row ``m`` of :func:`softmax_xent`: writes ``dz[m]``, returns its loss term.

    Plain Python compiled twice — inlined here with ``njit`` and as a CUDA device
    function in :mod:`.cuda_layers` — so CPU and GPU run the same arithmetic.
    """
    C = z.shape[1]
    if w[m] == 0.0:
        for c in range(C):
            dz[m, c] = 0
        return 0.0
    mx = z[m, 0]
    for c in range(1, C):
        if z[m, c] > mx:
            mx = z[m, c]
    s = 0.0
    for c in range(C):
        s += math.exp(float(z[m, c]) - mx)
    lse = mx + math.log(s)                                    # log Σ exp(z), stable
    for c in range(C):
        dz[m, c] = w[m] * math.exp(float(z[m, c]) - lse)      # w · softmax(z)
    dz[m, y[m]] -= w[m]                                       # − w · onehot(y)
    return w[m] * (lse - z[m, y[m]])


_xent_row = njit(cache=True, nogil=True, inline="always")(xent_row)


@njit(cache=True, nogil=True)
def softmax_xent(z, y, w, dz):
    """Weighted softmax cross-entropy and its gradient, one pass per row.

    Parameters
    ----------
    z : (M, C) float array
        Logits.
    y : (M,) int64 array
        Target classes in [0, C).
    w : (M,) float64 array
        Row weights (mask × reduction scale); rows with w = 0 contribute nothing.
    dz : (M, C) float array, written
        ∂L/∂z = w · (softmax(z) − onehot(y)).

    Returns
    -------
    float
        L = Σ_m w_m (logsumexp(z_m) − z_m[y_m]), accumulated in float64.
    """
    total = 0.0
    for m in range(z.shape[0]):
        total += _xent_row(z, y, w, dz, m)
    return total
