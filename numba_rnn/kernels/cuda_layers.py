"""CUDA kernels for output heads and losses: the GPU twins of :mod:`numba_rnn.layers`'
NumPy lines and of :mod:`.cpu_loss`.

One thread per element (activations) or per row (softmax, losses: a row is one
(time step, sequence) pair, its C outputs are few). Losses write one float64 value
per row; the host adds them up, so a step copies back T·N numbers — the loss it has
to report anyway — and nothing else.
"""
import math

from numba import cuda

from .cpu_loss import xent_row

_xent_row = cuda.jit(device=True)(xent_row)       # the CPU kernel's row, compiled for the GPU

TANH, RELU = 0, 1


@cuda.jit
def act_(h, kind):
    """In place on a flat array: tanh or relu."""
    i = cuda.grid(1)
    if i < h.size:
        v = h[i]
        if kind == TANH:
            h[i] = math.tanh(v)
        elif v <= 0:
            h[i] = 0
        # relu of a positive value (or NaN) keeps it


@cuda.jit
def act_grad_(d, h, kind):
    """``d *= g'(z)`` in place, written with h = g(z)."""
    i = cuda.grid(1)
    if i < d.size:
        if kind == TANH:
            d[i] *= 1 - h[i] * h[i]
        elif not h[i] > 0:
            d[i] = 0


@cuda.jit
def softmax_rows(z, out):
    """``out[m] = softmax(z[m])`` (max-shifted), one thread per row."""
    m = cuda.grid(1)
    if m < z.shape[0]:
        C = z.shape[1]
        mx = z[m, 0]
        for c in range(1, C):
            if z[m, c] > mx:
                mx = z[m, c]
        s = 0.0
        for c in range(C):
            s += math.exp(float(z[m, c]) - mx)
        for c in range(C):
            out[m, c] = math.exp(float(z[m, c]) - mx) / s


@cuda.jit
def sigmoid_(z):
    """In place on a flat array: 1/(1 + e^(-z)) written as (1 + tanh(z/2))/2 (stable)."""
    i = cuda.grid(1)
    if i < z.size:
        z[i] = 0.5 * (1.0 + math.tanh(0.5 * z[i]))


@cuda.jit
def gather_steps(out, last, feats):
    """``feats[n] = out[last[n], n]``: each sequence's features at its last valid step."""
    i = cuda.grid(1)
    N, F = feats.shape
    if i < N * F:
        n = i // F
        f = i - n * F
        feats[n, f] = out[last[n], n, f]


@cuda.jit
def scatter_steps(d_feats, last, d_out):
    """``d_out[last[n], n] = d_feats[n]`` (d_out zero elsewhere, set by the caller)."""
    i = cuda.grid(1)
    N, F = d_feats.shape
    if i < N * F:
        n = i // F
        f = i - n * F
        d_out[last[n], n, f] = d_feats[n, f]


@cuda.jit
def softmax_xent(z, y, w, dz, loss_rows):
    """Twin of :func:`numba_rnn.kernels.cpu_loss.softmax_xent`, one thread per row;
    ``loss_rows[m]`` = w_m (logsumexp(z_m) − z_m[y_m]) in float64."""
    m = cuda.grid(1)
    if m < z.shape[0]:
        loss_rows[m] = _xent_row(z, y, w, dz, m)


@cuda.jit
def mse_rows(p, y, w, grad, loss_rows):
    """Per row m: ℓ = w_m · mean_c (p − y)², ∂/∂p = 2 w_m (p − y) / C (0 where w_m = 0)."""
    m = cuda.grid(1)
    if m < p.shape[0]:
        C = p.shape[1]
        acc = 0.0
        for c in range(C):
            diff = 0.0
            if w[m] > 0:
                diff = float(p[m, c]) - float(y[m, c])
            acc += diff * diff
            grad[m, c] = 2.0 * diff * w[m] / C
        loss_rows[m] = w[m] * acc / C


@cuda.jit
def bce_rows(z, y, w, grad, loss_rows):
    """Per row m: ℓ = w_m · mean_c softplus(z) − z·y (stable), ∂/∂z = w_m (σ(z) − y) / C."""
    m = cuda.grid(1)
    if m < z.shape[0]:
        C = z.shape[1]
        acc = 0.0
        for c in range(C):
            zc, yc = 0.0, 0.0
            if w[m] > 0:
                zc, yc = float(z[m, c]), float(y[m, c])
            relu = zc if zc > 0.0 else 0.0       # (no builtin max: see cuda_recurrence)
            acc += relu - zc * yc + math.log1p(math.exp(-abs(zc)))
            grad[m, c] = (0.5 * (1.0 + math.tanh(0.5 * zc)) - yc) * w[m] / C
        loss_rows[m] = w[m] * acc / C


@cuda.jit
def argmax_rows(z, ids):
    """``ids[m]`` = the first index of the largest entry of row m."""
    m = cuda.grid(1)
    if m < z.shape[0]:
        best = 0
        for c in range(1, z.shape[1]):
            if z[m, c] > z[m, best]:
                best = c
        ids[m] = best


@cuda.jit
def sample_rows(z, temperature, u, ids):
    """``ids[m]`` = the first c with Σ_{c' ≤ c} softmax(z[m] / temperature) > u[m]
    (0 if rounding leaves the sum at or below u[m]), in float64 as on the CPU."""
    m = cuda.grid(1)
    if m < z.shape[0]:
        C = z.shape[1]
        mx = float(z[m, 0]) / temperature
        for c in range(1, C):
            v = float(z[m, c]) / temperature
            if v > mx:
                mx = v
        s = 0.0
        for c in range(C):
            s += math.exp(float(z[m, c]) / temperature - mx)
        acc = 0.0
        ids[m] = 0
        for c in range(C):
            acc += math.exp(float(z[m, c]) / temperature - mx) / s
            if acc > u[m]:
                ids[m] = c
                break


@cuda.jit
def one_hot(ids, out):
    """``out[m] = e_{ids[m]}`` (out is (M, D))."""
    i = cuda.grid(1)
    M, D = out.shape
    if i < M * D:
        m = i // D
        out[m, i - m * D] = 1 if i - m * D == ids[m] else 0


@cuda.jit
def apply_eos(tok, done, eos):
    """``tok[n] = eos`` where ``done[n]``; then ``done[n] |= tok[n] == eos``."""
    n = cuda.grid(1)
    if n < tok.shape[0]:
        if done[n]:
            tok[n] = eos
        if tok[n] == eos:
            done[n] = True
