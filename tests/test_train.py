"""fit: learning, clipping records, truncated BPTT, early stopping, NaN stop, resume."""
import numpy as np
import pytest

from numba_rnn.models import ManyToMany, ManyToOne, OneToMany, OneToOne, Seq2Seq
from numba_rnn.tasks import AddingProblem, CharCorpus, CopyMemory, NumberWords
from numba_rnn.train import ArrayData, fit, load_checkpoint_arrays

F64 = dict(dtype=np.float64, seed=0)


def _count_data(n=256, T=6, seed=0):
    """Many-to-one: are at least half of the bits ones? (x (T, n, 1), y (n,))"""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, (T, n))
    return bits[..., None].astype(float), (2 * bits.sum(0) >= T).astype(np.int64)


def test_one_to_one_learns_xor():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    y = np.array([0, 1, 1, 0])
    m = OneToOne(2, 8, 2, **F64)
    h = fit(m, ArrayData(x=x, y=y, batch_axis={"x": 0}), steps=400, batch_size=4, lr=0.05)
    assert h.loss[-1] < 0.05
    np.testing.assert_array_equal(m.forward(x).argmax(1), y)


def test_many_to_one_learns_to_count():
    x, y = _count_data(T=4)
    m = ManyToOne(1, 16, 2, **F64)
    h = fit(m, ArrayData(x=x, y=y), steps=600, batch_size=32, lr=0.02)
    assert np.mean(h.loss[-20:]) < 0.1
    assert (m.forward(x).argmax(1) == y).mean() > 0.97


def test_many_to_many_learns_to_echo_the_previous_input():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, (8, 200))
    x = np.eye(4)[ids]
    y = np.vstack([np.zeros((1, 200), int), ids[:-1]])   # y<t> = x<t-1>
    m = ManyToMany(4, 16, 4, bidirectional=False, **F64)
    h = fit(m, ArrayData(x=x, y=y), steps=300, batch_size=32, lr=0.02)
    pred, _ = m.forward(x)
    assert (pred.argmax(-1)[1:] == y[1:]).mean() > 0.98
    assert h.loss[-1] < 0.1 * h.loss[0]


def test_one_to_many_learns_a_cycle_and_generates_it():
    seq = (np.arange(30)[:, None] + np.arange(10)[None, :]) % 5   # 0 1 2 3 4 0 1 ... at 10 phases
    x, y = np.eye(5)[seq[:-1]], seq[1:]
    m = OneToMany(5, 16, **F64)
    fit(m, ArrayData(x=x, y=y), steps=200, batch_size=8, lr=0.02)
    np.testing.assert_array_equal(m.generate(2, 7), [3, 4, 0, 1, 2, 3, 4])


def test_seq2seq_learns_to_reverse_short_sequences():
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 6, (3, 400))
    data = ArrayData(src=np.eye(6)[ids], tgt=ids[::-1].copy())
    m = Seq2Seq(6, 6, 24, bidirectional=True, **F64)
    fit(m, data, steps=1500, batch_size=32, lr=0.01, clip_norm=5.0)
    out = m.decode(np.eye(6)[ids[:, :100]], 3)
    assert (out == ids[::-1, :100]).all(axis=0).mean() > 0.9


def test_history_records_clipping():
    task = AddingProblem(seq_len=10)
    m = task.make_model(8, **F64)
    h = fit(m, task, steps=20, batch_size=8, clip_norm=1e-3)
    assert len(h.loss) == len(h.grad_norm) == len(h.clipped) == 20
    assert all(h.clipped)                                # every step's norm exceeds 1e-3
    m2 = task.make_model(8, **F64)
    h2 = fit(m2, task, steps=5, batch_size=8, clip_norm=1e6)
    assert not any(h2.clipped)
    assert h2.grad_norm[0] > 0
    h3 = fit(task.make_model(8, **F64), task, steps=5, batch_size=8, clip_value=1e-6)
    assert all(h3.clipped)


