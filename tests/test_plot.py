"""Plots run headless (Agg), draw what they promise, and warn about nothing."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from numba_rnn import plot  # noqa: E402
from numba_rnn.train import History  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _history(n=60, seed=0):
    rng = np.random.default_rng(seed)
    norm = np.exp(rng.standard_normal(n))
    return History(step=list(range(1, n + 1)), loss=list(np.exp(-np.arange(n) / 20) + 0.1),
                   grad_norm=list(norm), clipped=list(norm > 1.0),
                   seconds=list(np.arange(n) * 0.01))


def test_grad_norms_over_time_draws_curves_and_bounds():
    T = 20
    curves = {"ρ = 0.8": 0.8 ** np.arange(T)[::-1], "ρ = 1.2": 1.2 ** np.arange(T)[::-1]}
    ax = plot.grad_norms_over_time(curves, {k: v * 2 for k, v in curves.items()}, title="t")
    assert ax.get_yscale() == "log"
    assert len(ax.get_lines()) == 5                     # 2 curves + 2 bounds + legend proxy
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == list(curves)
    _, given = plt.subplots()
    assert plot.grad_norms_over_time(curves, ax=given) is given


def test_zero_values_become_gaps_not_warnings():
    ax = plot.grad_norms_over_time({"a": np.array([0.0, 1e-3, 1.0])})
    y = ax.get_lines()[0].get_ydata()
    assert np.isnan(y[0]) and y[2] == 1.0


def test_temporal_credit_map_is_an_image_with_colorbar():
    C = np.tril(np.exp(-np.abs(np.subtract.outer(np.arange(10), np.arange(10)))))
    ax = plot.temporal_credit_map(C, title="credit")
    assert len(ax.get_images()) == 1
    assert len(ax.figure.axes) == 2                     # the colour bar
    assert ax.get_xlabel() == "state at step k" and ax.get_ylabel() == "loss at step t"


def test_spectra_and_eigenvalues():
    ax = plot.singular_value_spectrum({"a": np.array([[3.0, 1.0, 0.0]]), "b": [2.0, 1.0, 0.5]})
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 2
    ax = plot.lyapunov_spectrum({"a": np.array([[0.1, -0.2, -np.inf]]), "b": [-0.1, -0.3, -1.0]})
    assert len(ax.get_lines()) >= 3 and any("dead relu" in t.get_text() for t in ax.texts)
    ax = plot.eigenvalues({"orthogonal": np.exp(1j * np.linspace(0, 6, 8))})
    assert len(ax.collections) == 1 and "ρ = 1.00" in ax.get_legend().get_texts()[1].get_text()


def test_training_curves_mark_clipping():
    hs = {"clip": _history(), "other": _history(seed=1)}
    fig = plot.training_curves(hs, clip_norm=1.0, title="train")
    loss_ax, norm_ax = fig.axes
    assert loss_ax.get_yscale() == norm_ax.get_yscale() == "log"
    marks = norm_ax.collections[0].get_offsets()
    assert len(marks) == sum(hs["clip"].clipped)        # one × per clipping event
    assert any(line.get_linestyle() == "--" for line in norm_ax.get_lines())  # threshold


def test_grad_norm_distribution_has_a_violin_per_run_and_phase():
    ax = plot.grad_norm_distribution({"a": _history(), "b": _history(seed=2)})
    bodies = [c for c in ax.collections if c.__class__.__name__ == "FillBetweenPolyCollection"
              or c.__class__.__name__ == "PolyCollection"]
    assert len(bodies) == 6
    assert [t.get_text() for t in ax.get_xticklabels()][0].startswith("early")


def test_weight_grad_contributions_plot():
    ax = plot.weight_grad_contributions({"a": np.array([0.0, 1.0, 2.0])})
    assert "W_aa" in ax.get_ylabel()


def test_figures_cli_writes_every_promised_file(tmp_path, capsys):
    from numba_rnn.cli import main
    from numba_rnn.gallery import GALLERY
    assert main(["figures", "--quick", "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(name for name, _, _ in GALLERY)
    for name in names:
        assert (tmp_path / name).stat().st_size > 20_000
    out = capsys.readouterr().out
    assert "8 figures" in out
