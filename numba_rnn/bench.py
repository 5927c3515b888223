"""Benchmarks against the peers: a competent NumPy RNN, torch.nn.RNN, the GEMM floor.

Shapes (BENCHMARKS.md): 1 layer, tanh, time-major. Two operations per shape —
``forward`` (inference) and ``train`` (forward with cache + backward to every gradient
and dx). Each measurement times ours and a peer alternately in this process (same
threads), after a warm-up that includes JIT compilation, and reports medians; the
ratio ours/peer is what is compared, never an absolute time.

- :class:`NumpyRNN`: what a researcher writes by hand — input projection hoisted, one
  ``a = tanh(U[t] + a @ W_aaᵀ)`` per step, weight gradients as one GEMM each.
Timing (:func:`_median_alternating`): ours and one peer alternate, each timed call
after a pause and 20 ms of untimed calls of the same function; ratios come from each
pairing.

- :func:`gemm_floor`: the same matrix products issued back-to-back through the BLAS
  our kernels call (MKL's ``?gemm`` where it is loaded, else OpenBLAS) — what the
  recurrence cannot beat without changing the math, short of packing the weights once
  (which our recurrences do, into register tiles or MKL's packed format, so at large
  shapes they can pass it).
- torch: ``torch.nn.RNN`` (CPU), when installed; skipped otherwise.
"""
import json
import os
import platform
import time

import numpy as np

SHAPES = {  # name: (N, D, H, T)
    "tiny": (16, 32, 64, 200),
    "stream": (1, 128, 256, 1000),
    "medium": (64, 128, 256, 100),
    "large": (64, 512, 1024, 50),
}
OPS = ("forward", "train")
CPU_SHAPES = tuple(SHAPES)


class NumpyRNN:
    """A competent single-layer tanh RNN in plain NumPy (the hand-written peer)."""

    def __init__(self, W_ax, W_aa, b):
        self.W_ax, self.W_aa, self.b = W_ax, W_aa, b
        self.W_aaT = np.ascontiguousarray(W_aa.T)

    def forward(self, x):
        T, N, D = x.shape
        U = (x.reshape(T * N, D) @ self.W_ax.T + self.b).reshape(T, N, -1)
        A = np.empty_like(U)
        a = np.zeros((N, U.shape[2]), dtype=x.dtype)
        for t in range(T):
            a = np.tanh(U[t] + a @ self.W_aaT)
            A[t] = a
        return A

    def train_step(self, x, dA):
        T, N, D = x.shape
        A = self.forward(x)
        H = A.shape[2]
        delta = np.empty_like(A)
        carry = np.zeros((N, H), dtype=x.dtype)
        for t in range(T - 1, -1, -1):
            g = dA[t] + carry
            delta[t] = g * (1 - A[t] * A[t])
            carry = delta[t] @ self.W_aa
        d2 = delta.reshape(T * N, H)
        dW_ax = d2.T @ x.reshape(T * N, D)
        dW_aa = delta[1:].reshape(-1, H).T @ A[:-1].reshape(-1, H)
        db = d2.sum(axis=0)
        dx = (d2 @ self.W_ax).reshape(T, N, D)
        return dW_ax, dW_aa, db, dx, carry


def flops(shape, op):
    """Floating-point operations of the matrix products of one forward / train step."""
    N, D, H, T = SHAPES[shape] if isinstance(shape, str) else shape
    fwd = 2 * T * N * D * H + 2 * T * N * H * H
    if op == "forward":
        return fwd
    # backward: T products δ·W_aa, then dW_aa, dW_ax and dx as one GEMM each
    return 2 * fwd + 2 * T * N * H * H + 2 * T * N * D * H


def gemm_floor(x, W_ax, W_aa, op, parallel=None):
    """The products of ``op`` issued back-to-back (no activations, no bookkeeping),
    through the BLAS our kernels call — MKL where it is loaded (:mod:`.kernels.mkl`),
    else OpenBLAS (:func:`~numba_rnn.kernels.cpu.product_engine`) — in the same row
    blocks on the same threads (``parallel``: as
    :func:`~numba_rnn.kernels.cpu.resolve_parallel`); through the BLAS even where our
    kernels multiply with register tiles (small step products, and the batched ones of
    a small operand, :func:`~numba_rnn.kernels.cpu._row_tiles`)."""
    from .kernels import cpu
    T, N, D = x.shape
    H = W_aa.shape[0]
    par = cpu.resolve_parallel(parallel, N, H)
    x2 = x.reshape(T * N, D)
    a = np.zeros((N, H), dtype=x.dtype)
    with cpu.compute_context(par):
        U = cpu._matmul(x2, W_ax.T, None, par, tiles=False)
        for _ in range(T):
            a = cpu._matmul(a, W_aa, None, par, tiles=False)
        if op == "forward":
            return U
        U2 = U.reshape(T, N, H)
        for t in range(T):
            a = cpu._matmul(U2[t], W_aa, None, par, tiles=False)
        for _ in range(T):
            a = cpu._matmul(a, W_aa, None, par, tiles=False)
        return cpu._matmul_tn(U, U, par), cpu._matmul_tn(U, x2, par), \
            cpu._matmul(U, W_ax, None, par, tiles=False)


