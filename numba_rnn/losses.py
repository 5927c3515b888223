"""Per-step losses summed over time, with masks.

Every loss takes the model's raw output at each step — logits for the classification
losses — and returns ``(L, dL/d(output))``. Shapes: outputs (T, N, C) with targets
(T, N) class ids (cross-entropy) or (T, N, C) values (MSE, BCE); a single step may be
given as (N, C) with targets (N,) or (N, C). ``mask`` (T, N) of bools or weights
selects which steps count (padding, many-to-one).

With ℓ⟨t,n⟩ the loss of sequence n at step t and m⟨t,n⟩ its mask:

- ``reduction="sum"`` (default): L = (1/N) Σ_t Σ_n m⟨t,n⟩ ℓ⟨t,n⟩ — summed over time,
  averaged over the batch (so a learning rate does not depend on the batch size);
- ``reduction="mean"``: L = Σ_t Σ_n m⟨t,n⟩ ℓ⟨t,n⟩ / Σ_t Σ_n m⟨t,n⟩ — the mean over
  every step that counts.

Per-step losses:

- ``cross_entropy``: ℓ = logsumexp(z) − z[y], on logits z (numerically stable);
- ``mse``: ℓ = mean over the C outputs of (ŷ − y)²;
- ``bce`` (binary cross-entropy with logits): ℓ = mean over C of
  max(z, 0) − z·y + log(1 + e^(−|z|)), targets y in [0, 1].
"""
import numpy as np

from .kernels import backend_of, cpu

REDUCTIONS = ("sum", "mean")
LOSSES = ("cross_entropy", "mse", "bce")
#: the output activation g_y that goes with each loss (used for predictions)
OUTPUT_ACTIVATION = {"cross_entropy": "softmax", "mse": "identity", "bce": "sigmoid"}


def lengths_mask(lengths, T):
    """(T, N) bool mask of the valid steps: t < lengths[n]."""
    lengths = np.asarray(lengths)
    return np.arange(T)[:, None] < lengths[None, :]


def _as_steps(output, name):
    """Output as (T, N, C), and whether it came as a single step (N, C). Device arrays
    (a model on ``device="cuda"``) are accepted: the loss is then computed there."""
    be = backend_of(output)
    if be is None or np.dtype(output.dtype).kind != "f":
        raise TypeError(f"{name} must be a float ndarray, got "
                        f"{type(output).__name__} {getattr(output, 'dtype', '')}")
    if output.ndim == 2:
        return output.reshape(1, *output.shape), True
    if output.ndim != 3:
        raise ValueError(f"{name} must be (T, N, C) or (N, C), got shape {output.shape}")
    return output, False


