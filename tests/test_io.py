"""Weights files (.npz, never pickle) and torch state dicts: round trips and clear errors."""
import numpy as np
import pytest

import numba_rnn as nr


@pytest.fixture
def model():
    return nr.RNN(3, 4, num_layers=2, bidirectional=True, nonlinearity="relu",
                  dtype=np.float64, seed=0, init="orthogonal", spectral_radius=0.9)


def test_save_load_round_trip(model, tmp_path):
    path = tmp_path / "w.npz"
    model.save(path)
    loaded = nr.RNN.load(path)
    assert loaded.config() == model.config()
    for name in model.params:
        np.testing.assert_array_equal(loaded.params[name], model.params[name])
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    np.testing.assert_array_equal(loaded(x)[0], model(x)[0])
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]       # no temp file left


def test_load_overrides(model, tmp_path):
    model.save(tmp_path / "w.npz")
    assert nr.RNN.load(tmp_path / "w.npz", dtype=np.float32).params["W_aa_l0"].dtype == np.float32


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        nr.RNN.load(tmp_path / "nope.npz")


def test_corrupt_files_are_clear_errors(model, tmp_path):
    path = tmp_path / "w.npz"
    model.save(path)
    data = path.read_bytes()
    cases = {
        "truncated.npz": data[: len(data) // 2],
        "garbage.npz": b"this is not a weights file at all" * 10,
        "empty.npz": b"",
        "flipped.npz": data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],
    }
    for name, content in cases.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(ValueError, match="weights file|npz|config"):
            nr.RNN.load(bad)


def test_pickled_and_foreign_files_are_refused(model, tmp_path):
    import pickle
    p = tmp_path / "pickled.npz"
    p.write_bytes(pickle.dumps(model.params))
    with pytest.raises(ValueError, match="not a readable .npz"):
        nr.RNN.load(p)
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        nr.RNN.load(tmp_path / "single.npy")
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a numba_rnn RNN weights file"):
        nr.RNN.load(tmp_path / "foreign.npz")


def test_tampered_weights_are_refused(model, tmp_path):
    arrays = dict(np.load(_saved(model, tmp_path)))
    bad = dict(arrays, W_aa_l0=np.zeros((4, 5)))
    np.savez(tmp_path / "shape.npz", **bad)
    with pytest.raises(ValueError, match=r"W_aa_l0 must have shape"):
        nr.RNN.load(tmp_path / "shape.npz")
    missing = {k: v for k, v in arrays.items() if k != "b_a_l1"}
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(ValueError, match="its config needs"):
        nr.RNN.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "config.npz", **dict(arrays, __numba_rnn_config__=np.array("{oops")))
    with pytest.raises(ValueError, match="unreadable numba_rnn config"):
        nr.RNN.load(tmp_path / "config.npz")


def _saved(model, tmp_path):
    path = tmp_path / "ok.npz"
    model.save(path)
    return path


def test_failed_save_keeps_the_previous_file(model, tmp_path, monkeypatch):
    path = _saved(model, tmp_path)
    before = path.read_bytes()

    def broken_savez(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="No space"):
        model.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.npz"]


def test_torch_state_dict_names_and_bias_sum(model):
    sd = model.torch_state_dict()
    assert sorted(sd) == sorted(
        f"{w}_l{k}{s}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        for k in (0, 1) for s in ("", "_reverse"))
    sd["bias_hh_l0"] = np.full(4, 0.25)
    other = nr.RNN(3, 4, num_layers=2, bidirectional=True, dtype=np.float64)
    other.load_torch_state_dict(sd)
    np.testing.assert_allclose(other.params["b_a_l0"], model.params["b_a_l0"] + 0.25)
    np.testing.assert_array_equal(other.params["W_ax_l1_reverse"], model.params["W_ax_l1_reverse"])


def test_bad_torch_state_dicts(model):
    sd = model.torch_state_dict()
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ValueError, match=r"missing keys \['bias_hh_l1'\]"):
        model.load_torch_state_dict({k: v for k, v in sd.items() if k != "bias_hh_l1"})
    with pytest.raises(ValueError, match=r"unexpected keys \['weight_ih_l2'\]"):
        model.load_torch_state_dict(dict(sd, weight_ih_l2=np.zeros((4, 8))))
    with pytest.raises(ValueError, match=r"state_dict\['weight_hh_l0'\] must have shape"):
        model.load_torch_state_dict(dict(sd, weight_hh_l0=np.zeros((4, 3))))
    with pytest.raises(TypeError, match=r"state_dict\['bias_ih_l0'\]"):
        model.load_torch_state_dict(dict(sd, bias_ih_l0=np.zeros(4, dtype=int)))
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        model.load_torch_state_dict([1, 2])
    for name in before:                                  # a failed load changes nothing
        np.testing.assert_array_equal(model.params[name], before[name])
