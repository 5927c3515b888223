"""numba_rnn: Numba-accelerated Elman RNNs you can train and take apart.

Public names: :class:`RNN`, :func:`clip_grad_norm`, :func:`clip_grad_value`,
:func:`total_norm`, :class:`NonFiniteGradientError`, and the :mod:`numba_rnn.init`
helpers.
"""
from . import init
from .clip import NonFiniteGradientError, clip_grad_norm, clip_grad_value, total_norm
from .rnn import RNN, ForwardCache

__version__ = "0.1.0"

__all__ = ["RNN", "ForwardCache", "clip_grad_norm", "clip_grad_value", "total_norm",
           "NonFiniteGradientError", "init", "__version__"]
