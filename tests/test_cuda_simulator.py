"""Run tests/test_cuda.py in numba's CUDA simulator when there is no GPU.

The simulator must be enabled before numba is imported, so it gets its own pytest
process, started when collection ends so that it runs beside the rest of the suite
(tests/background.py); its report is shown in full when anything fails.
"""
import os
import sys

import pytest

from . import background
from .conftest import CUDA_USABLE

HERE = os.path.dirname(os.path.abspath(__file__))


def _start():
    if CUDA_USABLE:
        return None
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    return background.Job([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-rs", os.path.join(HERE, "test_cuda.py")],
                          cwd=os.path.dirname(HERE), env=env)


@pytest.mark.skipif(CUDA_USABLE, reason="tests/test_cuda.py runs directly in this process")
@background.starts(_start)
def test_cuda_backend_in_the_simulator(job):
    returncode, stdout, stderr = job.wait(timeout=900)
    report = stdout + stderr
    assert returncode == 0, report[-20000:]
    assert " passed" in report and "failed" not in report
    print(report.strip().splitlines()[-1])
