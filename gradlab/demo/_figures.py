"""The demo's figures: profiles through depth and time, written as PNG (and SVG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gradlab import flow, plots
from gradlab.demo._depth import _RELU_INITS, _TANH_INITS
from gradlab.demo._settings import DemoSettings


def _figures(
    out: Path,
    s: DemoSettings,
    lecture: dict[str, flow.FlowProfile],
    inits: dict[str, flow.FlowProfile],
    residual: dict[str, flow.FlowProfile],
    times: dict[str, flow.FlowProfile],
) -> list[str]:
    from matplotlib.figure import Figure

    fig_dir = out / "figures"
    written: list[str] = []

    formats = ("png",) if s.quick else ("png", "svg")

    def keep(fig: Any, name: str) -> None:
        written.extend(str(p) for p in plots.save(fig, fig_dir / name, formats))

    labels = {
        "linear_orthogonal_1.1": "orthogonal × 1.1",
        "linear_normal_1.1": "Gaussian N(0, 1.1²/n)",
        "linear_orthogonal_0.9": "orthogonal × 0.9",
        "linear_normal_0.9": "Gaussian N(0, 0.9²/n)",
    }
    names = [k for k in labels if k in lecture]
    keep(
        plots.plot_profiles(
            [lecture[k] for k in names],
            [labels[k] for k in names],
            title=f"The lecture's 1.1^L and 0.9^L in a {s.depth}-layer linear network "
            f"(width {s.width}, {s.seeds} seeds)",
        ),
        "lecture_chain",
    )

    fig = Figure(figsize=(13, 4.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, act, table in zip(axes, ("tanh", "relu"), (_TANH_INITS, _RELU_INITS), strict=True):
        chosen = [
            (label, inits[f"{act}_{i}"]) for label, i in table.items() if f"{act}_{i}" in inits
        ]
        plots.plot_profiles(
            [p for _, p in chosen],
            [label for label, _ in chosen],
            ax=ax,
            title=f"{act} MLP, depth {s.depth}, width {s.width}: the lecture's initialisers",
        )
    keep(fig, "initialisers")

    fig = Figure(figsize=(13, 4.8), layout="constrained")
    axes = fig.subplots(1, 2)
    pick = [k for k in ("tanh_lecun_normal", "relu_he_normal") if k in inits]
    picked = [inits[k] for k in pick]
    names = ["tanh, LeCun" if k.startswith("tanh") else "ReLU, He" for k in pick]
    plots.plot_profiles(picked, names, ax=axes[0], title="activation gradients ∂L/∂h_l")
    plots.plot_profiles(
        picked,
        names,
        quantity="grad_w",
        theory=False,
        ax=axes[1],
        title="per-example weight gradients ∂ℓ/∂W_l (same networks)",
    )
    keep(fig, "weight_gradients")

    keep(_residual_figure(residual, s.depth), "plain_vs_residual")

    grid = (60, 45) if s.quick else (160, 120)
    keep(
        plots.plot_phase_diagram(
            "tanh",
            weight_variances=np.linspace(0.25, 4.5, grid[0]),
            bias_variances=np.linspace(0.0, 0.5, grid[1]),
        ),
        "phase_diagram",
    )

    fig = Figure(figsize=(13, 4.8), layout="constrained")
    axes = fig.subplots(1, 2)
    plots.plot_profiles(
        list(times.values()),
        list(times),
        ax=axes[0],
        title=f"LSTM vs RNN: gradient reaching step t from a loss at T = {s.steps}",
    )
    lstms = [p for p in times.values() if "cell_path" in p.series]
    plots.plot_cell_path(lstms, ax=axes[1], title="LSTM cell path ∂c_T/∂c_t = Π f_s")
    keep(fig, "lstm_vs_rnn")
    return written


def _residual_figure(residual: dict[str, flow.FlowProfile], depth: int) -> Any:
    """Two panels: every variant, and the ones that neither explode nor vanish, zoomed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.8), layout="constrained")
    axes = fig.subplots(1, 2)
    names = ["plain MLP" if k == "plain" else k for k in residual]
    colors = plots.PALETTE[: len(names)]
    plots.plot_profiles(
        list(residual.values()),
        names,
        colors=colors,
        ax=axes[0],
        title=f"Plain vs residual ReLU stacks (He init), depth {depth}",
    )
    keep = [i for i, n in enumerate(names) if not n.endswith("α = 1")]
    plots.plot_profiles(
        [list(residual.values())[i] for i in keep],
        [names[i] for i in keep],
        colors=[colors[i] for i in keep],
        ax=axes[1],
        title="zoom: plain vs residual with α = 1/√L",
    )
    return fig