#: Seconds to sleep before each measured pair of calls, so that the thread pools of
#: the library timed before have gone idle (OpenBLAS's workers busy-wait up to 2^28
#: cycles, ~0.1 s, after a call; OpenMP's for ~0.3 ms).
QUIET_S = 0.12

#: Seconds of untimed calls after the pause, before the timed one (see :func:`_timed`).
WARM_S = 0.02


def _timed(f):
    """ms of one call of ``f``, after a pause and :data:`WARM_S` seconds of untimed calls
    of ``f`` (at least one).

    Four thread pools can share this process (Numba's OpenMP, NumPy's and SciPy's
    OpenBLAS, torch's). A pool just used keeps spinning for a while, and a woken
    OpenMP worker can start on its master's core; either slows the *next* library
    called, by up to 2-3x on the 2-core machine (seen: our medium train step 19 ms
    alone, 23.5 ms right after NumPy's). The pause (:data:`QUIET_S`) lets the other
    library's pool go idle, and the untimed calls bring ``f`` to its steady state, as in
    a training loop where one library runs step after step. One untimed call was not
    enough there: a short call timed right after it was still slow from the pause (tiny
    float32 forward, 2-core EPYC, medians of 9: ours 1.03–1.18 ms against 0.77–0.94
    with 20 ms of warm-up, NumPy's 2.8–4.6 against 2.8–3.4).
    """
    time.sleep(QUIET_S)
    warm_until = time.perf_counter() + WARM_S
    f()
    while time.perf_counter() < warm_until:
        f()
    t0 = time.perf_counter()
    f()
    return (time.perf_counter() - t0) * 1e3


def _median_alternating(fns, repeats, probe=None):
    """Time ``fns["ours"]`` against each other function in turn, alternating the two
    ``repeats`` times (each timed call after a pause and untimed calls, see
    :func:`_timed`); ``probe``, when given, is called after each pair of timed calls
    (before the next pause) and what it returns, other than None, is kept.

    Returns medians in ms: ``<peer>`` for each peer, ``ours_<peer>`` for ours within
    that pairing and ``ours`` over all its timings, and ``ratio_<peer>`` =
    ``ours_<peer> / <peer>``; ``ratio_<peer>_iqr``, the quartiles [q25, q75] of the
    repeats' own ratios (ours ÷ the peer call timed right after it: how far the
    machine moved the ratio while it was measured); with a ``probe``, also ``probes``,
    its readings in order.
    """
    ours, res, all_ours, probes = fns["ours"], {}, [], []
    for k, f in fns.items():
        if k == "ours":
            continue
        a, b = [], []
        for _ in range(repeats):
            a.append(_timed(ours))
            b.append(_timed(f))
            if probe is not None and (reading := probe()) is not None:
                probes.append(reading)
        res[k] = float(np.median(b))
        res["ours_" + k] = float(np.median(a))
        res["ratio_" + k] = res["ours_" + k] / res[k]
        res["ratio_" + k + "_iqr"] = [float(q) for q in
                                      np.percentile(np.divide(a, b), [25, 75])]
        all_ours += a
    res["ours"] = float(np.median(all_ours))
    if probe is not None:
        res["probes"] = probes
    return res


def torch_rnn(W_ax, W_aa, b, device):
    """A one-layer ``torch.nn.RNN`` on ``device`` holding our weights (bias_hh = 0)."""
    import torch
    H, D = W_ax.shape
    dtype = torch.float32 if W_ax.dtype == np.float32 else torch.float64
    rnn = torch.nn.RNN(D, H).to(device=device, dtype=dtype)
    with torch.no_grad():
        for name, value in (("weight_ih_l0", W_ax), ("weight_hh_l0", W_aa), ("bias_ih_l0", b)):
            getattr(rnn, name).copy_(torch.as_tensor(np.ascontiguousarray(value)))
        rnn.bias_hh_l0.zero_()
    return rnn


