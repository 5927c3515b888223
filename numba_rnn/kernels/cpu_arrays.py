"""Array plumbing for the layer code on the CPU: NumPy one-liners.

The CUDA backend has the same names (:mod:`numba_rnn.kernels.cuda`), each a small
device kernel, so :mod:`numba_rnn.rnn` is written once for both devices.
"""
import numpy as np
from numba import njit

from .. import _validate as V


def is_array(value):
    """True for an array of this backend (a NumPy array)."""
    return isinstance(value, np.ndarray)


def on_device(value):
    """The CPU backend never returns device arrays."""
    return False


def asarray(value, name, dtype):
    """``value`` as a C-contiguous float array of ``dtype`` (see ``float_array``)."""
    from . import backend_of
    if not isinstance(value, np.ndarray) and backend_of(value) not in (None, _this()):
        raise TypeError(f"{name} is a GPU array, but this model runs on the CPU; "
                        f"copy it to the host or build the model with device='cuda'")
    return V.float_array(value, name, dtype)


def inplace_view(value, name):
    """``value`` itself, checked to be a C-contiguous array (updated in place)."""
    if not value.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous to be updated in place")
    return value


def _this():
    from . import cpu
    return cpu


def from_host(a):
    return a


def to_host(a):
    return np.asarray(a)


def empty(shape, dtype):
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype):
    return np.zeros(shape, dtype=dtype)


def assign_(dst, src):
    dst[...] = src
    return dst


def copy(a):
    return a.copy()


def row_view(a, i):
    """``a[i]``, a view."""
    return a[i]


def rows_view(a, lo, hi):
    """``a[lo:hi]``, a view."""
    return a[lo:hi]


def swap01(a):
    """(I, J, K) → (J, I, K), a view."""
    return a.transpose(1, 0, 2)


def concat_last(arrays):
    return np.concatenate(arrays, axis=2)


def take_last(a, lo, hi):
    return np.ascontiguousarray(a[:, :, lo:hi])


def add_(a, b):
    a += b
    return a


def mul_(a, b):
    a *= b
    return a


def zero_padding(out, lengths):
    """``out`` (T, N, F) with the steps t ≥ lengths[n] set to zero (a new array)."""
    valid = np.arange(out.shape[0])[:, None] < lengths[None, :]          # (T, N)
    return out * valid[:, :, None].astype(out.dtype)


def dropout_mask(rng, shape, p, dtype):
    """Inverted-dropout multipliers: 0 with probability p, else 1/(1-p)."""
    keep = rng.random(shape) >= p
    return (keep / (1.0 - p)).astype(dtype)


def nonfinite(arrays):
    """Per array, True if it holds NaN or ±inf."""
    return np.array([_nonfinite(a) for a in arrays], dtype=bool)


#: The exponent field of each float dtype, as an unsigned integer of its width: all ones
#: means ±inf or NaN.
_EXPONENT = {np.dtype(np.float32): (np.uint32, np.uint32(0x7F800000)),
             np.dtype(np.float64): (np.uint64, np.uint64(0x7FF0000000000000))}


def _nonfinite(a):
    """True if ``a`` holds NaN or ±inf: one pass over its bits (no temporary) for a
    C-contiguous float32/float64 array — ~1 µs for a small gradient where
    ``np.isfinite(a).all()`` took ~5 — else NumPy's test."""
    found = _EXPONENT.get(a.dtype)
    if found is None or not a.flags.c_contiguous:
        return not np.isfinite(a).all()
    uint, exponent = found
    return _exponent_all_ones(a.reshape(-1).view(uint), exponent)


@njit(cache=True, nogil=True)
def _exponent_all_ones(bits, exponent):
    found = False
    for i in range(bits.size):                  # an OR reduction: vectorised
        found |= (bits[i] & exponent) == exponent
    return found


def kernel_lengths(lengths):
    """``lengths`` as the kernels take them (here: unchanged; None means all T)."""
    return lengths


def synchronize():
    """Nothing runs asynchronously on the CPU."""


# --- output heads: dense layers, activations, picking steps ------------------------
def linear(h, W, b):
    """``h·Wᵀ + b``: (M, F) → (M, O)."""
    return h @ W.T + b


def linear_backward(d, h_in, W):
    """Gradients of :func:`linear` from ``d`` (M, O): ``(dW, db, d_in)``."""
    return d.T @ h_in, d.sum(axis=0), d @ W


def act_(h, kind):
    """tanh (kind 0) or relu (kind 1) in place."""
    if kind == 0:
        np.tanh(h, out=h)
    else:
        np.maximum(h, 0, out=h)                  # NaN propagates
    return h


def act_grad_(d, h, kind):
    """``d *= g'(z)`` in place, written with h = g(z)."""
    d *= (1 - h * h) if kind == 0 else (h > 0)
    return d


def gather_steps(out, last):
    """``out[last[n], n]`` for every n: (T, N, F) → (N, F)."""
    return out[last, np.arange(out.shape[1])]


def scatter_steps(d_feats, last, shape):
    """A zero (T, N, F) array with ``[last[n], n] = d_feats[n]``."""
    d_out = np.zeros(shape, dtype=d_feats.dtype)
    d_out[last, np.arange(shape[1])] = d_feats
    return d_out


# --- generation --------------------------------------------------------------------
def argmax_rows(z):
    return z.argmax(axis=1)


def sample_rows(z, temperature, u):
    """Class ids drawn from softmax(z / temperature) with uniforms ``u`` (N, 1)."""
    s = z.astype(np.float64) / temperature
    e = np.exp(s - s.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    return (p.cumsum(axis=1) > u).argmax(axis=1)


def one_hot(ids, D, dtype):
    return np.eye(D, dtype=dtype)[ids]


def stack(arrays):
    return np.stack(arrays)


# --- encoder-decoder bridges -------------------------------------------------------
def layers_to_cols(a):
    """(L, N, W) → (N, L·W): each block of W columns is one layer's slice."""
    L, N, W = a.shape
    return np.ascontiguousarray(a.transpose(1, 0, 2)).reshape(N, L * W)


def cols_to_layers(a, L, W):
    """(N, L·W) → (L, N, W), the inverse of :func:`layers_to_cols`."""
    return np.ascontiguousarray(a.reshape(a.shape[0], L, W).transpose(1, 0, 2))


def apply_eos(tok, done, eos):
    """After ``eos`` a sequence keeps emitting it: updates ``tok`` and ``done`` in place."""
    tok[done] = eos
    done |= tok == eos
    return tok
