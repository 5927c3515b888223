"""Run tests/test_cuda.py in numba's CUDA simulator when there is no GPU.

The simulator must be enabled before numba is imported, so it gets its own pytest
process; its report is shown in full when anything fails.
"""
import os
import subprocess
import sys

import pytest

from .conftest import CUDA_USABLE


@pytest.mark.skipif(CUDA_USABLE, reason="tests/test_cuda.py runs directly in this process")
def test_cuda_backend_in_the_simulator():
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-rs", os.path.join(here, "test_cuda.py")],
                         cwd=os.path.dirname(here), env=env, capture_output=True, text=True,
                         timeout=900)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-20000:]
    assert " passed" in report and "failed" not in report
    print(report.strip().splitlines()[-1])