def _torch_peer(x, W_ax, W_aa, b, threads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    T, N, D = x.shape
    H = W_aa.shape[0]
    rnn = torch_rnn(W_ax, W_aa, b, "cpu")
    dtype = rnn.weight_hh_l0.dtype
    fns = torch_ops(rnn, torch.from_numpy(x), torch.ones(T, N, H, dtype=dtype))
    return {**fns, "version": torch.__version__}


def torch_ops(rnn, tx, d_out):
    """torch's forward (no grad) and train step (forward + backward to every gradient
    and dx) on input ``tx``, as the peers of ours."""
    import torch

    def forward():
        with torch.no_grad():
            rnn(tx)

    def train():
        xg = tx.clone().requires_grad_(True)
        rnn.zero_grad()
        out, _ = rnn(xg)
        out.backward(d_out)
    return {"forward": forward, "train": train}


def run(shapes=tuple(SHAPES), dtypes=("float32", "float64"), device="cpu", repeats=7,
        parallel=None, threads=None, progress=None):
    """Time every (shape, dtype, op); returns a list of result dicts (ms and ratios)."""
    import numba
    from tqdm.auto import tqdm
    threads = threads or numba.config.NUMBA_NUM_THREADS
    for shape in shapes:
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; choose from {tuple(SHAPES)}")
    rows = []
    jobs = [(s, d) for s in shapes for d in dtypes]
    for shape, dtype in tqdm(jobs, desc="bench", disable=progress is False):
        rows += _measure(shape, dtype, device, repeats, parallel, threads)
    return rows


def _measure(shape, dtype, device, repeats, parallel, threads):
    """Rows for one (shape, dtype): forward and train step against every peer."""
    import numba_rnn as nr
    N, D, H, T = SHAPES[shape]
    handover = None
    rnn = nr.RNN(D, H, dtype=dtype, seed=0, device=device, parallel=parallel)
    x = np.random.default_rng(0).standard_normal((T, N, D)).astype(dtype)
    dA = np.ones((T, N, H), dtype=dtype)
    W_ax, W_aa, b = (rnn.params[k] for k in ("W_ax_l0", "W_aa_l0", "b_a_l0"))
    peer = NumpyRNN(W_ax, W_aa, b)
    torch_fns = _torch_peer(x, W_ax, W_aa, b, threads)

    def ours_train():
        _, _, cache = rnn.forward(x)
        rnn.backward(cache, dA)
    ours = {"forward": lambda: rnn(x), "train": ours_train}
    numpy_fns = {"forward": lambda: peer.forward(x), "train": lambda: peer.train_step(x, dA)}
    rows = []
    for op in OPS:
        fns = {"ours": ours[op], "numpy": numpy_fns[op],
               "floor": lambda op=op: gemm_floor(x, W_ax, W_aa, op, parallel)}
        if torch_fns is not None:
            fns["torch"] = torch_fns[op]
        for f in fns.values():                           # warm-up, JIT compilation included
            f()
        if op == OPS[0] and device == "cpu":
            handover = handover_ns()      # after torch has set up its threads: before it,
                                          # torch ran 10-20x slower in this process
        probe = None if handover is None else \
            (lambda: handover_ns(PROBE_ROUNDS, PROBE_REPEATS))
        ms = _median_alternating(fns, repeats, probe)
        readings = ms.get("probes") or ([] if handover is None else [handover])
        peers = {k: v for k, v in ms.items() if k in ("numpy", "torch")}
        best = min(peers, key=peers.get)
        rows.append({
            "shape": shape, "dtype": dtype, "op": op, "N": N, "D": D, "H": H, "T": T,
            "ours_ms": ms["ours_" + best], "ours_ms_all": ms["ours"],
            "numpy_ms": ms["numpy"], "torch_ms": ms.get("torch"),
            "floor_ms": ms["floor"], "best_peer": best,
            "ratio_best_peer": ms["ratio_" + best],
            "ratio_best_peer_iqr": ms["ratio_" + best + "_iqr"],
            "ratio_numpy": ms["ratio_numpy"],
            "ratio_torch": ms.get("ratio_torch"),
            "gflops": flops(shape, op) / ms["ours_" + best] / 1e6,
            "floor_fraction": 1.0 / ms["ratio_floor"],
            "handover_ns": float(np.median(readings)) if readings else None,
            "handover_ns_min": min(readings) if readings else None,
            "handover_ns_max": max(readings) if readings else None,
        })
    return rows


#: Round trips per hand-over measurement, measurements per call, and the spins after which
#: a side whose partner never runs gives up (:func:`~.kernels.atomics.ping_pong`).
HANDOVER_ROUNDS, HANDOVER_REPEATS, HANDOVER_PATIENCE = 4000, 5, 1 << 24

#: The shorter probe taken after each pair of timed calls (rounds, measurements): ~1 ms
#: at 400 ns a round trip, inside the pause that precedes the next timed call.
PROBE_ROUNDS, PROBE_REPEATS = 1000, 1


def handover_ns(rounds=HANDOVER_ROUNDS, repeats=HANDOVER_REPEATS):
    """The round trip, in ns, of a counter passed between two of Numba's threads, each
    bound to its own core as in our parallel calls (median of ``repeats`` runs of
    ``rounds``, after one untimed); None with fewer than two threads or cores.

    A single sequence's recurrence hands every step over between the cores (shared
    panels, :mod:`.kernels.cpu`), so its speed depends on this latency — which on a VM
    moves with where the host puts the virtual CPUs: 55–70, 90–115 or 270–870 ns a few
    seconds apart on the 2-core EPYC, the stream float32 forward recurrence mostly at
    2.1–2.7 ms after ~100 ns and 2.9–6.1 ms after 340–870 ns (2026-11-30; a hint, not a
    verdict: the placement can change within the second after). The bench measures it
    once for each shape, after the peers' first calls, and then (:data:`PROBE_ROUNDS`)
    after every pair of timed calls: each row reports the median and the range of the
    readings taken while it was timed.

    It loads MKL first (where installed), as a model's first call does, and the bench
    calls it after the peers' first calls. The order matters where torch shares the
    process: torch's bundled ``libgomp.so.1`` has the soname of the system's, so when
    Numba's OpenMP layer starts before ``import torch``, torch runs on the system's
    OpenMP runtime, shared with Numba (``/proc/self/maps`` then holds only that one).
    Torch's CPU RNN then ran 1.2–1.6× slower for the rest of the process (medium
    float32 train step 77–90 ms against 61–67), and 10–20× slower (forward 376 ms
    against 20–26) when the first Numba kernel was a bare ``prange`` one with MKL not
    yet loaded — why MKL's loading matters is not known. Imported first, torch keeps
    its own runtime and its usual speed; the bench imports it before any parallel call
    of ours."""
    from .kernels import cpu, mkl
    from .kernels.atomics import ping_pong
    if cpu._shared_workers() < 2:
        return None
    mkl.load()                          # as a model's first call would (see above)
    times = []
    with cpu.compute_context(True):
        for _ in range(repeats + 1):
            sync = np.zeros(16, dtype=np.int64)
            t0 = time.perf_counter()
            ping_pong(sync, rounds, HANDOVER_PATIENCE)
            times.append(time.perf_counter() - t0)
            if sync[8]:
                return None
    return 1e9 * float(np.median(times[1:])) / rounds


def machine_info():
    """Where the numbers come from."""
    import numba
    import scipy
    info = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "numba": numba.__version__,
            "cpu": _cpu_name(), "cores": os.cpu_count(),
            "numba_threads": numba.config.NUMBA_NUM_THREADS}
    info["blas"] = blas_name()
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def blas_name():
    """The BLAS our CPU kernels call, as a short label: MKL's steps and the dtypes
    whose batched products it takes, then whose ``?gemm`` takes the others'
    (:func:`.kernels.cpu.product_engine`)."""
    from .kernels import cpu, mkl, openblas
    used, where = mkl.status()
    engines = {d: cpu.product_engine(d) for d in ("float32", "float64")}
    rest = [d for d, e in engines.items() if e != "mkl"]
    others = ""
    if rest:
        who = f"OpenBLAS {openblas.version()} (scipy-openblas32)" \
            if engines[rest[0]] == "openblas" else "OpenBLAS via SciPy"
        others = f"{who}: {' '.join(rest)} batched products"
    if not used:
        return f"{others} (MKL off: {where})"
    batched = "batched products too" if not rest else \
        f"batched products: {' '.join(d for d in engines if d not in rest) or 'none'}" \
        f" (MKL branch {mkl.branch()})"
    steps = "packed steps" if mkl.specific_path() else \
        f"packed steps for W_aa > {cpu.TILE_MAX_WEIGHT_BYTES >> 20} MiB"
    return f"MKL {mkl.version()} ({steps}; {batched})" + (f" · {others}" if rest else "")


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(rows):
    """A Markdown table of the results. "ours/best peer" is the quotient of the two
    medians, with the best peer and, where the repeats' own ratios spread, their
    quartiles (:func:`_ratio_cell`); "hand-over ns" is :func:`handover_ns` while the
    row was timed: the median of the readings and, where there were several, their
    range (— with one core or thread)."""
    head = ("| shape | dtype | op | ours ms | NumPy ms | torch ms | ours/best peer | "
            "GEMM floor ms | floor/ours | GFLOP/s | hand-over ns |")
    lines = [head, "|" + " --- |" * 11]
    for r in rows:
        torch_ms = f"{r['torch_ms']:.3g}" if r["torch_ms"] is not None else "—"
        handover = _handover_cell(r)
        lines.append(f"| {r['shape']} | {r['dtype']} | {r['op']} | {r['ours_ms']:.3g} | "
                     f"{r['numpy_ms']:.3g} | {torch_ms} | {_ratio_cell(r)} | "
                     f"{r['floor_ms']:.3g} | {r['floor_fraction']:.2f} | "
                     f"{r['gflops']:.1f} | {handover} |")
    return "\n".join(lines)


