"""Experiment sweeps: a parameter grid (or random search) run point by point on Dask.

``sweep(fn, grid)`` expands the grid, runs every point as a task — on a Dask
``LocalCluster`` of processes with one Numba thread each by default, on any scheduler
you give (``client=`` or an address), or serially in-process without Dask — and
streams each result, as it arrives, to a JSON-lines file and a CSV table. A point that
raises or returns NaN is recorded with its error and the sweep goes on; a task whose
worker dies is retried (Dask's ``retries``); re-running a sweep skips the points its
files already hold.

A point function takes keyword parameters and returns a dict of metrics;
:func:`adding_point` (the built-in study: which sequence lengths each recipe solves on
the adding problem) is one.
"""
import csv
import hashlib
import inspect
import itertools
import json
import math
import os
import tempfile
import time

import numpy as np

#: recipe name → (nonlinearity, init) for the built-in study
RECIPES = {"tanh-orthogonal": ("tanh", "orthogonal"), "tanh-uniform": ("tanh", "uniform"),
           "relu-identity": ("relu", "identity")}


# ------------------------------------------------------------------ the built-in study
def adding_point(seq_len=50, recipe="tanh-orthogonal", clip=1.0, seed=0, steps=2000,
                 hidden=64, batch_size=32, lr=1e-3, solved_below=0.1):
    """Train one model on the adding problem; report whether it solved it.

    ``clip`` ≤ 0 trains without clipping. Solved means test MSE below ``solved_below``
    times the baseline 1/6. Also returns the gradient-norm summary of training and the
    ratio ‖∂L/∂a⟨0⟩‖ / ‖∂L/∂a⟨T-1⟩‖ of the trained model (how much gradient reaches
    the start of the sequence).
    """
    import warnings

    from . import analysis
    from .tasks import AddingProblem
    from .train import fit
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {recipe!r}")
    nonlinearity, init = RECIPES[recipe]
    task = AddingProblem(seq_len=int(seq_len), seed=int(seed))
    model = task.make_model(int(hidden), nonlinearity=nonlinearity, init=init,
                            seed=int(seed), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # a diverged run is a result
        hist = fit(model, task, steps=int(steps), batch_size=int(batch_size), lr=float(lr),
                   clip_norm=float(clip) if clip and clip > 0 else None, progress=False,
                   seed=int(seed))
    test = task.test_set(4, 128)
    mse = float(np.mean([model.loss_and_grad(**b)[0] for b in test]))
    norms = np.asarray(hist.grad_norm, dtype=float)
    x, d_out = analysis.output_grad(model, **test[0])
    reach = analysis.hidden_grad_norms(model.rnn, x, d_out)["l0"]
    return {"test_mse": mse, "solved": bool(mse < solved_below * task.baseline_loss),
            "baseline": task.baseline_loss, "steps_run": len(hist.step),
            "grad_norm_median": float(np.median(norms)) if norms.size else math.nan,
            "grad_norm_max": float(np.max(norms)) if norms.size else math.nan,
            "clipped_fraction": float(np.mean(hist.clipped)) if hist.clipped else 0.0,
            "reach_ratio": float(reach[0] / reach[-1]) if reach[-1] > 0 else math.nan,
            "stop_reason": hist.stop_reason}


POINT_FUNCTIONS = {"adding": adding_point}


# ------------------------------------------------------------------ grids
def expand_grid(grid, fixed=None):
    """The Cartesian product of ``grid`` (name → list of values), in a stable order,
    each point merged over ``fixed``."""
    if not isinstance(grid, dict) or not grid:
        raise ValueError("grid must be a non-empty dict of parameter name → list of values")
    names = list(grid)
    for name, values in grid.items():
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise ValueError(f"grid[{name!r}] must be a non-empty list of values, got {values!r}")
    return [dict(fixed or {}, **dict(zip(names, combo, strict=True)))
            for combo in itertools.product(*(grid[n] for n in names))]


def random_points(space, n, seed=0, fixed=None):
    """``n`` points sampled from ``space``: a list of values (uniform choice) or a dict
    ``{low, high, log=False, int=False}`` per parameter; reproducible from ``seed``."""
    if not isinstance(space, dict) or not space:
        raise ValueError("random search needs a non-empty dict of parameter → range")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of random points must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    points = []
    for _ in range(n):
        p = dict(fixed or {})
        for name, spec in space.items():
            if isinstance(spec, (list, tuple)) and spec:
                p[name] = spec[int(rng.integers(len(spec)))]
            elif isinstance(spec, dict) and {"low", "high"} <= set(spec):
                lo, hi = float(spec["low"]), float(spec["high"])
                if spec.get("log"):
                    v = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
                else:
                    v = float(rng.uniform(lo, hi))
                p[name] = int(round(v)) if spec.get("int") else v
            else:
                raise ValueError(f"random[{name!r}] must be a list or {{low, high}}, got {spec!r}")
        points.append(p)
    return points


def point_id(params):
    """A stable identifier of a parameter point (resume matches on it)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _check_parameters(fn, points):
    sig = inspect.signature(fn)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    known = set(sig.parameters)
    for p in points:
        unknown = sorted(set(p) - known)
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for {fn.__name__}; it takes "
                             f"{sorted(known)}")


# ------------------------------------------------------------------ running a point
def run_point(fn, params):
    """Run ``fn(**params)``; never raises: errors and NaN results become records."""
    t0 = time.perf_counter()
    row = {"id": point_id(params), **{f"param.{k}": v for k, v in params.items()}}
    try:
        metrics = fn(**params)
        if not isinstance(metrics, dict):
            raise TypeError(f"a point function must return a dict, got {type(metrics).__name__}")
        bad = [k for k, v in metrics.items() if isinstance(v, float) and math.isnan(v)]
        row.update(metrics)
        row["status"] = "nan" if bad else "ok"
        row["error"] = f"NaN in {bad}" if bad else ""
    except Exception as err:  # noqa: BLE001  (a failing point is data, not a crash)
        row["status"] = "error"
        row["error"] = f"{type(err).__name__}: {err}"
    row["seconds"] = round(time.perf_counter() - t0, 3)
    row["host"] = os.uname().nodename + f":{os.getpid()}"
    return row


def _warm_worker():
    """Compile (or load from Numba's cache) the kernels once in a worker process."""
    import numba_rnn as nr
    rnn = nr.RNN(2, 4, seed=0)
    out, _, cache = rnn.forward(np.zeros((3, 2, 2), np.float32))
    rnn.backward(cache, np.ones_like(out))
    return os.getpid()


def _warm_up_plugin_class():
    from distributed.diagnostics.plugin import WorkerPlugin

    class WarmUp(WorkerPlugin):
        """Load (or compile) the Numba kernels when a worker starts — a restarted one too."""

        def setup(self, worker):
            _warm_worker()
    return WarmUp


def _WarmUp():  # noqa: N802  (a factory: distributed is imported only when used)
    return _warm_up_plugin_class()()


# ------------------------------------------------------------------ results files
class ResultStore:
    """JSON lines (appended and fsynced per row: a crash loses no finished point) plus a
    CSV table rewritten atomically after each row."""

    def __init__(self, csv_path):
        self.csv_path = os.fspath(csv_path)
        base, _ = os.path.splitext(self.csv_path)
        self.jsonl_path = base + ".jsonl"
        self.rows = []
        if os.path.exists(self.jsonl_path):
            with open(self.jsonl_path) as f:
                text = f.read()
            for line in text.splitlines():
                try:
                    self.rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue                         # a line cut short by a crash
            if text and not text.endswith("\n"):
                with open(self.jsonl_path, "a") as f:    # end the cut line: the next row
                    f.write("\n")                       # must start on a line of its own
        folder = os.path.dirname(os.path.abspath(self.csv_path))
        os.makedirs(folder, exist_ok=True)

    def done_ids(self):
        return {r["id"] for r in self.rows}

    def add(self, row):
        self.rows.append(row)
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.write_csv()

    def write_csv(self):
        columns = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        folder = os.path.dirname(os.path.abspath(self.csv_path))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".csv", dir=folder)
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            for r in sorted(self.rows, key=lambda r: r["id"]):
                w.writerow(r)
        os.replace(tmp, self.csv_path)


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    return str(v)


# ------------------------------------------------------------------ the sweep
def sweep(fn_or_task, grid=None, *, fixed=None, random=None, n_random=None, seed=0,
          client=None, scheduler=None, workers=None, out="sweep.csv", retries=2,
          progress=None):
    """Run every point of a grid (and/or a random search); returns the rows of the table.

    Parameters
    ----------
    fn_or_task : callable or str
        ``fn(**params) -> dict`` of metrics, or a built-in name (``"adding"``).
    grid : dict name → list, optional
        Cartesian product of values.
    fixed : dict, optional
        Parameters shared by every point.
    random, n_random : dict, int
        Random search: ``n_random`` points from ``random`` (see :func:`random_points`).
    client : dask.distributed.Client, False or None
        Where to run. None: a new ``LocalCluster`` (``workers`` processes, one thread and
        one Numba thread each) when Dask is installed, else serially in-process. False:
        serially in-process. ``scheduler`` (an address) connects to a running cluster.
    out : path
        The CSV table; the JSON lines go beside it (same name, ``.jsonl``). Points
        already recorded there are skipped.
    retries : int
        Dask retries for a task whose worker died.

    Returns
    -------
    list of dict
        Every row of the table (earlier runs' rows included), sorted by point id.
    """
    fn = POINT_FUNCTIONS.get(fn_or_task) if isinstance(fn_or_task, str) else fn_or_task
    if fn is None:
        raise ValueError(f"unknown point function {fn_or_task!r}; built-in: "
                         f"{tuple(POINT_FUNCTIONS)}")
    if not callable(fn):
        raise TypeError(f"fn_or_task must be callable or a built-in name, got {fn!r}")
    points = expand_grid(grid, fixed) if grid else []
    if random:
        points += random_points(random, n_random if n_random is not None else 10, seed, fixed)
    if not points:
        raise ValueError("the sweep is empty: give a non-empty grid or a random search")
    _check_parameters(fn, points)
    unique = {point_id(p): p for p in points}
    store = ResultStore(out)
    todo = [p for pid, p in unique.items() if pid not in store.done_ids()]
    from tqdm.auto import tqdm
    bar = tqdm(total=len(unique), initial=len(unique) - len(todo), desc="sweep",
               unit="point", disable=progress is False)
    try:
        if todo:
            runner = _run_dask if client is not False and (client is not None or scheduler
                                                           or _have_dask()) else _run_serial
            for row in runner(fn, todo, client, scheduler, workers, retries):
                store.add(row)
                bar.update(1)
    finally:
        bar.close()
    wanted = set(unique)
    return sorted((r for r in store.rows if r["id"] in wanted), key=lambda r: r["id"])


def _have_dask():
    try:
        import distributed  # noqa: F401
        return True
    except ImportError:
        return False


def _run_serial(fn, points, client, scheduler, workers, retries):
    for p in points:
        yield run_point(fn, p)


def _run_dask(fn, points, client, scheduler, workers, retries):
    from distributed import Client, LocalCluster, as_completed
    cluster = own = None
    if client is None:
        if scheduler:
            client = own = Client(scheduler)
        else:
            n = workers or max(1, (os.cpu_count() or 1))
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   dashboard_address=":0",
                                   env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                                        "OPENBLAS_NUM_THREADS": "1"})
            client = own = Client(cluster)
    try:
        client.register_plugin(_WarmUp(), name="numba-rnn-warm-up")  # every worker, restarts too
        futures = [client.submit(run_point, fn, p, key=f"point-{point_id(p)}", pure=False,
                                 retries=retries) for p in points]
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as err:  # noqa: BLE001  (e.g. KilledWorker after retries)
                p = points[[f.key for f in futures].index(fut.key)]
                yield {"id": point_id(p), **{f"param.{k}": v for k, v in p.items()},
                       "status": "error", "error": f"{type(err).__name__}: {err}",
                       "seconds": math.nan, "host": ""}
    finally:
        if own is not None:
            own.close()
        if cluster is not None:
            cluster.close()


