"""The demo's summary: ``summary.md`` from the summary dict, and JSON-safe numbers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradlab.demo._settings import _fmt_ratio, _pm


def _markdown(summary: dict[str, Any]) -> str:
    s = summary["settings"]
    lines = [
        "# gradlab demo",
        "",
        f"depth {s['depth']}, width {s['width']}, {s['seeds']} seeds × {s['batch']} examples; "
        f"LSTM/RNN: {s['steps']} steps, hidden {s['hidden']}. Wall time "
        f"{summary['seconds']:.0f} s on {summary['machine']}. Values are log10 of norm ratios "
        "(mean ± std over seeds and examples).",
        "",
        "## 1. The lecture's chains",
        "",
        "| w | lecture w^L | orthogonal, measured | Gaussian, measured (log10) | "
        "Gaussian, exact theory (log10) |",
        "|---|---|---|---|---|",
    ]
    for r in summary["lecture"]["rows"]:
        lines.append(
            f"| {r['weight']:g} | {r['lecture_chain']:.3g} | "
            f"{_fmt_ratio(r['orthogonal_log10_mean'])} | "
            f"{_pm(r['normal_log10_mean'], r['normal_log10_std'])}"
            f" | {_pm(r['gaussian_theory_log10_mean'], r['gaussian_theory_log10_std'])} |"
        )
    lines += [
        "",
        "![lecture chain](figures/lecture_chain.png)",
        "",
        "## 2. Initialisers at depth L",
        "",
        "| activation | init | σ_w² | χ₁ | measured | theory | regime | "
        "log10 ‖∂ℓ/∂W_1‖ .. ‖∂ℓ/∂W_L‖ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["initialisers"]["rows"]:
        th = r["theory_log10_mean"]
        th_s = (
            "—"
            if th is None
            else _pm(th, r["theory_log10_std"]) + ("" if r["theory_exact"] else " (mean field)")
        )
        lines.append(
            f"| {r['activation']} | {r['init']} | {r['weight_variance']:g} | {r['chi1']:.3f} | "
            f"{_pm(r['log10_ratio_mean'], r['log10_ratio_std'])} | {th_s} | {r['regime']} | "
            f"{r['weight_grad_log10_first']:+.2f} .. {r['weight_grad_log10_last']:+.2f} |"
        )
    lines += [
        "",
        "![initialisers](figures/initialisers.png)",
        "",
        "![weight gradients](figures/weight_gradients.png)",
        "",
        "![phase diagram](figures/phase_diagram.png)",
        "",
        "## 3. Plain vs residual",
        "",
        "| network | log10 ‖∂L/∂h_0‖/‖∂L/∂h_L‖ | theory | log10 ‖h_L‖/‖h_0‖ |",
        "|---|---|---|---|",
    ]
    for r in summary["residual"]["rows"]:
        th = r["theory_log10_mean"]
        lines.append(
            f"| {r['network']} | {_pm(r['log10_ratio_mean'], r['log10_ratio_std'])} | "
            f"{'—' if th is None else f'{th:+.2f}'} | {r['forward_log10_ratio']:+.2f} |"
        )
    lines += [
        "",
        "![plain vs residual](figures/plain_vs_residual.png)",
        "",
        "## 4. LSTM vs RNN",
        "",
        "| network | log10 ‖∂L/∂a_1‖/‖∂L/∂a_T‖ | theory | cell path log10 Π f (theory) |",
        "|---|---|---|---|",
    ]
    for r in summary["time"]["rows"]:
        th = r["theory_log10_mean"]
        cell = "—"
        if "cell_path_log10_measured" in r:
            cell = f"{r['cell_path_log10_measured']:+.2f} ({r['cell_path_log10_theory']:+.2f})"
        lines.append(
            f"| {r['network']} | {_pm(r['log10_ratio_mean'], r['log10_ratio_std'])} | "
            f"{'—' if th is None else f'{th:+.2f}'} | {cell} |"
        )
    lines += [
        "",
        "![LSTM vs RNN](figures/lstm_vs_rnn.png)",
        "",
        "## 5. Gradient checks",
        "",
        "| model | entries | relative error | verdict | ok |",
        "|---|---|---|---|---|",
    ]
    for r in summary["checks"]["rows"]:
        lines.append(
            f"| {r['model']} | {r['entries']:,} | {r['relative_error']:.2e} | {r['verdict']} | "
            f"{'yes' if r['ok'] else 'no'} |"
        )
    lines.append("")
    return "\n".join(lines)


def _finite(x: Any) -> Any:
    """Replaces non-finite floats by None so the JSON is standard."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, np.generic):
        return _finite(x.item())
    return x
