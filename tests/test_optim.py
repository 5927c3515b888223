"""Optimizers: torch's update rules (when torch is there), closed forms, state round trips."""
import numpy as np
import pytest

from numba_rnn import optim

CONFIGS = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("sgd", dict(lr=0.1, momentum=0.5, dampening=0.3)),
    ("adam", dict(lr=0.01)),
    ("adam", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("rmsprop", dict(lr=0.01)),
    ("rmsprop", dict(lr=0.01, momentum=0.9, weight_decay=0.01)),
    ("adagrad", dict(lr=0.1, weight_decay=0.01)),
]


def _run(name, kw, dtype=np.float64, steps=5):
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((3, 4)).astype(dtype),
              "b": rng.standard_normal(4).astype(dtype)}
    start = {k: v.copy() for k, v in params.items()}
    opt = optim.make_optimizer(name, params, **kw)
    grads_seq = [{k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
                 for _ in range(steps)]
    for g in grads_seq:
        opt.step(g)
    return start, params, grads_seq, opt


@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_updates_equal_torch(name, kw):
    torch = pytest.importorskip("torch")
    start, params, grads_seq, _ = _run(name, kw)
    tparams = [torch.nn.Parameter(torch.tensor(start[k])) for k in ("a", "b")]
    tkw = dict(kw)
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop,
           "adagrad": torch.optim.Adagrad}[name]
    if tkw.pop("decoupled_weight_decay", False):
        cls = torch.optim.AdamW
    topt = cls(tparams, **tkw)
    for g in grads_seq:
        for p, k in zip(tparams, ("a", "b"), strict=True):
            p.grad = torch.tensor(g[k])
        topt.step()
    for p, k in zip(tparams, ("a", "b"), strict=True):
        np.testing.assert_allclose(params[k], p.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_plain_sgd_and_first_adam_step_closed_forms():
    start, params, grads_seq, _ = _run("sgd", dict(lr=0.1), steps=1)
    np.testing.assert_allclose(params["a"], start["a"] - 0.1 * grads_seq[0]["a"])
    start, params, grads_seq, _ = _run("adam", dict(lr=0.01), steps=1)
    g = grads_seq[0]["a"]    # first Adam step: m̂ = g, v̂ = g², so Δ = lr·g/(|g| + ε)
    np.testing.assert_allclose(params["a"], start["a"] - 0.01 * g / (np.abs(g) + 1e-8))


@pytest.mark.parametrize("name,kw", CONFIGS[::3])
def test_float32_stays_float32(name, kw):
    _, params, _, opt = _run(name, kw, dtype=np.float32)
    assert all(p.dtype == np.float32 for p in params.values())
    assert all(b.dtype == np.float32 for d in opt.state.values() for b in d.values())


@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_state_dict_round_trip_continues_identically(name, kw):
    _, p_full, grads_seq, _ = _run(name, kw, steps=6)
    start, params, _, opt = _run(name, kw, steps=0)
    for g in grads_seq[:3]:
        opt.step(g)
    sd = opt.state_dict()
    saved = {k: v.copy() for k, v in params.items()}
    fresh = optim.make_optimizer(name, saved, **kw)
    fresh.load_state_dict(sd)
    for g in grads_seq[3:]:
        fresh.step(g)
    for k in saved:
        np.testing.assert_array_equal(saved[k], p_full[k])


def test_bad_optimizer_use():
    p = {"a": np.zeros(3)}
    with pytest.raises(ValueError, match="optimizer must be one of"):
        optim.make_optimizer("lbfgs", p)
    with pytest.raises(ValueError, match="lr must be"):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(p, nesterov=True)
    with pytest.raises(TypeError, match="params must be"):
        optim.Adam([np.zeros(3)])
    with pytest.raises(TypeError, match=r"params\['a'\]"):
        optim.Adam({"a": np.zeros(3, int)})
    opt = optim.Adam(p)
    with pytest.raises(ValueError, match="missing"):
        opt.step({"b": np.zeros(3)})
    with pytest.raises(ValueError, match="shape"):
        opt.step({"a": np.zeros(4)})
    with pytest.raises(ValueError, match="state dict is for SGD"):
        opt.load_state_dict(optim.SGD(p).state_dict())
