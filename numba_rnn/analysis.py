"""Gradient analysis: how far back in time the gradient reaches, and why.

Notation: a⟨t⟩ are the hidden states of one layer-direction, L = Σ_t L⟨t⟩ the loss,
``d_out`` = ∂L/∂out (T, N, dirs·H) — what the loss sends into the RNN's output (get it
from a model with :func:`output_grad`). All quantities are exact (float64 checks
against finite differences and explicit Jacobians live in the tests).

- :func:`hidden_grad_norms` — ‖∂L/∂a⟨t⟩‖ for every t, recorded by the BPTT kernel.
- :func:`temporal_credit` — C[t, k] = ‖∂L⟨t⟩/∂a⟨k⟩‖: how far the loss at t reaches back.
- :func:`jacobian_norms` — J[k] = batch mean of ‖∂a⟨T-1⟩/∂a⟨k⟩‖₂ (J[T-1] = 1).
- :func:`jacobian_singular_values`, :func:`lyapunov_exponents` — the spectrum of the
  Jacobian product and the finite-time Lyapunov exponents of the hidden dynamics.
- :func:`weight_grad_contributions` — ‖Σ_n δ⟨t⟩ a⟨t-1⟩ᵀ‖: which steps ∂L/∂W_aa comes from.
- :func:`weight_spectrum`, :func:`gradient_bound` — eigenvalues and singular values of
  W_aa, and the bounds (γ‖W_aa‖₂)^(T-1-k) and (γρ)^(T-1-k) they put on the gradient.

``layer`` and ``direction`` ("forward" or "reverse") select the layer-direction; for
the reverse direction time runs backwards, so "the last step" is t = 0.
"""
import functools

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from .kernels import NONLINEARITIES, backend_of, cpu
from .rnn import RNN

#: sup |g'(z)| of each activation: the γ in the gradient bounds
DERIVATIVE_BOUND = {"tanh": 1.0, "relu": 1.0}


def _host(a):
    be = backend_of(a)
    return a if be is None or be is cpu else be.to_host(a)


def _on_cpu(fn):
    """Analysis runs on the CPU. For an RNN on the GPU the weights are copied to a CPU
    twin once per call and device arrays come back to the host: the numbers are the
    CPU kernels' (the GPU's agree to rounding), and nothing here is time-critical."""
    @functools.wraps(fn)
    def wrapper(rnn, *args, **kwargs):
        if isinstance(rnn, RNN) and rnn.device != "cpu":
            twin = RNN(**dict(rnn.config(), device="cpu"), parallel=rnn.parallel)
            twin.params = {k: _host(v) for k, v in rnn.params.items()}
            rnn = twin
        return fn(rnn, *(_host(a) for a in args), **{k: _host(v) for k, v in kwargs.items()})
    return wrapper


def _suffix(rnn, layer, direction):
    if not isinstance(rnn, RNN):
        raise TypeError(f"rnn must be a numba_rnn.RNN, got {type(rnn).__name__} "
                        f"(for a model pass model.rnn or model.encoder)")
    if not 0 <= layer < rnn.num_layers:
        raise ValueError(f"layer must be in [0, {rnn.num_layers}), got {layer}")
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    if direction == "reverse" and not rnn.bidirectional:
        raise ValueError("direction='reverse' needs a bidirectional RNN")
    d = int(direction == "reverse")
    return d, f"l{layer}" + ("_reverse" if d else "")


def _states(rnn, x, h0, layer, d):
    """Forward pass; the time-major states A (T, N, H) of one layer-direction.

    The Jacobian analyses need finite states: NaN or inf (in ``x``, or from an
    overflow) raises ValueError naming the first step where they appear.
    """
    _, _, cache = rnn.forward(x, h0, training=False)
    A = cache.layers[layer].states[d]
    bad = np.nonzero(~np.isfinite(A).all(axis=(1, 2)))[0]
    if bad.size:
        raise ValueError(f"x gives non-finite hidden states from step {bad.min()} on (NaN or "
                         f"inf in x or h0, or an overflow); the Jacobian analysis needs "
                         f"finite states")
    return cache, A


