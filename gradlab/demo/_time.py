"""Section 4 of the demo, through time: LSTM vs vanilla RNN, and the LSTM's cell path."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rich.table import Table

from gradlab import flow
from gradlab.demo._settings import DemoSettings, _pm, _Runner


def _time_section(s: DemoSettings, r: _Runner) -> tuple[dict[str, Any], dict[str, Any]]:
    runs: dict[str, Callable[[], flow.FlowProfile]] = {
        "RNN (tanh, orthogonal)": lambda: flow.time_profile(
            "rnn", steps=s.steps, hidden=s.hidden, seeds=s.seeds, batch=s.batch
        ),
        "LSTM, b_f = 1": lambda: flow.time_profile(
            "lstm", steps=s.steps, hidden=s.hidden, seeds=s.seeds, batch=s.batch, forget_bias=1.0
        ),
    }
    if not s.quick:
        runs["LSTM, b_f = 3"] = lambda: flow.time_profile(
            "lstm", steps=s.steps, hidden=s.hidden, seeds=s.seeds, batch=s.batch, forget_bias=3.0
        )
    profiles = {label: r.step(f"{label}, {s.steps} steps", fn) for label, fn in runs.items()}
    rows = []
    table = Table(
        title=f"4. LSTM vs RNN over {s.steps} steps (hidden {s.hidden}): loss on the last step",
        title_justify="left",
    )
    for col in (
        "network",
        "log10 ‖∂L/∂a_1‖/‖∂L/∂a_T‖",
        "theory",
        "log10 Π f_t (cell path)",
        "σ(b_f)^T",
    ):
        table.add_column(col, justify="right" if col != "network" else "left")
    for label, p in profiles.items():
        h = p.headline()
        row: dict[str, Any] = {
            "network": label,
            "log10_ratio_mean": h["log10_ratio_mean"],
            "log10_ratio_std": h["log10_ratio_std"],
            "theory_log10_mean": h.get("theory_log10_mean"),
        }
        cell, sig = "—", "—"
        if "cell_path" in p.series:
            c = p["cell_path"]
            row["cell_path_log10_measured"] = float(c.mean[0])
            row["cell_path_log10_theory"] = float(c.theory.mean[0]) if c.theory else None
            b = p.config["forget_bias"]
            row["sigmoid_bf_power_T_log10"] = (s.steps - 1) * math.log10(1 / (1 + math.exp(-b)))
            measured, predicted = row["cell_path_log10_measured"], row["cell_path_log10_theory"]
            cell = f"{measured:+.2f} (theory {predicted:+.2f})"
            sig = f"{row['sigmoid_bf_power_T_log10']:+.2f}"
        th = h.get("theory_log10_mean")
        table.add_row(
            label,
            _pm(h["log10_ratio_mean"], h["log10_ratio_std"]),
            "—" if th is None else f"{th:+.2f} ≈",
            cell,
            sig,
        )
        rows.append(row)
    r.console.print(table)
    r.console.print(
        "   The cell path multiplies by the forget gates: σ(b_f)^T when the gate pre-activations "
        "sit at b_f, less when inputs spread them (theory column uses the measured spread).\n"
    )
    return {"rows": rows}, profiles
