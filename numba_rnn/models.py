"""RNN architectures: one-to-one, many-to-one, one-to-many, many-to-many, seq2seq.

Each model is a small object around :class:`~numba_rnn.rnn.RNN` engines and an output
:class:`~numba_rnn.layers.Head`, with

- ``forward(x, ...)`` → predictions ŷ (the head's g_y applied),
- ``loss_and_grad(x, y, ...)`` → ``(loss, grads)``, the loss summed over time
  (:mod:`numba_rnn.losses`), ``grads`` keyed like ``params``,
- ``params``: one flat dict ``"rnn.W_aa_l0"``, ``"head.W_ya"``, … whose arrays *are*
  the submodules' arrays, so an optimizer updating it in place trains the model.

Shapes are time-major: x (T, N, D). The output activation follows the loss:
cross_entropy ↔ softmax, mse ↔ identity, bce ↔ sigmoid.
"""
import numpy as np

from . import _validate as V
from .layers import Head
from .losses import LOSSES, OUTPUT_ACTIVATION, get_loss, lengths_mask
from .kernels import backend_of
from .rnn import RNN, atomic_savez, read_npz

_RNN_KW = ("num_layers", "nonlinearity", "bidirectional", "dropout", "init",
           "spectral_radius", "parallel", "device")


class _Model:
    """Shared plumbing: parameters of the parts, config, save/load."""

    _parts = ()                     # names of the attributes holding sub-modules

    @property
    def params(self):
        """Flat ``{"part.name": array}``; the arrays are the parts' own."""
        return {f"{part}.{k}": v for part in self._parts
                for k, v in getattr(self, part).params.items()}

    @property
    def dtype(self):
        return getattr(self, self._parts[0]).dtype

    def _split(self, grads_by_part):
        return {f"{part}.{k}": v for part, g in grads_by_part.items() for k, v in g.items()}

    def _rnn_input(self, x):
        """``x`` on the RNN's device (a model on the GPU copies host data over once),
        so that its outputs, the head and the loss stay there. A pass that cannot fit
        in memory fails here, before ``x`` is converted."""
        self.rnn._check_memory(x, keep=True)
        return self.rnn._backend.asarray(x, "x", self.dtype)

    def _like_input(self, x, *results):
        """Results on the GPU only when the input was there (NumPy in, NumPy out)."""
        be = self.rnn._backend
        if not be.on_device(x):
            results = tuple(be.to_host(r) for r in results)
        return results if len(results) > 1 else results[0]

    def _through_rnn(self, loss, g_head, d_out, h_n, cache, z, return_info):
        """Finish ``loss_and_grad`` of an rnn + head model: BPTT from ∂L/∂out."""
        g_rnn, _, _ = self.rnn.backward(cache, d_out)
        grads = self._split({"rnn": g_rnn, "head": g_head})
        if return_info:
            return loss, grads, {"h_n": h_n, "cache": cache, "logits": z, "d_out": d_out}
        return loss, grads

    def load_params(self, params):
        """Copy ``params`` (a dict like :attr:`params`) into the model, in place."""
        own = self.params
        if set(params) != set(own):
            raise ValueError(f"params must have exactly the keys {sorted(own)}, got "
                             f"{sorted(params)}")
        for k, v in params.items():
            arr = V.float_array(v, f"params[{k!r}]", self.dtype)
            V.expect_shape(arr, f"params[{k!r}]", own[k].shape, "")
        for k, v in params.items():
            backend_of(own[k]).assign_(own[k], v)

    def save(self, path):
        """Config and weights as ``.npz`` (no pickle), written atomically."""
        import json
        arrays = {k: np.asarray(_host(v)) for k, v in self.params.items()}
        arrays["__numba_rnn_model__"] = np.array(json.dumps(
            {"class": type(self).__name__, "config": self.config}))
        atomic_savez(path, arrays)


