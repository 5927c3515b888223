"""Training: ``fit`` over minibatches with clipping, truncated BPTT, validation,
early stopping, NaN protection, atomic checkpoints and exact resume.

A data source is any object with ``batch(rng, batch_size) -> dict`` whose entries
are the keyword arguments of ``model.loss_and_grad`` (``x``, ``y``, ``lengths``,
``mask``; ``src``, ``tgt``, … for seq2seq), plus optionally ``continues`` (False when
a stream restarts, so a stateful trainer drops its carried state): the tasks in
:mod:`numba_rnn.tasks` and :class:`ArrayData` are such sources.
``validation(n_batches, batch_size)`` gives a fixed validation set when a source has one.
"""
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .kernels import backend_of
from .clip import NonFiniteGradientWarning, clip_grad_norm, clip_grad_value, total_norm
from .optim import OPTIMIZERS, make_optimizer
from .rnn import atomic_savez, read_npz

_HISTORY_FIELDS = ("step", "loss", "grad_norm", "clipped", "seconds")
_VAL_FIELDS = ("val_step", "val_loss")


@dataclass
class History:
    """What happened at every step: loss, pre-clip gradient norm, whether clipping fired.

    ``val_step``/``val_loss`` hold the validation evaluations; ``stop_reason`` says
    why training ended early (None when it ran all its steps).
    """
    step: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)
    clipped: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    val_step: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    stop_reason: str | None = None

    def arrays(self):
        """Every field as a NumPy array (for saving and plotting)."""
        return {k: np.asarray(getattr(self, k), dtype=float if k != "clipped" else bool)
                for k in _HISTORY_FIELDS + _VAL_FIELDS}

    @classmethod
    def from_arrays(cls, arrays, stop_reason=None):
        h = cls(stop_reason=stop_reason)
        for k in _HISTORY_FIELDS + _VAL_FIELDS:
            values = np.asarray(arrays[k]).tolist()
            setattr(h, k, [int(v) for v in values] if k in ("step", "val_step")
                    else [bool(v) for v in values] if k == "clipped" else values)
        return h


class ArrayData:
    """Minibatches from fixed arrays, sampled without replacement epoch by epoch.

    ``arrays`` are keyword arguments of ``loss_and_grad`` whose batch axis is
    ``batch_axis[name]`` (default: 1 for 3-D ``x``/``src`` and 2-D sequence targets,
    else 0 — time-major data); all must agree on the number of examples.
    """

    def __init__(self, batch_axis=None, **arrays):
        if not arrays:
            raise ValueError("ArrayData needs at least one array")
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.axis = {k: self._default_axis(k, v) for k, v in self.arrays.items()}
        self.axis.update(batch_axis or {})
        sizes = {k: v.shape[self.axis[k]] for k, v in self.arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"arrays disagree on the number of examples: {sizes}")
        self.n = next(iter(sizes.values()))
        if self.n == 0:
            raise ValueError("ArrayData needs at least one example")
        self._order, self._pos = None, 0

    def _default_axis(self, name, v):
        """Time-major data: sequences (T, N, ...) batch along axis 1, the rest along 0."""
        x = self.arrays.get("x", self.arrays.get("src"))
        if name in ("x", "src", "mask", "tgt") and v.ndim >= 2:
            return 1
        if name == "y" and x is not None and x.ndim == 3 and v.ndim >= 2 \
                and v.shape[:2] == x.shape[:2]:
            return 1                                       # per-step targets (T, N, ...)
        return 0

    def take(self, idx):
        return {k: np.take(v, idx, axis=self.axis[k]) for k, v in self.arrays.items()}

    def split(self, fraction, rng):
        """``(train, validation)``: a random ``fraction`` of the examples held out."""
        if not 0 < fraction < 1:
            raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
        idx = np.random.default_rng(rng).permutation(self.n)
        k = max(1, int(round(fraction * self.n)))
        if k >= self.n:
            raise ValueError("validation split leaves no training examples")
        val, tr = idx[:k], idx[k:]
        make = lambda ix: ArrayData(batch_axis=self.axis, **self.take(np.sort(ix)))  # noqa: E731
        return make(tr), make(val)

    def batch(self, rng, batch_size):
        if self._order is None or self._pos + batch_size > self.n:
            self._order, self._pos = rng.permutation(self.n), 0
        idx = self._order[self._pos:self._pos + batch_size]
        self._pos += batch_size
        return self.take(idx)

    def get_state(self):
        """The epoch order and position (checkpointed, for exact resume)."""
        return {"order": self._order, "pos": self._pos}

    def set_state(self, st):
        self._order, self._pos = st["order"], int(st["pos"])

    def validation(self, n_batches, batch_size):
        return [self.take(np.arange(i, min(i + batch_size, self.n)))
                for i in range(0, self.n, batch_size)]


