"""Bad input gets a clear ValueError/TypeError naming the argument; odd layouts work."""
import numpy as np
import pytest

import numba_rnn as nr


@pytest.fixture
def model():
    return nr.RNN(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((5, 2, 3))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(input_size=0), ValueError, "input_size"),
    (dict(input_size=-3), ValueError, "input_size"),
    (dict(hidden_size=0), ValueError, "hidden_size"),
    (dict(hidden_size=2.5), TypeError, "hidden_size"),
    (dict(hidden_size=True), TypeError, "hidden_size"),
    (dict(num_layers=0), ValueError, "num_layers"),
    (dict(nonlinearity="sigmoid"), ValueError, "nonlinearity"),
    (dict(init="he"), ValueError, "init"),
    (dict(dtype=np.int32), TypeError, "dtype"),
    (dict(dtype=np.float16), TypeError, "dtype"),
    (dict(dtype="complex128"), TypeError, "dtype"),
    (dict(dropout=1.0, num_layers=2), ValueError, "dropout"),
    (dict(dropout=-0.1, num_layers=2), ValueError, "dropout"),
    (dict(dropout="0.5", num_layers=2), TypeError, "dropout"),
    (dict(spectral_radius=0.0), ValueError, "spectral_radius"),
    (dict(spectral_radius=np.nan), ValueError, "spectral_radius"),
    (dict(device="tpu"), ValueError, "device"),
])
def test_bad_constructor_arguments(kwargs, exc, match):
    args = dict(input_size=3, hidden_size=4)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        nr.RNN(**args)


@pytest.mark.parametrize("bad,exc,match", [
    (np.zeros((5, 2, 3, 1)), ValueError, r"x must be 3-D"),
    (np.zeros(5), ValueError, r"x must be 3-D"),
    (np.zeros((5, 2, 7)), ValueError, r"input_size=3"),
    (np.zeros((0, 2, 3)), ValueError, r"at least one time step"),
    (np.zeros((5, 0, 3)), ValueError, r"at least one time step"),
    (np.zeros((5, 2, 3), dtype=np.int64), TypeError, r"x must hold floating-point.*integer"),
    (np.zeros((5, 2, 3), dtype=bool), TypeError, r"x must hold floating-point.*bool"),
    (np.zeros((5, 2, 3), dtype=complex), TypeError, r"x must hold floating-point.*complex"),
    (np.zeros((5, 2, 3), dtype=object), TypeError, r"x must hold floating-point.*object"),
    ([["a", "b", "c"]], TypeError, r"x must hold floating-point.*string"),
])
def test_bad_x(model, bad, exc, match):
    with pytest.raises(exc, match=match):
        model(bad)
    with pytest.raises(exc, match=match):
        model.forward(bad)


@pytest.mark.parametrize("shape", [(4, 2), (2, 2, 4), (4, 3, 4), (4, 2, 5), (4, 2, 4, 1)])
def test_bad_h0_shape(model, x, shape):
    with pytest.raises(ValueError, match=r"h0 must have shape \(num_layers\*num_directions"):
        model(x, np.zeros(shape))


def test_bad_h0_dtype(model, x):
    with pytest.raises(TypeError, match="h0"):
        model(x, np.zeros((4, 2, 4), dtype=np.int32))


def test_bad_unbatched_h0(model, x):
    with pytest.raises(ValueError, match=r"h0 must have shape.*\(4, 4\)"):
        model(x[:, 0], np.zeros((4, 1, 4)))


def test_bad_gradients(model, x):
    out, h_n, cache = model.forward(x)
    with pytest.raises(ValueError, match=r"d_out must have shape .*\(5, 2, 8\)"):
        model.backward(cache, np.zeros((5, 2, 4)))
    with pytest.raises(ValueError, match=r"d_out must have shape"):
        model.backward(cache, np.zeros((2, 5, 8)))
    with pytest.raises(TypeError, match="d_out"):
        model.backward(cache, np.zeros((5, 2, 8), dtype=np.int64))
    with pytest.raises(ValueError, match=r"d_hn must have shape"):
        model.backward(cache, np.zeros_like(out), np.zeros((2, 2, 4)))
    with pytest.raises(TypeError, match="cache"):
        model.backward((out, h_n), np.zeros_like(out))
    other = nr.RNN(3, 4, dtype=np.float64)
    with pytest.raises(ValueError, match="cache does not come from this model"):
        other.backward(cache, np.zeros((5, 2, 4)))


def test_replaced_parameters_are_checked(model, x):
    model.params["W_aa_l0"] = np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"params\['W_aa_l0'\]"):
        model(x)
    model.params["W_aa_l0"] = np.zeros((4, 4), dtype=np.float32)
    with pytest.raises(TypeError, match=r"params\['W_aa_l0'\] must be a float64"):
        model(x)
    del model.params["W_aa_l0"]
    with pytest.raises(ValueError, match="rnn.params must have exactly the keys"):
        model(x)


def _layouts(x):
    """The same values as ``x`` in other memory layouts."""
    fortran = np.asfortranarray(x)
    strided = np.zeros((x.shape[0] * 2, x.shape[1], x.shape[2] * 3))[::2, :, ::3]
    strided[...] = x
    negative = x[::-1].copy()[::-1]
    readonly = x.copy()
    readonly.flags.writeable = False
    return {"fortran": fortran, "strided": strided, "negative-stride": negative,
            "read-only": readonly, "list": x.tolist(), "float32": x.astype(np.float32)}


@pytest.mark.parametrize("layout", ["fortran", "strided", "negative-stride", "read-only",
                                    "list", "float32"])
def test_layouts_give_the_same_result(model, x, layout):
    variant = _layouts(x)[layout]
    h0 = np.random.default_rng(1).standard_normal((4, 2, 4))
    out, h_n, cache = model.forward(x, h0)
    out2, h_n2, cache2 = model.forward(variant, _layouts(h0)[layout])
    tol = 1e-6 if layout == "float32" else 0
    np.testing.assert_allclose(out2, out, atol=tol, rtol=0)
    np.testing.assert_allclose(h_n2, h_n, atol=tol, rtol=0)
    d_out = np.random.default_rng(2).standard_normal(out.shape)
    g, dx, dh0 = model.backward(cache, d_out)
    g2, dx2, dh02 = model.backward(cache2, _layouts(d_out)[layout])
    np.testing.assert_allclose(dx2, dx, atol=tol * 10, rtol=0)
    np.testing.assert_allclose(dh02, dh0, atol=tol * 10, rtol=0)
    for name in g:
        np.testing.assert_allclose(g2[name], g[name], atol=tol * 100, rtol=0)
    assert out2.dtype == np.float64             # the other precision is cast to the model's


def test_inputs_are_not_modified(model, x):
    x0 = x.copy()
    h0 = np.ones((4, 2, 4))
    out, _, cache = model.forward(x, h0)
    d_out = np.ones_like(out)
    model.backward(cache, d_out, np.ones((4, 2, 4)))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(h0, 1.0)
    np.testing.assert_array_equal(d_out, 1.0)
