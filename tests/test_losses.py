"""Losses summed over time: values against direct formulas, gradients against FD, errors."""
import numpy as np
import pytest

from numba_rnn import losses as L

from .conftest import central_difference, rel_err


def _logits(rng, T=4, N=3, C=5):
    return rng.standard_normal((T, N, C)) * 3


def test_cross_entropy_value_and_reductions(rng):
    z = _logits(rng)
    y = rng.integers(0, 5, (4, 3))
    mask = rng.random((4, 3)) > 0.3
    per = np.log(np.exp(z).sum(-1)) - np.take_along_axis(z, y[..., None], -1)[..., 0]
    loss, _ = L.softmax_cross_entropy(z, y, mask)
    assert loss == pytest.approx((per * mask).sum() / 3, rel=1e-12)       # sum over time, / N
    loss, _ = L.softmax_cross_entropy(z, y, mask, reduction="mean")
    assert loss == pytest.approx((per * mask).sum() / mask.sum(), rel=1e-12)


def test_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[[1000.0, 0.0, -1000.0]]])
    loss, dz = L.softmax_cross_entropy(z, np.array([[1]]))
    assert loss == pytest.approx(1000.0)
    np.testing.assert_allclose(dz, [[[1.0, -1.0, 0.0]]], atol=1e-12)


@pytest.mark.parametrize("name", ["cross_entropy", "mse", "bce"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_gradients_match_central_differences(name, reduction, rng):
    z = _logits(rng)
    if name == "cross_entropy":
        y = rng.integers(0, 5, (4, 3))
    else:
        y = rng.random((4, 3, 5))
    mask = (rng.random((4, 3)) > 0.3).astype(float) * 1.5
    fn = L.get_loss(name)
    loss, grad = fn(z, y, mask, reduction)
    assert grad.shape == z.shape and grad.dtype == z.dtype
    assert rel_err(grad, central_difference(lambda: fn(z, y, mask, reduction)[0], z)) < 1e-7


def test_single_step_shapes_and_float32(rng):
    z = rng.standard_normal((6, 4)).astype(np.float32)
    loss, dz = L.softmax_cross_entropy(z, rng.integers(0, 4, 6))
    assert dz.shape == (6, 4) and dz.dtype == np.float32
    loss, dz = L.mse(z, np.zeros((6, 4), np.float32))
    assert loss == pytest.approx(float(np.mean(z.astype(np.float64) ** 2, axis=1).mean()), rel=1e-6)
    loss, dz = L.bce_with_logits(z, np.ones((6, 4), np.float32))
    assert dz.dtype == np.float32


def test_bce_is_stable_and_matches_formula():
    z = np.array([[[-800.0, 0.0, 800.0]]])
    y = np.array([[[1.0, 0.5, 0.0]]])
    loss, dz = L.bce_with_logits(z, y)
    assert np.isfinite(loss) and loss == pytest.approx((800 + np.log(2) + 800) / 3)
    np.testing.assert_allclose(dz, [[[-1 / 3, 0.0, 1 / 3]]], atol=1e-12)


def test_lengths_mask():
    np.testing.assert_array_equal(L.lengths_mask([2, 3, 1], 3),
                                  [[1, 1, 1], [1, 1, 0], [0, 1, 0]])


@pytest.mark.parametrize("call,exc,match", [
    (lambda z: L.softmax_cross_entropy(z, np.full((4, 3), 5)), ValueError, r"\[0, 5\)"),
    (lambda z: L.softmax_cross_entropy(z, np.full((4, 3), -1)), ValueError, r"\[0, 5\)"),
    (lambda z: L.softmax_cross_entropy(z, np.zeros((4, 3))), TypeError, "integer class ids"),
    (lambda z: L.softmax_cross_entropy(z, np.zeros((3, 4), int)), ValueError, "targets must"),
    (lambda z: L.softmax_cross_entropy(z, np.zeros((4, 3), int), np.ones((3, 4))), ValueError,
     "mask must have shape"),
    (lambda z: L.softmax_cross_entropy(z, np.zeros((4, 3), int), np.zeros((4, 3)), "mean"),
     ValueError, "selects no step"),
    (lambda z: L.softmax_cross_entropy(z, np.zeros((4, 3), int), reduction="avg"), ValueError,
     "reduction"),
    (lambda z: L.softmax_cross_entropy(z, np.zeros((4, 3), int), np.full((4, 3), -1.0)),
     ValueError, "non-negative"),
    (lambda z: L.mse(z, np.zeros((4, 3, 5), int)), TypeError, "floats"),
    (lambda z: L.mse(z, np.zeros((4, 3, 4))), ValueError, "shape of the output"),
    (lambda z: L.bce_with_logits(z, np.full((4, 3, 5), 2.0)), ValueError, r"\[0, 1\]"),
    (lambda z: L.get_loss("hinge"), ValueError, "loss must be one of"),
    (lambda z: L.mse(z.astype(int), z), TypeError, "pred must be a float"),
])
def test_bad_loss_inputs(call, exc, match, rng):
    with pytest.raises(exc, match=match):
        call(_logits(rng))


def test_masked_out_labels_may_be_anything(rng):
    z = _logits(rng)
    y = rng.integers(0, 5, (4, 3))
    y[3, :] = -100                                  # padding label, masked out
    mask = np.ones((4, 3), bool)
    mask[3] = False
    loss, dz = L.softmax_cross_entropy(z, y, mask)
    assert np.isfinite(loss)
    np.testing.assert_array_equal(dz[3], 0.0)
