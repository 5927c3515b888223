"""The ``numba-rnn`` command (also ``python -m numba_rnn``).

Subcommands
-----------
figures
    Regenerate the gradient-analysis gallery (``figures/``) from a fixed seed.
train TASK
    Train a model on a built-in task (adding, copy, char, numbers) and report train,
    test and baseline loss (``--json`` prints them as one JSON object, last line).
sample
    Generate text from a character model saved by ``train char --save PATH``.
sweep CONFIG
    Run a parameter sweep (a TOML file, or the built-in study ``adding``) on Dask.
bench
    Time forward and train step against NumPy, torch and the GEMM floor; print a table
    of ratios and save a bar chart.
"""
import argparse
import os
import sys
import time

import numpy as np


def _train(args):
    import json

    from numba_rnn.tasks import make_task
    from numba_rnn.train import fit

    task_kw = {"seed": args.seed}
    if args.task in ("adding", "copy", "char") and args.seq_len is not None:
        task_kw["seq_len"] = args.seq_len
    task = make_task(args.task, **task_kw)
    model_kw = dict(task.model_defaults, num_layers=args.layers, nonlinearity=args.nonlinearity,
                    init=args.init, dtype=np.dtype(args.dtype), seed=args.seed,
                    device=args.device)
    if args.spectral_radius is not None:
        model_kw["spectral_radius"] = args.spectral_radius
    if args.bidirectional:
        if args.task == "char":
            print("numba-rnn: --bidirectional does not apply to the char model (generation)",
                  file=sys.stderr)
            return 2
        model_kw["bidirectional"] = True
    model = task.make_model(args.hidden, **model_kw)
    stream = args.task == "char"
    t0 = time.perf_counter()
    history = fit(model, task, steps=args.steps, batch_size=args.batch_size,
                  optimizer=args.optimizer, lr=args.lr, clip_norm=args.clip_norm,
                  clip_value=args.clip_value, tbptt=args.tbptt if stream else None,
                  stateful=stream, val_data=task, eval_every=args.eval_every,
                  progress=None if not args.json else False, seed=args.seed,
                  checkpoint=args.checkpoint, checkpoint_every=args.eval_every,
                  resume=args.checkpoint is not None)
    seconds = time.perf_counter() - t0
    test = task.test_set()
    test_loss = float(np.mean([model.loss_and_grad(**b)[0] for b in test]))
    tail = history.loss[-max(1, min(50, len(history.loss))):]
    result = {"task": task.name, "steps": len(history.step), "seconds": round(seconds, 2),
              "train_loss": float(np.mean(tail)) if tail else None,
              "test_loss": test_loss, "baseline_loss": task.baseline_loss,
              "clipped_fraction": float(np.mean(history.clipped)) if history.clipped else 0.0,
              "stop_reason": history.stop_reason}
    acc = task.accuracy(model, test)
    if acc is not None:
        result["test_accuracy"] = acc
    if args.save:
        model.save(args.save)
        result["saved"] = args.save
    if args.task == "char":
        start = task.encode("def ")
        h = None
        for c in start[:-1]:
            _, h = model.rnn(np.eye(task.vocab_size, dtype=model.dtype)[c][None, None], h)
        ids = model.generate(start[-1:], 200, mode="sample", temperature=0.6, rng=args.seed,
                             h0=h)
        result["sample"] = "def " + task.decode(ids[:, 0])
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>16}: {v}")
    return 0 if history.stop_reason is None or "non-finite" not in history.stop_reason else 1


def _sample(args):
    from numba_rnn.models import OneToMany, load_model
    from numba_rnn.tasks import CharCorpus

    model = load_model(args.load)
    if not isinstance(model, OneToMany):
        print(f"numba-rnn: {args.load} holds a {type(model).__name__}, not a char model",
              file=sys.stderr)
        return 2
    corpus = CharCorpus(text="x" * 10)  # the vocabulary only
    if model.rnn.input_size != corpus.vocab_size:
        print(f"numba-rnn: {args.load} is not a char model (input size "
              f"{model.rnn.input_size} ≠ {corpus.vocab_size})", file=sys.stderr)
        return 2
    prime = corpus.encode(args.prime)
    eye = np.eye(corpus.vocab_size, dtype=model.dtype)
    h = None
    for c in prime[:-1]:
        _, h = model.rnn(eye[c][None, None], h)
    ids = model.generate(prime[-1:], args.length, mode="sample", temperature=args.temperature,
                         h0=h, rng=args.seed)
    print(args.prime + corpus.decode(ids[:, 0]))
    return 0


