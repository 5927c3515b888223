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
    """

    def __init__(self, in_features, out_features, *, hidden=(), hidden_activation="tanh",
                 output="identity", dtype=np.float32, rng=None):
        self.in_features = V.positive_int(in_features, "in_features")
        self.out_features = V.positive_int(out_features, "out_features")
        self.hidden = tuple(V.positive_int(h, "hidden") for h in hidden)
        self.hidden_activation = V.choice(hidden_activation, "hidden_activation",
                                          HIDDEN_ACTIVATIONS)
        self.output = V.choice(output, "output", OUTPUT_ACTIVATIONS)
        self.dtype = V.model_dtype(dtype)
        rng = np.random.default_rng(rng)
        sizes = (self.in_features, *self.hidden, self.out_features)
        self.params = {}
        for i in range(len(sizes) - 1):
            w, b = self._names(i)
            self.params[w] = xavier_uniform(rng, sizes[i + 1], sizes[i]).astype(self.dtype)
            self.params[b] = np.zeros(sizes[i + 1], dtype=self.dtype)

    def _names(self, i):
        last = i == len(self.hidden)
        return ("W_ya", "b_y") if last else (f"W_h{i}", f"b_h{i}")

    def param_shapes(self):
        return {k: v.shape for k, v in self.params.items()}

    def logits(self, features):
        """z = W_ya h + b_y over rows of ``features`` (…, F); returns ``(z, cache)``."""
        a = np.asarray(features)
        if a.shape[-1] != self.in_features:
            raise ValueError(f"features must have {self.in_features} in their last axis, "
                             f"got shape {a.shape}")
        lead = a.shape[:-1]
        h = np.ascontiguousarray(a, dtype=self.dtype).reshape(-1, self.in_features)
        inputs = []
        for i in range(len(self.hidden) + 1):
            w, b = self._names(i)
            inputs.append(h)
            h = h @ self.params[w].T + self.params[b]               # (M, F_{i+1})
            if i < len(self.hidden):
                h = np.tanh(h) if self.hidden_activation == "tanh" else np.maximum(h, 0)
        z = h.reshape(*lead, self.out_features)
        return z, (lead, inputs, z)

    def forward(self, features):
        """Predictions ŷ = g_y(z), shape (…, O)."""
        z, _ = self.logits(features)
        return self.activate(z)

    def activate(self, z):
        """g_y(z)."""
        if self.output == "softmax":
            return softmax(z)
        if self.output == "sigmoid":
            return sigmoid(z)
        return z

    def backward(self, cache, dz):
        """Backward from ∂L/∂z (…, O); returns ``(grads, d_features)``."""
        lead, inputs, _ = cache
        d = np.ascontiguousarray(dz, dtype=self.dtype).reshape(-1, self.out_features)
        grads = {}
        for i in range(len(self.hidden), -1, -1):
            w, b = self._names(i)
            h_in = inputs[i]
            grads[w] = d.T @ h_in                                   # (F_{i+1}, F_i)
            grads[b] = d.sum(axis=0)
            d = d @ self.params[w]                                  # (M, F_i)
            if i > 0:                                               # through the activation
                h = inputs[i]
                d = d * (1 - h * h) if self.hidden_activation == "tanh" else d * (h > 0)
        grads = {k: grads[k] for k in self.params}
        return grads, d.reshape(*lead, self.in_features)

    def backward_output(self, cache, dyhat):
        """Backward from ∂L/∂ŷ, through g_y; returns ``(grads, d_features)``."""
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
