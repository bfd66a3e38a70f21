"""``gradlab demo``: the lecture's vanishing/exploding gradients, measured and predicted.

:func:`run` measures, on embedded defaults:

1. the lecture's chains ``1.1**150`` and ``0.9**150`` next to 150-layer linear networks with
   orthogonal and Gaussian weights (measured vs exact theory);
2. the lecture's initialisers at depth 150, tanh and ReLU (measured vs theory), and the
   per-example weight gradients, which stay level where ``∂L/∂h_l`` vanishes;
3. plain vs residual ReLU stacks at depth 150;
4. LSTM vs RNN over 100 time steps, with the LSTM's cell path ``Π f_t`` vs ``σ(b_f)^T``;
5. :func:`gradlab.check` on the built-in models (small sizes) and on a deliberately buggy
   ``custom_vjp``;

prints rich tables as it goes, and writes figures (PNG + SVG; PNG only with ``quick``),
``summary.json`` and ``summary.md`` into the output folder. ``quick=True`` runs a reduced
version (fewer configurations, width 16, 4 seeds).

Example:
    >>> from gradlab import demo
    >>> s = demo.DemoSettings.quick_settings()
    >>> s.depth, s.seeds
    (150, 4)
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from gradlab import flow, plots, theory

__all__ = ["DemoSettings", "run"]


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo's measurements.

    Attributes:
        depth: layers of the deep networks (the lecture's 150).
        width: their width.
        seeds: independent networks per configuration.
        batch: examples per network.
        steps: sequence length for LSTM and RNN (100).
        hidden: their hidden size.
        quick: the reduced demo (fewer configurations, smaller sizes).
    """

    depth: int = 150
    width: int = 64
    seeds: int = 32
    batch: int = 8
    steps: int = 100
    hidden: int = 64
    quick: bool = False

    @classmethod
    def quick_settings(cls, seeds: int | None = None) -> DemoSettings:
        """The ``--quick`` sizes: depth 150 and 100 steps, but width 16, 4 seeds, 2 examples."""
        return cls(width=16, seeds=seeds or 4, batch=2, hidden=16, quick=True)


def _fmt_ratio(log10: float) -> str:
    if not math.isfinite(log10):
        return "—"
    if -3 <= log10 <= 4:
        return f"{10**log10:.3g}"
    mant = 10 ** (log10 - math.floor(log10))
    return f"{mant:.2f}e{math.floor(log10):+d}"


def _pm(mean: float, std: float) -> str:
    return f"{mean:+.2f} ± {std:.2f}"


def _regime(log10: float) -> str:
    if not math.isfinite(log10):
        return "dead"
    if log10 < -2:
        return "vanishing"
    if log10 > 2:
        return "exploding"
    return "stable"


class _Runner:
    """Runs the measurements with a progress bar and collects the results."""

    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("gradlab demo", total=total)

    def step(self, description: str, fn: Callable[[], Any]) -> Any:
        self.progress.update(self.task, description=description)
        out = fn()
        self.progress.advance(self.task)
        return out


# --------------------------------------------------------------------------- sections


