"""The figure gallery: every figure of ``numba-rnn figures``, from a fixed seed.

Each entry is a function ``(cfg) -> Figure`` with a file name and one sentence saying
what it shows (used by the CLI and the README). ``quick=True`` shrinks sequence
lengths and training budgets so the whole set runs in well under a minute.
"""
import os
from dataclasses import dataclass

import numpy as np

from . import analysis as an
from . import plot
from .rnn import RNN


@dataclass
class Config:
    quick: bool
    seed: int

    @property
    def T(self):
        return 60 if self.quick else 120

    @property
    def H(self):
        return 48 if self.quick else 96


RADII = (0.6, 0.8, 0.9, 1.0, 1.1, 1.3)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _probe(cfg, rho, nonlinearity="tanh", init="orthogonal", scale=0.1, N=8):
    """An untrained RNN with W_aa at spectral radius ρ and a batch of inputs."""
    rnn = RNN(8, cfg.H, nonlinearity=nonlinearity, init=init, spectral_radius=rho,
              dtype=np.float64, seed=cfg.seed)
    x = scale * np.random.default_rng(cfg.seed).standard_normal((cfg.T, N, 8))
    return rnn, x


def _last_step_loss(T, N, H, seed):
    """∂L/∂out for a loss on the last step only (a random unit direction)."""
    d = np.zeros((T, N, H))
    v = np.random.default_rng(seed + 1).standard_normal((N, H))
    d[-1] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return d


def fig_gradient_vs_radius(cfg):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for ax, scale, regime in ((axes[0], 1e-3, "near-linear (small inputs)"),
                              (axes[1], 1.0, "saturating (unit inputs)")):
        curves, bounds = {}, {}
        for rho in RADII:
            rnn, x = _probe(cfg, rho, scale=scale)
            d_out = _last_step_loss(cfg.T, x.shape[1], cfg.H, cfg.seed)
            curves[f"ρ = {rho}"] = an.hidden_grad_norms(rnn, x, d_out)["l0"]
            bounds[f"ρ = {rho}"] = an.gradient_bound(rnn, cfg.T)["radius_rate"]
        plot.grad_norms_over_time(curves, bounds, ax=ax, title=f"tanh RNN, {regime}")
        ax.set_ylim(1e-12, 1e6)
    fig.suptitle("Gradient of a last-step loss flowing back through time")
    return fig


def fig_temporal_credit(cfg):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    for ax, rho in zip(axes, (0.8, 1.1), strict=True):
        rnn, x = _probe(cfg, rho, scale=0.5, N=4)
        d_out = np.random.default_rng(cfg.seed).standard_normal((cfg.T, 4, cfg.H))
        C = an.temporal_credit(rnn, x, d_out)
        plot.temporal_credit_map(C, ax=ax, title=f"ρ = {rho}: ‖∂L⟨t⟩/∂a⟨k⟩‖")
    fig.suptitle("Temporal credit: how far back the loss at each step reaches")
    return fig


def fig_jacobian_spectrum(cfg):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    spectra, exps = {}, {}
    for rho in (0.8, 1.0, 1.3):
        for nl, init in (("tanh", "orthogonal"), ("relu", "identity")):
            if nl == "relu" and rho != 1.0:
                continue
            label = f"{nl}, ρ = {rho}" if nl == "tanh" else "relu + identity (IRNN)"
            rnn, x = _probe(cfg, rho, nonlinearity=nl, init=init, scale=0.5, N=2)
            spectra[label] = an.jacobian_singular_values(rnn, x, k=cfg.T // 2)
            exps[label] = an.lyapunov_exponents(rnn, x)
    span = cfg.T - 1 - cfg.T // 2
    plot.singular_value_spectrum(spectra, ax=axes[0],
                                 title=f"singular values of ∂a⟨T-1⟩/∂a⟨k⟩, span {span}")
    plot.lyapunov_spectrum(exps, ax=axes[1], title="finite-time Lyapunov exponents")
    return fig


def fig_jacobian_norms(cfg):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    curves, bounds = {}, {}
    for rho in RADII:
        rnn, x = _probe(cfg, rho, scale=0.5, N=4)
        curves[f"ρ = {rho}"] = an.jacobian_norms(rnn, x)
        bounds[f"ρ = {rho}"] = an.gradient_bound(rnn, cfg.T)["norm_bound"]
    plot.grad_norms_over_time(curves, bounds, ax=ax, ylabel="‖∂a⟨T-1⟩/∂a⟨k⟩‖₂",
                              title="Jacobian norms vs the bound (γ‖W_aa‖₂)^(T-1-k)",
                              bound_label="bound (γ‖W_aa‖₂)^(T-1-k)")
    ax.set_xlabel("step k")
    return fig


def fig_weight_spectrum(cfg):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 5.4), layout="constrained")
    eigs = {}
    for init in ("uniform", "xavier", "orthogonal", "identity"):
        rnn = RNN(8, cfg.H, init=init, dtype=np.float64, seed=cfg.seed)
        eigs[init] = an.weight_spectrum(rnn)["eigenvalues"]
    plot.eigenvalues(eigs, ax=ax, title=f"eigenvalues of W_aa at initialisation (H={cfg.H})")
    return fig


