"""The ``numba-rnn`` command (also ``python -m numba_rnn``).

Subcommands
-----------
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


def build_parser():
    parser = argparse.ArgumentParser(prog="numba-rnn", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
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
    for name in ("seq_len", "hidden", "input_size", "batch"):
        if getattr(args, name, 1) < 1:
            print(f"numba-rnn: --{name.replace('_', '-')} must be ≥ 1", file=sys.stderr)
            return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
