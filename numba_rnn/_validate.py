"""Validation at the public boundary: shapes, dtypes and sizes, with clear errors.

Kernels trust their inputs (Numba does no bounds checking), so everything a user
hands in passes through here first.
"""
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def model_dtype(dtype):
    """Normalise the ``dtype=`` argument to float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from err
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def positive_int(value, name):
    """An integer ≥ 1 (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def float_array(value, name, dtype):
    """Convert ``value`` to a C-contiguous array of the model's float ``dtype``.

    Lists, non-contiguous, Fortran-ordered and read-only arrays are accepted (copied
    where needed). A float array of the other precision is cast. Integer, bool,
    complex, object and string data raise ``TypeError``: silently turning labels or
    complex numbers into hidden-state inputs is almost always a bug.
    """
    arr = np.asarray(value)
    kind = arr.dtype.kind
    if kind != "f":
        what = {"b": "bool", "i": "integer", "u": "unsigned integer", "c": "complex",
                "O": "object", "U": "string", "S": "bytes"}.get(kind, str(arr.dtype))
        raise TypeError(f"{name} must hold floating-point numbers (float32 or float64), "
                        f"got {what} data of dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def expect_shape(arr, name, shape, meaning):
    """Raise ``ValueError`` unless ``arr.shape == shape``; ``meaning`` names the axes."""
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {meaning} = {tuple(shape)}, "
                         f"got {arr.shape}")


def choice(value, name, options):
    """``value`` must be one of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value