def _figures(args):
    from numba_rnn.gallery import GALLERY, make_figures

    t0 = time.perf_counter()
    paths = make_figures(args.out, quick=args.quick, seed=args.seed)
    about = {name: text for name, _, text in GALLERY}
    for path in paths:
        print(f"{path}\n    {about[os.path.basename(path)]}")
    print(f"{len(paths)} figures in {time.perf_counter() - t0:.1f} s")
    return 0


def _bench(args):
    import json

    from numba_rnn import bench

    if args.device == "cuda":
        return _bench_cuda(args)
    rows = bench.run(args.shapes or bench.CPU_SHAPES, args.dtype or ("float32", "float64"),
                     repeats=args.repeats,
                     parallel={"auto": None, "on": True, "off": False}[args.parallel],
                     progress=False if args.json else None)
    info = bench.machine_info()
    if args.json:
        print(json.dumps({"machine": info, "rows": rows}))
        return 0
    print(f"{info['date']} · {info['cpu']} · {info['cores']} cores · numba "
          f"{info['numba']} ({info['numba_threads']} threads) · NumPy {info['numpy']} · "
          f"{info['blas']} · torch {info['torch']}\n")
    print(bench.table(rows))
    if args.out:
        print(f"\nbar chart: {bench.bar_chart(rows, args.out)}")
    return 0


def _bench_cuda(args):
    import json

    from numba_rnn import bench, bench_cuda

    rows = bench_cuda.run(args.shapes or tuple(bench_cuda.SHAPES), args.dtype or ("float32",),
                          repeats=args.repeats, progress=False if args.json else None)
    info = bench_cuda.gpu_info()
    if args.json:
        print(json.dumps({"machine": info, "rows": rows}))
        return 0
    tf32 = {r["tf32"] for r in rows} - {None}
    print(f"{info['date']} · {info['gpu']} (sm_{info['compute_capability']}) · numba "
          f"{info['numba']} · NumPy {info['numpy']} · torch {info['torch']} · cuDNN "
          f"{info.get('cudnn')} · TF32 for cuDNN: {sorted(tf32) or 'no peer'}\n")
    print(bench_cuda.table(rows))
    if args.out:
        path = os.path.splitext(args.out)[0] + "_cuda.png"
        print(f"\nbar chart: {bench.bar_chart(rows, path, bench_cuda.TARGETS, 'ratio_cudnn')}")
    return 0


