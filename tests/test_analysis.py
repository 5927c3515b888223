"""Gradient analysis against theory, finite differences and explicit Jacobians."""
import numpy as np
import pytest

import numba_rnn as nr
from numba_rnn import analysis as an

from .conftest import central_difference


def _near_linear(rho, T=30, H=12, N=3, seed=0):
    rnn = nr.RNN(4, H, init="orthogonal", spectral_radius=rho, bias=False,
                 dtype=np.float64, seed=seed)
    x = 1e-7 * np.random.default_rng(seed).standard_normal((T, N, 4))
    return rnn, x


@pytest.mark.parametrize("rho", [0.8, 1.0, 1.2])
def test_jacobian_norms_follow_rho_to_the_span(rho):
    rnn, x = _near_linear(rho)
    T = x.shape[0]
    J = an.jacobian_norms(rnn, x)
    expected = rho ** (T - 1 - np.arange(T))
    assert J[-1] == 1.0
    np.testing.assert_allclose(J, expected, rtol=1e-9)
    np.testing.assert_allclose(an.jacobian_norms(rnn, x, log=True), np.log(expected),
                               atol=1e-9)
    bound = an.gradient_bound(rnn, T)
    np.testing.assert_allclose(bound["radius_rate"], expected, rtol=1e-9)
    np.testing.assert_allclose(bound["norm_bound"], expected, rtol=1e-9)   # normal W_aa


def _explicit_jacobian(rnn, x, k, n, eps=1e-6):
    """∂a<T-1>/∂a<k> of sample n by central differences through the public API."""
    _, h_k = rnn(x[: k + 1, n:n + 1])                       # a<k>
    rest = x[k + 1:, n:n + 1]
    H = rnn.hidden_size
    J = np.zeros((H, H))
    for j in range(H):
        e = np.zeros_like(h_k)
        e[0, 0, j] = eps
        up = rnn(rest, h_k + e)[1][0, 0] if len(rest) else (h_k + e)[0, 0]
        down = rnn(rest, h_k - e)[1][0, 0] if len(rest) else (h_k - e)[0, 0]
        J[:, j] = (up - down) / (2 * eps)
    return J


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_jacobian_quantities_equal_explicit_jacobians(nonlinearity):
    rnn = nr.RNN(3, 6, nonlinearity=nonlinearity, init="orthogonal", spectral_radius=1.1,
                 dtype=np.float64, seed=1)
    x = np.random.default_rng(2).standard_normal((7, 2, 3))
    J = an.jacobian_norms(rnn, x)
    sv = an.jacobian_singular_values(rnn, x, k=2)
    for k in (0, 2, 5, 6):
        norms = [np.linalg.norm(_explicit_jacobian(rnn, x, k, n), 2) for n in range(2)]
        assert J[k] == pytest.approx(np.mean(norms), rel=1e-7)
    for n in range(2):
        np.testing.assert_allclose(sv[n], np.linalg.svd(_explicit_jacobian(rnn, x, 2, n),
                                                         compute_uv=False), rtol=1e-6,
                                   atol=1e-9)


def test_large_hidden_size_uses_lanczos_and_stays_exact():
    rnn = nr.RNN(3, 48, init="orthogonal", spectral_radius=0.9, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 1, 3))
    J = an.jacobian_norms(rnn, x)
    explicit = np.linalg.norm(_explicit_jacobian(rnn, x, 1, 0), 2)
    assert J[1] == pytest.approx(explicit, rel=1e-7)


def test_lyapunov_exponents_of_a_near_linear_rnn_are_log_rho():
    rnn, x = _near_linear(0.9, T=40, H=8, N=2)
    lam = an.lyapunov_exponents(rnn, x)
    assert lam.shape == (2, 8)
    np.testing.assert_allclose(lam, np.log(0.9), atol=1e-9)
    np.testing.assert_allclose(an.lyapunov_exponents(rnn, x, n_exponents=3), lam[:, :3],
                               atol=1e-12)
    # on a nonlinear trajectory the exponents add up exactly to the mean log-volume
    # change: Σ_i λ_i = (1/T) Σ_t log|det(diag(g'(z<t>)) W_aa)|
    rnn2 = nr.RNN(3, 5, init="orthogonal", spectral_radius=1.5, dtype=np.float64, seed=3)
    x2 = np.random.default_rng(3).standard_normal((12, 2, 3))
    lam2 = an.lyapunov_exponents(rnn2, x2)
    _, _, cache = rnn2.forward(x2)
    A = cache.layers[0].states[0]
    logdet = np.log(np.abs(np.linalg.det(rnn2.params["W_aa_l0"])))
    expected = (np.log(1 - A ** 2).sum(axis=(0, 2)) + 12 * logdet) / 12
    np.testing.assert_allclose(lam2.sum(axis=1), expected, rtol=1e-10)
    assert np.all(np.diff(lam2, axis=1) <= 0)


