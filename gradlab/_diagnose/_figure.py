"""The figure of a :class:`~gradlab._diagnose._report.Diagnosis`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from gradlab import theory as _theory
from gradlab.plots import PALETTE

if TYPE_CHECKING:
    from gradlab._diagnose._report import Diagnosis


def theory_line(d: Diagnosis) -> np.ndarray | None:
    """Predicted ``log10 ‖∂L/∂h_out‖`` per layer, anchored at the output (mean field).

    Going back through layer ``l`` multiplies ``‖∂L/∂h‖`` by ``√χ_l``, with
    ``χ_l = σ_w² E[φ'(z)²]`` at ``z ~ N(0, q_l)`` and ``q_l = σ_w²·mean(h_in²) + σ_b²`` from
    the measured input of the layer (:func:`gradlab.theory.chi1` with ``q``). None unless every
    layer between the first and the readout (whose measured gain is used) has a mean-field
    activation and is not residual.
    """
    layers = d.layers
    if len(layers) < 3 or not math.isfinite(layers[-1].grad_out):
        return None
    for lay in layers[1:-1]:
        if lay.residual or lay.activation not in _theory.MEAN_FIELD_ACTIVATIONS:
            return None
        if lay.weight_variance is None or not math.isfinite(lay.input_ms):
            return None
    pred = np.full(len(layers), np.nan)
    pred[-1] = layers[-1].grad_out
    for i in range(len(layers) - 2, -1, -1):
        nxt = layers[i + 1]
        if i + 1 == len(layers) - 1:
            pred[i] = pred[i + 1] + nxt.gain  # the readout: no theory, use the measured gain
            continue
        sw, sb = nxt.weight_variance or 0.0, nxt.bias_variance
        q = sw * nxt.input_ms + sb
        chi = float(_theory.chi1(sw, sb, nxt.activation, q=q))
        pred[i] = pred[i + 1] + 0.5 * math.log10(max(chi, 1e-300))
    return pred


def draw(d: Diagnosis, theory: bool = True) -> Any:
    """Draws the gradient norms of ``d`` (one panel for depth, one per recurrence)."""
    panels = (1 if d.layers else 0) + len(d.recurrences)
    fig = Figure(figsize=(6.4 * max(panels, 1), 4.0), layout="constrained")
    axes = fig.subplots(1, max(panels, 1), squeeze=False)[0]
    k = 0
    if d.layers:
        ax = axes[0]
        x = np.array([lay.index for lay in d.layers])
        y = np.array([lay.grad_out for lay in d.layers])
        ax.semilogy(x, 10.0**y, "o-", color=PALETTE[0], ms=3, label="‖∂L/∂h_out‖ measured")
        w = np.array([lay.grad_w for lay in d.layers])
        ax.semilogy(x, 10.0**w, "s:", color=PALETTE[2], ms=2, label="‖∂L/∂W‖ measured")
        flagged = sorted(d.flagged())
        if flagged:
            ax.semilogy(
                x[flagged], 10.0 ** y[flagged], "x", color=PALETTE[1], ms=9, mew=2, label="flagged"
            )
        pred = theory_line(d) if theory else None
        if pred is not None:
            ax.semilogy(x, 10.0**pred, "--", color="k", lw=1, label="mean field (√χ per layer)")
        ax.set_xlabel("layer (data-flow order)")
        ax.set_ylabel("gradient norm")
        ax.set_title("through depth")
        ax.legend(fontsize=8)
        k = 1
    for r in d.recurrences:
        ax = axes[k]
        t = np.arange(1, len(r.grad) + 1)
        ax.semilogy(t, 10.0**r.grad, "-", color=PALETTE[0], label=f"‖∂L/∂s_t‖ ({r.name})")
        if r.forget is not None and theory:
            b, s = r.forget
            rate = _theory.lstm_cell_path(1, b, s).per_step_log / math.log(10.0)
            line = r.grad[-1] + (len(r.grad) - t) * rate
            ax.semilogy(
                t, 10.0**line, "--", color="k", lw=1, label=f"cell path σ(b_f≈{b:.2f})^(T−t)"
            )
        ax.set_xlabel("time step t")
        ax.set_title(
            "through time" + (" (flagged)" if any(r.name in f.names for f in d.flags) else "")
        )
        ax.legend(fontsize=8)
        k += 1
    return fig
