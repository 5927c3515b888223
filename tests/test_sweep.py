"""Sweeps: grids, serial vs a 2-worker LocalCluster, failures, killed workers, resume."""
import json
import math
import os

import numpy as np
import pytest

from numba_rnn import sweeps as sw
from numba_rnn.cli import main

distributed = pytest.importorskip("distributed")


def square(a=1, b=0.0, fail=False, nan=False):
    """A deterministic point function."""
    if fail:
        raise RuntimeError(f"point a={a} failed on purpose")
    return {"value": float(a * a + b), "nan_metric": math.nan if nan else 0.0}


def dies_once(a=1, marker=""):
    """Kill the worker process the first time a point runs (a crash, not an exception)."""
    flag = f"{marker}-{a}"
    if not os.path.exists(flag):
        with open(flag, "w") as f:
            f.write("died")
        os._exit(1)
    return {"value": float(a)}


def counted(a=1, log=""):
    """Append to a log on every call, so a test can see what was recomputed."""
    with open(log, "a") as f:
        f.write(f"{a}\n")
    return {"value": float(a)}


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0", env={"NUMBA_NUM_THREADS": "1"})
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def _metrics(rows, drop=("seconds", "host")):
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_nr_sweep_is_the_sweep_function():
    import numba_rnn as nr
    assert nr.sweep is sw.sweep