def _lecture_section(s: DemoSettings, r: _Runner) -> tuple[dict[str, Any], dict[str, Any]]:
    gains = (1.1, 0.9)
    profiles: dict[str, flow.FlowProfile] = {}
    rows = []
    for w in gains:
        kinds: tuple[str, ...] = ("orthogonal", "normal")
        if s.quick:  # one of each: orthogonal for 1.1, Gaussian for 0.9
            kinds = ("orthogonal",) if w > 1 else ("normal",)
        for kind in kinds:
            name = f"linear_{kind}_{w:g}"
            profiles[name] = r.step(
                f"linear net, {kind} weights x {w:g}, depth {s.depth}",
                lambda kind=kind, w=w: flow.depth_profile(
                    "mlp",
                    depth=s.depth,
                    width=s.width,
                    activation="linear",
                    init=f"{kind}:{w:g}",
                    seeds=s.seeds,
                    batch=s.batch,
                    weight_gradients=False,
                ),
            )
        g = theory.gaussian_linear(s.depth, s.width, w * w)
        row: dict[str, Any] = {
            "weight": w,
            "lecture_chain": float(theory.chain(w, s.depth)),
            "gaussian_theory_typical": float(g.typical_norm_ratio),
            "gaussian_theory_log10_mean": float(g.log10_norm_mean),
            "gaussian_theory_log10_std": float(g.log10_norm_std),
            "gaussian_theory_rms": float(theory.chain(w, s.depth)),
        }
        for kind in ("orthogonal", "normal"):
            key = f"linear_{kind}_{w:g}"
            if key in profiles:
                h = profiles[key].headline()
                row[f"{kind}_log10_mean"] = h["log10_ratio_mean"]
                row[f"{kind}_log10_std"] = h["log10_ratio_std"]
        rows.append(row)
    table = Table(
        title=f"1. The lecture's chains vs a {s.depth}-layer linear network (width {s.width}): "
        "‖∂L/∂h_0‖/‖∂L/∂h_L‖",
        title_justify="left",
    )
    for col in (
        "w",
        f"lecture w^{s.depth}",
        "orthogonal × w\nmeasured",
        "Gaussian N(0, w²/n)\nmeasured (typical)",
        "Gaussian theory\ntypical (exact)",
        "log10, measured\nvs theory",
    ):
        table.add_column(col, justify="right")
    for row in rows:
        orth = _fmt_ratio(row["orthogonal_log10_mean"]) if "orthogonal_log10_mean" in row else "—"
        gm = row.get("normal_log10_mean", float("nan"))
        table.add_row(
            f"{row['weight']:g}",
            f"{row['lecture_chain']:.3g}",
            orth,
            _fmt_ratio(gm),
            f"{row['gaussian_theory_typical']:.3g}",
            f"{_pm(gm, row.get('normal_log10_std', float('nan')))} vs "
            f"{_pm(row['gaussian_theory_log10_mean'], row['gaussian_theory_log10_std'])}",
        )
    r.console.print(table)
    r.console.print(
        "   Orthogonal weights reproduce w^L exactly; Gaussian weights have the same mean square "
        f"(E‖g‖² ∝ w^(2L)) but their typical value is smaller by exp(L(ψ(n/2)+ln(2/n))/2) = "
        f"{float(theory.gaussian_linear(s.depth, s.width).typical_norm_ratio):.3g}"
        f" at width {s.width}, and it spreads over seeds.\n"
    )
    return {"rows": rows}, profiles


_TANH_INITS = {
    "lecture 1/√n (LeCun)": "lecture_1_over_sqrt_n",
    "lecture 2/√n": "lecture_2_over_sqrt_n",
    "lecture 2/√(n_in+n_out)": "lecture_2_over_sqrt_n_plus_m",
    "lecture K/√n, K=0.9": "lecture_k_over_sqrt_n:0.9",
    "orthogonal": "orthogonal",
}
_RELU_INITS = {
    "He N(0, 2/n)": "he_normal",
    "lecture 1/√n (LeCun)": "lecture_1_over_sqrt_n",
    "lecture 2/√n": "lecture_2_over_sqrt_n",
}