def _training_runs(cfg):
    """Train the adding problem with four recipes (cached per config)."""
    key = (cfg.quick, cfg.seed)
    if key in _RUNS:
        return _RUNS[key]
    from .tasks import AddingProblem
    from .train import fit
    T, steps = (30, 400) if cfg.quick else (50, 4000)
    task = AddingProblem(seq_len=T, seed=cfg.seed)
    recipes = {
        "tanh + orthogonal, clip 1": dict(nonlinearity="tanh", init="orthogonal", clip=1.0),
        "tanh + orthogonal, no clip": dict(nonlinearity="tanh", init="orthogonal", clip=None),
        "tanh + torch default init, clip 1": dict(nonlinearity="tanh", init="uniform", clip=1.0),
        "relu + identity (IRNN), clip 1": dict(nonlinearity="relu", init="identity", clip=1.0),
    }
    runs = {}
    for label, r in recipes.items():
        model = task.make_model(64, nonlinearity=r["nonlinearity"], init=r["init"],
                                dtype=np.float32, seed=cfg.seed)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # a diverging run is data here
            hist = fit(model, task, steps=steps, batch_size=32, lr=1e-3, clip_norm=r["clip"],
                       progress=False, seed=cfg.seed)
        runs[label] = (model, hist)
    _RUNS[key] = (task, runs)
    return _RUNS[key]


_RUNS = {}


def fig_training_curves(cfg):
    task, runs = _training_runs(cfg)
    fig = plot.training_curves({k: h for k, (_, h) in runs.items()}, clip_norm=1.0,
                               title=f"Adding problem, T = {task.seq_len}: loss and "
                                     f"pre-clip gradient norm (× = clipped)")
    fig.axes[0].axhline(task.baseline_loss, color="red", ls=":", lw=1)
    fig.axes[0].text(0, task.baseline_loss, " baseline 1/6", color="red", va="bottom",
                     fontsize="small")
    return fig


def fig_grad_norm_distribution(cfg):
    plt = _plt()
    _, runs = _training_runs(cfg)
    fig, ax = plt.subplots(figsize=(9, 4.4), layout="constrained")
    plot.grad_norm_distribution({k: h for k, (_, h) in runs.items()}, ax=ax,
                                title="Gradient-norm distribution over training")
    return fig


def fig_weight_grad_contributions(cfg):
    plt = _plt()
    task, runs = _training_runs(cfg)
    fig, ax = plt.subplots(figsize=(6.8, 4.2), layout="constrained")
    batch = task.test_set(1, 64)[0]
    curves = {}
    for label in ("tanh + orthogonal, clip 1", "relu + identity (IRNN), clip 1"):
        model, _ = runs[label]
        x, d_out = an.output_grad(model, **batch)
        curves[label] = an.weight_grad_contributions(model.rnn, x, d_out)
    plot.weight_grad_contributions(curves, ax=ax, title="After training on the adding "
                                   "problem: which steps ∂L/∂W_aa comes from")
    ax.set_xlabel("time step t (markers fall anywhere in the sequence)")
    return fig


GALLERY = [
    ("gradient_vs_radius.png", fig_gradient_vs_radius,
     "‖∂L/∂a⟨t⟩‖ for a loss on the last step: it vanishes geometrically when the spectral "
     "radius ρ of W_aa is below 1 and grows above 1, following (γρ)^(T-1-t) in the "
     "near-linear regime while saturating tanh units cap the growth."),
    ("jacobian_norms.png", fig_jacobian_norms,
     "‖∂a⟨T-1⟩/∂a⟨k⟩‖₂ against the strict bound (γ‖W_aa‖₂)^(T-1-k): the bound holds "
     "everywhere and is tight only while the units stay unsaturated."),
    ("temporal_credit.png", fig_temporal_credit,
     "C[t, k] = ‖∂L⟨t⟩/∂a⟨k⟩‖: with ρ = 0.8 the credit a step's loss gives earlier states "
     "falls by orders of magnitude within a few tens of steps; with ρ = 1.1 it stays within "
     "about one order of magnitude across the whole past."),
    ("jacobian_spectrum.png", fig_jacobian_spectrum,
     "Singular values of a long Jacobian product and the Lyapunov exponents of the hidden "
     "dynamics: contracting (λ < 0), near-isometric and expanding regimes, and the IRNN's "
     "dead directions."),
    ("weight_spectrum.png", fig_weight_spectrum,
     "Eigenvalues of W_aa for each initialiser: torch's uniform init fills a disc of radius "
     "about 1/√3 (ρ ≈ 0.6, so gradients vanish), Xavier fills the unit disc (ρ ≈ 1), "
     "orthogonal lies on the unit circle and identity sits at 1."),
    ("training_curves.png", fig_training_curves,
     "Training on the adding problem: loss and pre-clip gradient norm per step for four "
     "recipes, clipping events marked — the IRNN leaves the baseline first, tanh with "
     "orthogonal init follows, tanh with torch's default init never does."),
    ("grad_norm_distribution.png", fig_grad_norm_distribution,
     "How the gradient norm is distributed early, midway and late in training, per recipe."),
    ("weight_grad_contributions.png", fig_weight_grad_contributions,
     "Each step's share ‖Σₙ δ⟨t⟩ a⟨t-1⟩ᵀ‖ of the recurrent-weight gradient after training: "
     "how much of the update still comes from steps far before the loss."),
]


def make_figures(out="figures", quick=False, seed=0, progress=None):
    """Write every figure of :data:`GALLERY` into ``out``; returns the paths written."""
    from tqdm.auto import tqdm
    plt = _plt()
    os.makedirs(out, exist_ok=True)
    cfg = Config(quick=quick, seed=seed)
    written = []
    bar = tqdm(GALLERY, desc="figures", unit="fig", disable=progress is False)
    for name, make, _ in bar:
        bar.set_postfix_str(name)
        fig = make(cfg)
        path = os.path.join(out, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    _RUNS.clear()
    return written