def load_model(path, device=None):
    """Rebuild any model saved with ``model.save(path)`` (on ``device`` if given,
    else where it was saved from)."""
    import json
    arrays = read_npz(path)
    if "__numba_rnn_model__" not in arrays:
        raise ValueError(f"{path} is not a numba_rnn model file (no model entry)")
    try:
        meta = json.loads(str(arrays.pop("__numba_rnn_model__")))
        cls = MODELS[meta["class"]]
        config = dict(meta["config"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} has an unreadable model entry") from err
    if device is not None:
        config["device"] = device
    model = cls(**config)
    model.load_params(arrays)
    return model


def _rnn_kwargs(kw):
    return {k: kw[k] for k in _RNN_KW if k in kw}


def _host(a):
    be = backend_of(a)
    return a if be is None else be.to_host(a)


def _float_targets_or_ids(loss, y, name="y"):
    arr = np.asarray(_host(y))
    if loss == "cross_entropy" and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer class ids for loss='cross_entropy', "
                        f"got dtype {arr.dtype}")
    if loss != "cross_entropy" and arr.dtype.kind != "f":
        raise TypeError(f"{name} must be floats for loss={loss!r}, got dtype {arr.dtype}")
    return arr


class ManyToMany(_Model):
    """Aligned many-to-many (tagging, language modelling): a prediction at every step.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
    loss : {"cross_entropy", "mse", "bce"}
    reduction : {"sum", "mean"}
    head_hidden : sequence of int
        Hidden widths of an MLP head (empty: one dense layer).
    dtype, seed
    **rnn_kwargs
        ``num_layers``, ``nonlinearity``, ``bidirectional``, ``dropout``, ``init``,
        ``spectral_radius``, ``parallel`` for the :class:`RNN`.
    """

    _parts = ("rnn", "head")

    def __init__(self, input_size, hidden_size, output_size, *, loss="cross_entropy",
                 reduction="sum", head_hidden=(), dtype=np.float32, seed=None, **rnn_kwargs):
        unknown = set(rnn_kwargs) - set(_RNN_KW)
        if unknown:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
        self.loss = V.choice(loss, "loss", LOSSES)
        self.reduction = reduction
        rng = np.random.default_rng(seed)
        self.rnn = RNN(input_size, hidden_size, dtype=dtype, seed=rng.integers(2**63),
                       **rnn_kwargs)
        self.head = Head(self.rnn.num_directions * hidden_size, output_size,
                         hidden=head_hidden, output=OUTPUT_ACTIVATION[self.loss],
                         dtype=dtype, rng=rng.integers(2**63), device=self.rnn.device)
        self.config = dict(input_size=input_size, hidden_size=hidden_size,
                           output_size=output_size, loss=loss, reduction=reduction,
                           head_hidden=list(head_hidden), dtype=np.dtype(dtype).name,
                           **rnn_kwargs)

    def forward(self, x, *, h0=None, lengths=None):
        """Predictions ŷ (T, N, O) at every step (zero rows past ``lengths`` are not
        meaningful), and the final state h_n."""
        out, h_n = self.rnn(self._rnn_input(x), h0, lengths=lengths)
        return self._like_input(x, self.head.forward(out), h_n)

    def loss_and_grad(self, x, y, *, mask=None, lengths=None, h0=None, return_info=False):
        """Loss summed over time and its gradient.

        Parameters
        ----------
        x : (T, N, D) array
        y : (T, N) class ids (cross_entropy) or (T, N, O) floats (mse, bce)
        mask : (T, N) bools or weights, optional
        lengths : (N,) ints, optional — combined with ``mask``; also respected by
            the recurrence
        h0 : initial state, optional (stateful / truncated-BPTT training)
        return_info : bool
            Also return a dict with ``h_n``, the forward ``cache`` (its
            ``hidden_grad_norms``) and the logits.
        """
        y = _float_targets_or_ids(self.loss, y)
        out, h_n, cache = self.rnn.forward(self._rnn_input(x), h0, lengths=lengths)
        z, head_cache = self.head.logits(out)                          # (T, N, O)
        mask = _combine(mask, lengths, out.shape[0])
        loss, dz = get_loss(self.loss)(z, y, mask, self.reduction)
        g_head, d_out = self.head.backward(head_cache, dz)
        return self._through_rnn(loss, g_head, d_out, h_n, cache, z, return_info)


