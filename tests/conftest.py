import ctypes
import functools
import itertools
import os


def _gpu_present():
    """True when a CUDA driver reports a device (asked without importing numba)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 \
            and count.value > 0
    except (OSError, AttributeError):
        return False


# tests/test_cuda.py needs a GPU or numba's CUDA simulator, which must be switched on
# before numba is first imported. Without a GPU, tests/test_cuda_simulator.py runs it in
# a separate pytest process with NUMBA_ENABLE_CUDASIM=1 (the simulator cannot share a
# process with the rest: Dask's numba serializers, for one, need the real CUDA target).
CUDA_USABLE = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or _gpu_present()
collect_ignore = [] if CUDA_USABLE else ["test_cuda.py"]

import numba  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import numba_rnn as nr  # noqa: E402

from . import background  # noqa: E402
from . import reference as ref  # noqa: E402

# uni/bi × 1/3 layers × tanh/relu × batch_first: the grid every gradient test covers
GRID = list(itertools.product([False, True], [1, 3], ["tanh", "relu"], [False, True]))
GRID_IDS = [f"{'bi' if b else 'uni'}-L{L}-{nl}{'-bf' if bf else ''}" for b, L, nl, bf in GRID]


def make_problem(bidirectional, num_layers, nonlinearity, batch_first, dtype=np.float64,
                 T=5, N=3, D=4, H=6, seed=0, **kw):
    """A model and matching random x, h0, d_out, d_hn (in the model's layout)."""
    rng = np.random.default_rng(seed)
    rnn = nr.RNN(D, H, num_layers=num_layers, nonlinearity=nonlinearity,
                 batch_first=batch_first, bidirectional=bidirectional, dtype=dtype,
                 seed=seed, **kw)
    dirs = 2 if bidirectional else 1
    x = rng.standard_normal((N, T, D) if batch_first else (T, N, D))
    h0 = 0.5 * rng.standard_normal((num_layers * dirs, N, H))
    d_out = rng.standard_normal((N, T, dirs * H) if batch_first else (T, N, dirs * H))
    d_hn = rng.standard_normal((num_layers * dirs, N, H))
    return rnn, x, h0, d_out, d_hn


def reference_run(rnn, x, h0, d_out, d_hn, masks=None):
    """Run tests/reference.py on the model's float64 weights, in time-major layout."""
    params = {k: v.astype(np.float64) for k, v in rnn.params.items()}
    if rnn.batch_first:
        x, d_out = x.transpose(1, 0, 2), d_out.transpose(1, 0, 2)
    args = (params, rnn.num_layers, rnn.bidirectional, rnn.nonlinearity)
    out, h_n, cache = ref.rnn_forward(x, h0, *args, masks=masks)
    grads, dx, dh0, norms = ref.rnn_backward(cache, d_out, d_hn, *args, masks=masks)
    if rnn.batch_first:
        out, dx = out.transpose(1, 0, 2), dx.transpose(1, 0, 2)
    return out, h_n, grads, dx, dh0, norms


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)


def central_difference(f, arr, eps=1e-6):
    """∂f/∂arr by central differences, perturbing ``arr`` in place (restored after)."""
    g = np.zeros(arr.shape)
    flat, gflat = arr.reshape(-1), g.reshape(-1)
    assert np.shares_memory(flat, arr)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


def check_model_gradients(loss_fn, grads, params, tol=1e-6):
    """Every entry of ``grads`` against central differences of ``loss_fn()``."""
    assert set(grads) == set(params)
    for name, p in params.items():
        assert grads[name].shape == p.shape, name
        err = rel_err(grads[name], central_difference(loss_fn, p))
        assert err <= tol, (name, err)


def expected_on_linux_x86(distribution, off):
    """True where ``distribution`` is one of our dependencies (Linux x86-64), is
    installed, and ``NUMBA_RNN_BLAS`` is not one of ``off``: where it must be in use."""
    import importlib.metadata
    import platform
    import sys
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return (sys.platform == "linux" and platform.machine() == "x86_64"
            and os.environ.get("NUMBA_RNN_BLAS", "auto").lower() not in off)


@functools.cache
def fresh_recurrence_ir():
    """LLVM IR of the float32 forward and backward recurrence kernels (``_forward``,
    ``_backward``), compiled fresh — Numba cannot show the IR of code loaded from its
    disk cache — with the kernels' error model, for T = 3, N = 2, H = 32 in two panels
    of 16 units on register tiles. Shared by the tests that read it (a compilation
    takes ~4 s)."""
    from numba_rnn.kernels import cpu, tiles
    f = np.float32
    T, N, H = 3, 2, 32
    A, a = np.zeros((T, N, H), f), np.zeros((N, H), f)
    Wp = tiles.pack_tiles(np.zeros((H, H), f), 16)
    fwd = numba.njit(error_model="numpy")(cpu._forward)
    bwd = numba.njit(error_model="numpy")(cpu._backward)
    fwd(A, Wp, a, np.full(N, T), 0, False, A.copy(), np.zeros((1, 2, N, 16), f))
    bwd(A, A, Wp, a.copy(), np.full(N, T), 0, False, A.copy(), np.zeros((T, N), f),
        np.zeros((2, N, 2), f), np.zeros((N, 32), f), np.zeros((1, 2, N, 16), f))
    return {k.__name__: k.inspect_llvm(k.signatures[0]) for k in (fwd, bwd)}


def pytest_collection_modifyitems(session, config, items):
    background.run_last(items)


def pytest_collection_finish(session):
    """Start the long subprocess tests now, to run beside the rest (tests/background.py)."""
    background.start_collected(session.items)


def pytest_sessionfinish(session, exitstatus):
    background.kill_all()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def run_python(code, env=None, timeout=300):
    """Run ``code`` (dedented) in a fresh ``python -c`` process with ``env`` (default:
    this one's); assert that it exited 0, its output in the message; return its stdout.
    For what is decided once per process (the BLAS loaded, the threading layer)."""
    import subprocess
    import sys
    import textwrap
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, (res.returncode, (res.stdout + res.stderr)[-3000:])
    return res.stdout


def tool(name):
    """tools/<name>.py, imported as a module (tools/ is not a package)."""
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "tools", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
