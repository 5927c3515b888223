"""Matplotlib figures of the gradient analysis.

Every function takes ``ax=None`` (a new figure is made when None) and returns the
Axes — or the Figure, for the two-panel :func:`training_curves`. Quantities that span
decades are drawn on log scales; curves are passed as ``{label: values}`` dicts so
several settings share one plot.
"""
import numpy as np


def _axes(ax, figsize=(6.4, 4.2)):
    if ax is None:
        import matplotlib.pyplot as plt
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _finish(ax, title, *, legend=True, grid_axis="both"):
    """The common last touches: legend, light grid, title."""
    if legend:
        ax.legend(fontsize="small")
    ax.grid(True, axis=grid_axis, which="major", alpha=0.3)
    if title:
        ax.set_title(title)
    return ax


def _colors(n):
    import matplotlib.pyplot as plt
    return plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(n, 1)))


def _checked(curves, name, ndims=(1,), complex_ok=False):
    """``{label: array}`` with every array numeric, non-empty and of an allowed ndim."""
    if not isinstance(curves, dict) or not curves:
        raise TypeError(f"{name} must be a non-empty dict of label → array, got "
                        f"{type(curves).__name__}")
    out = {}
    for label, y in curves.items():
        arr = np.asarray(y)
        if arr.dtype.kind not in ("biufc" if complex_ok else "biuf"):
            kind = "complex or real" if complex_ok else "real"
            raise TypeError(f"{name}[{label!r}] must hold {kind} numbers, got dtype "
                            f"{arr.dtype}")
        if arr.ndim not in ndims or arr.size == 0:
            dims = " or ".join(map(str, ndims))
            raise ValueError(f"{name}[{label!r}] must be a non-empty {dims}-D array, got "
                             f"shape {arr.shape}")
        out[label] = arr
    return out


def _positive(y):
    """Values for a log axis: zeros (e.g. a zero initial state) become gaps."""
    y = np.asarray(y, dtype=float)
    return np.where(y > 0, y, np.nan)


def grad_norms_over_time(curves, bounds=None, *, ax=None, title=None,
                         ylabel="‖∂L/∂a⟨t⟩‖", bound_label="theory (γρ)^(T-1-t)"):
    """Gradient norm per time step, one line per setting, with optional dashed bounds.

    curves, bounds : dict label → (T,) arrays (bounds share the labels of curves).
    """
    curves = _checked(curves, "curves")
    bounds = None if bounds is None else _checked(bounds, "bounds")
    ax = _axes(ax)
    for (label, y), c in zip(curves.items(), _colors(len(curves)), strict=True):
        ax.semilogy(np.arange(len(y)), _positive(y), color=c, lw=2, label=label)
        if bounds is not None and label in bounds:
            ax.semilogy(np.arange(len(y)), _positive(bounds[label]), color=c, lw=1, ls="--")
    ax.set_xlabel("time step t")
    ax.set_ylabel(ylabel)
    if bounds:
        ax.plot([], [], color="gray", ls="--", lw=1, label=bound_label)
    return _finish(ax, title)


def temporal_credit_map(C, *, ax=None, title=None, floor=1e-12):
    """Heat map of C[t, k] = ‖∂L⟨t⟩/∂a⟨k⟩‖ on a log colour scale (blank where k > t)."""
    from matplotlib.colors import LogNorm
    C = _checked({"": C}, "C", ndims=(2,))[""].astype(float)
    ax = _axes(ax, figsize=(5.2, 4.4))
    shown = np.ma.masked_where(C <= 0, np.maximum(C, floor))
    positive = C[C > 0]
    vmin = max(floor, positive.min()) if positive.size else floor
    vmax = positive.max() if positive.size else 1.0
    im = ax.imshow(shown, origin="lower", cmap="magma", aspect="auto",
                   norm=LogNorm(vmin=vmin, vmax=max(vmax, vmin * 10)))
    ax.figure.colorbar(im, ax=ax, label="‖∂L⟨t⟩/∂a⟨k⟩‖")
    ax.set_xlabel("state at step k")
    ax.set_ylabel("loss at step t")
    if title:
        ax.set_title(title)
    return ax


def singular_value_spectrum(spectra, *, ax=None, title=None):
    """Sorted singular values (log scale) of Jacobian products, one line per setting.

    spectra : dict label → (H,) singular values (or (N, H): the mean of logs is drawn).
    """
    spectra = _checked(spectra, "spectra", ndims=(1, 2))
    ax = _axes(ax)
    for (label, sv), c in zip(spectra.items(), _colors(len(spectra)), strict=True):
        sv = np.atleast_2d(np.asarray(sv, dtype=float))
        logs = np.log10(_positive(np.sort(sv, axis=1)[:, ::-1]))     # exact zeros: gaps
        counted = np.isfinite(logs).sum(axis=0)
        mean = np.where(counted > 0, np.nansum(logs, axis=0) / np.maximum(counted, 1), np.nan)
        ax.plot(np.arange(1, sv.shape[1] + 1), 10 ** mean, color=c, lw=2, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("singular value σᵢ")
    return _finish(ax, title)


def lyapunov_spectrum(exponents, *, ax=None, title=None):
    """Finite-time Lyapunov exponents λᵢ (descending), one line per setting; λ = 0 marked."""
    exponents = _checked(exponents, "exponents", ndims=(1, 2))
    ax = _axes(ax)
    lams = {k: np.atleast_2d(np.asarray(v, dtype=float)) for k, v in exponents.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in lams.values()] + [np.zeros(1)])
    floor = finite.min() - 0.1 * (np.ptp(finite) + 0.1)
    dead = False
    for (label, lam), c in zip(lams.items(), _colors(len(lams)), strict=True):
        dead |= bool(np.isneginf(lam).any())
        shown = np.mean(np.where(np.isneginf(lam), floor, lam), axis=0)
        ax.plot(np.arange(1, lam.shape[1] + 1), shown, color=c, lw=2, label=label)
    ax.axhline(0.0, color="black", lw=0.8)
    if dead:
        ax.axhline(floor, color="gray", lw=0.8, ls=":")
        ax.text(1, floor, " −∞: directions killed by dead relu units", fontsize="x-small",
                va="bottom", color="gray")
    ax.set_xlabel("index i")
    ax.set_ylabel("Lyapunov exponent λᵢ (per step)")
    return _finish(ax, title)