def _sweep(args):
    from numba_rnn import sweeps as sw

    name = args.config + ("-quick" if args.quick else "")
    path = args.config if os.path.exists(args.config) else sw.study_path(name)
    cfg = sw.load_config(path)
    figure = cfg.pop("figure")
    if args.out:
        cfg["out"] = args.out
        figure = os.path.splitext(args.out)[0] + ".png" if figure else None
    client = False if args.serial else None
    t0 = time.perf_counter()
    rows = sw.sweep(**cfg, client=client, scheduler=args.scheduler, workers=args.workers)
    failed = [r for r in rows if r.get("status") != "ok"]
    print(f"{len(rows)} points ({len(failed)} failed or NaN) in {time.perf_counter() - t0:.1f} s"
          f"; table: {cfg['out']}")
    if cfg["fn_or_task"] in ("adding", sw.adding_point):
        for (recipe, clip), rates in sorted(sw.success_table(rows).items()):
            cells = "  ".join(f"T={T}: {r:.0%}" for T, r in rates.items())
            print(f"  {recipe:16s} {'clip ' + format(clip, 'g') if clip > 0 else 'no clip':8s}"
                  f"  {cells}")
        if figure:
            print(f"figure: {sw.success_figure(rows, figure)}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="numba-rnn", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fg = sub.add_parser("figures", help="regenerate the gradient-analysis figures")
    fg.add_argument("--out", default="figures", help="output folder (default figures)")
    fg.add_argument("--quick", action="store_true", help="small sizes: under a minute")
    fg.add_argument("--seed", type=int, default=0)
    fg.set_defaults(func=_figures)

    tr = sub.add_parser("train", help="train on a built-in task and report losses")
    tr.add_argument("task", choices=["adding", "copy", "char", "numbers"])
    tr.add_argument("--seq-len", type=int, default=None, help="T (adding, copy, char)")
    tr.add_argument("--hidden", type=int, default=128, help="H (default 128)")
    tr.add_argument("--layers", type=int, default=1)
    tr.add_argument("--bidirectional", action="store_true")
    tr.add_argument("--nonlinearity", choices=["tanh", "relu"], default="tanh")
    tr.add_argument("--init", choices=["uniform", "xavier", "orthogonal", "identity"],
                    default="orthogonal")
    tr.add_argument("--spectral-radius", type=float, default=None)
    tr.add_argument("--optimizer", choices=["sgd", "adam", "rmsprop", "adagrad"],
                    default="adam")
    tr.add_argument("--lr", type=float, default=1e-3)
    clip = tr.add_mutually_exclusive_group()
    clip.add_argument("--clip-norm", type=float, default=1.0,
                      help="clip the global gradient norm (default 1.0)")
    clip.add_argument("--clip-value", type=float, default=None)
    tr.add_argument("--no-clip", action="store_true", help="train without clipping")
    tr.add_argument("--steps", type=int, default=2000)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--tbptt", type=int, default=50, help="k1 = k2 for the char task")
    tr.add_argument("--eval-every", type=int, default=200)
    tr.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    tr.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="train on the GPU (numba.cuda)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--json", action="store_true", help="print one JSON object last")
    tr.add_argument("--save", default=None, help="save the trained model (.npz)")
    tr.add_argument("--checkpoint", default=None,
                    help="checkpoint file; an existing one is resumed")
    tr.set_defaults(func=_train)

    sw = sub.add_parser("sweep", help="run a parameter sweep on Dask (or serially)")
    sw.add_argument("config", help="a sweep TOML file, or the built-in study 'adding'")
    sw.add_argument("--quick", action="store_true", help="the small version of a built-in study")
    sw.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    sw.add_argument("--workers", type=int, default=None,
                    help="local worker processes (default: one per core)")
    sw.add_argument("--serial", action="store_true", help="run in-process, without Dask")
    sw.add_argument("--out", default=None, help="results table (CSV) instead of the config's")
    sw.set_defaults(func=_sweep)

    be = sub.add_parser("bench", help="time against NumPy, torch and the GEMM floor")
    be.add_argument("--shapes", nargs="+", default=None,
                    choices=["tiny", "stream", "medium", "large", "db-1760", "db-2560"],
                    help="default: tiny stream medium large (CPU), all six (cuda)")
    be.add_argument("--dtype", nargs="+", default=None, choices=["float32", "float64"],
                    help="default: both on the CPU, float32 on the GPU")
    be.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    be.add_argument("--repeats", type=int, default=7)
    be.add_argument("--parallel", choices=["auto", "on", "off"], default="auto",
                    help="recurrences on Numba's threads: auto (big steps only), always, "
                         "never")
    be.add_argument("--json", action="store_true")
    be.add_argument("--out", default="figures/bench.png", help="bar chart path ('' for none)")
    be.set_defaults(func=_bench)

    sa = sub.add_parser("sample", help="generate text from a trained char model")
    sa.add_argument("--load", required=True, help="a model saved by train char --save")
    sa.add_argument("--prime", default="def ")
    sa.add_argument("--length", type=int, default=400)
    sa.add_argument("--temperature", type=float, default=0.6)
    sa.add_argument("--seed", type=int, default=0)
    sa.set_defaults(func=_sample)

    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "no_clip", False):
        args.clip_norm = args.clip_value = None
    elif getattr(args, "clip_value", None) is not None:
        args.clip_norm = None
    for name in ("seq_len", "hidden", "layers", "steps", "batch_size", "length", "tbptt",
                 "repeats", "workers"):
        value = getattr(args, name, 1)
        if value is not None and value < 1:
            print(f"numba-rnn: --{name.replace('_', '-')} must be ≥ 1", file=sys.stderr)
            return 2
    from numba_rnn.kernels import CudaUnavailableError
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, MemoryError, CudaUnavailableError) as err:
        # bad input the library rejected (an unknown study, a corrupt file, no CUDA
        # backend, a full disk, activations that cannot fit, …): one clear line, not a
        # traceback
        print(f"numba-rnn {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
