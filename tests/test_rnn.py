"""nr.RNN against the textbook reference and against central finite differences."""
import numpy as np
import pytest

import numba_rnn as nr

from .conftest import (GRID, GRID_IDS, central_difference, make_problem, reference_run,
                       rel_err)


@pytest.mark.parametrize("bidirectional,num_layers,nonlinearity,batch_first", GRID, ids=GRID_IDS)
def test_forward_backward_match_reference_float64(bidirectional, num_layers, nonlinearity,
                                                  batch_first):
    rnn, x, h0, d_out, d_hn = make_problem(bidirectional, num_layers, nonlinearity, batch_first)
    out, h_n, cache = rnn.forward(x, h0)
    grads, dx, dh0 = rnn.backward(cache, d_out, d_hn)
    r_out, r_hn, r_grads, r_dx, r_dh0, r_norms = reference_run(rnn, x, h0, d_out, d_hn)
    np.testing.assert_allclose(out, r_out, rtol=0, atol=1e-10)
    np.testing.assert_allclose(h_n, r_hn, rtol=0, atol=1e-10)
    assert list(grads) == list(rnn.params)
    for name in rnn.params:
        assert grads[name].shape == rnn.params[name].shape
        np.testing.assert_allclose(grads[name], r_grads[name], rtol=1e-10, atol=1e-10,
                                   err_msg=name)
    np.testing.assert_allclose(dx, r_dx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dh0, r_dh0, rtol=1e-10, atol=1e-10)
    assert set(cache.hidden_grad_norms) == set(r_norms)
    for key, norms in cache.hidden_grad_norms.items():
        np.testing.assert_allclose(norms, r_norms[key], rtol=1e-10, atol=1e-12)


def _loss(rnn, x, h0, R, S):
    """L = Σ out·R + Σ h_n·S, so that ∂L/∂out = R and ∂L/∂h_n = S."""
    out, h_n, _ = rnn.forward(x, h0, rng=np.random.default_rng(7))
    return float(np.sum(out * R) + np.sum(h_n * S))


@pytest.mark.parametrize("bidirectional,num_layers,nonlinearity,batch_first", GRID, ids=GRID_IDS)
def test_gradients_match_central_differences(bidirectional, num_layers, nonlinearity,
                                             batch_first):
    rnn, x, h0, R, S = make_problem(bidirectional, num_layers, nonlinearity, batch_first,
                                    T=4, N=2, D=3, H=4, seed=3)
    _, _, cache = rnn.forward(x, h0)
    grads, dx, dh0 = rnn.backward(cache, R, S)
    f = lambda: _loss(rnn, x, h0, R, S)  # noqa: E731
    for name, p in rnn.params.items():
        assert rel_err(grads[name], central_difference(f, p)) <= 1e-6, name
    assert rel_err(dx, central_difference(f, x)) <= 1e-6
    assert rel_err(dh0, central_difference(f, h0)) <= 1e-6


def test_dropout_gradients_match_central_differences():
    rnn, x, h0, R, S = make_problem(True, 3, "tanh", False, T=4, N=2, D=3, H=4, seed=5,
                                    dropout=0.4)
    _, _, cache = rnn.forward(x, h0, rng=np.random.default_rng(7))
    assert any(lc.mask is not None and (lc.mask == 0).any() for lc in cache.layers)
    grads, dx, dh0 = rnn.backward(cache, R, S)
    f = lambda: _loss(rnn, x, h0, R, S)  # noqa: E731
    for name, p in rnn.params.items():
        assert rel_err(grads[name], central_difference(f, p)) <= 1e-6, name
    assert rel_err(dx, central_difference(f, x)) <= 1e-6