# ------------------------------------------------------------------ config files
def load_config(path):
    """Read a sweep TOML file (see ``numba_rnn/studies/*.toml``) into sweep() arguments."""
    try:
        import tomllib
    except ModuleNotFoundError:                      # Python 3.10
        import tomli as tomllib
    with open(path, "rb") as f:
        try:
            cfg = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path} is not valid TOML: {err}") from err
    unknown = set(cfg) - {"sweep", "fixed", "grid", "random"}
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {sorted(unknown)}; use [sweep], "
                         f"[fixed], [grid], [random]")
    head = cfg.get("sweep", {})
    unknown = set(head) - {"function", "out", "seed", "retries", "figure", "n_random"}
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)} in [sweep]")
    if "function" not in head:
        raise ValueError(f"{path}: [sweep] needs function = \"adding\" (or module:function)")
    fn = head["function"]
    if ":" in fn:
        import importlib
        module, name = fn.split(":", 1)
        fn = getattr(importlib.import_module(module), name)
    random = cfg.get("random") or None
    return {"fn_or_task": fn, "grid": cfg.get("grid") or None, "fixed": cfg.get("fixed"),
            "random": random, "n_random": head.get("n_random"), "seed": head.get("seed", 0),
            "out": head.get("out", "sweep.csv"), "retries": head.get("retries", 2),
            "figure": head.get("figure")}


