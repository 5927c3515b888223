"""Gradient clipping: joint p-norms, in-place scaling and clamping, non-finite reporting."""
import math

import numpy as np
import pytest

import numba_rnn as nr


def _grads(rng, dtype=np.float64, scale=10.0):
    return {"W_ax_l0": rng.standard_normal((4, 3)).astype(dtype) * scale,
            "W_aa_l0": rng.standard_normal((4, 4)).astype(dtype) * scale,
            "b_a_l0": rng.standard_normal(4).astype(dtype) * scale}


def _flat(grads):
    return np.concatenate([g.ravel().astype(np.float64) for g in grads.values()])


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 1.5, math.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_norm_matches_numpy(p, dtype, rng):
    grads = _grads(rng, dtype)
    before = {k: v.copy() for k, v in grads.items()}
    expected = np.linalg.norm(_flat(grads), ord=p)
    norm = nr.clip_grad_norm(grads, max_norm=1.0, norm_type=p)
    assert isinstance(norm, float)
    assert norm == pytest.approx(expected, rel=1e-12)
    coef = 1.0 / (expected + 1e-6)
    for k in grads:
        assert grads[k].dtype == dtype
        rtol = 1e-6 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(grads[k], before[k] * coef, rtol=rtol)
    assert np.linalg.norm(_flat(grads), ord=p) == pytest.approx(1.0, rel=1e-5)


def test_no_clipping_below_the_threshold(rng):
    grads = _grads(rng, scale=0.01)
    before = {k: v.copy() for k, v in grads.items()}
    norm = nr.clip_grad_norm(grads, max_norm=100.0)
    assert norm == pytest.approx(np.linalg.norm(_flat(before)))
    for k in grads:
        np.testing.assert_array_equal(grads[k], before[k])


def test_clip_matches_torch(rng):
    torch = pytest.importorskip("torch")
    grads = _grads(rng)
    params = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads.values()]
    for p, g in zip(params, grads.values(), strict=False):
        p.grad = torch.tensor(g)
    t_norm = torch.nn.utils.clip_grad_norm_(params, 2.0, norm_type=3.0)
    norm = nr.clip_grad_norm(grads, 2.0, norm_type=3.0)
    assert norm == pytest.approx(float(t_norm), rel=1e-12)
    for p, g in zip(params, grads.values(), strict=False):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-12)


def test_strided_and_fortran_gradients_are_clipped_in_place(rng):
    base = rng.standard_normal((6, 8)) * 10
    strided = base[::2, ::3]
    fortran = np.asfortranarray(rng.standard_normal((3, 5)) * 10)
    grads = {"a": strided, "f": fortran}
    expected = np.linalg.norm(np.concatenate([strided.ravel(), fortran.ravel()]))
    s0, f0 = strided.copy(), fortran.copy()
    norm = nr.clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(expected)
    np.testing.assert_allclose(base[::2, ::3], s0 / (expected + 1e-6))
    np.testing.assert_allclose(fortran, f0 / (expected + 1e-6))


def test_non_finite_norm_is_reported(rng):
    grads = _grads(rng)
    grads["W_aa_l0"][1, 1] = np.nan
    before = {k: v.copy() for k, v in grads.items()}
    with pytest.raises(nr.NonFiniteGradientError, match="nan"):
        nr.clip_grad_norm(grads, 1.0, error_if_nonfinite=True)
    with pytest.warns(RuntimeWarning, match="left unscaled"):
        norm = nr.clip_grad_norm(grads, 1.0)
    assert math.isnan(norm)
    for k in grads:
        np.testing.assert_array_equal(grads[k], before[k])
    grads["W_aa_l0"][1, 1] = np.inf
    for p in (2.0, math.inf, 1.0):
        with pytest.raises(nr.NonFiniteGradientError, match="inf"):
            nr.clip_grad_norm(grads, 1.0, norm_type=p, error_if_nonfinite=True)


def test_float32_squares_do_not_overflow():
    grads = {"g": np.full(10, 1e30, dtype=np.float32)}        # squares overflow float32
    norm = nr.clip_grad_norm(grads, 1.0, error_if_nonfinite=True)
    assert norm == pytest.approx(1e30 * np.sqrt(10), rel=1e-6)
    assert np.linalg.norm(grads["g"].astype(np.float64)) == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_value(rng):
    grads = _grads(rng)
    before = {k: v.copy() for k, v in grads.items()}
    moved = nr.clip_grad_value(grads, 5.0)
    assert moved == sum(int((np.abs(v) > 5.0).sum()) for v in before.values()) > 0
    for k in grads:
        np.testing.assert_array_equal(grads[k], np.clip(before[k], -5.0, 5.0))
    g = {"x": np.array([np.nan, 7.0, -7.0, 1.0], dtype=np.float32)}
    assert nr.clip_grad_value(g, 2.0) == 2
    np.testing.assert_array_equal(g["x"], [np.nan, 2.0, -2.0, 1.0])


def test_clip_on_real_gradients_of_a_model():
    rnn = nr.RNN(3, 8, num_layers=2, seed=0, spectral_radius=1.5, init="orthogonal")
    x = np.random.default_rng(0).standard_normal((30, 4, 3)).astype(np.float32)
    out, _, cache = rnn.forward(x)
    grads, _, _ = rnn.backward(cache, np.ones_like(out))
    total = nr.total_norm(grads)
    assert total > 1.0
    assert nr.clip_grad_norm(grads, 1.0) == pytest.approx(total, rel=1e-12)
    assert nr.total_norm(grads) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("call,exc,match", [
    (lambda g: nr.clip_grad_norm(g, 0.0), ValueError, "max_norm"),
    (lambda g: nr.clip_grad_norm(g, -1.0), ValueError, "max_norm"),
    (lambda g: nr.clip_grad_norm(g, np.nan), ValueError, "max_norm"),
    (lambda g: nr.clip_grad_norm(g, 1.0, norm_type=0.5), ValueError, "norm_type"),
    (lambda g: nr.clip_grad_norm(g, 1.0, norm_type="two"), TypeError, "norm_type"),
    (lambda g: nr.clip_grad_value(g, 0), ValueError, "clip_value"),
    (lambda g: nr.clip_grad_norm({"a": np.zeros(3, dtype=int)}, 1.0), TypeError, r"grads\['a'\]"),
    (lambda g: nr.clip_grad_norm({"a": [1.0, 2.0]}, 1.0), TypeError, r"grads\['a'\]"),
    (lambda g: nr.clip_grad_norm(3.0, 1.0), TypeError, "grads must be"),
])
def test_bad_clip_arguments(call, exc, match, rng):
    with pytest.raises(exc, match=match):
        call(_grads(rng))


def test_read_only_gradients_are_refused():
    g = np.ones(3)
    g.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        nr.clip_grad_value({"g": g}, 0.5)