def test_dropout_matches_reference_with_the_same_masks():
    rnn, x, h0, d_out, d_hn = make_problem(False, 3, "relu", False, dropout=0.5, seed=2)
    out, h_n, cache = rnn.forward(x, h0)
    grads, dx, dh0 = rnn.backward(cache, d_out, d_hn)
    masks = {k: lc.mask for k, lc in enumerate(cache.layers) if lc.mask is not None}
    assert sorted(masks) == [1, 2]
    for m in masks.values():   # inverted dropout: 0 or 1/(1-p)
        assert set(np.unique(m)) <= {0.0, 2.0}
    r_out, r_hn, r_grads, r_dx, r_dh0, _ = reference_run(rnn, x, h0, d_out, d_hn, masks)
    np.testing.assert_allclose(out, r_out, atol=1e-10)
    for name in grads:
        np.testing.assert_allclose(grads[name], r_grads[name], atol=1e-10)
    np.testing.assert_allclose(dx, r_dx, atol=1e-10)


def test_dropout_is_training_only_and_reproducible_with_seed():
    kw = dict(num_layers=2, dropout=0.5, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    a, b = nr.RNN(3, 5, seed=11, **kw), nr.RNN(3, 5, seed=11, **kw)
    out_a, _, _ = a.forward(x)
    out_b, _, _ = b.forward(x)
    np.testing.assert_array_equal(out_a, out_b)               # same seed, same masks
    out_a2, _, _ = a.forward(x)
    assert not np.array_equal(out_a, out_a2)                  # a new mask each call
    infer, _ = a(x)
    no_drop, _, _ = a.forward(x, training=False)
    np.testing.assert_array_equal(infer, no_drop)             # __call__ never drops


def test_dropout_warns_for_a_single_layer():
    with pytest.warns(UserWarning, match="num_layers=1"):
        nr.RNN(3, 4, dropout=0.2)


def test_call_equals_forward_and_h_n_is_the_last_state():
    rnn, x, h0, _, _ = make_problem(True, 2, "tanh", False)
    out, h_n = rnn(x, h0)
    out2, h_n2, _ = rnn.forward(x, h0)
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(h_n, h_n2)
    H = rnn.hidden_size
    np.testing.assert_array_equal(h_n[2], out[-1, :, :H])     # last layer, forward: a<T-1>
    np.testing.assert_array_equal(h_n[3], out[0, :, H:])      # last layer, reverse: a<0>


def test_unbatched_input_equals_batch_of_one():
    rnn, x, h0, d_out, d_hn = make_problem(True, 2, "tanh", False, N=1)
    out, h_n, cache = rnn.forward(x[:, 0], h0[:, 0])
    assert out.shape == (5, 12) and h_n.shape == (4, 6)
    grads, dx, dh0 = rnn.backward(cache, d_out[:, 0], d_hn[:, 0])
    assert dx.shape == (5, 4) and dh0.shape == (4, 6)
    out1, h_n1, cache1 = rnn.forward(x, h0)
    grads1, dx1, dh01 = rnn.backward(cache1, d_out, d_hn)
    np.testing.assert_array_equal(out, out1[:, 0])
    np.testing.assert_array_equal(dx, dx1[:, 0])
    np.testing.assert_array_equal(dh0, dh01[:, 0])
    for name in grads:
        np.testing.assert_array_equal(grads[name], grads1[name])


def test_batch_first_is_a_transpose_of_time_major():
    tm, x, h0, d_out, d_hn = make_problem(True, 2, "relu", False)
    bf = nr.RNN(4, 6, num_layers=2, nonlinearity="relu", bidirectional=True,
                batch_first=True, dtype=np.float64, seed=0)
    out, h_n, cache = tm.forward(x, h0)
    out_bf, h_n_bf, cache_bf = bf.forward(x.transpose(1, 0, 2), h0)
    np.testing.assert_array_equal(out_bf, out.transpose(1, 0, 2))
    np.testing.assert_array_equal(h_n_bf, h_n)
    g, dx, dh0 = tm.backward(cache, d_out, d_hn)
    g_bf, dx_bf, dh0_bf = bf.backward(cache_bf, d_out.transpose(1, 0, 2), d_hn)
    np.testing.assert_array_equal(dx_bf, dx.transpose(1, 0, 2))
    for name in g:
        np.testing.assert_array_equal(g_bf[name], g[name])


@pytest.mark.parametrize("bidirectional,num_layers", [(False, 1), (True, 3)])
def test_float32_within_tolerance_of_float64(bidirectional, num_layers):
    """float32 results are within 1e-4 (relative, per array) of float64 on the same weights."""
    r64, x, h0, d_out, d_hn = make_problem(bidirectional, num_layers, "tanh", False, T=20)
    r32 = nr.RNN(4, 6, num_layers=num_layers, bidirectional=bidirectional, dtype=np.float32)
    r32.params.update({k: v.astype(np.float32) for k, v in r64.params.items()})
    o64, h64, c64 = r64.forward(x, h0)
    g64, dx64, dh64 = r64.backward(c64, d_out, d_hn)
    o32, h32, c32 = r32.forward(x.astype(np.float32), h0.astype(np.float32))
    g32, dx32, dh32 = r32.backward(c32, d_out.astype(np.float32), d_hn.astype(np.float32))
    assert o32.dtype == h32.dtype == dx32.dtype == dh32.dtype == np.float32
    for a, b in [(o32, o64), (h32, h64), (dx32, dx64), (dh32, dh64)]:
        assert rel_err(a, b) < 1e-4
    for name in g64:
        assert g32[name].dtype == np.float32
        assert rel_err(g32[name], g64[name]) < 1e-4, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H", [6, 40, 100, 260])
def test_parallel_model_equals_serial_bitwise(dtype, H):
    """The parallel model cuts the hidden units into one panel per thread and runs the
    batched products' fixed row blocks on threads: the same bits as one core (outputs,
    every gradient, dx and the per-timestep norms)."""
    kw = dict(num_layers=2, bidirectional=True, dtype=dtype, seed=4)
    ser, par = nr.RNN(4, H, parallel=False, **kw), nr.RNN(4, H, parallel=True, **kw)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5, 4)).astype(dtype)
    d_out = rng.standard_normal((7, 5, 2 * H)).astype(dtype)
    lengths = np.array([7, 3, 5, 1, 7])
    o1, h1, c1 = ser.forward(x, lengths=lengths)
    o2, h2, c2 = par.forward(x, lengths=lengths)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(h1, h2)
    g1, dx1, dh1 = ser.backward(c1, d_out)
    g2, dx2, dh2 = par.backward(c2, d_out)
    np.testing.assert_array_equal(dx1, dx2)
    np.testing.assert_array_equal(dh1, dh2)
    for name in g1:
        np.testing.assert_array_equal(g1[name], g2[name])
    for key in c1.hidden_grad_norms:
        np.testing.assert_array_equal(c1.hidden_grad_norms[key], c2.hidden_grad_norms[key])