def test_non_finite_loss_stops_and_keeps_the_last_good_weights():
    task = AddingProblem(seq_len=10)
    m = task.make_model(8, **F64)
    seen = []

    def poison(step, history):
        seen.append({k: v.copy() for k, v in m.params.items()})
        if step == 3:
            m.params["rnn.W_aa_l0"][0, 0] = np.nan        # the update after step 3 is bad
    with pytest.warns(RuntimeWarning, match="non-finite loss at step 4"):
        h = fit(m, task, steps=10, batch_size=8, callback=poison)
    assert "non-finite" in h.stop_reason and len(h.loss) == 3
    assert all(np.isfinite(v).all() for v in m.params.values())
    for k, v in m.params.items():         # weights that gave step 3 its finite loss
        np.testing.assert_array_equal(v, seen[1][k])


def test_early_stopping_restores_the_best_weights():
    x, y = _count_data(n=64, T=3)
    m = ManyToOne(1, 8, 2, **F64)
    h = fit(m, ArrayData(x=x, y=y), steps=2000, batch_size=16, lr=0.5, optimizer="sgd",
            val_fraction=0.25, eval_every=5, patience=3, min_delta=1e9)
    assert "did not improve for 3" in h.stop_reason
    assert len(h.val_loss) == 4 and len(h.loss) == 20     # best at the first evaluation


def test_validation_is_recorded():
    task = AddingProblem(seq_len=8)
    h = fit(task.make_model(8, **F64), task, steps=30, batch_size=8, val_data=task,
            eval_every=10)
    assert h.val_step == [10, 20, 30] and all(np.isfinite(h.val_loss))


def _char_task():
    text = "def f(x):\n    return x + 1\n" * 60
    return CharCorpus(seq_len=24, text=text)


def test_tbptt_with_k1_equal_to_the_sequence_is_plain_bptt():
    task = _char_task()
    rng = np.random.default_rng(0)
    batch = task.batch(rng, 4)
    m1, m2 = task.make_model(8, **F64), task.make_model(8, **F64)
    loss, grads = m1.loss_and_grad(batch["x"], batch["y"])
    from numba_rnn.train import _next_batch, _TrainState

    class Once:
        def batch(self, rng, n):
            return batch
    state = _TrainState()
    window = _next_batch(Once(), rng, 4, state, 24, 24, False)
    loss2, grads2 = m2.loss_and_grad(**window)
    assert loss2 == pytest.approx(loss)
    for k in grads:
        np.testing.assert_allclose(grads2[k], grads[k])


def test_tbptt_windows_carry_state_and_count_only_new_steps():
    task = _char_task()
    rng = np.random.default_rng(0)
    m = task.make_model(8, **F64)
    batch = task.batch(rng, 3)
    from numba_rnn.train import _next_batch, _TrainState

    class Once:
        def batch(self, rng, n):
            return batch
    state = _TrainState()
    windows = []
    for _ in range(3):                                     # k1 = 8, k2 = 16
        w = _next_batch(Once(), rng, 3, state, 8, 16, False)
        _, _, info = m.loss_and_grad(**w, return_info=True)
        state.h = info["h_n"]
        windows.append(w)
    assert [w["x"].shape[0] for w in windows] == [8, 16, 16]
    assert [int(w["mask"][:, 0].sum()) for w in windows] == [8, 8, 8]
    # the third window starts at step 8 from the state the first window ended in
    _, h8 = m.rnn(batch["x"][:8])
    np.testing.assert_allclose(windows[2]["h0"], h8)
    np.testing.assert_array_equal(windows[2]["x"], batch["x"][8:24])


def test_char_model_learns_a_repetitive_text_with_tbptt():
    task = _char_task()
    m = task.make_model(32, **F64)
    h = fit(m, task, steps=150, batch_size=4, lr=0.01, tbptt=12, stateful=True)
    assert np.mean(h.loss[-10:]) < 0.35 * task.baseline_loss
    text = task.decode(m.generate(task.encode("d")[0], 12))
    assert text == "ef f(x):\n   "


