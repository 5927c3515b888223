"""Output heads: ŷ⟨t⟩ = g_y(W_ya a⟨t⟩ + b_y), optionally after a small MLP.

A head maps features (…, F) — every time step (T, N, F) or one step (N, F) — to
logits z (…, O) and predictions ŷ = g_y(z) with g_y ∈ {identity, softmax, sigmoid}.
Training goes through the logits (the losses in :mod:`numba_rnn.losses` take logits
for numerical stability); :meth:`Head.backward_output` goes through g_y for a
gradient given on ŷ.

Parameters: hidden layers ``W_h{i}`` (F_{i+1}, F_i), ``b_h{i}``, then ``W_ya``
(O, F_last), ``b_y`` (O,). Every product is one GEMM over all rows.
"""
import numpy as np

from . import _validate as V
from .init import xavier_uniform
from .kernels import get_backend

OUTPUT_ACTIVATIONS = ("identity", "softmax", "sigmoid")
HIDDEN_ACTIVATIONS = ("tanh", "relu")


def softmax(z):
    """Softmax over the last axis, stable."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(z):
    """Logistic function, stable for large |z|."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class Head:
    """A dense output layer, optionally an MLP, applied to every row of its input.

    Parameters
    ----------
    in_features, out_features : int
    hidden : sequence of int
        Widths of hidden layers (an MLP head); empty for a single dense layer.
    hidden_activation : {"tanh", "relu"}
    output : {"identity", "softmax", "sigmoid"}
        g_y, applied by :meth:`forward` (predictions), not by :meth:`logits`.
    dtype : float32 or float64
    rng : numpy Generator or int seed
    device : {"cpu", "cuda"}
        Where the parameters live and the products run (see :class:`~numba_rnn.RNN`).
    """

    def __init__(self, in_features, out_features, *, hidden=(), hidden_activation="tanh",
                 output="identity", dtype=np.float32, rng=None, device="cpu"):
        self.in_features = V.positive_int(in_features, "in_features")
        self.out_features = V.positive_int(out_features, "out_features")
        self.hidden = tuple(V.positive_int(h, "hidden") for h in hidden)
        self.hidden_activation = V.choice(hidden_activation, "hidden_activation",
                                          HIDDEN_ACTIVATIONS)
        self.output = V.choice(output, "output", OUTPUT_ACTIVATIONS)
        self.dtype = V.model_dtype(dtype)
        self.device = device
        self._backend = get_backend(device)
        rng = np.random.default_rng(rng)
        sizes = (self.in_features, *self.hidden, self.out_features)
        self.params = {}
        for i in range(len(sizes) - 1):
            w, b = self._names(i)
            W = xavier_uniform(rng, sizes[i + 1], sizes[i]).astype(self.dtype)
            self.params[w] = self._backend.from_host(W)
            self.params[b] = self._backend.from_host(np.zeros(sizes[i + 1], dtype=self.dtype))

    def _names(self, i):
        last = i == len(self.hidden)
        return ("W_ya", "b_y") if last else (f"W_h{i}", f"b_h{i}")

    def param_shapes(self):
        return {k: v.shape for k, v in self.params.items()}

    def logits(self, features):
        """z = W_ya h + b_y over rows of ``features`` (…, F); returns ``(z, cache)``."""
        be = self._backend
        a = be.asarray(features, "features", self.dtype)
        shape = tuple(a.shape)          # (a device array's shape may not index from the end)
        if not shape or shape[-1] != self.in_features:
            raise ValueError(f"features must have {self.in_features} in their last axis, "
                             f"got shape {shape}")
        lead = shape[:-1]
        h = a.reshape(-1 if a.size else 0, self.in_features)
        kind = HIDDEN_ACTIVATIONS.index(self.hidden_activation)
        inputs = []
        for i in range(len(self.hidden) + 1):
            w, b = self._names(i)
            inputs.append(h)
            h = be.linear(h, self.params[w], self.params[b])        # (M, F_{i+1})
            if i < len(self.hidden):
                be.act_(h, kind)
        z = h.reshape(*lead, self.out_features)
        return z, (lead, inputs, z)

    def forward(self, features):
        """Predictions ŷ = g_y(z), shape (…, O)."""
        z, _ = self.logits(features)
        return self.activate(z)

    def activate(self, z):
        """g_y(z)."""
        if self.output == "identity":
            return z
        if self.device != "cpu":
            fn = self._backend.softmax if self.output == "softmax" else self._backend.sigmoid
            shape = tuple(z.shape)
            return fn(z.reshape(-1, shape[-1])).reshape(*shape)
        return softmax(z) if self.output == "softmax" else sigmoid(z)

    def backward(self, cache, dz):
        """Backward from ∂L/∂z (…, O); returns ``(grads, d_features)``."""
        be = self._backend
        lead, inputs, _ = cache
        d = be.asarray(dz, "dz", self.dtype).reshape(-1, self.out_features)
        kind = HIDDEN_ACTIVATIONS.index(self.hidden_activation)
        grads = {}
        for i in range(len(self.hidden), -1, -1):
            w, b = self._names(i)
            # dW = dᵀ·h_in (F_{i+1}, F_i), db = Σ_rows d, d ← d·W (M, F_i)
            grads[w], grads[b], d = be.linear_backward(d, inputs[i], self.params[w])
            if i > 0:                                               # through the activation
                be.act_grad_(d, inputs[i], kind)
        grads = {k: grads[k] for k in self.params}
        return grads, d.reshape(*lead, self.in_features)

    def backward_output(self, cache, dyhat):
        """Backward from ∂L/∂ŷ, through g_y; returns ``(grads, d_features)`` (CPU)."""
        if self.device != "cpu":
            raise ValueError("backward_output runs on the CPU only; give the gradient on "
                             "the logits to backward() instead")
        z = cache[2]
        dyhat = np.asarray(dyhat, dtype=self.dtype)
        if self.output == "softmax":
            y = softmax(z)
            dz = y * (dyhat - np.sum(dyhat * y, axis=-1, keepdims=True))
        elif self.output == "sigmoid":
            y = sigmoid(z)
            dz = dyhat * y * (1 - y)
        else:
            dz = dyhat
        return self.backward(cache, dz)
