"""GPU benchmarks: ours against cuDNN (torch.nn.RNN on CUDA), the cuBLAS GEMM floor,
and the grid-synchronisation floor of a persistent kernel.

Timings synchronise the device around every timed call and report medians of
alternating repeats, as on the CPU (:mod:`numba_rnn.bench`). They need a real GPU:
the CUDA simulator's timings would mean nothing, so it is refused.
"""
import time

import numpy as np

SHAPES = {  # name: (N, D, H, T); the CPU shapes plus DeepBench's vanilla-RNN training shapes
    "tiny": (16, 32, 64, 200),
    "stream": (1, 128, 256, 1000),
    "medium": (64, 128, 256, 100),
    "large": (64, 512, 1024, 50),
    "db-1760": (16, 1760, 1760, 50),
    "db-2560": (64, 2560, 2560, 50),
}
#: targets (ours / cuDNN) for forward and train step, per shape
TARGETS = {"tiny": 0.5, "stream": 0.5, "medium": 1.0, "large": 1.0, "db-1760": 1.5,
           "db-2560": 1.5}


def _gpu():
    from numba_rnn.kernels import get_backend
    gpu = get_backend("cuda")
    if gpu.SIMULATOR:
        raise ValueError("bench --device cuda needs a real GPU: timings in the CUDA "
                         "simulator (NUMBA_ENABLE_CUDASIM=1) mean nothing")
    return gpu


def _timed(fns, repeats, sync):
    """Median ms of each function, interleaved, synchronising around every call."""
    times = {k: [] for k in fns}
    for f in fns.values():                       # warm-up: JIT compilation, cuDNN plans
        f()
    sync()
    for _ in range(repeats):
        for k, f in fns.items():
            sync()
            t0 = time.perf_counter()
            f()
            sync()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def grid_sync_floor_us(T, blocks, threads=128, repeats=5):
    """µs per step of an empty persistent loop: ``T`` grid syncs over ``blocks`` blocks."""
    from numba import cuda

    from .kernels.cuda_arrays import launch
    _gpu()

    @cuda.jit
    def empty_loop(T, out):
        grid = cuda.cg.this_grid()
        for _ in range(T):
            grid.sync()
        if cuda.grid(1) == 0:
            out[0] = T

    out = cuda.device_array(1, dtype=np.int64)
    loop = launch(empty_loop, blocks, threads)
    ms = _timed({"floor": lambda: loop(T, out)}, repeats, cuda.synchronize)["floor"]
    return ms * 1e3 / T


def _torch_peer(x, params, dtype):
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    from .bench import torch_ops, torch_rnn
    T, N, D = x.shape
    H = params["W_aa_l0"].shape[0]
    rnn = torch_rnn(params["W_ax_l0"], params["W_aa_l0"], params["b_a_l0"], "cuda")
    tdt = rnn.weight_hh_l0.dtype
    tx = torch.as_tensor(x, device="cuda")
    d_out = torch.ones(T, N, H, dtype=tdt, device="cuda")
    W_ax, W_aa = rnn.weight_ih_l0.detach(), rnn.weight_hh_l0.detach()
    a = torch.zeros(N, H, dtype=tdt, device="cuda")
    ops = torch_ops(rnn, tx, d_out)

    def floor_forward():                         # cuBLAS: the same products back-to-back
        with torch.no_grad():
            U = tx.reshape(T * N, D) @ W_ax.T
            h = a
            for _ in range(T):
                h = h @ W_aa
        return U, h

    def floor_train():
        with torch.no_grad():
            U, h = floor_forward()
            for _ in range(T):
                h = h @ W_aa
            return U.T @ tx.reshape(T * N, D), U.T @ U, U @ W_ax
    return {**ops, "floor_forward": floor_forward,
            "floor_train": floor_train, "sync": torch.cuda.synchronize,
            "tf32": bool(torch.backends.cudnn.allow_tf32), "version": torch.__version__}


def run(shapes=tuple(SHAPES), dtypes=("float32",), repeats=7, progress=None):
    """Time every (shape, dtype, op) on the GPU; a list of result dicts."""
    from tqdm.auto import tqdm
    gpu = _gpu()
    for shape in shapes:
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; choose from {tuple(SHAPES)}")
    rows = []
    for shape, dtype in tqdm([(s, d) for s in shapes for d in dtypes], desc="bench cuda",
                             disable=progress is False):
        rows += _measure(gpu, shape, dtype, repeats)
    return rows