def _eval(model, batches):
    """Mean loss over fixed batches (no update)."""
    return float(np.mean([model.loss_and_grad(**b)[0] for b in batches]))


def _snapshot(params):
    """Copies of the parameters, on their own device."""
    return {k: backend_of(v).copy(v) for k, v in params.items()}


def _restore(params, snap):
    for k, v in snap.items():
        backend_of(params[k]).assign_(params[k], v)


def _host_arrays(arrays):
    """Arrays for a checkpoint: device arrays are copied to the host."""
    return {k: backend_of(v).to_host(v) if backend_of(v) is not None else v
            for k, v in arrays.items()}


def fit(model, data, *, steps=1000, batch_size=32, optimizer="adam", lr=1e-3,
        optimizer_kwargs=None, clip_norm=None, clip_value=None, tbptt=None, stateful=False,
        val_data=None, val_fraction=None, val_batches=4, eval_every=100, patience=None,
        min_delta=0.0, progress=None, checkpoint=None, checkpoint_every=None, resume=False,
        seed=0, callback=None):
    """Train ``model`` on ``data``; returns a :class:`History`.

    Parameters
    ----------
    model
        Any model of :mod:`numba_rnn.models` (anything with ``params`` and
        ``loss_and_grad``).
    data
        A data source (module doc), or an :class:`ArrayData`.
    steps : int
        Optimizer updates in total (a resumed run counts the steps already done).
    batch_size : int
    optimizer : {"sgd", "adam", "rmsprop", "adagrad"}, or an optimizer instance
    lr : float
    clip_norm, clip_value : float, optional
        Clip the gradients by global norm, or by value, before each update.
    tbptt : int or (k1, k2), optional
        Truncated BPTT for long sequences (many-to-many models): each batch is cut
        into chunks of k1 steps, the hidden state is carried across chunks, and each
        update backpropagates through the last k2 steps (k2 a multiple of k1,
        default k1), counting the loss on the newest k1 steps only.
    stateful : bool
        Carry the hidden state across batches too (consecutive batches continue the
        same streams, as :class:`~numba_rnn.tasks.CharCorpus` gives).
    val_data / val_fraction
        A validation source, or the fraction of an :class:`ArrayData` to hold out.
    eval_every : int
        Steps between validation evaluations.
    patience : int, optional
        Early stopping: stop after this many evaluations without the validation loss
        improving by more than ``min_delta``, restoring the best weights.
    progress : bool, optional
        A tqdm progress bar; default on only when stderr is a terminal.
    checkpoint : path, optional
        Write weights, optimizer state, history and random states there (atomically:
        a temporary file, then a rename) every ``checkpoint_every`` steps and at the
        end. With ``resume=True`` an existing checkpoint is loaded and training
        continues to exactly the weights an uninterrupted run reaches.
    seed : int
        Seeds the data stream.
    callback : callable, optional
        ``callback(step, history)`` after every step; returning True stops training.

    Notes
    -----
    A non-finite loss or gradient norm stops training at once: the weights are put
    back to the last ones that gave a finite loss, ``history.stop_reason`` says what
    happened, and a ``RuntimeWarning`` is issued.
    """
    if clip_norm is not None and clip_value is not None:
        raise ValueError("give clip_norm or clip_value, not both")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer ≥ 0, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    k1, k2 = _tbptt_lengths(tbptt)
    params = model.params
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {optimizer!r}")
        opt = make_optimizer(optimizer, params, lr=lr, **(optimizer_kwargs or {}))
    else:
        opt = optimizer
    rng = np.random.default_rng(seed)
    if val_fraction is not None:
        if not isinstance(data, ArrayData):
            raise ValueError("val_fraction splits an ArrayData; give val_data for other sources")
        data, val_data = data.split(val_fraction, rng)
    val_set = val_data.validation(val_batches, batch_size) if val_data is not None else None

    history = History()
    state = _TrainState()
    state.data = data
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        _load_checkpoint(checkpoint, model, opt, rng, history, state)
    if progress is None:
        progress = sys.stderr.isatty()
    from tqdm.auto import tqdm
    bar = tqdm(total=steps, initial=min(state.step, steps), disable=not progress,
               desc="training", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter() - (history.seconds[-1] if history.seconds else 0.0)
    try:
        while state.step < steps:
            snapshot = _snapshot(params)
            batch = _next_batch(data, rng, batch_size, state, k1, k2, stateful)
            with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
                warnings.simplefilter("ignore", NonFiniteGradientWarning)  # reported below
                loss, grads, info = model.loss_and_grad(**batch, return_info=True)
            if clip_norm is not None:
                norm = clip_grad_norm(grads, clip_norm)
                clipped = math.isfinite(norm) and norm > clip_norm
            else:
                norm = total_norm(grads)
                clipped = (clip_value is not None and math.isfinite(norm)
                           and clip_grad_value(grads, clip_value) > 0)
            state.step += 1
            if not (math.isfinite(loss) and math.isfinite(norm)):
                what = "loss" if not math.isfinite(loss) else "gradient norm"
                history.stop_reason = (f"non-finite {what} at step {state.step} (loss={loss}, "
                                       f"gradient norm={norm}); weights restored to the last "
                                       f"finite step")
                _restore(params, state.last_good or snapshot)
                warnings.warn(history.stop_reason, RuntimeWarning, stacklevel=2)
                break
            state.last_good = snapshot
            if k1 is not None or stateful:
                state.h = info["h_n"]
            opt.step(grads)
            history.step.append(state.step)
            history.loss.append(loss)
            history.grad_norm.append(norm)
            history.clipped.append(bool(clipped))
            history.seconds.append(time.perf_counter() - t0)
            bar.update(1)
            if val_set is not None and (state.step % eval_every == 0 or state.step == steps):
                val = _eval(model, val_set)
                history.val_step.append(state.step)
                history.val_loss.append(val)
                bar.set_postfix(loss=f"{loss:.4g}", val=f"{val:.4g}")
                if patience is not None and _early_stop(state, val, min_delta, patience, params):
                    history.stop_reason = (f"validation loss did not improve for {patience} "
                                           f"evaluations; best weights (step {state.best_step}) "
                                           f"restored")
                    _restore(params, state.best)
                    break
            elif state.step % 10 == 0:
                bar.set_postfix(loss=f"{loss:.4g}")
            if checkpoint is not None and checkpoint_every and state.step % checkpoint_every == 0:
                save_checkpoint(checkpoint, model, opt, rng, history, state)
            if callback is not None and callback(state.step, history):
                history.stop_reason = f"stopped by callback at step {state.step}"
                break
    finally:
        bar.close()
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, opt, rng, history, state)
    return history


