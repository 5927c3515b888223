"""The benchmark peers are correct RNNs, and the bench command reports what it promises.
(Speed itself is never asserted here: it lives in asv and `numba-rnn bench`.)"""
import json
import time

import numpy as np
import pytest
from numba import njit

import numba_rnn as nr
from numba_rnn import bench
from numba_rnn.cli import main

from .conftest import tool


def test_numpy_peer_computes_the_same_rnn():
    rnn = nr.RNN(5, 7, dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    x, dA = rng.standard_normal((6, 3, 5)), rng.standard_normal((6, 3, 7))
    peer = bench.NumpyRNN(rnn.params["W_ax_l0"], rnn.params["W_aa_l0"], rnn.params["b_a_l0"])
    out, _, cache = rnn.forward(x)
    np.testing.assert_allclose(peer.forward(x), out, atol=1e-12)
    grads, dx, dh0 = rnn.backward(cache, dA)
    dW_ax, dW_aa, db, pdx, pdh0 = peer.train_step(x, dA)
    for ours, theirs in ((grads["W_ax_l0"], dW_ax), (grads["W_aa_l0"], dW_aa),
                         (grads["b_a_l0"], db), (dx, pdx), (dh0[0], pdh0)):
        np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_flop_counts():
    N, D, H, T = bench.SHAPES["medium"]
    assert bench.flops("medium", "forward") == 2 * T * N * (D * H + H * H)
    assert bench.flops("medium", "train") == 3 * 2 * T * N * (D * H + H * H)


def test_bench_cli_json_and_table(tmp_path, capsys):
    chart = tmp_path / "bench.png"
    assert main(["bench", "--shapes", "tiny", "--dtype", "float32", "--repeats", "1",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {r["op"] for r in res["rows"]} == {"forward", "train"}
    for r in res["rows"]:
        assert r["ours_ms"] > 0 and r["numpy_ms"] > 0 and r["floor_ms"] > 0
        assert r["ratio_numpy"] > 0 and 0 < r["floor_fraction"]
        assert r["ratio_best_peer"] == r["ratio_" + r["best_peer"]]
        assert r["ratio_best_peer"] == r["ours_ms"] / r[r["best_peer"] + "_ms"]
        assert 0 < r["ratio_best_peer_iqr"][0] <= r["ratio_best_peer_iqr"][1]
        assert r["handover_ns"] is None or \
            0 < r["handover_ns_min"] <= r["handover_ns"] <= r["handover_ns_max"]
    assert res["machine"]["numba"]
    assert main(["bench", "--shapes", "tiny", "--dtype", "float64", "--repeats", "1",
                 "--out", str(chart)]) == 0
    text = capsys.readouterr().out
    assert "| tiny | float64 | forward |" in text and chart.stat().st_size > 10_000
    assert "| hand-over ns |" in text


def test_handover_probe_passes_the_counter_both_ways(monkeypatch):
    """The ping-pong really alternates (the counter ends at 2·rounds), gives up rather
    than hang when its second iteration runs after the first (a serial region), and
    the probe says None where a recurrence would not share its steps."""
    from numba_rnn.kernels import atomics, cpu
    if cpu._shared_workers() >= 2:
        ns = bench.handover_ns()
        assert ns is not None and 0 < ns < 1e6
        sync = np.zeros(16, dtype=np.int64)
        with cpu.compute_context(True):
            atomics.ping_pong(sync, 50, bench.HANDOVER_PATIENCE)
        assert sync[0] == 100 and sync[8] == 0
    sync = np.zeros(16, dtype=np.int64)
    serial = njit(atomics.ping_pong.py_func)   # prange as range: one iteration, then the other
    serial(sync, 50, 1000)
    assert sync[8] != 0 and sync[0] < 100
    monkeypatch.setattr(cpu, "_shared_workers", lambda panels=None: 1)
    assert bench.handover_ns() is None


def test_cuda_bench_table_and_targets():
    from numba_rnn import bench_cuda
    assert set(bench_cuda.TARGETS) == set(bench_cuda.SHAPES)
    row = {"shape": "tiny", "dtype": "float32", "op": "forward", "variant": "block",
           "blocks": 16, "ours_ms": 0.1, "cudnn_ms": 0.25, "floor_ms": None,
           "ratio_cudnn": 0.4, "ours_us_per_step": 0.5, "grid_sync_floor_us": None,
           "target": 0.5}
    text = bench_cuda.table([row])
    assert "| tiny | forward | block (16) | 0.1 | 0.25 | 0.40 | ≤ 0.5 | 0.5 | — | — | — |" in text
    text = bench_cuda.table([dict(row, kernel_us_per_step=0.25, grid_sync_floor_us=0.125)])
    assert "| 0.5 | 0.25 | 0.125 | — |" in text


def test_alternating_timer_pairs_ours_with_each_peer(monkeypatch):
    """Ratios come from each pairing: ours ran once per peer pairing and repeat, and
    every timed call came after an untimed one (no pause or warm-up time here)."""
    monkeypatch.setattr(bench, "QUIET_S", 0)
    monkeypatch.setattr(bench, "WARM_S", 0)
    calls = {"ours": 0, "a": 0, "b": 0}

    def counter(k):
        def f():
            calls[k] += 1
        return f
    res = bench._median_alternating({k: counter(k) for k in calls}, 3)
    assert calls == {"ours": 2 * 3 * 2, "a": 3 * 2, "b": 3 * 2}
    assert set(res) == {"ours", "a", "b", "ours_a", "ours_b", "ratio_a", "ratio_b",
                        "ratio_a_iqr", "ratio_b_iqr"}
    assert all(v > 0 for k, v in res.items() if not k.endswith("_iqr"))
    for k in ("a", "b"):
        lo, hi = res["ratio_" + k + "_iqr"]
        assert 0 < lo <= hi


def test_alternating_timer_probes_after_each_pair(monkeypatch):
    """A probe runs once after each pair of timed calls, not between ours and the
    peer; its readings come back in order, those of None left out."""
    monkeypatch.setattr(bench, "QUIET_S", 0)
    monkeypatch.setattr(bench, "WARM_S", 0)
    log, readings = [], iter([5.0, None, 7.0, 9.0])

    def probe():
        log.append("probe")
        return next(readings)
    fns = {"ours": lambda: log.append("ours"), "a": lambda: log.append("a"),
           "b": lambda: log.append("b")}
    res = bench._median_alternating(fns, 2, probe)
    assert res["probes"] == [5.0, 7.0, 9.0]
    pairs = [log[i:i + 5] for i in range(0, len(log), 5)]      # ours ×2, peer ×2, probe
    assert [p[-1] for p in pairs] == ["probe"] * 4
    assert [p[:4] for p in pairs] == [["ours"] * 2 + ["a"] * 2] * 2 + \
        [["ours"] * 2 + ["b"] * 2] * 2


def test_alternating_timer_quartiles_are_those_of_each_pairs_ratio(monkeypatch):
    """The spread comes from the repeats' own ratios — ours ÷ the peer timed right
    after it — not from the two lists sorted apart."""
    monkeypatch.setattr(bench, "QUIET_S", 0)
    monkeypatch.setattr(bench, "WARM_S", 0)
    ours, peer = [1.0, 2.0, 4.0, 8.0, 16.0], [16.0, 8.0, 4.0, 2.0, 1.0]
    times = iter([t for pair in zip(ours, peer, strict=True) for t in pair])
    monkeypatch.setattr(bench, "_timed", lambda f: next(times))
    res = bench._median_alternating({"ours": None, "peer": None}, 5)
    assert res["ratio_peer"] == 4.0 / 4.0                       # the medians' quotient
    assert res["ratio_peer_iqr"] == [0.25, 4.0]     # of 1/16, 2/8, 4/4, 8/2, 16/1
    # (the quartiles of each list apart would give 2/2 and 8/8: a spread of nothing)


def test_ratio_cell_shows_the_quartiles_where_they_spread():
    row = {"ratio_best_peer": 0.4242, "best_peer": "numpy"}
    assert bench._ratio_cell(row) == "0.42 (numpy)"
    assert bench._ratio_cell(dict(row, ratio_best_peer_iqr=[0.381, 0.466])) == \
        "0.42 (numpy; 0.38–0.47)"
    assert bench._ratio_cell(dict(row, ratio_best_peer_iqr=[0.421, 0.424])) == "0.42 (numpy)"


def test_handover_cell_shows_the_median_and_range():
    row = {"handover_ns": 412.3, "handover_ns_min": 88.4, "handover_ns_max": 530.0}
    assert bench._handover_cell(row) == "412 (88–530)"
    assert bench._handover_cell(dict(row, handover_ns_min=412.2, handover_ns_max=412.4)) \
        == "412"
    assert bench._handover_cell({"handover_ns": 70.0}) == "70"
    assert bench._handover_cell({"handover_ns": None}) == "—"


def test_timed_call_comes_after_the_pause_and_a_warm_up(monkeypatch):
    """Each timed call follows the pause and WARM_S seconds of untimed calls of the
    same function (steady state, as in a training loop), and is the last call."""
    monkeypatch.setattr(bench, "QUIET_S", 0.03)
    monkeypatch.setattr(bench, "WARM_S", 0.05)
    stamps = []

    def f():
        stamps.append(time.perf_counter())
        time.sleep(0.01)
    t0 = time.perf_counter()
    ms = bench._timed(f)
    assert stamps[0] - t0 >= 0.03                          # after the pause
    assert stamps[-1] - stamps[0] >= 0.05 and len(stamps) >= 3
    assert 10 <= ms < 1e3 * (time.perf_counter() - stamps[-2])   # the last call alone


def test_bench_cli_parallel_choice(capsys):
    assert main(["bench", "--shapes", "tiny", "--dtype", "float64", "--repeats", "1",
                 "--parallel", "on", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(res["rows"]) == 2
    with pytest.raises(SystemExit):
        main(["bench", "--parallel", "sometimes"])


def test_step_parts_tool_times_the_four_kernel_calls_and_puts_them_back():
    """tools/cpu_step_parts.py: every part timed inside real train steps, the rest is
    what is left, and the kernels are the originals again afterwards."""
    from numba_rnn.kernels import cpu
    parts = tool("cpu_step_parts")
    before = {name: getattr(cpu, name) for name in parts.PARTS}
    res = parts.measure("tiny", "float32", steps=3, T=4, warm=1)
    assert set(res) == {"step", "rest", *parts.PARTS}
    assert res["step"] > 0 and all(res[name] > 0 for name in parts.PARTS)
    assert {name: getattr(cpu, name) for name in parts.PARTS} == before


def test_handover_series_tool_pairs_each_probe_with_the_recurrence_times():
    series = tool("handover_series")
    rows = series.series(rounds=2, H=32, T=20, calls=2, pause=0)
    assert len(rows) == 2
    for row in rows:
        assert set(row) == {"ns", *series.RUNS}
        assert (row["ns"] is None or row["ns"] > 0) and all(row[k] > 0 for k in series.RUNS)


def test_blas_engines_tool_times_each_engine_and_puts_the_choice_back():
    """tools/blas_engines.py: a train step on each engine in turn, and the engine choice
    is the original again afterwards."""
    from numba_rnn.kernels import cpu
    engines = tool("blas_engines")
    before = cpu.product_engine
    res = engines.measure("tiny", "float64", rounds=2, engines=["scipy", *engines.available()[1:2]],
                          steps=1, T=3)
    assert all(len(ms) == 2 and min(ms) > 0 for ms in res.values())
    assert cpu.product_engine is before


def test_stream_limits_tool_measures_the_core_and_the_step_product():
    """tools/stream_limits.py: the clock's chain is not folded away by the compiler (a
    folded chain read 23 GHz), the chained product multiplies as NumPy does, and the
    recurrence's floor is the half panel read T times at the L2 rate."""
    from numba_rnn.kernels.tiles import pack_tiles
    limits = tool("stream_limits")
    H = 64
    res = limits.measure("float64", H=H, rounds=1)
    assert set(res) == {"ghz", "l2_gbps", "product_us", "product_gbps", "product_of_l2",
                        "recurrence_floor_ms"}
    assert 0 < res["ghz"] < 8
    assert res["l2_gbps"] > 0 and res["product_us"] > 0
    assert res["product_of_l2"] == pytest.approx(res["product_gbps"] / res["l2_gbps"])
    assert res["recurrence_floor_ms"] == pytest.approx(
        1e3 * limits.T_STREAM * (H * H // 2 * 8) / (res["l2_gbps"] * 1e9))
    rng = np.random.default_rng(1)
    W, a = rng.standard_normal((H, H)), rng.standard_normal((1, H))
    out = np.empty((1, H // 2))
    limits._chained_product()(a.copy(), np.ascontiguousarray(pack_tiles(W, H // 2)[0]), out, 1)
    np.testing.assert_allclose(out, a @ W[:, :H // 2], rtol=1e-12, atol=1e-12)
