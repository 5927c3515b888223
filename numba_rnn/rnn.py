"""``RNN``: a stacked, optionally bidirectional Elman RNN with explicit forward/backward.

Shapes follow ``torch.nn.RNN``: T time steps, N batch, D input size, H hidden size,
L layers, ``dirs`` = 2 if bidirectional else 1.

    a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a)        g = tanh | relu

This module holds the parameters and the orchestration over layers and directions;
the numeric work happens in :mod:`numba_rnn.kernels`.
"""
import json
import os
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import _validate as V
from .init import INITS, init_layer, scale_to_spectral_radius
from .kernels import NONLINEARITIES, get_backend
from .memory import check_fits

_CONFIG_KEY = "__numba_rnn_config__"
_ADVICE = ("Use truncated BPTT for long sequences (fit(..., tbptt=k)), a smaller batch, "
           "or float32.")
_FORMAT = "numba_rnn.RNN/1"


@dataclass
class LayerCache:
    """What BPTT needs from one layer: its input, dropout mask and hidden states."""
    input: np.ndarray                 # (T, N, D_k) the layer's input after dropout
    mask: np.ndarray | None           # (T, N, D_k) dropout multipliers, or None
    h0: list                          # per direction: (N, H) initial state
    states: list                      # per direction: (T, N, H) every a<t>


@dataclass
class ForwardCache:
    """Returned by :meth:`RNN.forward`; consumed by :meth:`RNN.backward`.

    After ``backward`` it also holds ``hidden_grad_norms``: for each layer-direction
    suffix (``"l0"``, ``"l0_reverse"``, …) the per-sample norms ‖∂L/∂a<t>‖ with shape
    (T, N), recorded by the backward kernel at no extra cost.
    """
    layers: list
    T: int
    N: int
    batch_first: bool
    unbatched: bool
    dtype: np.dtype
    lengths: np.ndarray | None = None  # (N,) valid steps per sequence, None: all T
    hidden_grad_norms: dict = field(default_factory=dict)
    deltas: dict = field(default_factory=dict)   # δ<t> per layer-direction, if recorded


