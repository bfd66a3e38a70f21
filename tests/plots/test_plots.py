"""Tests of gradlab.plots: files are written and axes are labelled (no pixel comparisons)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

import gradlab
from gradlab import flow, plots


@pytest.fixture(scope="module")
def depth_profiles():
    kw = dict(depth=12, width=8, seeds=3, batch=2)
    return [
        flow.depth_profile("mlp", activation="linear", init="orthogonal:0.9", **kw),
        flow.depth_profile("mlp", activation="linear", init="fan_in_normal:1.1", **kw),
    ]


@pytest.fixture(scope="module")
def time_profiles():
    kw = dict(steps=10, hidden=6, seeds=2, batch=2)
    return [flow.time_profile("rnn", **kw), flow.time_profile("lstm", forget_bias=2.0, **kw)]


def _labelled(fig: Figure) -> None:
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.get_xlabel() and ax.get_ylabel()


@pytest.mark.slow
def test_plot_profiles_writes_png_and_svg(tmp_path, depth_profiles):
    fig = plots.plot_profiles(
        depth_profiles, ["orthogonal", "Gaussian"], title="t", path=tmp_path / "depth.png"
    )
    assert isinstance(fig, Figure)
    for suffix in ("png", "svg"):
        f = tmp_path / f"depth.{suffix}"
        assert f.is_file() and f.stat().st_size > 1000
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "layer $l$"
    assert "partial L" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "orthogonal" in labels and any("theory" in t for t in labels)
    # mean line, theory line, and +-1 std lines for the Gaussian profile
    assert len(ax.lines) >= 4
    np.testing.assert_allclose(ax.lines[0].get_ydata()[0], 0.9**12, rtol=1e-4)


@pytest.mark.slow
def test_plot_profiles_other_quantities_and_axes(depth_profiles, time_profiles):
    fig = Figure()
    axes = fig.subplots(1, 2)
    plots.plot_profiles(depth_profiles, quantity="grad_w", ax=axes[0], band=None)
    plots.plot_profiles(time_profiles, ["RNN", "LSTM"], ax=axes[1])
    _labelled(fig)
    assert axes[1].get_xlabel() == "time step $t$"
    with pytest.raises(gradlab.InputError, match="mix"):
        plots.plot_profiles([*depth_profiles, *time_profiles])
    with pytest.raises(gradlab.InputError, match="one label per profile"):
        plots.plot_profiles(depth_profiles, ["one"])
    with pytest.raises(KeyError, match="available"):
        plots.plot_profiles(depth_profiles, quantity="cell_path")


@pytest.mark.slow
def test_plot_cell_path(tmp_path, time_profiles):
    fig = plots.plot_cell_path(time_profiles, path=tmp_path / "cell")
    assert (tmp_path / "cell.png").is_file() and (tmp_path / "cell.svg").is_file()
    _labelled(fig)
    with pytest.raises(gradlab.InputError, match="LSTM"):
        plots.plot_cell_path(time_profiles[:1])


def test_phase_diagram(tmp_path):
    fig = plots.plot_phase_diagram(
        weight_variances=np.linspace(0.5, 3, 20),
        bias_variances=np.linspace(0, 0.3, 15),
        path=tmp_path / "phase.svg",
    )
    assert (tmp_path / "phase.png").is_file() and (tmp_path / "phase.svg").is_file()
    _labelled(fig)
    ax = fig.axes[0]
    assert "sigma_w" in ax.get_xlabel() and "sigma_b" in ax.get_ylabel()
    crit = ax.lines[0]
    assert crit.get_xdata()[0] == pytest.approx(1.0)  # critical line starts at sigma_w^2 = 1
    assert any("chi_1" in a.get_ylabel() for a in fig.axes[1:])  # the colour bar
    with pytest.raises(gradlab.InputError, match="Unsupported activation"):
        plots.plot_phase_diagram("swish")