class OneToMany(ManyToMany):
    """Generation: trained like :class:`ManyToMany` (teacher forcing: the input at
    step t is the target of step t-1), then :meth:`generate` feeds each output back
    as the next input. Unidirectional; ``input_size`` must equal ``output_size``.
    """

    def __init__(self, input_size, hidden_size, output_size=None, **kw):
        output_size = input_size if output_size is None else output_size
        if kw.get("bidirectional"):
            raise ValueError("bidirectional=True makes no sense for generation: a step "
                             "cannot see the outputs it has not generated yet")
        if output_size != input_size:
            raise ValueError(f"generation feeds outputs back as inputs, so output_size "
                             f"({output_size}) must equal input_size ({input_size})")
        super().__init__(input_size, hidden_size, output_size, **kw)

    def generate(self, start, steps, *, mode="argmax", temperature=1.0, h0=None, rng=None):
        """Generate ``steps`` outputs from a seed.

        Parameters
        ----------
        start : (N, D) or (D,) array, or (N,) / int class ids for cross_entropy
            The first input. Class ids are one-hot encoded.
        steps : int
        mode : {"argmax", "sample", "value"}
            What is fed back: the most likely class, a class sampled from
            softmax(z / temperature), or the predicted value (mse/bce models).
        temperature : float > 0
        h0 : initial state, optional
        rng : numpy Generator or seed, for ``mode="sample"``

        Returns
        -------
        (steps, N) class ids, or (steps, N, O) values; a leading-axis-only result
        when ``start`` was unbatched.
        """
        steps = V.positive_int(steps, "steps")
        V.choice(mode, "mode", ("argmax", "sample", "value"))
        if (mode == "value") != (self.loss != "cross_entropy"):
            raise ValueError(f"mode={mode!r} does not fit loss={self.loss!r}: use "
                             f"'argmax' or 'sample' for classes, 'value' otherwise")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        rng = np.random.default_rng(rng)
        be = self.rnn._backend
        D = self.rnn.input_size
        on_device = be.on_device(start)
        x, unbatched = self._start_input(_host(start))
        x = be.from_host(x)                                            # (N, D)
        N = x.shape[0]
        h = h0
        outputs = []
        for _ in range(steps):
            out, h = self.rnn(x.reshape(1, N, D), h)                   # one step, (1, N, H)
            z, _ = self.head.logits(out[0])                            # (N, O)
            if mode == "value":
                y = x = self.head.activate(z)
            else:
                ids = (be.argmax_rows(z) if mode == "argmax" else
                       be.sample_rows(z, temperature, rng.random((N, 1))))
                y, x = ids, be.one_hot(ids, D, self.dtype)
            outputs.append(y)
        result = be.stack(outputs)
        result = result[:, 0] if unbatched else result
        return result if on_device else be.to_host(result)

    def _start_input(self, start):
        D = self.rnn.input_size
        arr = np.asarray(start)
        if arr.dtype.kind in "iu":
            if self.loss != "cross_entropy":
                raise TypeError("start must be float inputs for a regression model")
            unbatched = arr.ndim == 0
            ids = arr.reshape(-1)
            if ids.min() < 0 or ids.max() >= D:
                raise ValueError(f"start class ids must lie in [0, {D})")
            return np.eye(D, dtype=self.dtype)[ids], unbatched
        arr = V.float_array(arr, "start", self.dtype)
        unbatched = arr.ndim == 1
        arr = arr[None] if unbatched else arr
        if arr.ndim != 2 or arr.shape[1] != D:
            raise ValueError(f"start must be (N, {D}) or ({D},), got {np.shape(start)}")
        return arr, unbatched