class RNN:
    """Elman RNN mirroring ``torch.nn.RNN``, with BPTT you can call and inspect.

    Parameters
    ----------
    input_size : int
        D, features per time step.
    hidden_size : int
        H, hidden units per direction.
    num_layers : int, default 1
        Stacked layers; layer k > 0 reads layer k-1's output (both directions
        concatenated, size dirs·H).
    nonlinearity : {"tanh", "relu"}
    bias : bool, default True
        One bias ``b_a_l{k}`` per layer-direction (torch's two biases are summed on
        import).
    batch_first : bool, default False
        ``x`` and ``out`` are (N, T, ·) instead of (T, N, ·). ``h0``/``h_n`` are
        unaffected, as in torch.
    dropout : float in [0, 1), default 0
        Dropout on the output of every layer but the last, in :meth:`forward`
        (training) only; :meth:`__call__` never drops.
    bidirectional : bool, default False
    dtype : float32 or float64, default float32
        Parameters and computation dtype. Float inputs of the other precision are
        cast to it.
    device : {"cpu", "cuda"}
        Where the kernels run. With ``"cuda"`` the parameters live on the GPU (numba
        device arrays) and every kernel runs there; inputs may be NumPy arrays or
        any GPU array with ``__cuda_array_interface__`` (numba, CuPy, torch), taken
        without a copy. Results are device arrays when the input was one, NumPy
        arrays otherwise. No GPU raises
        :class:`~numba_rnn.kernels.cuda.CudaUnavailableError`.
    seed : int or None
        Seeds initialisation and dropout masks.
    init : {"uniform", "xavier", "orthogonal", "identity"}, default "uniform"
        See :mod:`numba_rnn.init`; ``"uniform"`` is torch's default.
    spectral_radius : float or None
        Rescale every W_aa to this spectral radius after ``init``.
    parallel : bool or None, default None
        Run on Numba's threads (``NUMBA_NUM_THREADS``): the recurrences in row blocks
        of the batch (up to :data:`~numba_rnn.kernels.cpu.RECURRENCE_BLOCKS`, a thread
        each), each block through all T steps on its own (one parallel region per
        call, no barrier per step) — or, for a batch that does not split into blocks
        of ≥ 2 sequences (one sequence, N prime), with the threads sharing each step's
        hidden-unit panels — and the batched products over all T·N rows (input
        projection, weight and input gradients) in fixed row blocks. ``None`` decides
        per call: in parallel when there is more than one thread and the step product
        is not small: N·H·H ≥ :data:`~numba_rnn.kernels.cpu.PARALLEL_MIN_MACS` (e.g.
        batch 8 at H = 32) with row blocks, ≥
        :data:`~numba_rnn.kernels.cpu.SHARED_MIN_MACS` (e.g. one sequence at H = 256)
        without. BLAS is single-threaded inside, so only one thread pool is ever
        active, and Numba's OpenMP workers are kept off the calling thread's core
        (:mod:`numba_rnn.kernels.affinity`). The blocks and panels depend on the shape
        alone, so results are bitwise the same serial or parallel, for any
        thread count (see :mod:`numba_rnn.kernels.cpu`).

    Attributes
    ----------
    params : dict[str, ndarray]
        ``W_ax_l{k}`` (H, D_k), ``W_aa_l{k}`` (H, H), ``b_a_l{k}`` (H,), with suffix
        ``_reverse`` for the reverse direction; D_0 = D, D_k = dirs·H.

    Examples
    --------
    >>> rnn = RNN(3, 8, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((5, 4, 3))     # (T, N, D)
    >>> out, h_n, cache = rnn.forward(x)                            # (5, 4, 16), (4, 4, 8)
    >>> grads, dx, dh0 = rnn.backward(cache, np.ones_like(out))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh",
                 bias=True, batch_first=False, dropout=0.0, bidirectional=False,
                 dtype=np.float32, device="cpu", seed=None, *, init="uniform",
                 spectral_radius=None, parallel=None):
        self.input_size = V.positive_int(input_size, "input_size")
        self.hidden_size = V.positive_int(hidden_size, "hidden_size")
        self.num_layers = V.positive_int(num_layers, "num_layers")
        self.nonlinearity = V.choice(nonlinearity, "nonlinearity", tuple(NONLINEARITIES))
        self.init = V.choice(init, "init", INITS)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.dropout = _check_dropout(dropout, self.num_layers)
        self.dtype = V.model_dtype(dtype)
        self.device = device
        self._backend = get_backend(device)
        if spectral_radius is not None:
            spectral_radius = float(spectral_radius)
            if not np.isfinite(spectral_radius) or spectral_radius <= 0:
                raise ValueError(f"spectral_radius must be a positive finite number, "
                                 f"got {spectral_radius}")
        self.spectral_radius = spectral_radius
        self.parallel = None if parallel is None else bool(parallel)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._kind = NONLINEARITIES[self.nonlinearity]
        self.params = self._init_params()

    # ------------------------------------------------------------------ structure
    @property
    def num_directions(self):
        """2 if bidirectional else 1."""
        return 2 if self.bidirectional else 1

    def _suffixes(self):
        """Yield ``(k, d, suffix)`` for every layer-direction, in torch's order."""
        for k in range(self.num_layers):
            for d in range(self.num_directions):
                yield k, d, f"_l{k}" + ("_reverse" if d else "")

    def _layer_input_size(self, k):
        return self.input_size if k == 0 else self.num_directions * self.hidden_size

    def param_shapes(self):
        """``{name: shape}`` of every parameter, in a stable order."""
        H = self.hidden_size
        shapes = {}
        for k, _, s in self._suffixes():
            shapes["W_ax" + s] = (H, self._layer_input_size(k))
            shapes["W_aa" + s] = (H, H)
            if self.bias:
                shapes["b_a" + s] = (H,)
        return shapes

    def _init_params(self):
        params = {}
        for k, _, s in self._suffixes():
            W_ax, W_aa, b = init_layer(self.rng, self.init, self._layer_input_size(k),
                                       self.hidden_size, self.bias)
            if self.spectral_radius is not None:
                W_aa = scale_to_spectral_radius(W_aa, self.spectral_radius)
            params["W_ax" + s] = np.ascontiguousarray(W_ax, dtype=self.dtype)
            params["W_aa" + s] = np.ascontiguousarray(W_aa, dtype=self.dtype)
            if self.bias:
                params["b_a" + s] = np.ascontiguousarray(b, dtype=self.dtype)
        return {k: self._backend.from_host(v) for k, v in params.items()}

    def W_a(self, layer=0, reverse=False):
        """The concatenated weight ``[W_aa | W_ax]`` (H, H + D_k) acting on ``[a<t-1>; x<t>]``.

        A new array, for teaching and inspection; the kernels use the split form.
        """
        s = f"_l{layer}" + ("_reverse" if reverse else "")
        host = self._backend.to_host
        return np.concatenate([host(self.params["W_aa" + s]), host(self.params["W_ax" + s])],
                              axis=1)

    def _checked_params(self):
        """The params dict, after checking each entry still has its shape and dtype."""
        P, be = self.params, self._backend
        shapes = self.param_shapes()
        if set(P) != set(shapes):
            raise ValueError(f"rnn.params must have exactly the keys {sorted(shapes)}, "
                             f"got {sorted(P)}")
        host = self.device == "cpu"
        for name, shape in shapes.items():
            arr = P[name]
            if host and type(arr) is np.ndarray and arr.dtype == self.dtype and \
                    arr.shape == shape and arr.flags.c_contiguous:
                continue                  # already what the kernels take (~1 µs, not ~8)
            if not be.is_array(arr) or np.dtype(arr.dtype) != self.dtype:
                kind = "ndarray" if self.device == "cpu" else "numba device array"
                raise TypeError(f"rnn.params[{name!r}] must be a {self.dtype} {kind}, "
                                f"got {type(arr).__name__} {getattr(arr, 'dtype', '')}")
            V.expect_shape(arr, f"rnn.params[{name!r}]", shape, "")
            P[name] = be.asarray(arr, f"rnn.params[{name!r}]", self.dtype)  # C-contiguous
        return P

    # ------------------------------------------------------------------ inputs
    def _time_major_input(self, x):
        """Return (x as (T, N, D) C-contiguous, unbatched flag)."""
        x = self._backend.asarray(x, "x", self.dtype)
        if x.ndim == 2:
            unbatched, x = True, x.reshape(x.shape[0], 1, x.shape[1])
        elif x.ndim == 3:
            unbatched = False
            if self.batch_first:
                x = self._backend.swap01(x)
        else:
            layout = "(N, T, D)" if self.batch_first else "(T, N, D)"
            raise ValueError(f"x must be 3-D {layout} or unbatched 2-D (T, D), "
                             f"got {x.ndim}-D with shape {x.shape}")
        T, N, D = x.shape
        if D != self.input_size:
            raise ValueError(f"x must have input_size={self.input_size} features in its "
                             f"last axis, got {D} (shape {x.shape})")
        if T == 0 or N == 0:
            raise ValueError(f"x must have at least one time step and one sequence, "
                             f"got T={T}, N={N}")
        return self._backend.asarray(x, "x", self.dtype), unbatched

    def _state_input(self, h, name, N, unbatched):
        """Validate an (L·dirs, N, H) state-shaped argument; None gives zeros."""
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        if h is None:
            return self._backend.zeros((LD, N, H), self.dtype)
        h = self._backend.asarray(h, name, self.dtype)
        if unbatched:
            V.expect_shape(h, name, (LD, H), "(num_layers*num_directions, hidden_size)")
            return h.reshape(LD, 1, H)
        V.expect_shape(h, name, (LD, N, H), "(num_layers*num_directions, N, hidden_size)")
        return h

    def _lengths_input(self, lengths, T, N):
        """Validate ``lengths``: (N,) integers in [1, T]; None stays None."""
        if lengths is None:
            return None
        arr = np.asarray(self._backend.to_host(lengths) if self._backend.on_device(lengths)
                         else lengths)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"lengths must hold integers, got dtype {arr.dtype}")
        arr = arr.reshape(-1) if arr.ndim == 0 else arr
        V.expect_shape(arr, "lengths", (N,), "(N,)")
        if arr.min() < 1 or arr.max() > T:
            raise ValueError(f"lengths must be between 1 and T={T}, got values from "
                             f"{arr.min()} to {arr.max()}")
        return None if arr.min() == T else np.ascontiguousarray(arr, dtype=np.int64)

    def _output_layout(self, out, h_n, unbatched, on_device=True):
        """Time-major (T, N, ·) results → the user's layout (on the host unless
        ``on_device``: a GPU model returns NumPy arrays for NumPy inputs)."""
        be = self._backend
        if unbatched:
            out, h_n = out[:, 0, :], h_n[:, 0, :]
        elif self.batch_first:
            out = be.swap01(out)
        if not on_device:
            out, h_n = be.to_host(out), be.to_host(h_n)
        return out, h_n

    # ------------------------------------------------------------------ forward
    def __call__(self, x, h0=None, *, lengths=None):
        """Inference: ``out, h_n = rnn(x, h0)``, no dropout, nothing kept for BPTT."""
        on_device = self._backend.on_device(x)
        self._check_memory(x, keep=False)
        x, unbatched = self._time_major_input(x)
        h0 = self._state_input(h0, "h0", x.shape[1], unbatched)
        lengths = self._lengths_input(lengths, x.shape[0], x.shape[1])
        out, h_n, _ = self._forward(x, h0, lengths, training=False, rng=None, keep=False)
        return self._output_layout(out, h_n, unbatched, on_device)

    def forward(self, x, h0=None, *, lengths=None, training=True, rng=None):
        """Forward pass that keeps what BPTT needs.

        Parameters
        ----------
        x : (T, N, D) array, (N, T, D) with ``batch_first``, or unbatched (T, D)
        h0 : (L·dirs, N, H) array, or (L·dirs, H) when unbatched; None for zeros
        lengths : (N,) integer array, optional
            Valid steps per sequence (1 ≤ lengths[n] ≤ T), respected by the
            recurrence itself as torch's packed sequences are: ``out`` is zero at
            padding steps, ``h_n`` holds each sequence's state after its last valid
            step, and the reverse direction starts at step lengths[n]-1.
        training : bool, default True
            Apply dropout between layers.
        rng : numpy Generator, optional
            Source of dropout masks; defaults to the model's own (seeded by ``seed``).

        Returns
        -------
        out : (T, N, dirs·H) array (layout as ``x``)
            Last layer's hidden states, directions concatenated [forward; reverse].
        h_n : (L·dirs, N, H) array
            Final state of every layer-direction (for the reverse direction, its
            state after reading x<0>).
        cache : ForwardCache
            Pass to :meth:`backward`.
        """
        on_device = self._backend.on_device(x)
        self._check_memory(x, keep=True)
        x, unbatched = self._time_major_input(x)
        h0 = self._state_input(h0, "h0", x.shape[1], unbatched)
        lengths = self._lengths_input(lengths, x.shape[0], x.shape[1])
        out, h_n, layers = self._forward(x, h0, lengths, training, rng if rng is not None
                                         else self.rng, keep=True)
        cache = ForwardCache(layers, x.shape[0], x.shape[1], self.batch_first,
                             unbatched, self.dtype, lengths)
        out_u, h_n_u = self._output_layout(out, h_n, unbatched, on_device)
        return out_u, h_n_u, cache

    def _check_memory(self, x, keep):
        """Fail before converting or allocating anything if the pass cannot fit."""
        shape = getattr(x, "shape", None)
        shape = np.shape(x) if shape is None else tuple(shape)
        if len(shape) == 2:
            T, N = shape[0], 1
        elif len(shape) == 3:
            T, N = (shape[1], shape[0]) if self.batch_first else (shape[0], shape[1])
        else:
            return                                      # the shape check will explain
        per_layer = T * N * self.num_directions * self.hidden_size * self.dtype.itemsize
        check_fits(per_layer * (2 * self.num_layers if keep else 3) + T * N * shape[-1]
                   * self.dtype.itemsize, f"forward over T={T}, N={N} "
                   f"({'keeping' if keep else 'without'} activations for BPTT)",
                   self.device, _ADVICE)

    def _forward(self, x, h0, lengths, training, rng, keep):
        """Time-major forward over all layers and directions."""
        par = self._backend.resolve_parallel(self.parallel, x.shape[1], self.hidden_size)
        with self._backend.compute_context(par):
            return self._forward_layers(x, h0, lengths, training, rng, keep, par)

    def _forward_layers(self, x, h0, lengths, training, rng, keep, par):
        be, P, H = self._backend, self._checked_params(), self.hidden_size
        T, N, _ = x.shape
        dirs = self.num_directions
        h_n = be.empty((self.num_layers * dirs, N, H), self.dtype)
        lengths = be.kernel_lengths(lengths)            # on the GPU: copied over once
        layers = []
        inp = x
        for k in range(self.num_layers):
            mask = None
            if k > 0 and training and self.dropout > 0:
                mask = be.dropout_mask(rng, inp.shape, self.dropout, self.dtype)
                inp = be.mul_(be.copy(inp), mask)
            states, starts = [], []
            for d in range(dirs):
                s = f"_l{k}" + ("_reverse" if d else "")
                a0 = be.row_view(h0, k * dirs + d)
                U = be.input_projection(inp, P["W_ax" + s], P.get("b_a" + s),  # (T, N, H)
                                        parallel=par)
                A = be.recurrence_forward(U, P["W_aa" + s], a0, self._kind, reverse=bool(d),
                                          parallel=par, lengths=lengths,
                                          overwrite_U=True)           # U is ours: reuse it
                be.assign_(be.row_view(h_n, k * dirs + d), be.row_view(A, 0 if d else T - 1))
                states.append(A)
                starts.append(a0)
            if keep:
                layers.append(LayerCache(inp, mask, starts, states))
            inp = states[0] if dirs == 1 else be.concat_last(states)   # (T, N, dirs·H)
            if lengths is not None:
                inp = be.zero_padding(inp, lengths)
        return inp, h_n, layers

    # ------------------------------------------------------------------ backward
    def backward(self, cache, d_out, d_hn=None, *, keep_deltas=False):
        """Backpropagation through time.

        Parameters
        ----------
        cache : ForwardCache
            From :meth:`forward` on this model.
        d_out : array shaped like ``out``
            ∂L/∂out, (T, N, dirs·H) (batch_first and unbatched layouts as ``out``).
        d_hn : array shaped like ``h_n``, optional
            ∂L/∂h_n; None for zeros.
        keep_deltas : bool
            Also store δ<t> = ∂L/∂z<t> (T, N, H) per layer-direction in
            ``cache.deltas`` (for analysis; costs one activation-sized array each).

        Returns
        -------
        grads : dict[str, ndarray]
            Same keys and shapes as :attr:`params`.
        dx : array shaped like ``x``
        dh0 : array shaped like ``h0``

        Notes
        -----
        ``cache.hidden_grad_norms`` receives ‖∂L/∂a<t>‖ per layer-direction, (T, N).
        """
        if not isinstance(cache, ForwardCache):
            raise TypeError(f"cache must be the ForwardCache returned by RNN.forward, "
                            f"got {type(cache).__name__}")
        if cache.dtype != self.dtype or len(cache.layers) != self.num_layers or \
                len(cache.layers[0].states) != self.num_directions:
            raise ValueError("cache does not come from this model's forward (its dtype, "
                             "layers or directions differ)")
        H = self.hidden_size
        T, N, dirs = cache.T, cache.N, self.num_directions
        on_device = self._backend.on_device(d_out)
        d_layer = self._grad_input(d_out, "d_out", (T, N, dirs * H), cache)
        d_hn = self._state_input(d_hn, "d_hn", N, cache.unbatched)
        widest = max(dirs * H, self.input_size)
        check_fits(T * N * (3 * dirs * H + widest) * self.dtype.itemsize,
                   f"backward over T={T}, N={N}", self.device, _ADVICE)
        par = self._backend.resolve_parallel(self.parallel, N, H)
        with self._backend.compute_context(par):
            return self._backward_layers(cache, d_layer, d_hn, keep_deltas, on_device, par)

    def _backward_layers(self, cache, d_layer, d_hn, keep_deltas, on_device=False, par=False):
        """Time-major BPTT through all layers and directions (inputs validated)."""
        be, P, H = self._backend, self._checked_params(), self.hidden_size
        N, dirs = cache.N, self.num_directions
        lengths = be.kernel_lengths(cache.lengths)
        grads = {}
        dh0 = be.empty((self.num_layers * dirs, N, H), self.dtype)
        for k in reversed(range(self.num_layers)):
            lc = cache.layers[k]
            d_inp = None
            for d in range(dirs):
                s = f"_l{k}" + ("_reverse" if d else "")
                dA = (d_layer if dirs == 1                             # (T, N, H)
                      else be.take_last(d_layer, d * H, (d + 1) * H))
                delta, dh0_kd, norms = be.recurrence_backward(
                    dA, lc.states[d], P["W_aa" + s], be.row_view(d_hn, k * dirs + d), self._kind,
                    reverse=bool(d), parallel=par, lengths=lengths)
                dW_ax, dW_aa, db, dx_d = be.layer_grads(delta, lc.input, lc.states[d],
                                                        lc.h0[d], P["W_ax" + s],
                                                        reverse=bool(d), parallel=par)
                grads["W_ax" + s], grads["W_aa" + s] = dW_ax, dW_aa
                if self.bias:
                    grads["b_a" + s] = db
                d_inp = dx_d if d_inp is None else be.add_(d_inp, dx_d)
                be.assign_(be.row_view(dh0, k * dirs + d), dh0_kd)
                cache.hidden_grad_norms[s[1:]] = norms
                if keep_deltas:
                    cache.deltas[s[1:]] = delta
            if lc.mask is not None:
                be.mul_(d_inp, lc.mask)
            d_layer = d_inp
        grads = {name: grads[name] for name in P}                    # params' order
        _report_nonfinite(be, grads, cache)
        dx, dh0 = self._output_layout(d_layer, dh0, cache.unbatched, on_device)
        return grads, dx, dh0

    def _grad_input(self, g, name, shape, cache):
        """Validate ``d_out`` in the user's layout; return it time-major (T, N, ·)."""
        be = self._backend
        g = be.asarray(g, name, self.dtype)
        T, N, F = shape
        if cache.unbatched:
            V.expect_shape(g, name, (T, F), "(T, num_directions*hidden_size)")
            return g.reshape(T, 1, F)
        if cache.batch_first:
            V.expect_shape(g, name, (N, T, F), "(N, T, num_directions*hidden_size)")
            return be.asarray(be.swap01(g), name, self.dtype)
        V.expect_shape(g, name, (T, N, F), "(T, N, num_directions*hidden_size)")
        return g

    # ------------------------------------------------------------------ torch interop
    def _torch_names(self):
        """``{torch name: (our name or None for bias_hh, shape)}``."""
        names = {}
        H = self.hidden_size
        for k, d, s in self._suffixes():
            t = f"_l{k}" + ("_reverse" if d else "")
            names["weight_ih" + t] = ("W_ax" + s, (H, self._layer_input_size(k)))
            names["weight_hh" + t] = ("W_aa" + s, (H, H))
            if self.bias:
                names["bias_ih" + t] = ("b_a" + s, (H,))
                names["bias_hh" + t] = (None, (H,))
        return names

    def load_torch_state_dict(self, state_dict):
        """Load weights from ``torch.nn.RNN.state_dict()`` (tensors or arrays).

        ``bias_ih`` and ``bias_hh`` are summed into our single bias. Missing, extra
        or misshaped entries raise ``ValueError``; nothing is changed unless every
        entry is valid.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping of names to tensors, "
                            f"got {type(state_dict).__name__}")
        expected = self._torch_names()
        missing = sorted(set(expected) - set(state_dict))
        extra = sorted(set(state_dict) - set(expected))
        if missing or extra:
            raise ValueError(f"state_dict does not match this RNN: missing keys {missing}, "
                             f"unexpected keys {extra}")
        arrays = {}
        for tname, (_, shape) in expected.items():
            arr = V.float_array(_to_numpy(state_dict[tname]), f"state_dict[{tname!r}]",
                                np.float64)
            V.expect_shape(arr, f"state_dict[{tname!r}]", shape, "")
            arrays[tname] = arr
        new = {}
        for tname, (ours, _) in expected.items():
            if ours is None:
                continue
            value = arrays[tname]
            if tname.startswith("bias_ih"):
                value = value + arrays["bias_hh" + tname[len("bias_ih"):]]
            new[ours] = np.ascontiguousarray(value, dtype=self.dtype)
        for name in self.param_shapes():             # in place: optimizers keep their arrays
            self._backend.assign_(self.params[name], new[name])

    def torch_state_dict(self):
        """Our weights in torch's names (NumPy arrays; ``bias_hh`` is zero)."""
        sd = {}
        for tname, (ours, shape) in self._torch_names().items():
            sd[tname] = (np.zeros(shape, dtype=self.dtype) if ours is None
                         else np.array(self._backend.to_host(self.params[ours])))
        return sd

    # ------------------------------------------------------------------ files
    def config(self):
        """The constructor arguments that rebuild this model's structure (JSON-able)."""
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "nonlinearity": self.nonlinearity,
                "bias": self.bias, "batch_first": self.batch_first,
                "dropout": self.dropout, "bidirectional": self.bidirectional,
                "dtype": self.dtype.name, "device": self.device, "init": self.init,
                "spectral_radius": self.spectral_radius}

    def save(self, path):
        """Write config and weights to an ``.npz`` file (no pickle), atomically.

        The file is written to a temporary name in the same folder and renamed, so
        an interrupted save never leaves a half-written file at ``path``.
        """
        arrays = {k: self._backend.to_host(v) for k, v in self._checked_params().items()}
        arrays[_CONFIG_KEY] = np.array(json.dumps({"format": _FORMAT,
                                                   "config": self.config()}))
        atomic_savez(path, arrays)

    @classmethod
    def load(cls, path, **overrides):
        """Rebuild a model saved by :meth:`save`. ``overrides`` replace config entries
        (e.g. ``device``, ``parallel``). A missing file raises ``FileNotFoundError``;
        anything that is not an intact numba_rnn weights file raises ``ValueError``.
        """
        arrays = read_npz(path)
        if _CONFIG_KEY not in arrays:
            raise ValueError(f"{path} is not a numba_rnn RNN weights file "
                             f"(no {_CONFIG_KEY} entry)")
        try:
            meta = json.loads(str(arrays.pop(_CONFIG_KEY)))
            assert meta["format"] == _FORMAT
            config = dict(meta["config"])
        except (ValueError, KeyError, TypeError, AssertionError) as err:
            raise ValueError(f"{path} has an unreadable numba_rnn config entry") from err
        config.update(overrides)
        model = cls(**config)
        shapes = model.param_shapes()
        if set(arrays) != set(shapes):
            raise ValueError(f"{path} holds weights {sorted(arrays)}, but its config "
                             f"needs {sorted(shapes)}")
        for name, shape in shapes.items():
            arr = V.float_array(arrays[name], f"{path}:{name}", model.dtype)
            V.expect_shape(arr, f"{path}:{name}", shape, "")
            model.params[name] = model._backend.from_host(arr)
        return model

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in self.config().items()
                        if k not in ("input_size", "hidden_size"))
        return f"RNN({self.input_size}, {self.hidden_size}{extra})"