def test_concatenated_weight_view():
    rnn = nr.RNN(3, 4, seed=0, dtype=np.float64)
    W_a = rnn.W_a()
    assert W_a.shape == (4, 7)
    np.testing.assert_array_equal(W_a[:, :4], rnn.params["W_aa_l0"])
    np.testing.assert_array_equal(W_a[:, 4:], rnn.params["W_ax_l0"])


def test_no_bias_has_no_bias_parameters():
    rnn, x, h0, d_out, d_hn = make_problem(True, 2, "tanh", False, bias=False)
    assert not any(k.startswith("b_a") for k in rnn.params)
    out, h_n, cache = rnn.forward(x, h0)
    grads, dx, dh0 = rnn.backward(cache, d_out, d_hn)
    r_out, _, r_grads, r_dx, _, _ = reference_run(rnn, x, h0, d_out, d_hn)
    np.testing.assert_allclose(out, r_out, atol=1e-10)
    assert set(grads) == set(rnn.params)
    for name in grads:
        np.testing.assert_allclose(grads[name], r_grads[name], atol=1e-10)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_non_finite_input_propagates_as_in_numpy(bad, nonlinearity):
    rnn, x, h0, d_out, d_hn = make_problem(False, 2, nonlinearity, False)
    x[1, 0, 0] = bad
    with np.errstate(invalid="ignore", over="ignore"):
        out, h_n = rnn(x, h0)
        r_out, r_hn, *_ = reference_run(rnn, x, h0, d_out, d_hn)
    np.testing.assert_allclose(out, r_out, atol=1e-10, equal_nan=True)
    np.testing.assert_allclose(h_n, r_hn, atol=1e-10, equal_nan=True)
    assert np.isfinite(out[0]).all()                      # steps before the bad one are clean