def eigenvalues(eigs, *, ax=None, title=None):
    """Eigenvalues of W_aa in the complex plane with the unit circle, per setting."""
    eigs = _checked(eigs, "eigs", complex_ok=True)
    ax = _axes(ax, figsize=(5.2, 5.0))
    theta = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(theta), np.sin(theta), color="black", lw=0.8, label="|λ| = 1")
    for (label, ev), c in zip(eigs.items(), _colors(len(eigs)), strict=True):
        ev = np.asarray(ev)
        ax.scatter(ev.real, ev.imag, s=10, color=c, alpha=0.8,
                   label=f"{label} (ρ = {np.max(np.abs(ev)):.2f})")
    ax.set_aspect("equal")
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.legend(fontsize="small", loc="upper right")
    return _finish(ax, title, legend=False)


def training_curves(histories, *, axes=None, clip_norm=None, smooth=25, title=None):
    """Loss and pre-clip gradient norm per step for several runs; clipping events marked.

    histories : dict label → :class:`~numba_rnn.train.History`.
    axes : two Axes (loss, gradient norm), or None for a new two-panel figure.
    Returns the Figure.
    """
    if axes is None:
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(2, 1, figsize=(7.0, 6.4), sharex=True, layout="constrained")
    else:
        fig = axes[0].figure
    ax_loss, ax_norm = axes
    for (label, h), c in zip(histories.items(), _colors(len(histories)), strict=True):
        steps = np.asarray(h.step)
        loss = np.asarray(h.loss)
        ax_loss.semilogy(steps, loss, color=c, alpha=0.25, lw=0.8)
        ax_loss.semilogy(steps, _moving_average(loss, smooth), color=c, lw=2, label=label)
        norm = np.asarray(h.grad_norm)
        ax_norm.semilogy(steps, norm, color=c, lw=0.8, alpha=0.8, label=label)
        clipped = np.asarray(h.clipped, dtype=bool)
        if clipped.any():
            ax_norm.scatter(steps[clipped], norm[clipped], s=6, color=c, marker="x")
        if h.stop_reason and "non-finite" in h.stop_reason:
            ax_loss.axvline(steps[-1] if len(steps) else 0, color=c, ls=":", lw=1)
    if clip_norm is not None:
        ax_norm.axhline(clip_norm, color="black", ls="--", lw=1, label="clip threshold")
    ax_norm.scatter([], [], s=12, marker="x", color="gray", label="clipping fired")
    ax_loss.set_ylabel("training loss")
    ax_norm.set_ylabel("gradient norm before clipping")
    ax_norm.set_xlabel("step")
    ax_loss.legend(fontsize="small")
    ax_norm.legend(fontsize="small", ncol=2)
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
    if title:
        ax_loss.set_title(title)
    return fig


def _moving_average(y, k):
    if len(y) < 2 or k <= 1:
        return y
    k = min(k, len(y))
    c = np.cumsum(np.insert(np.asarray(y, dtype=float), 0, 0.0))
    head = c[1:k] / np.arange(1, k)
    return np.concatenate([head, (c[k:] - c[:-k]) / k])


def grad_norm_distribution(histories, *, ax=None, phases=("early", "middle", "late"),
                           title=None):
    """Distribution of the pre-clip gradient norm over training (log scale): for each
    training phase, one violin per run, side by side; colours name the runs."""
    ax = _axes(ax, figsize=(7.0, 4.2))
    n = len(histories)
    width = 0.8 / max(n, 1)
    for r, ((label, h), c) in enumerate(zip(histories.items(), _colors(n), strict=True)):
        norm = np.asarray(h.grad_norm, dtype=float)
        norm = norm[np.isfinite(norm) & (norm > 0)]
        parts = [p for p in np.array_split(norm, len(phases))]
        pos = [i + 1 - 0.4 + width * (r + 0.5) for i, p in enumerate(parts) if p.size]
        data = [np.log10(p) for p in parts if p.size]
        if data:
            v = ax.violinplot(data, positions=pos, widths=width * 0.9, showmedians=True)
            for body in v["bodies"]:
                body.set_facecolor(c)
                body.set_alpha(0.7)
            for key in ("cmedians", "cmins", "cmaxes", "cbars"):
                v[key].set_color(c)
        ax.plot([], [], color=c, lw=6, label=label)
    ax.set_xticks(np.arange(1, len(phases) + 1), [f"{p} third of training" for p in phases])
    ax.set_ylabel("log₁₀ gradient norm (before clipping)")
    return _finish(ax, title, grid_axis="y")


def weight_grad_contributions(curves, *, ax=None, title=None):
    """‖δ⟨t⟩ᵀ a⟨t-1⟩‖ per step: where the update of W_aa comes from, one line per setting."""
    return grad_norms_over_time(curves, ax=ax, title=title,
                                ylabel="‖Σₙ δ⟨t⟩ a⟨t-1⟩ᵀ‖ (step t's share of ∂L/∂W_aa)")