def _measure(gpu, shape, dtype, repeats):
    import numba_rnn as nr
    from numba import cuda
    N, D, H, T = SHAPES[shape]
    rnn = nr.RNN(D, H, dtype=dtype, seed=0, device="cuda")
    x_host = np.random.default_rng(0).standard_normal((T, N, D)).astype(dtype)
    x, dA = cuda.to_device(x_host), cuda.to_device(np.ones((T, N, H), dtype=dtype))
    params = {k: v.copy_to_host() for k, v in rnn.params.items()}
    peer = _torch_peer(x_host, params, dtype)

    def ours_train():
        _, _, cache = rnn.forward(x)
        rnn.backward(cache, dA)
    ours = {"forward": lambda: rnn(x), "train": ours_train}
    # the recurrence kernels alone: no projection, products or Python layer around them
    P = rnn.params
    U = gpu.input_projection(x, P["W_ax_l0"], P["b_a_l0"])
    a0 = gpu.zeros((N, H), dtype)
    A = gpu.recurrence_forward(U, P["W_aa_l0"], a0, rnn._kind)
    kernels = {"forward": lambda: gpu.recurrence_forward(U, P["W_aa_l0"], a0, rnn._kind),
               "train": lambda: (gpu.recurrence_forward(U, P["W_aa_l0"], a0, rnn._kind),
                                 gpu.recurrence_backward(dA, A, P["W_aa_l0"], None, rnn._kind))}
    variant, size = gpu.plan(N, H, dtype)
    blocks = N if variant == "block" else -(-H // size) if variant == "grid" else 0
    sync_us = grid_sync_floor_us(T, blocks) if variant == "grid" else None
    rows = []
    for op in ("forward", "train"):
        fns = {"ours": ours[op], "kernels": kernels[op]}
        if peer is not None:
            fns["cudnn"] = peer[op]
            fns["floor"] = peer["floor_" + op]

        def sync():
            cuda.synchronize()
            if peer is not None:
                peer["sync"]()
        ms = _timed(fns, repeats, sync)
        steps = T if op == "forward" else 2 * T
        rows.append({
            "shape": shape, "dtype": dtype, "op": op, "N": N, "D": D, "H": H, "T": T,
            "variant": variant, "blocks": blocks, "ours_ms": ms["ours"],
            "cudnn_ms": ms.get("cudnn"), "floor_ms": ms.get("floor"),
            "ratio_cudnn": ms["ours"] / ms["cudnn"] if "cudnn" in ms else None,
            "ours_us_per_step": ms["ours"] * 1e3 / steps,
            "kernel_us_per_step": ms["kernels"] * 1e3 / steps,
            "grid_sync_floor_us": sync_us,
            "tf32": None if peer is None else peer["tf32"],
            "target": TARGETS[shape],
        })
    return rows


def table(rows):
    """A Markdown table of GPU results."""
    lines = ["| shape | op | variant (blocks) | ours ms | cuDNN ms | ours/cuDNN | target | "
             "µs/step | recurrence kernels µs/step | grid-sync floor µs | cuBLAS floor ms |",
             "|" + " --- |" * 11]

    def f(v, fmt=".3g"):
        return "—" if v is None else format(v, fmt)
    for r in rows:
        lines.append(f"| {r['shape']} | {r['op']} | {r['variant']} ({r['blocks']}) | "
                     f"{f(r['ours_ms'])} | {f(r['cudnn_ms'])} | {f(r['ratio_cudnn'], '.2f')} | "
                     f"≤ {r['target']} | {f(r['ours_us_per_step'])} | "
                     f"{f(r.get('kernel_us_per_step'))} | "
                     f"{f(r['grid_sync_floor_us'])} | {f(r['floor_ms'])} |")
    return "\n".join(lines)


def gpu_info():
    """The GPU and versions behind the numbers."""
    from numba import cuda
    import numba
    dev = cuda.get_current_device()
    info = {"gpu": dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name),
            "compute_capability": ".".join(map(str, dev.compute_capability)),
            "numba": numba.__version__, "numpy": np.__version__,
            "date": time.strftime("%Y-%m-%d")}
    try:
        import torch
        info["torch"] = torch.__version__
        info["cudnn"] = torch.backends.cudnn.version()
    except ImportError:
        info["torch"] = None
    return info
