"""numba_rnn: Numba-accelerated Elman RNNs you can train and take apart.

- :class:`RNN` — the engine (torch.nn.RNN's arguments and shapes, explicit backward);
- :mod:`~numba_rnn.models` — one-to-one, many-to-one, one-to-many, many-to-many,
  seq2seq; :mod:`~numba_rnn.losses`, :mod:`~numba_rnn.layers`;
- :func:`clip_grad_norm`, :func:`clip_grad_value`; :mod:`~numba_rnn.optim`;
  :func:`~numba_rnn.train.fit`; :mod:`~numba_rnn.tasks`;
- :mod:`~numba_rnn.analysis` and :mod:`~numba_rnn.plot` — gradient analysis and figures.
"""
from . import analysis, init, layers, losses, models, optim, plot, sweeps, tasks, train
from .kernels import CudaUnavailableError
from .clip import (NonFiniteGradientError, NonFiniteGradientWarning, clip_grad_norm,
                   clip_grad_value, total_norm)
from .models import ManyToMany, ManyToOne, OneToMany, OneToOne, Seq2Seq, load_model
from .optim import SGD, Adagrad, Adam, RMSprop
from .rnn import RNN, ForwardCache
from .sweeps import sweep
from .train import ArrayData, History, fit

__version__ = "0.1.0"

__all__ = ["SGD", "RNN", "Adagrad", "Adam", "ArrayData", "ForwardCache", "History",
           "ManyToMany", "ManyToOne", "NonFiniteGradientError", "NonFiniteGradientWarning",
           "OneToMany", "OneToOne",
           "RMSprop", "Seq2Seq", "CudaUnavailableError", "__version__", "analysis",
           "clip_grad_norm",
           "clip_grad_value", "fit", "init", "layers", "load_model", "losses", "models",
           "optim", "plot", "sweep", "sweeps", "tasks", "total_norm", "train"]
