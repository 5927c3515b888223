"""Property-based checks (hypothesis): random configurations against the reference."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numba_rnn as nr

from .conftest import reference_run

configs = st.fixed_dictionaries({
    "T": st.integers(1, 6), "N": st.integers(1, 4), "D": st.integers(1, 5),
    "H": st.integers(1, 6), "num_layers": st.integers(1, 3),
    "bidirectional": st.booleans(), "nonlinearity": st.sampled_from(["tanh", "relu"]),
    "batch_first": st.booleans(), "use_lengths": st.booleans(), "unbatched": st.booleans(),
    "parallel": st.booleans(), "seed": st.integers(0, 2**16),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_random_configurations_match_the_reference(cfg):
    rng = np.random.default_rng(cfg["seed"])
    T, N, D, H, L = cfg["T"], cfg["N"], cfg["D"], cfg["H"], cfg["num_layers"]
    if cfg["unbatched"]:
        N = 1
    dirs = 2 if cfg["bidirectional"] else 1
    rnn = nr.RNN(D, H, num_layers=L, nonlinearity=cfg["nonlinearity"],
                 bidirectional=cfg["bidirectional"], batch_first=cfg["batch_first"],
                 dtype=np.float64, seed=cfg["seed"], parallel=cfg["parallel"])
    x = rng.standard_normal((T, N, D))
    h0 = rng.standard_normal((L * dirs, N, H))
    d_out = rng.standard_normal((T, N, dirs * H))
    d_hn = rng.standard_normal((L * dirs, N, H))
    lengths = rng.integers(1, T + 1, N) if cfg["use_lengths"] and not cfg["unbatched"] else None

    def user(a):        # time-major → the layout the model takes
        if cfg["unbatched"]:
            return a[:, 0]
        return a.transpose(1, 0, 2) if cfg["batch_first"] else a
    hs = (lambda a: a[:, 0]) if cfg["unbatched"] else (lambda a: a)
    out, h_n, cache = rnn.forward(user(x), hs(h0), lengths=lengths)
    grads, dx, dh0 = rnn.backward(cache, user(d_out), hs(d_hn))

    if lengths is None:
        bf = rnn.batch_first
        rnn.batch_first = False                      # the reference helper is time-major
        try:
            r_out, r_hn, r_grads, r_dx, r_dh0, _ = reference_run(rnn, x, h0, d_out, d_hn)
        finally:
            rnn.batch_first = bf
        np.testing.assert_allclose(out, user(r_out), atol=1e-10)
        np.testing.assert_allclose(h_n, hs(r_hn), atol=1e-10)
        np.testing.assert_allclose(dx, user(r_dx), atol=1e-9)
        np.testing.assert_allclose(dh0, hs(r_dh0), atol=1e-9)
        for k in grads:
            np.testing.assert_allclose(grads[k], r_grads[k], atol=1e-9, err_msg=k)
        return
    # with lengths: each sequence behaves as if it ran alone on its valid prefix
    bf = rnn.batch_first
    rnn.batch_first = False
    try:
        total = {k: np.zeros_like(v) for k, v in grads.items()}
        out_tm = out.transpose(1, 0, 2) if bf else out
        dx_tm = dx.transpose(1, 0, 2) if bf else dx
        for n, Ln in enumerate(lengths):
            sl = slice(n, n + 1)
            r_out, r_hn, r_grads, r_dx, r_dh0, _ = reference_run(
                rnn, x[:Ln, sl], h0[:, sl], d_out[:Ln, sl], d_hn[:, sl])
            np.testing.assert_allclose(out_tm[:Ln, sl], r_out, atol=1e-10)
            np.testing.assert_array_equal(out_tm[Ln:, n], 0.0)
            np.testing.assert_allclose(h_n[:, sl], r_hn, atol=1e-10)
            np.testing.assert_allclose(dx_tm[:Ln, sl], r_dx, atol=1e-9)
            np.testing.assert_allclose(dh0[:, sl], r_dh0, atol=1e-9)
            for k in total:
                total[k] += r_grads[k]
        for k in grads:
            np.testing.assert_allclose(grads[k], total[k], atol=1e-9, err_msg=k)
    finally:
        rnn.batch_first = bf