def _init_section(s: DemoSettings, r: _Runner) -> tuple[dict[str, Any], dict[str, Any]]:
    tanh_inits = dict(list(_TANH_INITS.items())[:1]) if s.quick else _TANH_INITS
    relu_inits = dict(list(_RELU_INITS.items())[:1]) if s.quick else _RELU_INITS
    profiles: dict[str, flow.FlowProfile] = {}
    rows = []
    for act, inits in (("tanh", tanh_inits), ("relu", relu_inits)):
        for label, init in inits.items():
            p = r.step(
                f"{act} MLP, {label}, depth {s.depth}",
                lambda act=act, init=init: flow.depth_profile(
                    "mlp",
                    depth=s.depth,
                    width=s.width,
                    activation=act,
                    init=init,
                    seeds=s.seeds,
                    batch=s.batch,
                ),
            )
            profiles[f"{act}_{init}"] = p
            spec = flow.resolve_init(init)
            var = spec.weight_variance or 1.0
            h = p.headline()
            gw = p["grad_w"].mean
            rows.append(
                {
                    "activation": act,
                    "init": label,
                    "init_name": spec.name,
                    "weight_variance": var,
                    "chi1": float(theory.chi1(var, 0.0, act)),
                    "log10_ratio_mean": h["log10_ratio_mean"],
                    "log10_ratio_std": h["log10_ratio_std"],
                    "theory_log10_mean": h.get("theory_log10_mean"),
                    "theory_log10_std": h.get("theory_log10_std"),
                    "theory_exact": h.get("theory_exact"),
                    "weight_grad_log10_first": float(gw[0]),
                    "weight_grad_log10_last": float(gw[-1]),
                    "regime": _regime(h["log10_ratio_mean"]),
                }
            )
    table = Table(
        title=f"2. Initialisers at depth {s.depth} (width {s.width}): log10 ‖∂L/∂h_0‖/‖∂L/∂h_L‖ "
        "and per-example log10 ‖∂ℓ/∂W_l‖",
        title_justify="left",
    )
    for col in (
        "act",
        "init",
        "σ_w²",
        "χ₁",
        "measured",
        "theory",
        "regime",
        "‖∂ℓ/∂W_1‖ .. ‖∂ℓ/∂W_L‖",
    ):
        table.add_column(col, justify="right" if col not in ("act", "init") else "left")
    for row in rows:
        th = row["theory_log10_mean"]
        tag = "" if row["theory_exact"] else " ≈"
        table.add_row(
            row["activation"],
            row["init"],
            f"{row['weight_variance']:g}",
            f"{row['chi1']:.3f}",
            _pm(row["log10_ratio_mean"], row["log10_ratio_std"]),
            "—" if th is None else _pm(th, row["theory_log10_std"]) + tag,
            row["regime"],
            f"{row['weight_grad_log10_first']:+.2f} .. {row['weight_grad_log10_last']:+.2f}",
        )
    r.console.print(table)
    r.console.print(
        "   ≈ marks mean-field theory (approximate); the others are exact at this width. "
        "χ₁ is the infinite-width per-layer factor of E‖∂L/∂h‖² at the fixed point.\n"
    )
    return {"rows": rows}, profiles


def _residual_section(
    s: DemoSettings, r: _Runner, plain: flow.FlowProfile
) -> tuple[dict[str, Any], dict[str, Any]]:
    variants = (
        {"residual, α = 1/√L": "fixup"}
        if s.quick
        else {
            "residual, α = 1": None,
            "residual, α = 1/√L": "fixup",
        }
    )
    profiles = {"plain": plain}
    for label, bs in variants.items():
        profiles[label] = r.step(
            f"ReLU {label}, depth {s.depth}",
            lambda bs=bs: flow.depth_profile(
                "residual",
                depth=s.depth,
                width=s.width,
                activation="relu",
                init="he_normal",
                branch_scale=bs,
                seeds=s.seeds,
                batch=s.batch,
            ),
        )
    rows = []
    table = Table(
        title=f"3. Plain vs residual ReLU stacks, He init, depth {s.depth}", title_justify="left"
    )
    for col in ("network", "log10 ‖∂L/∂h_0‖/‖∂L/∂h_L‖", "theory", "log10 ‖h_L‖/‖h_0‖"):
        table.add_column(col, justify="right" if col != "network" else "left")
    for label, p in profiles.items():
        h = p.headline()
        fwd = p["h"].mean
        rows.append(
            {
                "network": label if label != "plain" else "plain MLP",
                "log10_ratio_mean": h["log10_ratio_mean"],
                "log10_ratio_std": h["log10_ratio_std"],
                "theory_log10_mean": h.get("theory_log10_mean"),
                "forward_log10_ratio": float(fwd[-1] - fwd[0]),
            }
        )
        th = h.get("theory_log10_mean")
        table.add_row(
            rows[-1]["network"],
            _pm(h["log10_ratio_mean"], h["log10_ratio_std"]),
            "—" if th is None else f"{th:+.2f}",
            f"{rows[-1]['forward_log10_ratio']:+.2f}",
        )
    r.console.print(table)
    r.console.print(
        "   The identity skip keeps ∂L/∂h_0 = (I + α·∂F/∂h)ᵀ··· ∂L/∂h_L from vanishing; with α = 1 "
        "each block multiplies E‖g‖² by 1 + 2 (He on both branch layers) and it explodes, "
        "with α = 1/√L the product (1 + 2/L)^L stays near e².\n"
    )
    return {"rows": rows}, profiles


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