class ManyToOne(_Model):
    """Sequence classification / regression: one prediction from the last valid step.

    The head reads ``out`` at step lengths[n]-1 (T-1 without ``lengths``): for a
    bidirectional encoder that is [a→⟨t⟩; a←⟨t⟩] at that step. Parameters as
    :class:`ManyToMany`.
    """

    _parts = ("rnn", "head")
    __init__ = ManyToMany.__init__

    def _last(self, out, lengths):
        T, N, _ = out.shape
        last = np.full(N, T - 1) if lengths is None else np.asarray(lengths) - 1
        return last, self.rnn._backend.gather_steps(out, last)        # (N, F)

    def forward(self, x, *, h0=None, lengths=None):
        """Predictions ŷ (N, O)."""
        out, _ = self.rnn(self._rnn_input(x), h0, lengths=lengths)
        return self._like_input(x, self.head.forward(self._last(out, lengths)[1]))

    def loss_and_grad(self, x, y, *, lengths=None, h0=None, return_info=False):
        """Loss at the last valid step. ``y``: (N,) class ids or (N, O) floats."""
        y = _float_targets_or_ids(self.loss, y)
        out, h_n, cache = self.rnn.forward(self._rnn_input(x), h0, lengths=lengths)
        last, feats = self._last(out, lengths)
        z, head_cache = self.head.logits(feats)                        # (N, O)
        loss, dz = get_loss(self.loss)(z, y, None, self.reduction)
        g_head, d_feats = self.head.backward(head_cache, dz)
        d_out = self.rnn._backend.scatter_steps(d_feats, last, out.shape)
        return self._through_rnn(loss, g_head, d_out, h_n, cache, z, return_info)


class OneToOne(ManyToOne):
    """A plain feed-forward step (T = 1): x (N, D) → ŷ (N, O)."""

    def forward(self, x, *, h0=None):
        return self._like_input(x, super().forward(self._one_step(x), h0=h0))

    def loss_and_grad(self, x, y, *, h0=None, return_info=False):
        return super().loss_and_grad(self._one_step(x), y, h0=h0, return_info=return_info)

    def _one_step(self, x):
        x = self._rnn_input(x)
        if x.ndim != 2:
            raise ValueError(f"x must be (N, D) for a one-to-one model, got shape {x.shape}")
        return x.reshape(1, *x.shape)


