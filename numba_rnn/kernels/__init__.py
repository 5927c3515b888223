"""Numeric kernels, one module per device with the same function names.

``get_backend("cpu")`` returns :mod:`numba_rnn.kernels.cpu`. Layer code calls only
the names below, so it is written once for every device:

- ``input_projection(x, W_ax, b) -> U``
- ``recurrence_forward(U, W_aa, a0, kind, reverse, parallel, lengths) -> A``
- ``recurrence_backward(dA, A, W_aa, dh_n, kind, reverse, parallel, lengths)
  -> (delta, dh0, norms)``
- ``weight_grads(delta, x, A, a0, reverse) -> (dW_ax, dW_aa, db)``
- ``input_grad(delta, W_ax) -> dx``
- ``norm_partial(g, p)``, ``scale_(g, c)``, ``clamp_(g, c)`` (clipping)
"""
from .activations import NONLINEARITIES

DEVICES = ("cpu",)


def get_backend(device):
    """Return the kernel module for ``device`` ('cpu')."""
    if device == "cpu":
        from . import cpu
        return cpu
    if device == "cuda":
        raise ValueError("device='cuda' is not available in this version of numba_rnn: "
                         "only the CPU backend is built so far; use device='cpu'")
    raise ValueError(f"device must be one of {DEVICES}, got {device!r}")


__all__ = ["NONLINEARITIES", "DEVICES", "get_backend"]