# ---------------------------------------------------------------------- helpers
def _check_dropout(p, num_layers):
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
        raise TypeError(f"dropout must be a number in [0, 1), got {p!r}")
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    if p > 0 and num_layers == 1:
        warnings.warn("dropout acts between stacked layers; with num_layers=1 it has no "
                      "effect", UserWarning, stacklevel=3)
    return p


def _report_nonfinite(be, grads, cache):
    """Warn (:class:`~numba_rnn.clip.NonFiniteGradientWarning`) if any gradient holds
    NaN or inf, naming the parameters and where in time ‖∂L/∂a<t>‖ first blew up."""
    bad = [name for name, flag in zip(grads, be.nonfinite(list(grads.values())), strict=True)
           if flag]
    if not bad:
        return
    from .clip import NonFiniteGradientWarning
    where = []
    for key, norms in cache.hidden_grad_norms.items():
        norms = np.asarray(be.to_host(norms))
        steps = np.nonzero(~np.isfinite(norms).all(axis=1))[0]
        if steps.size:
            where.append(f"{key}: ‖∂L/∂a<t>‖ non-finite at {steps.size} of {norms.shape[0]} "
                         f"steps, from t={steps.max()} back")
    warnings.warn(NonFiniteGradientWarning(
        f"backward produced non-finite gradients for {bad}"
        + (f" ({'; '.join(where)})" if where else "") + ": the forward states or the "
        "gradients overflowed — clip (clip_grad_norm), lower the learning rate or the "
        "spectral radius, or use float64"), stacklevel=3)


def _to_numpy(value):
    """A torch tensor (any device) or array-like → NumPy array."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def atomic_savez(path, arrays):
    """``np.savez`` to ``path`` via a temporary file and an atomic rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_npz(path):
    """Read every array of an ``.npz`` file without pickle; corrupt files → ValueError."""
    try:
        with open(os.fspath(path), "rb") as f:          # we own the handle: always closed
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array, not an .npz archive")
            with z:
                return {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"{path} is not a readable .npz weights file: {err}") from err