@pytest.mark.parametrize("kind", ["adding", "char-tbptt", "arrays", "early-stopping"])
def test_resume_reproduces_the_uninterrupted_run(kind, tmp_path):
    def setup():
        if kind == "char-tbptt":
            task = _char_task()
            return (task.make_model(8, dropout=0.0, **F64), task,
                    dict(tbptt=(6, 12), stateful=True, batch_size=3))
        if kind == "arrays":
            x, y = _count_data(n=40, T=4)
            return ManyToOne(1, 8, 2, num_layers=2, dropout=0.3, **F64), \
                ArrayData(x=x, y=y), dict(batch_size=16)
        task = AddingProblem(seq_len=8)
        extra = dict(val_data=task, eval_every=4, patience=100) if kind == "early-stopping" else {}
        return task.make_model(8, **F64), task, dict(batch_size=8, **extra)

    m_full, data, kw = setup()
    h_full = fit(m_full, data, steps=24, **kw)
    m, data, kw = setup()
    ck = tmp_path / "ck.npz"
    fit(m, data, steps=10, checkpoint=ck, checkpoint_every=5, **kw)
    m2, data2, kw2 = setup()                               # a new process, in effect
    h = fit(m2, data2, steps=24, checkpoint=ck, resume=True, **kw2)
    assert h.step == h_full.step
    np.testing.assert_allclose(h.loss, h_full.loss, rtol=0, atol=0)
    for k, v in m_full.params.items():
        np.testing.assert_array_equal(m2.params[k], v)
    meta, _ = load_checkpoint_arrays(ck)
    assert meta["step"] == 24


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    task = AddingProblem(seq_len=6)
    m = task.make_model(4, **F64)
    ck = tmp_path / "ck.npz"
    fit(m, task, steps=3, batch_size=4, checkpoint=ck)
    before = ck.read_bytes()

    def broken(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError):
        fit(m, task, steps=6, batch_size=4, checkpoint=ck, resume=True)
    assert ck.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(clip_norm=1.0, clip_value=1.0), "not both"),
    (dict(steps=-1), "steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(tbptt=(4, 6)), "multiple"),
    (dict(optimizer="lbfgs"), "optimizer"),
    (dict(val_fraction=0.2), "ArrayData"),
])
def test_bad_fit_arguments(kwargs, match):
    task = AddingProblem(seq_len=6)
    with pytest.raises(ValueError, match=match):
        fit(task.make_model(4, **F64), task, **kwargs)


def test_tasks_have_their_documented_baselines():
    add = AddingProblem(seq_len=30)
    b = add.batch(np.random.default_rng(0), 20000)
    assert np.mean((b["y"] - 1.0) ** 2) == pytest.approx(1 / 6, rel=0.03)
    assert (b["x"][:, :, 1].sum(0) == 2).all()
    copy = CopyMemory(seq_len=30)
    assert copy.baseline_loss == pytest.approx(10 * np.log(8) / 50)
    b = copy.batch(np.random.default_rng(0), 3)
    np.testing.assert_array_equal(b["y"][-10:], b["x"][:10].argmax(-1))
    num = NumberWords()
    from numba_rnn.tasks import number_words
    assert number_words(4021) == ["four", "thousand", "twenty", "one"]
    assert number_words(110) == ["one", "hundred", "ten"]
    assert number_words(3000) == ["three", "thousand"]
    assert not set(num.train_numbers) & set(num.test_numbers)
    enc = num.encode([507])
    assert num.words_of(enc["tgt"][:, 0]) == "five hundred seven"
    char = CharCorpus(seq_len=50, max_chars=200_000)
    assert 3.0 < char.baseline_loss < 4.5                 # unigram entropy of Python source
