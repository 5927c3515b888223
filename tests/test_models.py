"""Heads and every architecture: gradients against central differences (float64)."""
import numpy as np
import pytest

from numba_rnn.layers import Head
from numba_rnn.losses import get_loss
from numba_rnn.models import (ManyToMany, ManyToOne, OneToMany, OneToOne, Seq2Seq,
                              load_model)

from .conftest import check_model_gradients, rel_err

F64 = dict(dtype=np.float64, seed=0)


@pytest.mark.parametrize("output", ["identity", "softmax", "sigmoid"])
@pytest.mark.parametrize("hidden,act", [((), "tanh"), ((5, 4), "tanh"), ((6,), "relu")])
def test_head_gradients(output, hidden, act, rng):
    head = Head(3, 4, hidden=hidden, hidden_activation=act, output=output, dtype=np.float64,
                rng=0)
    feats = rng.standard_normal((5, 2, 3))
    R = rng.standard_normal((5, 2, 4))

    def loss():
        return float(np.sum(head.forward(feats) * R))
    _, cache = head.logits(feats)
    grads, d_feats = head.backward_output(cache, R)
    check_model_gradients(loss, grads, head.params)
    from .conftest import central_difference
    assert rel_err(d_feats, central_difference(loss, feats)) < 1e-7


def _seq_data(rng, T=5, N=3, D=4, n_out=3, loss="cross_entropy"):
    x = rng.standard_normal((T, N, D))
    if loss == "cross_entropy":
        y = rng.integers(0, n_out, (T, N))
    elif loss == "mse":
        y = rng.standard_normal((T, N, n_out))
    else:
        y = rng.random((T, N, n_out))
    return x, y


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "bce"])
@pytest.mark.parametrize("bidirectional,num_layers", [(False, 1), (True, 2)])
def test_many_to_many_gradients(loss, bidirectional, num_layers, rng):
    m = ManyToMany(4, 5, 3, loss=loss, bidirectional=bidirectional, num_layers=num_layers,
                   head_hidden=(4,), **F64)
    x, y = _seq_data(rng, loss=loss)
    mask = rng.random((5, 3)) > 0.2
    lengths = np.array([5, 3, 4])
    loss_val, grads = m.loss_and_grad(x, y, mask=mask, lengths=lengths)
    check_model_gradients(lambda: m.loss_and_grad(x, y, mask=mask, lengths=lengths)[0],
                          grads, m.params)


def test_many_to_many_loss_is_the_sum_over_time(rng):
    m = ManyToMany(4, 5, 3, **F64)
    x, y = _seq_data(rng)
    total, _ = m.loss_and_grad(x, y)
    out, _ = m.rnn(x)
    z, _ = m.head.logits(out)
    per_step = [get_loss("cross_entropy")(z[t], y[t])[0] for t in range(5)]
    assert total == pytest.approx(sum(per_step), rel=1e-12)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_many_to_one_gradients_with_lengths(bidirectional, loss, rng):
    m = ManyToOne(4, 5, 2, loss=loss, bidirectional=bidirectional, num_layers=2, **F64)
    x = rng.standard_normal((6, 3, 4))
    y = rng.integers(0, 2, 3) if loss == "cross_entropy" else rng.standard_normal((3, 2))
    lengths = np.array([6, 2, 4])
    _, grads = m.loss_and_grad(x, y, lengths=lengths)
    check_model_gradients(lambda: m.loss_and_grad(x, y, lengths=lengths)[0], grads, m.params)
    # padding after a sequence's end changes nothing
    x2 = x.copy()
    x2[2:, 1] = 99.0
    np.testing.assert_allclose(m.forward(x2, lengths=lengths)[1], m.forward(x, lengths=lengths)[1])


def test_one_to_one_gradients(rng):
    m = OneToOne(4, 6, 3, **F64)
    x, y = rng.standard_normal((7, 4)), rng.integers(0, 3, 7)
    _, grads = m.loss_and_grad(x, y)
    check_model_gradients(lambda: m.loss_and_grad(x, y)[0], grads, m.params)
    assert m.forward(x).shape == (7, 3)
    np.testing.assert_allclose(m.forward(x).sum(axis=1), 1.0)          # softmax


def test_one_to_many_gradients_and_generation(rng):
    m = OneToMany(5, 6, num_layers=2, **F64)
    x = np.eye(5)[rng.integers(0, 5, (4, 2))]
    y = rng.integers(0, 5, (4, 2))
    _, grads = m.loss_and_grad(x, y)
    check_model_gradients(lambda: m.loss_and_grad(x, y)[0], grads, m.params)
    ids = m.generate(np.array([0, 3]), 6)
    assert ids.shape == (6, 2) and ids.dtype.kind == "i"
    # greedy generation equals feeding the argmax back by hand through the model
    seq = [np.array([0, 3])]
    for _ in range(6):
        inp = np.eye(5)[np.stack(seq)]
        pred, _ = m.forward(inp)
        seq.append(pred[-1].argmax(axis=1))
    np.testing.assert_array_equal(ids, np.stack(seq[1:]))
    a = m.generate(1, 8, mode="sample", temperature=0.7, rng=3)
    np.testing.assert_array_equal(a, m.generate(1, 8, mode="sample", temperature=0.7, rng=3))
    assert a.shape == (8,)