def _tbptt_lengths(tbptt):
    if tbptt is None:
        return None, None
    k1, k2 = (tbptt, tbptt) if isinstance(tbptt, int) else tuple(tbptt)
    if not (isinstance(k1, int) and isinstance(k2, int) and k1 >= 1 and k2 >= k1
            and k2 % k1 == 0):
        raise ValueError(f"tbptt must be k1 or (k1, k2) with k2 a multiple of k1 ≥ 1, "
                         f"got {tbptt!r}")
    return k1, k2


class _TrainState:
    """Everything besides weights and optimizer that a resume needs."""

    def __init__(self):
        self.step = 0
        self.last_good = None
        self.best = None
        self.best_val = math.inf
        self.best_step = 0
        self.bad_evals = 0
        self.batch = None          # the long batch being cut into tbptt chunks
        self.pos = 0               # where the next chunk ends ... starts
        self.h = None              # carried hidden state
        self.starts = {}           # tbptt: state at chunk boundaries, by position
        self.data = None           # the training source (its epoch state is checkpointed)


def _early_stop(state, val, min_delta, patience, params):
    if val < state.best_val - min_delta:
        state.best_val, state.best_step, state.bad_evals = val, state.step, 0
        state.best = _snapshot(params)
        return False
    state.bad_evals += 1
    return state.bad_evals >= patience and state.best is not None


def _next_batch(data, rng, batch_size, state, k1, k2, stateful):
    """The next minibatch; with tbptt the next window of the current long batch.

    Truncated BPTT: chunk c covers steps [pos, pos + k1) of the long batch; its window
    starts k2 - k1 steps earlier (from the state stored at that chunk boundary), and
    the mask counts the loss on the chunk's own steps only.
    """
    if k1 is None:
        batch = data.batch(rng, batch_size)
        if not batch.pop("continues", True):
            state.h = None
        if stateful:
            batch["h0"] = state.h
        return batch
    if state.batch is None or state.pos >= state.batch["x"].shape[0]:
        state.batch, state.pos, state.starts = data.batch(rng, batch_size), 0, {}
        if not (stateful and state.batch.pop("continues", True)):
            state.h = None
    pos = state.pos
    state.starts[pos] = state.h                           # the state entering this chunk
    end = min(pos + k1, state.batch["x"].shape[0])
    start = max(0, pos - (k2 - k1))                       # a chunk boundary
    window = {k: state.batch[k][start:end] for k in ("x", "y")}
    mask = np.zeros((end - start, window["x"].shape[1]), dtype=bool)
    mask[pos - start:] = True                             # loss on the newest k1 steps only
    window["mask"] = mask
    window["h0"] = state.starts[start]
    keep_from = max(0, end - (k2 - k1))
    state.starts = {p: h for p, h in state.starts.items() if p >= keep_from}
    state.pos = end
    return window