def output_grad(model, **batch):
    """``(x, d_out)`` for a model's loss on ``batch``: the RNN's input (time-major) and
    ∂L/∂out, ready for :func:`hidden_grad_norms`, :func:`temporal_credit`, …"""
    _, _, info = model.loss_and_grad(**batch, return_info=True)
    x = batch.get("x", batch.get("src"))
    return np.asarray(_host(x)), _host(info["d_out"])


@_on_cpu
def hidden_grad_norms(rnn, x, d_out, d_hn=None, *, h0=None, lengths=None, per_sample=False):
    """‖∂L/∂a⟨t⟩‖ for every step, layer and direction.

    Returns ``{"l0": (T,), "l0_reverse": (T,), "l1": ...}`` — batch means, or (T, N)
    per sample with ``per_sample=True``. The backward kernel records these norms as
    it runs; nothing is recomputed.
    """
    _, _, cache = rnn.forward(x, h0, lengths=lengths, training=False)
    rnn.backward(cache, d_out, d_hn)
    norms = cache.hidden_grad_norms
    return {k: (v if per_sample else v.mean(axis=1)) for k, v in norms.items()}


@_on_cpu
def temporal_credit(rnn, x, d_out, *, h0=None, layer=0, direction="forward",
                    per_sample=False):
    """C[t, k] = ‖∂L⟨t⟩/∂a⟨k⟩‖, where L⟨t⟩ is the loss at step t alone.

    Row t is how strongly the loss at step t reaches each earlier state (k ≤ t; zero
    above the diagonal, or below it for the reverse direction). Returns (T, T), the
    batch mean, or (T, T, N) with ``per_sample=True``.

    A single-layer RNN uses one Numba kernel that carries all T per-step losses back
    together (one GEMM per step); for stacked RNNs the loss at t reaches a lower
    layer through the layers above, and each row is one backward pass.
    """
    d, key = _suffix(rnn, layer, direction)
    cache, A = _states(rnn, x, h0, layer, d)
    T, N, H = A.shape
    d_full = rnn._grad_input(d_out, "d_out", (T, N, rnn.num_directions * H), cache)
    if rnn.num_layers == 1:
        dA = np.ascontiguousarray(d_full[:, :, d * H:(d + 1) * H])
        C = np.empty((T, T, N), dtype=A.dtype)
        cpu.temporal_credit(A, rnn.params["W_aa_" + key], dA,
                            NONLINEARITIES[rnn.nonlinearity], bool(d), C)
    else:
        C = np.zeros((T, T, N), dtype=A.dtype)
        for t in range(T):
            d_t = np.zeros_like(d_full)
            d_t[t] = d_full[t]
            c = _time_major_copy(cache)
            rnn.backward(c, _user_layout(d_t, cache), None)
            C[t] = c.hidden_grad_norms[key]
    return C if per_sample else C.mean(axis=2)


def _time_major_copy(cache):
    """A cache that backward can use again (its norms are overwritten per call)."""
    from dataclasses import replace
    return replace(cache, hidden_grad_norms={}, deltas={})


def _user_layout(d, cache):
    """Time-major (T, N, F) → the layout backward expects for this cache."""
    if cache.unbatched:
        return d[:, 0]
    return d.transpose(1, 0, 2) if cache.batch_first else d


