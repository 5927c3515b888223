"""Numeric kernels, one module per device with the same function names.

``get_backend("cpu")`` returns :mod:`numba_rnn.kernels.cpu`. Layer code calls only
the names below, so it is written once for every device:

- ``input_projection(x, W_ax, b) -> U``
- ``recurrence_forward(U, W_aa, a0, kind, reverse, parallel, lengths) -> A``
- ``recurrence_backward(dA, A, W_aa, dh_n, kind, reverse, parallel, lengths)
  -> (delta, dh0, norms)``
- ``weight_grads(delta, x, A, a0, reverse) -> (dW_ax, dW_aa, db)``
- ``input_grad(delta, W_ax) -> dx``
- ``layer_grads(delta, x, A, a0, W_ax, reverse) -> (dW_ax, dW_aa, db, dx)``: both of
  the above, one call
- ``norm_partial(g, p)``, ``scale_(g, c)``, ``clamp_(g, c)`` (clipping; the CUDA
  twin reduces on the device: ``norm_and_coef``, ``scale_by_``, ``clamp_``)
- ``sgd_``, ``adam_``, ``rmsprop_``, ``adagrad_`` (optimizer updates)
- array plumbing for the layer code: ``asarray``, ``empty``, ``zeros``, ``copy``,
  ``assign_``, ``swap01``, ``concat_last``, ``take_last``, ``add_``, ``mul_``,
  ``zero_padding``, ``dropout_mask``, ``to_host``, ``from_host``, ``is_array``,
  ``on_device``, ``synchronize``
"""
import sys

import numpy as np

from .activations import NONLINEARITIES

DEVICES = ("cpu", "cuda")


def get_backend(device):
    """Return the kernel module for ``device`` ('cpu' or 'cuda').

    ``"cuda"`` imports numba.cuda only when asked for, and raises
    :class:`~numba_rnn.kernels.cuda.CudaUnavailableError` (a ``RuntimeError``) when
    no GPU is usable.
    """
    if device == "cpu":
        from . import cpu
        return cpu
    if device == "cuda":
        from . import cuda
        cuda.check_available()
        return cuda
    raise ValueError(f"device must be one of {DEVICES}, got {device!r}")


class CudaUnavailableError(RuntimeError):
    """``device="cuda"`` was asked for, but numba finds no usable GPU."""


def backend_of(array):
    """The kernel module whose arrays ``array`` is: cpu for NumPy arrays, cuda for
    numba device arrays (or anything with ``__cuda_array_interface__``), else None.
    numba.cuda is imported only if a device array is actually seen."""
    if isinstance(array, np.ndarray):
        from . import cpu
        return cpu
    gpu = sys.modules.get(__name__ + ".cuda")
    if gpu is not None and gpu.is_array(array):
        return gpu
    if hasattr(array, "__cuda_array_interface__"):
        return get_backend("cuda")
    return None


__all__ = ["NONLINEARITIES", "DEVICES", "CudaUnavailableError", "backend_of", "get_backend"]
