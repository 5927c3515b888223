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
demo
    Forward and backward through tanh RNNs whose recurrent weights have spectral
    radius below, at and above 1, with the loss on the last step only; prints the
    gradient norm ‖∂L/∂a<t>‖ per time step (vanishing below 1, exploding above),
    clips the gradients, and saves a figure of the norms.
"""
import argparse
import os
import sys
import time

import numpy as np


def _demo(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import numba_rnn as nr

    T, N, D, H = args.seq_len, args.batch, args.input_size, args.hidden
    rng = np.random.default_rng(args.seed)
    x = 0.1 * rng.standard_normal((T, N, D))               # small inputs: near-linear regime
    curves = {}
    t0 = time.perf_counter()
    for rho in args.radii:
        rnn = nr.RNN(D, H, init="orthogonal", spectral_radius=rho, dtype=np.float64,
                     seed=args.seed)
        out, h_n, cache = rnn.forward(x)
        d_out = np.zeros_like(out)
        d_out[-1] = rng.standard_normal((N, H)) / np.sqrt(H)  # loss on the last step only
        grads, dx, dh0 = rnn.backward(cache, d_out)
        norms = cache.hidden_grad_norms["l0"].mean(axis=1)  # batch mean of ‖∂L/∂a<t>‖, (T,)
        total = nr.clip_grad_norm(grads, max_norm=1.0)
        curves[rho] = norms
        print(f"rho={rho:<4}  ‖∂L/∂a<T-1>‖={norms[-1]:.3e}  ‖∂L/∂a<0>‖={norms[0]:.3e}  "
              f"ratio={norms[0] / norms[-1]:.3e}  grad norm {total:.3e} -> "
              f"{nr.total_norm(grads):.3f} after clip_grad_norm(max_norm=1)")
    elapsed = time.perf_counter() - t0
    steps = sorted(set(np.linspace(0, T - 1, 6).astype(int)))
    print("\n‖∂L/∂a<t>‖ (batch mean) at selected steps t:")
    print("t      " + "".join(f"rho={r:<10}" for r in args.radii))
    for t in steps:
        print(f"{t:<7}" + "".join(f"{curves[r][t]:<14.3e}" for r in args.radii))

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "demo_grad_norms.png")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for rho, norms in curves.items():
        ax.semilogy(np.arange(T), norms, label=f"ρ = {rho}")
    ax.set_xlabel("time step t (loss at t = T-1)")
    ax.set_ylabel("‖∂L/∂a⟨t⟩‖  (batch mean)")
    ax.set_title(f"Gradient flowing back through time, tanh RNN, H={H}")
    ax.legend(title="spectral radius of W_aa")
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"\nforward+backward for {len(args.radii)} models (T={T}, N={N}, H={H}) in "
          f"{elapsed:.2f} s, JIT compilation included; figure: {path}")
    return 0


def _train(args):
    import json

    from numba_rnn.tasks import make_task
    from numba_rnn.train import fit

    task_kw = {"seed": args.seed}
    if args.task in ("adding", "copy", "char") and args.seq_len is not None:
        task_kw["seq_len"] = args.seq_len
    task = make_task(args.task, **task_kw)
    model_kw = dict(task.model_defaults, num_layers=args.layers, nonlinearity=args.nonlinearity,
                    init=args.init, dtype=np.dtype(args.dtype), seed=args.seed)
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
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--json", action="store_true", help="print one JSON object last")
    tr.add_argument("--save", default=None, help="save the trained model (.npz)")
    tr.add_argument("--checkpoint", default=None,
                    help="checkpoint file; an existing one is resumed")
    tr.set_defaults(func=_train)

    sa = sub.add_parser("sample", help="generate text from a trained char model")
    sa.add_argument("--load", required=True, help="a model saved by train char --save")
    sa.add_argument("--prime", default="def ")
    sa.add_argument("--length", type=int, default=400)
    sa.add_argument("--temperature", type=float, default=0.6)
    sa.add_argument("--seed", type=int, default=0)
    sa.set_defaults(func=_sample)

    demo = sub.add_parser("demo", help="gradient norms through time for several spectral radii")
    demo.add_argument("--seq-len", type=int, default=100, help="T (default 100)")
    demo.add_argument("--hidden", type=int, default=64, help="H (default 64)")
    demo.add_argument("--input-size", type=int, default=8, help="D (default 8)")
    demo.add_argument("--batch", type=int, default=16, help="N (default 16)")
    demo.add_argument("--radii", type=float, nargs="+", default=[0.8, 1.0, 1.2],
                      help="spectral radii of W_aa (default 0.8 1.0 1.2)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="figures", help="folder for the figure (default figures)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "no_clip", False):
        args.clip_norm = args.clip_value = None
    elif getattr(args, "clip_value", None) is not None:
        args.clip_norm = None
    for name in ("seq_len", "hidden", "input_size", "batch", "layers", "steps", "batch_size",
                 "length", "tbptt"):
        value = getattr(args, name, 1)
        if value is not None and value < 1:
            print(f"numba-rnn: --{name.replace('_', '-')} must be ≥ 1", file=sys.stderr)
            return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