def _check_problems(quick: bool) -> dict[str, Callable[[], tuple[Any, Any, tuple[Any, ...]]]]:
    """Small built-in models as ``(f, params, args)`` problems for :func:`gradlab.check`."""
    from flax import nnx

    from gradlab import losses, nn

    def bce_problem(model: Any, x: jax.Array, y: jax.Array, seq: bool = False) -> tuple:
        apply_fn, params = nn.pure(model)

        def f(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
            out = apply_fn(params, x)
            if seq:
                logits = jnp.sum(out[0][:, -1], axis=-1)
            else:
                logits = out[:, 0]
            return losses.binary_cross_entropy(logits, y)

        return f, params, (x, y)

    key = jax.random.key(0)
    kx, ky, ks = jax.random.split(key, 3)
    y = (jax.random.uniform(ky, (8,)) > 0.5).astype(jnp.float32)

    def mlp() -> tuple:
        m = nn.MLP(4, 1, width=8, depth=3, activation="tanh", rngs=nnx.Rngs(0))
        return bce_problem(m, jax.random.normal(kx, (8, 4)), y)

    def residual() -> tuple:
        m = nn.ResidualStack(
            4, 1, width=6, depth=3, activation="tanh", branch_scale="fixup", rngs=nnx.Rngs(1)
        )
        return bce_problem(m, jax.random.normal(kx, (8, 4)), y)

    def lstm() -> tuple:
        m = nn.LSTM(3, 5, rngs=nnx.Rngs(2))
        return bce_problem(m, jax.random.normal(ks, (8, 6, 3)), y, seq=True)

    def rnn() -> tuple:
        m = nn.RNN(3, 5, rngs=nnx.Rngs(3))
        return bce_problem(m, jax.random.normal(ks, (8, 6, 3)), y, seq=True)

    def buggy() -> tuple:
        @jax.custom_vjp
        def my_tanh(z: jax.Array) -> jax.Array:
            return jnp.tanh(z)

        def fwd(z: jax.Array) -> tuple[jax.Array, jax.Array]:
            return jnp.tanh(z), z

        def bwd(z: jax.Array, g: jax.Array) -> tuple[jax.Array]:
            return (g * (1.0 - jnp.tanh(z)),)  # bug: should be 1 - tanh(z)**2

        my_tanh.defvjp(fwd, bwd)
        w = 0.5 * jax.random.normal(kx, (4, 3))

        def f(w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
            return losses.binary_cross_entropy(jnp.sum(my_tanh(x @ w), axis=-1), y)

        return f, w, (jax.random.normal(ky, (8, 4)), y)

    problems = {
        "MLP (tanh, depth 3, width 8)": mlp,
        "buggy custom_vjp tanh (deliberate)": buggy,
    }
    if not quick:
        problems = {
            "MLP (tanh, depth 3, width 8)": mlp,
            "ResidualStack (tanh, depth 3, width 6)": residual,
            "LSTM (hidden 5, 6 steps)": lstm,
            "RNN (hidden 5, 6 steps)": rnn,
            "buggy custom_vjp tanh (deliberate)": buggy,
        }
    return problems


def _check_section(s: DemoSettings, r: _Runner) -> dict[str, Any]:
    import gradlab

    rows = []
    reports = {}
    for label, make in _check_problems(s.quick).items():
        f, params, args = make()
        rep = r.step(
            f"gradlab.check: {label}", lambda f=f, p=params, a=args: gradlab.check(f, p, *a)
        )
        reports[label] = rep
        rows.append(
            {
                "model": label,
                "ok": bool(rep.ok),
                "outcome": str(rep.outcome),
                "relative_error": float(rep.relative_error),
                "verdict": str(rep.verdict),
                "entries": int(rep.n_entries),
                "kinks": int(rep.n_kinks),
                "wrong_leaves": [leaf.path for leaf in rep.wrong],
                "seconds": float(rep.seconds),
            }
        )
    table = Table(
        title="5. gradlab.check on the built-in models (float64, eps=1e-7)", title_justify="left"
    )
    for col in ("model", "entries", "relative error", "verdict", "outcome", "wrong leaves", "time"):
        table.add_column(col, justify="right" if col in ("entries", "time") else "left")
    for row in rows:
        table.add_row(
            row["model"],
            f"{row['entries']:,}",
            f"{row['relative_error']:.2e}",
            row["verdict"],
            {"passed": "[green]passed[/]", "failed": "[bold red]failed[/]"}.get(
                row["outcome"], "[yellow]inconclusive[/]"
            ),
            ", ".join(row["wrong_leaves"]) or "—",
            f"{row['seconds']:.1f}s",
        )
    r.console.print(table)
    r.console.print(
        "   The deliberate bug (a tanh whose custom backward forgets to square) is caught; the "
        "real models agree with centered differences.\n"
    )
    return {"rows": rows}


# --------------------------------------------------------------------------- figures


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
    pick = [k for k in ("tanh_lecture_1_over_sqrt_n", "relu_he_normal") if k in inits]
    chosen = [inits[k] for k in pick]
    names = ["tanh, LeCun" if k.startswith("tanh") else "ReLU, He" for k in pick]
    plots.plot_profiles(chosen, names, ax=axes[0], title="activation gradients ∂L/∂h_l")
    plots.plot_profiles(
        chosen,
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


# --------------------------------------------------------------------------- summary


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
    nan = float("nan")
    for r in summary["lecture"]["rows"]:
        orth = _fmt_ratio(r["orthogonal_log10_mean"]) if "orthogonal_log10_mean" in r else "—"
        lines.append(
            f"| {r['weight']:g} | {r['lecture_chain']:.3g} | {orth} | "
            f"{_pm(r.get('normal_log10_mean', nan), r.get('normal_log10_std', nan))}"
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


def run(
    out: str | Path = "gradlab-out",
    *,
    quick: bool = False,
    seeds: int | None = None,
    console: Console | None = None,
    figures: bool = True,
) -> dict[str, Any]:
    """Runs the demo, prints its tables, and writes figures, ``summary.json`` and ``summary.md``.

    Args:
        out: output folder (created).
        quick: the reduced demo (a few seconds of compute).
        seeds: override the number of seeds.
        console: where to print (default: a new :class:`rich.console.Console`).
        figures: write the figures.

    Returns:
        The summary (the contents of ``summary.json``).
    """
    console = console or Console()
    if quick:
        settings = DemoSettings.quick_settings(seeds)
    else:
        settings = DemoSettings() if seeds is None else DemoSettings(seeds=seeds)
    if settings.seeds < 2:
        raise ValueError(f"seeds must be >= 2 (a spread needs two), got {settings.seeds}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    total = 9 if settings.quick else 22  # measurements + checks, as listed in each section
    console.rule("[bold]gradlab demo[/]: vanishing and exploding gradients, measured vs theory")
    runner = _Runner(console, total)
    with runner.progress:
        lecture, lecture_p = _lecture_section(settings, runner)
        inits, inits_p = _init_section(settings, runner)
        residual, residual_p = _residual_section(settings, runner, inits_p["relu_he_normal"])
        times, times_p = _time_section(settings, runner)
        checks = _check_section(settings, runner)
    diagnosis = _diagnose_section(console, settings)
    fig_paths: list[str] = []
    if figures:
        with console.status("writing figures"):
            fig_paths = _figures(out, settings, lecture_p, inits_p, residual_p, times_p)
    seconds = time.perf_counter() - t0
    profiles = {**lecture_p, **inits_p, **residual_p, **times_p}
    summary: dict[str, Any] = {
        "settings": dataclasses.asdict(settings),
        "seconds": seconds,
        "machine": f"{platform.machine()} {jax.default_backend()} ({jax.device_count()} device)",
        "jax": jax.__version__,
        "lecture": lecture,
        "initialisers": inits,
        "residual": residual,
        "time": times,
        "checks": checks,
        "diagnosis": diagnosis,
        "figures": fig_paths,
        "profiles": {k: p.to_dict() for k, p in profiles.items() if k != "plain"},
    }
    (out / "summary.json").write_text(json.dumps(_finite(summary), indent=1))
    (out / "summary.md").write_text(_markdown(summary))
    console.print(
        f"[bold green]Done[/] in {seconds:.0f} s. Summary: {out / 'summary.md'} and "
        f"{out / 'summary.json'}; figures: {out / 'figures'}/"
    )
    return summary


def _diagnose_section(console: Console, s: DemoSettings) -> dict[str, Any]:
    """6. A deliberately broken Flax model diagnosed, fixed, and diagnosed again."""
    from gradlab._diagnose import demo_broken_model

    console.rule("6. gradlab.flow.diagnose on a broken Flax model (std 2/√n_prev, tanh)")
    del s  # the same model in --quick: 50 layers is what shows the explosion
    before, after = demo_broken_model(console, depth=50)
    return {"before": before.to_dict(), "after": after.to_dict()}


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
