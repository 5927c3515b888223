#!/usr/bin/env bash
# The GPU backend's hardware checks in one run, for a machine with an NVIDIA GPU whose
# Python has numba-cuda, torch (with CUDA) and pytest-xdist: the CUDA tests on the device,
# `numba-rnn bench --device cuda`, then every recurrence variant timed alone and a profile
# (tools/gpu_variants.py), then the Python cost of each GPU operation
# (tools/gpu_host_costs.py). Logs and the chart go to $OUT (default /tmp/gpu-check).
# Wheels in .whl/ (e.g. NumPy < 2.5, which numba-cuda 0.30.4 needs) are installed first
# into /tmp/site, without touching the machine's own packages.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import numba, numpy; print('numba', numba.__version__, 'numpy', numpy.__version__)"
} | tee "$OUT/env.txt"
# -p no:benchmark: pytest-benchmark warns under xdist, and filterwarnings = error stops pytest
XDIST=(); python3 -c "import xdist" 2> /dev/null && XDIST=(-n "${WORKERS:-8}" -p no:benchmark)
timeout "${PYTEST_S:-300}" python3 -m pytest -q -rs "${XDIST[@]}" -p no:cacheprovider \
  --durations=10 tests/test_cuda.py > "$OUT/pytest.txt" 2>&1
echo "pytest rc=$?" | tee -a "$OUT/pytest.txt"; grep -E " passed| failed" "$OUT/pytest.txt" | tail -1
timeout "${BENCH_S:-300}" python3 -m numba_rnn.cli bench --device cuda --repeats "${REPEATS:-7}" \
  --out "$OUT/bench.png" > "$OUT/bench.txt" 2>&1
echo "bench rc=$?" | tee -a "$OUT/bench.txt"; grep -v "^\s*$" "$OUT/bench.txt" | tail -16
timeout "${VARIANTS_S:-200}" python3 tools/gpu_variants.py > "$OUT/variants.txt" 2>&1
echo "variants rc=$?" | tee -a "$OUT/variants.txt"; head -8 "$OUT/variants.txt"
timeout "${HOST_S:-120}" python3 tools/gpu_host_costs.py > "$OUT/host_costs.txt" 2>&1
echo "host costs rc=$?" | tee -a "$OUT/host_costs.txt"; tail -18 "$OUT/host_costs.txt"
