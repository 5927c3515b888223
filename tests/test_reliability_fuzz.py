"""Reliability, fuzzing: the public API under random shapes, dtypes, layouts and values.

``tests/fuzz_driver.py`` runs in its own process (a crash there is a failure here,
with the case that crashed read from its log). Budget per target: 300 cases on the
CPU, 20 on the CUDA backend (simulator without a GPU); set NUMBA_RNN_FUZZ_EXAMPLES
for a longer run, e.g. ``NUMBA_RNN_FUZZ_EXAMPLES=5000 pytest tests/test_reliability_fuzz.py``.
"""
import json
import os
import subprocess
import sys

import pytest

from .conftest import _gpu_present

HERE = os.path.dirname(os.path.abspath(__file__))


def _fuzz(device, examples, tmp_path):
    examples = int(os.environ.get("NUMBA_RNN_FUZZ_EXAMPLES", examples))
    log = tmp_path / f"fuzz-{device}.log"
    env = dict(os.environ)
    if device == "cuda" and not _gpu_present():
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    out = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_driver.py"), "--examples",
                          str(examples), "--device", device, "--log", str(log)],
                         env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        last = log.read_text().splitlines()[-1] if log.exists() else "(no case logged)"
        pytest.fail(f"the fuzz driver died (exit {out.returncode}) on the case\n{last}\n"
                    f"{out.stderr[-3000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    lines = [f"{t}: {r['cases']} cases, {r['ok']} matched the reference, {r['rejected']} "
             f"rejected with a clear error, {len(r['failures'])} failed"
             for t, r in report["targets"].items()]
    print("\n".join(lines))
    failures = [f for r in report["targets"].values() for f in r["failures"]]
    assert not failures, "\n".join(failures[:20])
    return report


def test_fuzz_cpu(tmp_path):
    report = _fuzz("cpu", 300, tmp_path)
    assert set(report["targets"]) == {"RNN (cpu)", "models", "losses", "clipping",
                                      "optimizers", "analysis", "plots"}
    assert report["cases"] >= 1500


def test_fuzz_cuda(tmp_path):
    report = _fuzz("cuda", 20, tmp_path)
    assert report["targets"]["RNN (cuda)"]["cases"] >= 20