def study_path(name):
    """Path of a built-in study config (``adding``, ``adding-quick``)."""
    path = os.path.join(os.path.dirname(__file__), "studies", f"{name}.toml")
    if not os.path.exists(path):
        raise ValueError(f"no built-in study {name!r}")
    return path


def success_table(rows):
    """Success rate per (recipe, clip) and sequence length from the adding study rows."""
    table = {}
    for r in rows:
        if r.get("status") != "ok":
            continue
        key = (r["param.recipe"], float(r["param.clip"]))
        table.setdefault(key, {}).setdefault(int(r["param.seq_len"]), []).append(r["solved"])
    return {k: {T: float(np.mean(v)) for T, v in sorted(d.items())} for k, d in table.items()}


def success_figure(rows, path):
    """Success rate vs sequence length, one line per recipe and clipping setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    table = success_table(rows)
    fig, ax = plt.subplots(figsize=(6.6, 4.2), layout="constrained")
    markers = "osD^vP"
    lengths = sorted({T for rates in table.values() for T in rates})
    for i, ((recipe, clip), rates) in enumerate(sorted(table.items())):
        Ts = list(rates)
        nudge = 0.012 * (i - (len(table) - 1) / 2)         # keep equal curves visible
        ax.plot(Ts, [rates[T] + nudge for T in Ts], marker=markers[i % len(markers)],
                ls="-" if clip > 0 else "--", alpha=0.85,
                label=f"{recipe}, " + (f"clip {clip:g}" if clip > 0 else "no clipping"))
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(T) for T in lengths])
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("fraction of seeds that solve it")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Adding problem: which lengths each recipe solves")
    ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
