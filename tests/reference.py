"""A plain NumPy Elman RNN written like a textbook: the oracle for every kernel test.

No tricks: one time step at a time, the concatenated weight W_a = [W_aa | W_ax]
acting on [a<t-1>; x<t>], and the backward pass written step by step with the
chain rule. Slow and obviously correct. Time-major shapes: x (T, N, D).

    z<t> = W_a [a<t-1>; x<t>] + b_a,     a<t> = g(z<t>)
"""
import numpy as np


def act(z, nonlinearity):
    if nonlinearity == "tanh":
        return np.tanh(z)
    return np.maximum(z, 0.0)


def act_deriv(z, nonlinearity):
    if nonlinearity == "tanh":
        return 1.0 - np.tanh(z) ** 2
    return (z > 0).astype(z.dtype)


def names(layer, reverse):
    s = f"_l{layer}" + ("_reverse" if reverse else "")
    return "W_ax" + s, "W_aa" + s, "b_a" + s


def direction_forward(x, a0, W_ax, W_aa, b, nonlinearity, reverse):
    """One layer-direction. Returns the states A (T, N, H) and pre-activations Z."""
    T = x.shape[0]
    W_a = np.concatenate([W_aa, W_ax], axis=1)            # [W_aa | W_ax]
    A = np.zeros((T, x.shape[1], W_aa.shape[0]))
    Z = np.zeros_like(A)
    a_prev = a0
    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        stacked = np.concatenate([a_prev, x[t]], axis=1)  # [a<t-1>; x<t>]   (N, H + D)
        Z[t] = stacked @ W_a.T + (0.0 if b is None else b)
        A[t] = act(Z[t], nonlinearity)
        a_prev = A[t]
    return A, Z


def direction_backward(dA, d_last, x, a0, A, Z, W_ax, W_aa, nonlinearity, reverse):
    """Backward of one layer-direction, one step at a time.

    Returns dW_ax, dW_aa, db, dx, da0 and the per-sample norms ‖∂L/∂a<t>‖ (T, N).
    """
    T, N, H = A.shape
    dW_ax, dW_aa, db = np.zeros_like(W_ax), np.zeros_like(W_aa), np.zeros(H)
    dx = np.zeros_like(x)
    norms = np.zeros((T, N))
    da_next = d_last.copy()                   # ∂L/∂a<t> flowing back through time
    order = range(T) if reverse else range(T - 1, -1, -1)
    for t in order:
        da = dA[t] + da_next                  # total ∂L/∂a<t>
        norms[t] = np.linalg.norm(da, axis=1)
        dz = da * act_deriv(Z[t], nonlinearity)
        if reverse:
            a_prev = A[t + 1] if t + 1 < T else a0
        else:
            a_prev = A[t - 1] if t > 0 else a0
        for n in range(N):
            dW_aa += np.outer(dz[n], a_prev[n])
            dW_ax += np.outer(dz[n], x[t, n])
            db += dz[n]
        dx[t] = dz @ W_ax
        da_next = dz @ W_aa
    return dW_ax, dW_aa, db, dx, da_next, norms


def rnn_forward(x, h0, params, num_layers, bidirectional, nonlinearity, masks=None):
    """Stacked (bi)directional forward. ``masks[k]`` multiplies layer k's input (k > 0).

    Returns out (T, N, dirs·H), h_n (L·dirs, N, H) and a cache for rnn_backward.
    """
    dirs = 2 if bidirectional else 1
    masks = masks or {}
    inp, h_n, cache = x, [], []
    for k in range(num_layers):
        if k in masks:
            inp = inp * masks[k]
        outs, layer = [], []
        for d in range(dirs):
            wx, wa, bn = names(k, d == 1)
            a0 = h0[k * dirs + d]
            A, Z = direction_forward(inp, a0, params[wx], params[wa], params.get(bn),
                                     nonlinearity, reverse=d == 1)
            h_n.append(A[0] if d == 1 else A[-1])
            outs.append(A)
            layer.append((a0, A, Z))
        cache.append((inp, layer))
        inp = np.concatenate(outs, axis=2)
    return inp, np.stack(h_n), cache


def rnn_backward(cache, d_out, d_hn, params, num_layers, bidirectional, nonlinearity,
                 masks=None):
    """Returns grads (dict), dx (T, N, D), dh0 (L·dirs, N, H), norms {suffix: (T, N)}."""
    dirs = 2 if bidirectional else 1
    masks = masks or {}
    H = d_hn.shape[2]
    grads, norms = {}, {}
    dh0 = np.zeros_like(d_hn)
    d_layer = d_out
    for k in range(num_layers - 1, -1, -1):
        inp, layer = cache[k]
        d_inp = np.zeros_like(inp)
        for d in range(dirs):
            wx, wa, bn = names(k, d == 1)
            a0, A, Z = layer[d]
            dA = d_layer[:, :, d * H:(d + 1) * H]
            gx, ga, gb, dx, da0, nrm = direction_backward(
                dA, d_hn[k * dirs + d], inp, a0, A, Z, params[wx], params[wa],
                nonlinearity, reverse=d == 1)
            grads[wx], grads[wa] = gx, ga
            if bn in params:
                grads[bn] = gb
            d_inp += dx
            dh0[k * dirs + d] = da0
            norms[wx[len("W_ax_"):]] = nrm
        if k in masks:
            d_inp = d_inp * masks[k]
        d_layer = d_inp
    return grads, d_layer, dh0, norms