def test_one_to_many_regression_feeds_values_back():
    m = OneToMany(2, 4, loss="mse", **F64)
    vals = m.generate(np.array([0.5, -0.5]), 3, mode="value")
    assert vals.shape == (3, 2)
    pred, _ = m.forward(np.array([[0.5, -0.5], vals[0], vals[1]])[:, None])
    np.testing.assert_allclose(vals, pred[:, 0], atol=1e-12)


@pytest.mark.parametrize("bidirectional,num_layers,dec_layers,dec_hidden", [
    (False, 1, 1, None),            # direct bridge
    (True, 2, 2, None),             # direct: each layer's [→; ←] is the decoder's state
    (True, 2, 1, 7),                # projected bridge
])
def test_seq2seq_gradients(bidirectional, num_layers, dec_layers, dec_hidden, rng):
    m = Seq2Seq(4, 6, 5, bidirectional=bidirectional, num_layers=num_layers,
                dec_layers=dec_layers, dec_hidden=dec_hidden, **F64)
    assert m.direct_bridge == (dec_hidden is None)
    src = rng.standard_normal((5, 3, 4))
    tgt = rng.integers(1, 6, (4, 3))                   # target shorter than source
    kw = dict(src_lengths=np.array([5, 2, 3]), tgt_lengths=np.array([4, 1, 3]))
    _, grads = m.loss_and_grad(src, tgt, **kw)
    check_model_gradients(lambda: m.loss_and_grad(src, tgt, **kw)[0], grads, m.params)
    out = m.decode(src, 7, src_lengths=kw["src_lengths"])
    assert out.shape == (7, 3)


def test_seq2seq_direct_bridge_passes_the_encoder_states(rng):
    m = Seq2Seq(4, 6, 5, bidirectional=True, num_layers=2, **F64)
    h_enc = rng.standard_normal((4, 3, 5))
    h0, _ = m._bridge(h_enc)
    assert h0.shape == (2, 3, 10)
    np.testing.assert_array_equal(h0[1, :, :5], h_enc[2])           # layer 1 forward
    np.testing.assert_array_equal(h0[1, :, 5:], h_enc[3])           # layer 1 reverse


def test_seq2seq_eos_stops_a_sequence(rng):
    m = Seq2Seq(4, 6, 5, **F64)
    src = rng.standard_normal((3, 4, 4))
    out = m.decode(src, 10, eos=int(m.decode(src, 1)[0, 0]))
    assert (out == out[0, 0]).all(axis=0)[0]


def test_save_and_load_every_model(tmp_path, rng):
    models = [ManyToMany(4, 5, 3, bidirectional=True, **F64), ManyToOne(4, 5, 2, **F64),
              OneToOne(4, 5, 2, **F64), OneToMany(4, 5, **F64),
              Seq2Seq(4, 6, 5, bidirectional=True, dec_layers=2, dec_hidden=3, **F64)]
    for i, m in enumerate(models):
        path = tmp_path / f"m{i}.npz"
        m.save(path)
        loaded = load_model(path)
        assert type(loaded) is type(m) and loaded.config == m.config
        for k, v in m.params.items():
            np.testing.assert_array_equal(loaded.params[k], v)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: OneToMany(4, 5, bidirectional=True), ValueError, "bidirectional"),
    (lambda: OneToMany(4, 5, 3), ValueError, "output_size"),
    (lambda: ManyToMany(4, 5, 3, loss="hinge"), ValueError, "loss"),
    (lambda: ManyToMany(4, 5, 3, hidden=3), TypeError, "unexpected keyword"),
    (lambda: Seq2Seq(4, 6, 5, bos=6), ValueError, "bos"),
])
def test_bad_model_construction(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_bad_model_inputs(rng):
    m = ManyToMany(4, 5, 3, **F64)
    x = rng.standard_normal((5, 2, 4))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        m.loss_and_grad(x, np.full((5, 2), 3))
    with pytest.raises(TypeError, match="integer class ids"):
        m.loss_and_grad(x, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="mask must have shape"):
        m.loss_and_grad(x, np.zeros((5, 2), int), mask=np.ones((2, 5)))
    with pytest.raises(ValueError, match="lengths must be between 1 and T=5"):
        m.loss_and_grad(x, np.zeros((5, 2), int), lengths=[6, 1])
    with pytest.raises(ValueError, match="lengths must be between"):
        m.loss_and_grad(x, np.zeros((5, 2), int), lengths=[0, 1])
    with pytest.raises(ValueError, match=r"lengths must have shape \(N,\)"):
        m.loss_and_grad(x, np.zeros((5, 2), int), lengths=[3])
    r = ManyToOne(4, 5, 1, loss="mse", **F64)
    with pytest.raises(TypeError, match="floats"):
        r.loss_and_grad(x, np.zeros((2, 1), int))
    s = Seq2Seq(4, 6, 5, **F64)
    with pytest.raises(TypeError, match="tgt must be integer"):
        s.loss_and_grad(x, np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        s.loss_and_grad(x, np.full((3, 2), 9))
    g = OneToMany(4, 5, **F64)
    with pytest.raises(ValueError, match="mode='value'"):
        g.generate(0, 3, mode="value")
    with pytest.raises(ValueError, match="temperature"):
        g.generate(0, 3, mode="sample", temperature=0)
    with pytest.raises(ValueError, match="start class ids"):
        g.generate(7, 3)
