"""Reliability, extreme numbers: saturation, explosions and overflow are exact or reported.

(The fast tanh's accuracy over the whole float range — exhaustively for float32 — is
in tests/test_fast_tanh.py.)
"""
import warnings

import numpy as np
import pytest

import numba_rnn as nr
from numba_rnn.clip import NonFiniteGradientError, NonFiniteGradientWarning


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturated_tanh_is_exactly_one_with_zero_derivative(dtype):
    rnn = nr.RNN(2, 5, num_layers=2, bidirectional=True, dtype=dtype, seed=0)
    for k in rnn.params:
        if k.startswith("W_ax_l0"):
            rnn.params[k][...] = 0
            rnn.params[k][:, 0] = 1.0     # z = x[0] + (at most ±2.7) in the first layer
    big = np.array([25.0, -25.0, 1e4, -1e30, 3e38, -1e3], dtype=dtype)  # |z| ≥ 20 for sure
    x = np.zeros((6, 1, 2), dtype=dtype)
    x[:, 0, 0] = big
    out, h_n, cache = rnn.forward(x)
    first = cache.layers[0].states[0][:, 0]          # layer 0 forward states (T, H)
    np.testing.assert_array_equal(np.abs(first), np.ones_like(first))
    np.testing.assert_array_equal(np.sign(first[:, 0]), np.sign(big))
    grads, dx, dh0 = rnn.backward(cache, np.ones_like(out), keep_deltas=True)
    delta = cache.deltas["l0"][:, 0]
    np.testing.assert_array_equal(delta, np.zeros_like(delta))   # g'(z) = 1 - 1² = 0 exactly
    for g in (*grads.values(), dx, dh0):
        assert np.isfinite(g).all()


def test_nan_input_propagates_and_is_reported():
    rnn = nr.RNN(2, 3, dtype=np.float64, seed=0)
    x = np.ones((4, 1, 2))
    x[2, 0, 1] = np.nan
    out, _, cache = rnn.forward(x)
    assert np.isnan(out[2:]).all() and np.isfinite(out[:2]).all()  # NaN never turns finite
    with pytest.warns(NonFiniteGradientWarning, match="non-finite gradients"):
        rnn.backward(cache, np.ones_like(out))


def _exploding_irnn(dtype, radius, T):
    rnn = nr.RNN(1, 4, nonlinearity="relu", init="identity", spectral_radius=radius,
                 dtype=dtype, seed=0)
    x = np.full((T, 1, 1), 0.1, dtype=dtype)
    return rnn, x


def test_relu_explosion_overflows_to_inf_and_clipping_refuses_it():
    rnn, x = _exploding_irnn(np.float32, 3.0, 200)   # 3^200 overflows float32
    out, _, cache = rnn.forward(x)
    assert np.isfinite(out[10]).all() and not np.isfinite(out[-1]).any()  # inf, then 0·inf
    with pytest.warns(NonFiniteGradientWarning, match=r"W_aa_l0"):
        grads, _, _ = rnn.backward(cache, np.ones_like(out))
    with pytest.raises(NonFiniteGradientError):
        nr.clip_grad_norm(grads, 1.0, error_if_nonfinite=True)


def test_float32_gradient_overflow_is_reported_with_the_time_step():
    """Forward finite, backward overflowing: 1.9^100 · 1e12 exceeds float32's range."""
    rnn, x = _exploding_irnn(np.float32, 1.9, 100)
    out, _, cache = rnn.forward(x)
    assert np.isfinite(out).all()
    with pytest.warns(NonFiniteGradientWarning, match=r"l0: ‖∂L/∂a<t>‖ non-finite at \d+ of "
                                                      r"100 steps, from t=\d+ back") as rec:
        grads, _, _ = rnn.backward(cache, np.full_like(out, 1e12))
    assert "float64" in str(rec[0].message)
    assert not np.isfinite(grads["W_aa_l0"]).all()
    rnn64, x64 = _exploding_irnn(np.float64, 1.9, 100)       # the same in float64 is finite
    out64, _, cache64 = rnn64.forward(x64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grads64, _, _ = rnn64.backward(cache64, np.full_like(out64, 1e12))
    assert all(np.isfinite(g).all() for g in grads64.values())


def test_training_stops_on_an_explosion_and_keeps_the_last_good_weights():
    model = nr.ManyToMany(1, 4, 1, loss="mse", nonlinearity="relu", init="identity",
                          spectral_radius=3.0, seed=0)
    T = 200
    data = nr.ArrayData(x=np.full((T, 8, 1), 0.1, np.float32),
                        y=np.zeros((T, 8, 1), np.float32))
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.warns(RuntimeWarning, match="non-finite"):
        hist = nr.fit(model, data, steps=5, batch_size=4, progress=False)
    assert "non-finite" in hist.stop_reason and len(hist.loss) == 0
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])