def test_grid_expansion_and_random_search():
    pts = sw.expand_grid({"a": [1, 2], "b": [0.0, 1.0, 2.0]}, fixed={"c": 5})
    assert len(pts) == 6 and pts[0] == {"c": 5, "a": 1, "b": 0.0}
    r1 = sw.random_points({"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "h": [8, 16]}, 5,
                          seed=3)
    assert r1 == sw.random_points({"lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                   "h": [8, 16]}, 5, seed=3)
    assert all(1e-4 <= p["lr"] <= 1e-2 and p["h"] in (8, 16) for p in r1)
    assert sw.point_id({"a": 1, "b": 2}) == sw.point_id({"b": 2, "a": 1})


def test_dask_and_serial_give_the_same_table(tmp_path, client):
    grid = {"seq_len": [4, 6], "recipe": ["tanh-orthogonal", "relu-identity"], "seed": [0, 1]}
    fixed = {"steps": 15, "hidden": 4, "batch_size": 8}
    serial = sw.sweep("adding", grid, fixed=fixed, client=False, out=tmp_path / "s.csv",
                      progress=False)
    dask = sw.sweep("adding", grid, fixed=fixed, client=client, out=tmp_path / "d.csv",
                    progress=False)
    assert len(serial) == 8 and all(r["status"] == "ok" for r in serial)
    assert _metrics(serial) == _metrics(dask)
    assert len({r["host"] for r in dask}) == 2                 # both workers took points
    warmed = client.run(lambda: __import__("numba_rnn.kernels.cpu").kernels.cpu
                        ._forward_kernels[False].signatures)
    assert all(sigs for sigs in warmed.values())               # kernels loaded per worker
    assert (tmp_path / "d.csv").read_text().splitlines()[0].startswith("id,")


def test_failures_and_nans_are_recorded_and_the_sweep_goes_on(tmp_path, client):
    rows = sw.sweep(square, {"a": [1, 2, 3], "fail": [False, True]}, client=client,
                    out=tmp_path / "f.csv", progress=False)
    by = {(r["param.a"], r["param.fail"]): r for r in rows}
    assert by[(2, False)]["status"] == "ok" and by[(2, False)]["value"] == 4.0
    assert by[(2, True)]["status"] == "error"
    assert "failed on purpose" in by[(2, True)]["error"]
    nan_rows = sw.sweep(square, {"a": [1], "nan": [True]}, client=False,
                        out=tmp_path / "n.csv", progress=False)
    assert nan_rows[0]["status"] == "nan" and "nan_metric" in nan_rows[0]["error"]


def test_a_killed_worker_is_retried(tmp_path, client):
    marker = str(tmp_path / "died")
    rows = sw.sweep(dies_once, {"a": [1, 2, 3]}, fixed={"marker": marker}, client=client,
                    out=tmp_path / "k.csv", progress=False)
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert sorted(r["value"] for r in rows) == [1.0, 2.0, 3.0]
    assert all(os.path.exists(f"{marker}-{a}") for a in (1, 2, 3))   # each died once


def test_an_interrupted_sweep_resumes_without_recomputing(tmp_path):
    log = str(tmp_path / "calls.log")
    out = tmp_path / "r.csv"
    sw.sweep(counted, {"a": [1, 2]}, fixed={"log": log}, client=False, out=out,
             progress=False)
    with open(tmp_path / "r.jsonl", "a") as f:
        f.write('{"id": "cut-short-by-a-cr')                   # a crash mid-write
    rows = sw.sweep(counted, {"a": [1, 2, 3, 4]}, fixed={"log": log}, client=False, out=out,
                    progress=False)
    assert sorted(r["param.a"] for r in rows) == [1, 2, 3, 4]
    with open(log) as f:
        assert f.read().split() == ["1", "2", "3", "4"]        # 1 and 2 ran once only
    with open(tmp_path / "r.jsonl") as f:
        lines = f.read().splitlines()
    assert len(lines) == 5                                     # 4 rows + the cut line
    assert sorted(json.loads(x)["param.a"] for x in lines if x.endswith("}")) == [1, 2, 3, 4]


@pytest.mark.parametrize("call,exc,match", [
    (lambda o: sw.sweep(square, {"a": [1], "c": [2]}, client=False, out=o), ValueError,
     r"unknown parameter\(s\) \['c'\]"),
    (lambda o: sw.sweep(square, {}, client=False, out=o), ValueError, "empty"),
    (lambda o: sw.sweep(square, {"a": []}, client=False, out=o), ValueError, "non-empty list"),
    (lambda o: sw.sweep("nosuch", {"a": [1]}, client=False, out=o), ValueError,
     "unknown point function"),
    (lambda o: sw.sweep("adding", {"recipe": ["lstm"]}, fixed={"steps": 1}, client=False,
                        out=o)[0]["error"], None, None),
])
def test_bad_sweeps(call, exc, match, tmp_path):
    out = tmp_path / "x.csv"
    if exc is None:
        assert "recipe must be one of" in call(out)             # recorded, not raised
        return
    with pytest.raises(exc, match=match):
        call(out)


def test_bad_config_files(tmp_path):
    cases = {
        "section.toml": ("[sweep]\nfunction='adding'\n[grids]\na=[1]\n", "unknown section"),
        "key.toml": ("[sweep]\nfunction='adding'\nworkers=3\n[grid]\nseed=[0]\n", "unknown key"),
        "nofn.toml": ("[grid]\nseed=[0]\n", "needs function"),
        "broken.toml": ("[sweep\nfunction=", "not valid TOML"),
    }
    for name, (text, match) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ValueError, match=match):
            sw.load_config(path)


def test_cli_quick_study_writes_table_and_figure(tmp_path, capsys):
    out = tmp_path / "study.csv"
    cfg = sw.load_config(sw.study_path("adding-quick"))
    assert cfg["fn_or_task"] == "adding" and len(sw.expand_grid(cfg["grid"])) == 36
    path = tmp_path / "tiny.toml"
    path.write_text("[sweep]\nfunction = 'adding'\nfigure = 'x.png'\n"
                    "[fixed]\nsteps = 10\nhidden = 4\n"
                    "[grid]\nseq_len = [4, 8]\nrecipe = ['tanh-orthogonal']\n"
                    "clip = [1.0, 0.0]\nseed = [0]\n")
    assert main(["sweep", str(path), "--serial", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 points (0 failed" in text and "tanh-orthogonal" in text
    assert out.exists() and (tmp_path / "study.png").stat().st_size > 10_000
    np.testing.assert_equal(len(out.read_text().splitlines()), 5)


def test_config_with_random_search_and_an_imported_function(tmp_path):
    path = tmp_path / "rand.toml"
    path.write_text("[sweep]\nfunction = 'tests.test_sweep:square'\nn_random = 5\nseed = 4\n"
                    f"out = '{tmp_path / 'r.csv'}'\n"
                    "[fixed]\nb = 1.0\n"
                    "[random]\na = {low = 1, high = 9, int = true}\n")
    cfg = sw.load_config(path)
    cfg.pop("figure")
    rows = sw.sweep(**cfg, client=False, progress=False)
    assert len(rows) <= 5 and all(r["status"] == "ok" for r in rows)
    assert all(1 <= r["param.a"] <= 9 and r["value"] == r["param.a"] ** 2 + 1.0 for r in rows)
    again = sw.sweep(**cfg, client=False, progress=False)     # same seed: same points, all done
    assert [r["id"] for r in again] == [r["id"] for r in rows]
