"""Initialisers: the distributions they promise and spectral-radius scaling."""
import numpy as np
import pytest

import numba_rnn as nr
from numba_rnn.init import orthogonal, spectral_radius


def test_uniform_is_torch_default_range():
    H = 50
    rnn = nr.RNN(20, H, seed=0, dtype=np.float64)
    k = 1 / np.sqrt(H)
    for name, p in rnn.params.items():
        assert np.abs(p).max() <= k
        assert np.abs(p).max() > 0.9 * k, name            # fills the range
        assert abs(p.std() - k / np.sqrt(3)) < 0.1 * k     # U(-k, k) has std k/√3


def test_xavier_bounds_and_zero_bias():
    rnn = nr.RNN(30, 40, init="xavier", seed=0, dtype=np.float64)
    assert np.abs(rnn.params["W_ax_l0"]).max() <= np.sqrt(6 / 70)
    assert np.abs(rnn.params["W_aa_l0"]).max() <= np.sqrt(6 / 80)
    np.testing.assert_array_equal(rnn.params["b_a_l0"], 0)


def test_orthogonal_and_identity():
    rnn = nr.RNN(3, 16, init="orthogonal", num_layers=2, bidirectional=True, seed=0,
                 dtype=np.float64)
    for name, W in rnn.params.items():
        if name.startswith("W_aa"):
            np.testing.assert_allclose(W @ W.T, np.eye(16), atol=1e-12)
    irnn = nr.RNN(3, 8, init="identity", nonlinearity="relu", seed=0, dtype=np.float64)
    np.testing.assert_array_equal(irnn.params["W_aa_l0"], np.eye(8))
    assert np.abs(irnn.params["W_ax_l0"]).max() < 0.01
    q = orthogonal(np.random.default_rng(1), 5)
    np.testing.assert_allclose(q.T @ q, np.eye(5), atol=1e-12)


@pytest.mark.parametrize("init", ["uniform", "xavier", "orthogonal", "identity"])
@pytest.mark.parametrize("rho", [0.5, 1.0, 1.7])
def test_spectral_radius_scaling(init, rho):
    rnn = nr.RNN(3, 12, init=init, spectral_radius=rho, num_layers=2, seed=2,
                 dtype=np.float64)
    for name, W in rnn.params.items():
        if name.startswith("W_aa"):
            assert spectral_radius(W) == pytest.approx(rho, rel=1e-10)


def test_same_seed_same_weights_and_float32_cast():
    a, b = nr.RNN(3, 5, seed=9), nr.RNN(3, 5, seed=9)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
        assert a.params[name].dtype == np.float32 and a.params[name].flags.c_contiguous
    c = nr.RNN(3, 5, seed=10)
    assert not np.array_equal(a.params["W_aa_l0"], c.params["W_aa_l0"])
