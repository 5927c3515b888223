"""Weight initialisers for one layer-direction, and spectral-radius scaling.

Every initialiser returns ``(W_ax (H, D), W_aa (H, H), b (H,))`` as float64; the
model casts to its dtype.

==============  ===========================================================
``init=``       what it draws
==============  ===========================================================
``"uniform"``   torch's default: every entry U(-1/√H, 1/√H), bias included
``"xavier"``    Glorot uniform for W_ax and W_aa, zero bias
``"orthogonal"``  W_aa a random orthogonal matrix, W_ax Glorot uniform, zero bias
``"identity"``  IRNN (Le, Jaitly & Hinton 2015): W_aa = I, W_ax ~ N(0, 0.001²),
                zero bias; pair it with ``nonlinearity="relu"``
==============  ===========================================================

``spectral_radius=ρ`` then rescales W_aa so that its largest eigenvalue modulus
is ρ (for an orthogonal or identity W_aa every eigenvalue then has modulus ρ).
"""
import numpy as np

INITS = ("uniform", "xavier", "orthogonal", "identity")


def xavier_uniform(rng, fan_out, fan_in):
    """Glorot uniform: U(-a, a) with a = √(6 / (fan_in + fan_out)); shape (fan_out, fan_in)."""
    a = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=(fan_out, fan_in))


def orthogonal(rng, n):
    """A Haar-random orthogonal (n, n) matrix (QR of a Gaussian, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def spectral_radius(W):
    """Largest eigenvalue modulus of a square matrix."""
    return float(np.max(np.abs(np.linalg.eigvals(W)))) if W.size else 0.0


def scale_to_spectral_radius(W, rho):
    """Return ``W`` rescaled so that its spectral radius is ``rho``."""
    current = spectral_radius(W)
    if current == 0.0:
        raise ValueError("cannot rescale W_aa to a spectral radius: it is nilpotent "
                         "(all eigenvalues are 0)")
    return W * (rho / current)


def init_layer(rng, init, input_size, hidden_size, bias=True):
    """Draw one layer-direction's weights with initialiser ``init`` (see module doc)."""
    H, D = hidden_size, input_size
    if init == "uniform":
        k = 1.0 / np.sqrt(H)
        W_ax = rng.uniform(-k, k, size=(H, D))
        W_aa = rng.uniform(-k, k, size=(H, H))
        b = rng.uniform(-k, k, size=H)
    elif init == "xavier":
        W_ax = xavier_uniform(rng, H, D)
        W_aa = xavier_uniform(rng, H, H)
        b = np.zeros(H)
    elif init == "orthogonal":
        W_ax = xavier_uniform(rng, H, D)
        W_aa = orthogonal(rng, H)
        b = np.zeros(H)
    elif init == "identity":
        W_ax = rng.normal(0.0, 1e-3, size=(H, D))
        W_aa = np.eye(H)
        b = np.zeros(H)
    else:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return W_ax, W_aa, (b if bias else None)