class Seq2Seq(_Model):
    """Encoder-decoder. The encoder's final states — all layers and directions —
    initialise the decoder, directly when the sizes agree (encoder layers =
    decoder layers and dirs·H_enc = H_dec, each layer's directions concatenated),
    otherwise through a learned projection h0_dec = tanh(W_b · [all final states] + b_b).
    Targets are class ids over ``tgt_vocab`` tokens; the decoder reads one-hot
    tokens, starting from ``bos``. Training uses teacher forcing; :meth:`decode`
    decodes greedily or by sampling.

    Parameters
    ----------
    src_size : int
        Features per source step (one-hot width for token sources).
    tgt_vocab : int
        Target classes, ``bos`` included.
    hidden_size : int
        Encoder hidden size per direction.
    dec_hidden : int, optional
        Decoder hidden size (default: dirs·hidden_size).
    num_layers, dec_layers : int
        Encoder and decoder depth (dec_layers defaults to num_layers).
    bidirectional : bool
        Bidirectional encoder (the decoder is always unidirectional).
    bos : int
        The start-of-sequence token fed to the decoder's first step.
    """

    def __init__(self, src_size, tgt_vocab, hidden_size, *, dec_hidden=None, num_layers=1,
                 dec_layers=None, bidirectional=False, bos=0, nonlinearity="tanh",
                 init="uniform", spectral_radius=None, head_hidden=(), reduction="sum",
                 dtype=np.float32, seed=None, parallel=None, device="cpu"):
        rng = np.random.default_rng(seed)
        dirs = 2 if bidirectional else 1
        dec_hidden = dirs * hidden_size if dec_hidden is None else dec_hidden
        dec_layers = num_layers if dec_layers is None else dec_layers
        common = dict(nonlinearity=nonlinearity, init=init, spectral_radius=spectral_radius,
                      dtype=dtype, parallel=parallel, device=device)
        self.encoder = RNN(src_size, hidden_size, num_layers=num_layers,
                           bidirectional=bidirectional, seed=rng.integers(2**63), **common)
        self.decoder = RNN(tgt_vocab, dec_hidden, num_layers=dec_layers,
                           seed=rng.integers(2**63), **common)
        self.direct_bridge = dec_layers == num_layers and dec_hidden == dirs * hidden_size
        self._parts = ("encoder", "decoder", "head")
        if not self.direct_bridge:
            self.bridge = Head(num_layers * dirs * hidden_size, dec_layers * dec_hidden,
                               dtype=dtype, rng=rng.integers(2**63), device=device)
            self._parts = ("encoder", "bridge", "decoder", "head")
        self.head = Head(dec_hidden, tgt_vocab, hidden=head_hidden, output="softmax",
                         dtype=dtype, rng=rng.integers(2**63), device=device)
        if not 0 <= bos < tgt_vocab:
            raise ValueError(f"bos must be a token id in [0, {tgt_vocab}), got {bos}")
        self.bos, self.reduction, self.tgt_vocab = bos, reduction, tgt_vocab
        self.config = dict(src_size=src_size, tgt_vocab=tgt_vocab, hidden_size=hidden_size,
                           dec_hidden=dec_hidden, num_layers=num_layers, dec_layers=dec_layers,
                           bidirectional=bidirectional, bos=bos, nonlinearity=nonlinearity,
                           init=init, spectral_radius=spectral_radius,
                           head_hidden=list(head_hidden), reduction=reduction,
                           dtype=np.dtype(dtype).name, parallel=parallel, device=device)

    # encoder final states (L·dirs, N, H) ↔ decoder initial state (L_dec, N, H_dec)
    def _bridge(self, h_enc):
        be = self.encoder._backend
        L, dirs = self.encoder.num_layers, self.encoder.num_directions
        H = self.encoder.hidden_size
        flat = be.layers_to_cols(h_enc)                                 # (N, L·dirs·H)
        if self.direct_bridge:                                          # (L, N, dirs·H)
            return be.cols_to_layers(flat, L, dirs * H), None
        z, cache = self.bridge.logits(flat)
        h0 = be.act_(be.copy(z), 0)                                     # tanh
        return be.cols_to_layers(h0, self.decoder.num_layers, self.decoder.hidden_size), \
            (cache, h0)

    def _bridge_backward(self, dh0_dec, bcache):
        be = self.encoder._backend
        L, dirs = self.encoder.num_layers, self.encoder.num_directions
        H = self.encoder.hidden_size
        grads = {}
        d_cols = be.layers_to_cols(dh0_dec)                             # (N, L_dec·H_dec)
        if not self.direct_bridge:
            cache, h0 = bcache
            grads, d_cols = self.bridge.backward(cache, be.act_grad_(d_cols, h0, 0))
        return grads, be.cols_to_layers(d_cols, L * dirs, H)           # (L·dirs, N, H)

    def _teacher_inputs(self, tgt):
        T, N = tgt.shape
        prev = np.empty((T, N), dtype=np.int64)
        prev[0] = self.bos
        prev[1:] = tgt[:-1]
        be = self.decoder._backend
        ids = be.from_host(prev.reshape(-1))
        return be.one_hot(ids, self.tgt_vocab, self.dtype).reshape(T, N, self.tgt_vocab)

    def _check_tgt(self, tgt, tgt_lengths):
        """Validate target ids; tokens past ``tgt_lengths`` (padding) become ``bos``."""
        tgt = np.asarray(_host(tgt))
        if tgt.dtype.kind not in "iu":
            raise TypeError(f"tgt must be integer token ids, got dtype {tgt.dtype}")
        if tgt.ndim != 2:
            raise ValueError(f"tgt must be (T_tgt, N) token ids, got shape {tgt.shape}")
        valid = np.ones(tgt.shape, bool)
        if tgt_lengths is not None:
            valid = _combine(None, tgt_lengths, tgt.shape[0])
            if valid.shape != tgt.shape:
                raise ValueError(f"tgt_lengths must have shape (N,) = ({tgt.shape[1]},)")
        if ((tgt < 0) | (tgt >= self.tgt_vocab))[valid].any():
            raise ValueError(f"tgt must hold token ids in [0, {self.tgt_vocab})")
        return np.where(valid, tgt, self.bos)

    def loss_and_grad(self, src, tgt, *, src_lengths=None, tgt_lengths=None,
                      return_info=False):
        """Teacher-forced cross-entropy summed over target steps.

        ``src`` (T_src, N, src_size); ``tgt`` (T_tgt, N) token ids; lengths optional.
        """
        tgt = self._check_tgt(tgt, tgt_lengths)
        src = self.encoder._backend.asarray(src, "src", self.dtype)
        _, h_enc, ecache = self.encoder.forward(src, lengths=src_lengths)
        h0_dec, bcache = self._bridge(h_enc)
        out, _, dcache = self.decoder.forward(self._teacher_inputs(tgt), h0_dec,
                                              lengths=tgt_lengths)
        z, hcache = self.head.logits(out)                                 # (T_tgt, N, V)
        mask = _combine(None, tgt_lengths, tgt.shape[0])
        loss, dz = get_loss("cross_entropy")(z, tgt, mask, self.reduction)
        g_head, d_out = self.head.backward(hcache, dz)
        g_dec, _, dh0_dec = self.decoder.backward(dcache, d_out)
        g_bridge, d_hn = self._bridge_backward(dh0_dec, bcache)
        no_grad = self.encoder._backend.zeros(
            (ecache.T, ecache.N, self.encoder.num_directions * self.encoder.hidden_size),
            self.dtype)                                  # the loss reads only the final states
        g_enc, _, _ = self.encoder.backward(ecache, no_grad, d_hn)
        parts = {"encoder": g_enc, "decoder": g_dec, "head": g_head}
        if not self.direct_bridge:
            parts["bridge"] = g_bridge
        grads = self._split({p: parts[p] for p in self._parts})
        if return_info:
            return loss, grads, {"cache": dcache, "encoder_cache": ecache, "logits": z}
        return loss, grads

    def decode(self, src, max_len, *, src_lengths=None, mode="greedy", temperature=1.0,
               eos=None, rng=None):
        """Decode target tokens (max_len, N) greedily or by sampling.

        After an ``eos`` token a sequence keeps emitting ``eos``.
        """
        max_len = V.positive_int(max_len, "max_len")
        V.choice(mode, "mode", ("greedy", "sample"))
        rng = np.random.default_rng(rng)
        be = self.encoder._backend
        on_device = be.on_device(src)
        _, h_enc = self.encoder(be.asarray(src, "src", self.dtype), lengths=src_lengths)
        h, _ = self._bridge(h_enc)
        N, V_ = h.shape[1], self.tgt_vocab
        tok = be.from_host(np.full(N, self.bos, dtype=np.int64))
        done = be.from_host(np.zeros(N, dtype=bool))
        result = []
        for _ in range(max_len):
            out, h = self.decoder(be.one_hot(tok, V_, self.dtype).reshape(1, N, V_), h)
            z, _ = self.head.logits(out[0])
            tok = (be.argmax_rows(z) if mode == "greedy" else
                   be.sample_rows(z, temperature, rng.random((N, 1))))
            if eos is not None:
                be.apply_eos(tok, done, eos)
            result.append(tok)
        result = be.stack(result)
        return result if on_device else be.to_host(result)

    def forward(self, src, max_len, **kw):
        """Greedy decoding: an alias of :meth:`decode`."""
        return self.decode(src, max_len, **kw)


def _combine(mask, lengths, T):
    """A (T, N) mask from ``mask`` and ``lengths`` (None when both are None)."""
    if lengths is None:
        return mask
    valid = lengths_mask(lengths, T)
    if mask is None:
        return valid
    m = np.asarray(mask)
    if m.shape != valid.shape:
        raise ValueError(f"mask must have shape (T, N) = {valid.shape}, got {m.shape}")
    return m * valid


MODELS = {c.__name__: c for c in (ManyToMany, OneToMany, ManyToOne, OneToOne, Seq2Seq)}
