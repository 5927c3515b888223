"""Reliability, fuzzing: the public API under random shapes, dtypes, layouts and values.

``tests/fuzz_driver.py`` runs in its own process (a crash there is a failure here,
with the case that crashed read from its log). Budget per target: 300 cases on the
CPU, 20 on the CUDA backend (simulator without a GPU); set NUMBA_RNN_FUZZ_EXAMPLES
for a longer run, e.g. ``NUMBA_RNN_FUZZ_EXAMPLES=5000 pytest tests/test_reliability_fuzz.py``.
"""
import json
import os
import sys
import tempfile

import pytest

from . import background
from .conftest import _gpu_present

HERE = os.path.dirname(os.path.abspath(__file__))


def _start(device, examples):
    """The fuzz driver for ``device``, started in the background (tests/background.py)."""
    examples = int(os.environ.get("NUMBA_RNN_FUZZ_EXAMPLES", examples))
    log = os.path.join(tempfile.mkdtemp(prefix=f"fuzz-{device}-"), "cases.log")
    env = dict(os.environ)
    if device == "cuda" and not _gpu_present():
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    job = background.Job([sys.executable, os.path.join(HERE, "fuzz_driver.py"), "--examples",
                          str(examples), "--device", device, "--log", log], env=env)
    job.log = log
    return job


def _report(job):
    """The driver's report, every failing case shown; a crash names the case it died on."""
    returncode, stdout, stderr = job.wait(timeout=1800)
    if returncode != 0:
        last = open(job.log).read().splitlines()[-1] if os.path.exists(job.log) \
            else "(no case logged)"
        pytest.fail(f"the fuzz driver died (exit {returncode}) on the case\n{last}\n"
                    f"{stderr[-3000:]}")
    report = json.loads(stdout.strip().splitlines()[-1])
    lines = [f"{t}: {r['cases']} cases, {r['ok']} matched the reference, {r['rejected']} "
             f"rejected with a clear error, {len(r['failures'])} failed"
             for t, r in report["targets"].items()]
    print("\n".join(lines))
    failures = [f for r in report["targets"].values() for f in r["failures"]]
    assert not failures, "\n".join(failures[:20])
    return report


@background.starts(lambda: _start("cpu", 300))
def test_fuzz_cpu(job):
    report = _report(job)
    assert set(report["targets"]) == {"RNN (cpu)", "models", "losses", "clipping",
                                      "optimizers", "analysis", "plots"}
    assert report["cases"] >= 1500


@background.starts(lambda: _start("cuda", 20))
def test_fuzz_cuda(job):
    report = _report(job)
    assert report["targets"]["RNN (cuda)"]["cases"] >= 20