@pytest.mark.parametrize("bidirectional,num_layers", [(False, 1), (True, 2), (True, 3)])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_lengths_equal_running_each_sequence_alone(bidirectional, num_layers, nonlinearity):
    """Packed-sequence semantics: sequence n behaves as if it were x[:lengths[n], n]."""
    rnn, x, h0, d_out, d_hn = make_problem(bidirectional, num_layers, nonlinearity, False,
                                           T=7, N=4)
    lengths = np.array([7, 3, 1, 5])
    out, h_n, cache = rnn.forward(x, h0, lengths=lengths)
    grads, dx, dh0 = rnn.backward(cache, d_out, d_hn)
    summed = {k: np.zeros_like(v) for k, v in grads.items()}
    for n, L in enumerate(lengths):
        sl = slice(n, n + 1)
        r_out, r_hn, r_grads, r_dx, r_dh0, r_norms = reference_run(
            rnn, x[:L, sl], h0[:, sl], d_out[:L, sl], d_hn[:, sl])
        np.testing.assert_allclose(out[:L, sl], r_out, atol=1e-12)
        np.testing.assert_array_equal(out[L:, n], 0.0)                  # zero padding
        np.testing.assert_allclose(h_n[:, sl], r_hn, atol=1e-12)
        np.testing.assert_allclose(dx[:L, sl], r_dx, atol=1e-12)
        np.testing.assert_array_equal(dx[L:, n], 0.0)
        np.testing.assert_allclose(dh0[:, sl], r_dh0, atol=1e-12)
        for key, norms in r_norms.items():
            np.testing.assert_allclose(cache.hidden_grad_norms[key][:L, n], norms[:, 0],
                                       atol=1e-12)
            np.testing.assert_array_equal(cache.hidden_grad_norms[key][L:, n], 0.0)
        for k in summed:
            summed[k] += r_grads[k]
    for k in grads:                                 # parameter gradients add over sequences
        np.testing.assert_allclose(grads[k], summed[k], atol=1e-11, err_msg=k)
    out_inf, h_n_inf = rnn(x, h0, lengths=lengths)
    np.testing.assert_array_equal(out_inf, out)
    np.testing.assert_array_equal(h_n_inf, h_n)


def test_lengths_gradients_match_central_differences():
    rnn, x, h0, R, S = make_problem(True, 2, "tanh", True, T=5, N=3, D=3, H=4, seed=8)
    lengths = np.array([2, 5, 4])

    def loss():
        out, h_n, _ = rnn.forward(x, h0, lengths=lengths)
        return float(np.sum(out * R) + np.sum(h_n * S))
    _, _, cache = rnn.forward(x, h0, lengths=lengths)
    grads, dx, dh0 = rnn.backward(cache, R, S)
    for name, p in rnn.params.items():
        assert rel_err(grads[name], central_difference(loss, p)) <= 1e-6, name
    assert rel_err(dx, central_difference(loss, x)) <= 1e-6
    assert rel_err(dh0, central_difference(loss, h0)) <= 1e-6


@pytest.mark.parametrize("lengths,exc,match", [
    ([3, 0, 2], ValueError, "between 1 and T=5"),
    ([3, 6, 2], ValueError, "between 1 and T=5"),
    ([3, 2], ValueError, r"lengths must have shape \(N,\)"),
    ([[3, 2, 1]], ValueError, r"lengths must have shape \(N,\)"),
    ([3.0, 2.0, 1.0], TypeError, "lengths must hold integers"),
])
def test_bad_lengths(lengths, exc, match):
    rnn, x, *_ = make_problem(False, 1, "tanh", False, N=3)
    with pytest.raises(exc, match=match):
        rnn.forward(x, lengths=lengths)