def _weights(mask, T, N, reduction):
    """Row weights m⟨t,n⟩ × the reduction's scale, flat (T·N,) float64."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if mask is None:
        m = np.ones((T, N))
    else:
        m = _host(mask)
        if m.dtype.kind not in "biuf":
            raise TypeError(f"mask must hold bools or float weights, got dtype {m.dtype}")
        if m.ndim == 1 and T == 1:
            m = m[None]
        if m.shape != (T, N):
            raise ValueError(f"mask must have shape (T, N) = {(T, N)}, got {m.shape}")
        m = m.astype(np.float64)
        if not np.all(np.isfinite(m)) or (m < 0).any():
            raise ValueError("mask must hold finite, non-negative weights")
    if reduction == "sum":
        scale = 1.0 / N
    else:
        total = m.sum()
        if total == 0:
            raise ValueError("mask selects no step: the mean over zero steps is undefined")
        scale = 1.0 / total
    return (m * scale).reshape(-1)


def softmax_cross_entropy(logits, targets, mask=None, reduction="sum"):
    """Softmax cross-entropy on logits (T, N, C) against class ids (T, N).

    Returns ``(L, dL/dlogits)``; see the module doc for the reductions.
    """
    z, single = _as_steps(logits, "logits")
    T, N, C = z.shape
    y = _host(targets)
    if y.dtype.kind not in "iu":
        raise TypeError(f"targets for cross_entropy must be integer class ids, got dtype "
                        f"{y.dtype}")
    if single and y.shape == (N,):                   # one step: targets (N,) exactly
        y = y[None]
    elif single:
        y = y.reshape(-1, *y.shape) if y.ndim == 1 else y[None]   # never (T, N): an error
    if y.shape != (T, N):
        raise ValueError(f"targets must have shape {(T, N) if not single else (N,)} to match "
                         f"logits {logits.shape}, got {np.shape(targets)}")
    w = _weights(mask, T, N, reduction)
    y = np.ascontiguousarray(y, dtype=np.int64).reshape(-1)
    counted = w > 0
    if counted.any() and (y[counted].min() < 0 or y[counted].max() >= C):
        raise ValueError(f"targets must be class ids in [0, {C}), got values from "
                         f"{y[counted].min()} to {y[counted].max()}")
    y = np.where(counted, y, 0)
    if backend_of(z) is not cpu:                      # on the GPU: one kernel, rows back
        loss, dz = backend_of(z).row_loss("cross_entropy", z.reshape(T * N, C), y, w)
        return loss, dz.reshape(*logits.shape)
    z2 = np.ascontiguousarray(z).reshape(T * N, C)
    dz = np.empty_like(z2)
    loss = cpu.softmax_xent(z2, y, w, dz)
    return float(loss), dz.reshape(logits.shape)


def _host(a):
    """Targets and masks are small and validated on the host: device arrays come back."""
    be = backend_of(a)
    return np.asarray(a if be is None else be.to_host(a))


def _matching_targets(output, targets, name):
    y = _host(targets)
    if y.dtype.kind != "f":
        raise TypeError(f"targets for {name} must be floats, got dtype {y.dtype}")
    if y.shape != output.shape:
        raise ValueError(f"targets must have the shape of the output {output.shape}, "
                         f"got {y.shape}")
    return y.astype(output.dtype, copy=False)


def _on_device(name, out3, y, w, shape):
    """A per-row loss on the GPU: ``out3`` (T, N, C) device, ``y`` host targets of the
    same shape, ``w`` (T·N,) row weights; returns ``(L, gradient shaped like shape)``."""
    T, N, C = out3.shape
    loss, grad = backend_of(out3).row_loss(name, out3.reshape(T * N, C),
                                           y.reshape(T * N, C), w)
    return loss, grad.reshape(*shape)


def mse(pred, targets, mask=None, reduction="sum"):
    """Mean squared error per step, ℓ = mean_c (ŷ − y)²; returns ``(L, dL/dŷ)``."""
    p3, _ = _as_steps(pred, "pred")
    y = _matching_targets(pred, targets, "mse").reshape(p3.shape)
    T, N, C = p3.shape
    if backend_of(pred) is not cpu:
        return _on_device("mse", p3, y, _weights(mask, T, N, reduction), pred.shape)
    w = _weights(mask, T, N, reduction).reshape(T, N, 1)
    diff = np.where(w > 0, p3 - y, 0)           # masked steps count for nothing, even NaN
    loss = float(np.sum(w * diff.astype(np.float64) ** 2) / C)
    grad = (diff * (2.0 / C) * w).astype(pred.dtype)
    return loss, grad.reshape(pred.shape)


def bce_with_logits(logits, targets, mask=None, reduction="sum"):
    """Binary cross-entropy on logits, ℓ = mean_c softplus(z) − z·y; returns ``(L, dL/dz)``."""
    z3, _ = _as_steps(logits, "logits")
    y = _matching_targets(logits, targets, "bce").reshape(z3.shape)
    if ((y < 0) | (y > 1)).any():
        raise ValueError("targets for bce must lie in [0, 1]")
    T, N, C = z3.shape
    if backend_of(logits) is not cpu:
        return _on_device("bce", z3, y, _weights(mask, T, N, reduction), logits.shape)
    w = _weights(mask, T, N, reduction).reshape(T, N, 1)
    counted = w > 0                              # masked steps count for nothing, even NaN
    z64 = np.where(counted, z3.astype(np.float64), 0.0)
    y = np.where(counted, y, 0)
    per = np.maximum(z64, 0) - z64 * y + np.log1p(np.exp(-np.abs(z64)))
    loss = float(np.sum(w * per) / C)
    sig = 0.5 * (1.0 + np.tanh(0.5 * z64))                       # stable sigmoid
    grad = ((sig - y) * w / C).astype(logits.dtype)
    return loss, grad.reshape(logits.shape)


_FUNCTIONS = {"cross_entropy": softmax_cross_entropy, "mse": mse, "bce": bce_with_logits}


def get_loss(name):
    """The loss function called ``name`` (one of :data:`LOSSES`)."""
    if name not in _FUNCTIONS:
        raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")
    return _FUNCTIONS[name]