def _ratio_cell(row):
    """The table's ratio cell: ``0.42 (numpy; 0.38–0.47)`` — the ratio of the medians,
    the best peer, and the quartiles of the repeats' own ratios where a row has them
    and they do not round alike. The quartiles need not bracket the ratio of the
    medians: a pair's two calls share the machine's minute, the two medians do not."""
    ratio, peer = f"{row['ratio_best_peer']:.2f}", row["best_peer"]
    iqr = row.get("ratio_best_peer_iqr")
    if iqr is None or f"{iqr[0]:.2f}" == f"{iqr[1]:.2f}":
        return f"{ratio} ({peer})"
    return f"{ratio} ({peer}; {iqr[0]:.2f}–{iqr[1]:.2f})"


def _handover_cell(row):
    """The table's hand-over cell: the median of a row's readings and their range,
    ``412 (88–530)``; the median alone when they round alike or the row has no range;
    "—" when there are none."""
    mid = row.get("handover_ns")
    if mid is None:
        return "—"
    lo, hi = row.get("handover_ns_min"), row.get("handover_ns_max")
    if lo is None or hi is None or round(lo) == round(hi):
        return f"{mid:.0f}"
    return f"{mid:.0f} ({lo:.0f}–{hi:.0f})"


def bar_chart(rows, path, targets=None, key="ratio_best_peer"):
    """Bar chart of ours/best-peer (``key``) per (shape, dtype, op), targets marked."""
    targets = TARGETS if targets is None else targets
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in rows if r.get(key) is not None]
    labels = [f"{r['shape']}\n{r['dtype'][5:]} {r['op'][:5]}" for r in rows]
    ratios = [r[key] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rows)), 4.2), layout="constrained")
    colors = ["tab:green" if v <= targets[r["shape"]] else "tab:red"
              for v, r in zip(ratios, rows, strict=True)]
    ax.bar(np.arange(len(rows)), ratios, color=colors)
    spread = [(i, r[key + "_iqr"]) for i, r in enumerate(rows) if r.get(key + "_iqr")]
    if spread:                                      # the repeats' own ratios, q25–q75
        idx = [i for i, _ in spread]
        ax.vlines(idx, [q[0] for _, q in spread], [q[1] for _, q in spread],
                  color="0.25", lw=1.2, label="ratio of each repeat, q25–q75")
        ax.legend(loc="upper left", fontsize="x-small")
    for i, r in enumerate(rows):
        ax.hlines(targets[r["shape"]], i - 0.4, i + 0.4, color="black", lw=1.5)
    ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(rows)), labels, fontsize="x-small")
    ax.set_yscale("log")
    ax.set_ylabel("time ours / fastest peer (lower is better)")
    ax.set_title("numba_rnn vs the fastest peer (black: target)" if key == "ratio_best_peer"
                 else "numba_rnn vs cuDNN (black: target)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: the performance targets (ours / fastest peer), per shape
TARGETS = {"tiny": 0.35, "stream": 0.35, "medium": 0.85, "large": 1.0}


def save_json(rows, path):
    with open(path, "w") as f:
        json.dump({"machine": machine_info(), "rows": rows}, f, indent=1)
