"""Gradient clipping over a dict of gradients, computed by Numba kernels.

``clip_grad_norm`` treats all gradients as one long vector (as
``torch.nn.utils.clip_grad_norm_`` does); ``clip_grad_value`` clamps elementwise.
Both work in place.
"""
import math
import warnings

import numpy as np

from .kernels import backend_of, cpu


class NonFiniteGradientError(FloatingPointError):
    """The total gradient norm is NaN or infinite."""


class NonFiniteGradientWarning(RuntimeWarning):
    """A backward pass produced NaN or infinite gradients (see the message for where)."""


def _gradient_arrays(grads):
    """The arrays of ``grads`` (a dict, a sequence of arrays, or one array)."""
    if isinstance(grads, np.ndarray):
        items = [("grads", grads)]
    elif isinstance(grads, dict):
        items = [(f"grads[{k!r}]", v) for k, v in grads.items()]
    elif isinstance(grads, (list, tuple)):
        items = [(f"grads[{i}]", v) for i, v in enumerate(grads)]
    else:
        raise TypeError(f"grads must be a dict of arrays (as returned by RNN.backward), "
                        f"a list of arrays or an array, got {type(grads).__name__}")
    devices = set()
    for name, g in items:
        be = backend_of(g)
        if be is None or np.dtype(g.dtype).kind != "f":
            raise TypeError(f"{name} must be a floating-point ndarray or device array, got "
                            f"{type(g).__name__} {getattr(g, 'dtype', '')}".rstrip())
        if be is cpu and not g.flags.writeable:
            raise ValueError(f"{name} is read-only; clipping works in place")
        devices.add(be)
    if len(devices) > 1:
        raise TypeError("grads mixes host (NumPy) and device arrays; clip them separately")
    return [g for _, g in items]


def _on_gpu(arrays):
    """The CUDA kernel module if ``arrays`` are device arrays, else None."""
    be = backend_of(arrays[0]) if arrays else cpu
    if be is cpu:
        return None
    return be, [be.inplace_view(g, "each gradient") for g in arrays]


def _apply_flat(g, fn, *args):
    """Run an in-place flat kernel on ``g`` of any memory layout; returns fn's result."""
    if g.flags.c_contiguous or g.flags.f_contiguous:
        return fn(g.ravel(order="K"), *args)      # a view: the kernel writes into g
    flat = np.ascontiguousarray(g).ravel()        # strided: work on a copy, write back
    result = fn(flat, *args)
    g[...] = flat.reshape(g.shape)
    return result


def total_norm(grads, norm_type=2.0):
    """The p-norm of all gradients taken together (no clipping), as a Python float."""
    arrays = _gradient_arrays(grads)
    p = _check_norm_type(norm_type)
    gpu = _on_gpu(arrays)
    if gpu is not None:                   # reduced on the device; one number comes back
        be, arrays = gpu
        return float(be.norm_and_coef(arrays, p).copy_to_host()[0])
    partials = [cpu.norm_partial(g.ravel(order="K"), p) for g in arrays]
    if not partials:
        return 0.0
    if any(math.isnan(v) for v in partials):
        return math.nan
    if p == math.inf:
        return float(max(partials))
    total = math.fsum(partials)
    return total if p == 1.0 else (math.inf if math.isinf(total) else total ** (1.0 / p))


def clip_grad_norm(grads, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients in place so their joint p-norm is at most ``max_norm``.

    Parameters
    ----------
    grads : dict[str, ndarray] (or a list of arrays)
        Modified in place.
    max_norm : float > 0
    norm_type : float ≥ 1 or ``inf``
        The p of the norm: ‖g‖_p = (Σ|g_i|^p)^(1/p), or max|g_i| for inf.
        Partial sums are accumulated in float64 for every gradient dtype.
    error_if_nonfinite : bool
        Raise :class:`NonFiniteGradientError` if the total norm is NaN or inf.
        Otherwise a non-finite norm gives a ``RuntimeWarning`` and the gradients are
        left unscaled (scaling by NaN would only hide where the problem was).

    Returns
    -------
    float
        The total norm before clipping. When it exceeds ``max_norm`` every gradient
        is multiplied by ``max_norm / (norm + 1e-6)``, as torch does.
    """
    max_norm = float(max_norm)
    if not max_norm > 0 or math.isinf(max_norm):
        raise ValueError(f"max_norm must be a positive finite number, got {max_norm}")
    arrays = _gradient_arrays(grads)
    gpu = _on_gpu(arrays)
    if gpu is not None:
        # norm and coefficient computed on the device, the scaling reads the
        # coefficient there: only the norm itself is copied back, once
        be, arrays = gpu
        norm_coef = be.norm_and_coef(arrays, _check_norm_type(norm_type), max_norm)
        be.scale_by_(arrays, norm_coef)
        norm = float(norm_coef.copy_to_host()[0])
    else:
        norm = total_norm(arrays, norm_type)
    if not math.isfinite(norm):
        msg = (f"the total {norm_type}-norm of the gradients is {norm}: they hold NaN or "
               f"inf, or overflow")
        if error_if_nonfinite:
            raise NonFiniteGradientError(msg)
        warnings.warn(msg + "; gradients left unscaled", RuntimeWarning, stacklevel=2)
        return norm
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0 and gpu is None:
        for g in arrays:
            _apply_flat(g, cpu.scale_, coef)
    return norm


def clip_grad_value(grads, clip_value):
    """Clamp every gradient entry to ``[-clip_value, clip_value]`` in place.

    NaN entries stay NaN. Returns the number of entries that were clamped (0 means
    clipping did not fire).
    """
    c = float(clip_value)
    if not c > 0 or math.isinf(c):
        raise ValueError(f"clip_value must be a positive finite number, got {clip_value}")
    arrays = _gradient_arrays(grads)
    gpu = _on_gpu(arrays)
    if gpu is not None:
        be, arrays = gpu
        return int(sum(be.clamp_(g, c) for g in arrays))
    return int(sum(_apply_flat(g, cpu.clamp_, c) for g in arrays))


def _check_norm_type(norm_type):
    try:
        p = float(norm_type)
    except (TypeError, ValueError) as err:
        raise TypeError(f"norm_type must be a number ≥ 1 or inf, got {norm_type!r}") from err
    if not p >= 1.0:
        raise ValueError(f"norm_type must be ≥ 1 or inf, got {norm_type}")
    return p