def test_hidden_grad_norms_equal_finite_differences():
    rnn = nr.RNN(3, 5, dtype=np.float64, seed=0, init="orthogonal", spectral_radius=1.3)
    rng = np.random.default_rng(1)
    T, N = 6, 2
    x = rng.standard_normal((T, N, 3))
    d_out = rng.standard_normal((T, N, 5))
    norms = an.hidden_grad_norms(rnn, x, d_out, per_sample=True)["l0"]
    out, _ = rnn(x)
    for t in range(T):
        _, a_t = rnn(x[: t + 1])                            # (1, N, H)
        rest = x[t + 1:]

        def loss_from(h, rest=rest, t=t):
            later = np.sum(rnn(rest, h)[0] * d_out[t + 1:]) if len(rest) else 0.0
            return float(later + np.sum(h[0] * d_out[t]))
        h = a_t.copy()
        g = central_difference(lambda h=h: loss_from(h), h)[0]  # ∂L/∂a<t>, (N, H)
        np.testing.assert_allclose(norms[t], np.linalg.norm(g, axis=1), rtol=1e-7)
    means = an.hidden_grad_norms(rnn, x, d_out)["l0"]
    np.testing.assert_allclose(means, norms.mean(axis=1))


@pytest.mark.parametrize("bidirectional,num_layers", [(False, 1), (True, 1), (True, 2),
                                                      (False, 3)])
def test_temporal_credit_rows_equal_single_step_backward_passes(bidirectional, num_layers):
    rnn = nr.RNN(3, 5, num_layers=num_layers, bidirectional=bidirectional, dtype=np.float64,
                 seed=0)
    rng = np.random.default_rng(0)
    T, N = 7, 3
    x = rng.standard_normal((T, N, 3))
    d_out = rng.standard_normal((T, N, rnn.num_directions * 5))
    directions = ["forward", "reverse"] if bidirectional else ["forward"]
    for layer in range(num_layers):
        for direction in directions:
            C = an.temporal_credit(rnn, x, d_out, layer=layer, direction=direction,
                                   per_sample=True)
            key = f"l{layer}" + ("_reverse" if direction == "reverse" else "")
            for t in range(T):
                d_t = np.zeros_like(d_out)
                d_t[t] = d_out[t]
                row = an.hidden_grad_norms(rnn, x, d_t, per_sample=True)[key]
                np.testing.assert_allclose(C[t], row, rtol=1e-10, atol=1e-14)
            if num_layers == 1:                              # causal: zero past the diagonal
                upper = np.triu(np.ones((T, T), bool), 1)
                mask = upper if direction == "forward" else upper.T
                assert (C[mask] == 0).all()


def test_weight_grad_contributions_sum_to_the_gradient():
    rnn = nr.RNN(3, 4, dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    x, d_out = rng.standard_normal((6, 3, 3)), rng.standard_normal((6, 3, 4))
    contrib = an.weight_grad_contributions(rnn, x, d_out)
    _, _, cache = rnn.forward(x)
    grads, _, _ = rnn.backward(cache, d_out, keep_deltas=True)
    delta, A = cache.deltas["l0"], cache.layers[0].states[0]
    prev = np.concatenate([np.zeros((1, 3, 4)), A[:-1]])
    terms = np.einsum("tnh,tnk->thk", delta, prev)
    np.testing.assert_allclose(terms.sum(0), grads["W_aa_l0"], atol=1e-12)
    np.testing.assert_allclose(contrib, np.linalg.norm(terms, axis=(1, 2)), rtol=1e-10)


def test_weight_spectrum_and_output_grad():
    rnn = nr.RNN(3, 6, init="orthogonal", spectral_radius=0.7, dtype=np.float64, seed=0)
    spec = an.weight_spectrum(rnn)
    assert spec["spectral_radius"] == pytest.approx(0.7)
    np.testing.assert_allclose(spec["singular_values"], 0.7)
    from numba_rnn.models import ManyToMany
    m = ManyToMany(3, 6, 2, dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    batch = {"x": rng.standard_normal((5, 2, 3)), "y": rng.integers(0, 2, (5, 2))}
    x, d_out = an.output_grad(m, **batch)
    assert d_out.shape == (5, 2, 6)
    norms = an.hidden_grad_norms(m.rnn, x, d_out)["l0"]
    _, _, info = m.loss_and_grad(**batch, return_info=True)
    np.testing.assert_allclose(norms, info["cache"].hidden_grad_norms["l0"].mean(1))


@pytest.mark.parametrize("call,exc,match", [
    (lambda r, x: an.jacobian_norms(r, x, layer=2), ValueError, "layer"),
    (lambda r, x: an.jacobian_norms(r, x, direction="reverse"), ValueError, "bidirectional"),
    (lambda r, x: an.jacobian_norms(r, x, direction="up"), ValueError, "direction"),
    (lambda r, x: an.jacobian_singular_values(r, x, k=9), ValueError, "k must"),
    (lambda r, x: an.lyapunov_exponents(r, x, n_exponents=9), ValueError, "n_exponents"),
    (lambda r, x: an.jacobian_norms("rnn", x), TypeError, "numba_rnn.RNN"),
    (lambda r, x: an.temporal_credit(r, x, np.zeros((5, 2, 3))), ValueError, "d_out"),
])
def test_bad_analysis_arguments(call, exc, match):
    rnn = nr.RNN(3, 4, dtype=np.float64, seed=0)
    with pytest.raises(exc, match=match):
        call(rnn, np.zeros((5, 2, 3)))