@_on_cpu
def weight_grad_contributions(rnn, x, d_out, *, h0=None, layer=0, direction="forward"):
    """‖Σ_n δ⟨t,n⟩ a⟨t-1,n⟩ᵀ‖_F for every t: the size of step t's term in ∂L/∂W_aa.

    Returns (T,); the terms sum (as matrices) to ∂L/∂W_aa.
    """
    d, key = _suffix(rnn, layer, direction)
    _, _, cache = rnn.forward(x, h0, training=False)
    rnn.backward(cache, d_out, keep_deltas=True)
    delta = cache.deltas[key].astype(np.float64)                       # (T, N, H)
    A = cache.layers[layer].states[d].astype(np.float64)
    a0 = cache.layers[layer].h0[d].astype(np.float64)
    prev = np.concatenate([a0[None], A[:-1]]) if not d else np.concatenate([A[1:], a0[None]])
    # ‖Σ_n u_n v_nᵀ‖_F² = Σ_{n,m} (u_n·u_m)(v_n·v_m)
    uu = np.einsum("tnh,tmh->tnm", delta, delta)
    vv = np.einsum("tnh,tmh->tnm", prev, prev)
    return np.sqrt(np.maximum(np.einsum("tnm,tnm->t", uu, vv), 0.0))


def _derivatives(A, nonlinearity):
    """g'(z⟨t⟩) from the states a⟨t⟩ = g(z⟨t⟩), float64 (T, N, H)."""
    A = A.astype(np.float64)
    return 1.0 - A * A if nonlinearity == "tanh" else (A > 0).astype(np.float64)


def _top_singular_value(P):
    """Largest singular value of a square matrix, to machine precision.

    Small matrices: a full SVD. Larger ones: Lanczos (ARPACK, tol=0, fixed start
    vector) — about 10x faster than an SVD at H = 256 and as accurate.
    """
    if P.shape[0] <= 32:
        return float(scipy.linalg.svdvals(P)[0])
    return float(scipy.sparse.linalg.svds(P, k=1, return_singular_vectors=False, tol=0,
                                          random_state=0)[0])


def _jacobian_products(rnn, x, h0, layer, direction):
    """Yield (k, P̃, log_scale) per sample: ∂a⟨last⟩/∂a⟨k⟩ = exp(log_scale)·P̃.

    Walks k from the last step back to the first, renormalising P̃ so that long
    products neither overflow nor underflow.
    """
    d, key = _suffix(rnn, layer, direction)
    _, A = _states(rnn, x, h0, layer, d)
    T, N, H = A.shape
    W = rnn.params["W_aa_" + key].astype(np.float64)
    gprime = _derivatives(A, rnn.nonlinearity)
    order = range(T) if d else range(T - 1, -1, -1)        # from the last step back
    P = np.repeat(np.eye(H)[None], N, axis=0)               # (N, H, H)
    log_scale = np.zeros(N)
    for k in order:
        yield k, P, log_scale
        P = (P * gprime[k][:, None, :]) @ W                  # P ← P · diag(g'(z<k>)) W_aa
        s = np.sqrt(np.einsum("nij,nij->n", P, P))
        s = np.where(s > 0, s, 1.0)
        P = P / s[:, None, None]
        log_scale = log_scale + np.log(s)


@_on_cpu
def jacobian_norms(rnn, x, h0=None, layer=0, *, direction="forward", log=False):
    """J[k] = batch mean of ‖∂a⟨T-1⟩/∂a⟨k⟩‖₂ (spectral norm), so J[T-1] = 1.

    Returns (T,). With ``log=True`` returns the batch mean of log ‖·‖₂ instead
    (finite even where the norms under- or overflow float64).
    """
    logs = {}
    for k, P, log_scale in _jacobian_products(rnn, x, h0, layer, direction):
        with np.errstate(divide="ignore"):
            logs[k] = [log_scale[n] + np.log(_top_singular_value(P[n]))
                       for n in range(P.shape[0])]
    out = np.array([logs[k] for k in range(len(logs))])               # (T, N)
    return out.mean(axis=1) if log else np.exp(out).mean(axis=1)


def _length(rnn, x):
    x = np.asarray(x)
    return x.shape[1] if (rnn.batch_first and x.ndim == 3) else x.shape[0]