def save_checkpoint(path, model, opt, rng, history, state):
    """Weights, optimizer state, history and random states in one ``.npz`` (atomic)."""
    arrays = {f"param/{k}": v for k, v in model.params.items()}
    sd = opt.state_dict()
    for b, d in sd["state"].items():
        arrays.update({f"opt/{b}/{k}": v for k, v in d.items()})
    arrays.update({f"hist/{k}": v for k, v in history.arrays().items()})
    if state.best is not None:
        arrays.update({f"best/{k}": v for k, v in state.best.items()})
    if state.h is not None:
        arrays["carry/h"] = state.h
    if state.batch is not None:
        arrays.update({f"carry/batch/{k}": v for k, v in state.batch.items()
                       if v is not None})
    for p, h in state.starts.items():
        if h is not None:
            arrays[f"carry/start/{p}"] = h
    data_state = state.data.get_state() if hasattr(state.data, "get_state") else {}
    if data_state.get("order") is not None:
        arrays["data/order"] = data_state["order"]
    meta = {"format": "numba_rnn.checkpoint/1", "step": state.step,
            "optimizer": {"class": sd["class"], "steps": sd["steps"], "hyper": sd["hyper"]},
            "rng": rng.bit_generator.state, "model_rng": _model_rng_states(model),
            "best_val": state.best_val, "best_step": state.best_step,
            "bad_evals": state.bad_evals, "pos": state.pos,
            "starts": sorted(state.starts), "stop_reason": history.stop_reason,
            "data_pos": data_state.get("pos")}
    arrays = _host_arrays(arrays)
    arrays["__meta__"] = np.array(json.dumps(meta))
    atomic_savez(path, arrays)


def _model_rng_states(model):
    return {part: getattr(model, part).rng.bit_generator.state
            for part in getattr(model, "_parts", ()) if hasattr(getattr(model, part), "rng")}


def load_checkpoint_arrays(path):
    """The raw contents of a checkpoint: ``(meta dict, arrays)``; clear errors if corrupt."""
    arrays = read_npz(path)
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
        assert meta["format"] == "numba_rnn.checkpoint/1"
    except (KeyError, ValueError, AssertionError, TypeError) as err:
        raise ValueError(f"{path} is not a numba_rnn checkpoint") from err
    return meta, arrays


def _load_checkpoint(path, model, opt, rng, history, state):
    meta, arrays = load_checkpoint_arrays(path)
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    model.load_params(params)
    opt_state = {}
    for k, v in arrays.items():
        if k.startswith("opt/"):
            _, b, name = k.split("/", 2)
            opt_state.setdefault(b, {})[name] = v
    opt.load_state_dict({"class": meta["optimizer"]["class"], "steps": meta["optimizer"]["steps"],
                         "hyper": meta["optimizer"]["hyper"], "state": opt_state})
    rng.bit_generator.state = meta["rng"]
    for part, st in meta["model_rng"].items():
        getattr(model, part).rng.bit_generator.state = st
    restored = History.from_arrays({k[5:]: v for k, v in arrays.items() if k.startswith("hist/")},
                                   meta["stop_reason"])
    history.__dict__.update(restored.__dict__)
    state.step, state.pos = meta["step"], meta["pos"]
    state.best_val, state.best_step, state.bad_evals = (meta["best_val"], meta["best_step"],
                                                        meta["bad_evals"])
    best = {k[5:]: v for k, v in arrays.items() if k.startswith("best/")}
    state.best = best or None
    state.h = arrays.get("carry/h")
    batch = {k[len("carry/batch/"):]: v for k, v in arrays.items()
             if k.startswith("carry/batch/")}
    state.batch = batch or None
    state.starts = {p: arrays.get(f"carry/start/{p}") for p in meta["starts"]}
    if "data/order" in arrays and hasattr(state.data, "set_state"):
        state.data.set_state({"order": arrays["data/order"], "pos": meta["data_pos"]})