@_on_cpu
def jacobian_singular_values(rnn, x, h0=None, layer=0, *, k=0, direction="forward",
                             log=False):
    """Singular values of ∂a⟨T-1⟩/∂a⟨k⟩ per sample, descending: (N, H).

    ``log=True`` gives natural logs (finite even for spans that under/overflow).
    """
    for step, P, log_scale in _jacobian_products(rnn, x, h0, layer, direction):
        if step == k:
            sv = np.stack([scipy.linalg.svdvals(p) for p in P])
            with np.errstate(divide="ignore"):
                logs = np.log(sv) + log_scale[:, None]
            return logs if log else np.exp(logs)
    raise ValueError(f"k must be a time step in [0, {_length(rnn, x)}), got {k}")


@_on_cpu
def lyapunov_exponents(rnn, x, h0=None, layer=0, *, direction="forward", n_exponents=None):
    """Finite-time Lyapunov exponents of the hidden dynamics along the trajectory.

    λ_i = (1/T) Σ_t log |R⟨t⟩_ii| from the QR re-orthonormalisation of the tangent
    dynamics (Benettin et al.): Q⟨t⟩R⟨t⟩ = diag(g'(z⟨t⟩)) W_aa Q⟨t-1⟩. Returns
    (N, n_exponents) per sample, descending; λ_1 < 0 means perturbations (and
    gradients) die out. ``n_exponents`` (default all H) keeps only the leading ones,
    which costs O(T·H²·n) instead of O(T·H³).
    """
    d, key = _suffix(rnn, layer, direction)
    _, A = _states(rnn, x, h0, layer, d)
    T, N, H = A.shape
    m = H if n_exponents is None else int(n_exponents)
    if not 1 <= m <= H:
        raise ValueError(f"n_exponents must be in [1, {H}], got {n_exponents}")
    W = rnn.params["W_aa_" + key].astype(np.float64)
    gprime = _derivatives(A, rnn.nonlinearity)
    order = range(T - 1, -1, -1) if d else range(T)
    out = np.empty((N, m))
    for n in range(N):
        Q = np.eye(H, m)
        total = np.zeros(m)
        for t in order:
            Q, R = np.linalg.qr(gprime[t, n][:, None] * (W @ Q))
            with np.errstate(divide="ignore"):
                total += np.log(np.abs(np.diag(R)))
        out[n] = np.sort(total / T)[::-1]
    return out


@_on_cpu
def weight_spectrum(rnn, layer=0, *, direction="forward"):
    """Eigenvalues, singular values, spectral radius ρ and norm ‖W_aa‖₂ of W_aa."""
    _, key = _suffix(rnn, layer, direction)
    W = rnn.params["W_aa_" + key].astype(np.float64)
    eig = np.linalg.eigvals(W)
    sv = scipy.linalg.svdvals(W)
    return {"eigenvalues": eig, "singular_values": sv,
            "spectral_radius": float(np.max(np.abs(eig))), "spectral_norm": float(sv[0])}


@_on_cpu
def gradient_bound(rnn, T, layer=0, *, direction="forward"):
    """The theory next to the measured curves, for k = 0 … T-1.

    ``norm_bound`` (γ‖W_aa‖₂)^(T-1-k) bounds ‖∂a⟨T-1⟩/∂a⟨k⟩‖₂ strictly (γ = sup|g'|);
    ``radius_rate`` (γρ)^(T-1-k) is its asymptotic rate (the two agree for normal
    W_aa, e.g. ρ·orthogonal). Below 1 the gradient vanishes geometrically; above 1 it
    may explode.
    """
    spec = weight_spectrum(rnn, layer, direction=direction)
    gamma = DERIVATIVE_BOUND[rnn.nonlinearity]
    span = np.arange(T - 1, -1, -1, dtype=np.float64)
    return {"norm_bound": (gamma * spec["spectral_norm"]) ** span,
            "radius_rate": (gamma * spec["spectral_radius"]) ** span}
