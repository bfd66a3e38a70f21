"""Sections 1-3 of the demo, through depth: the lecture's chains and initialisers, residuals."""

from __future__ import annotations

import functools
from typing import Any

from rich.table import Table

from gradlab import flow, theory
from gradlab import init as gradlab_init
from gradlab.demo._settings import DemoSettings, _fmt_ratio, _pm, _regime, _Runner

#: The linear nets' initialisers by the kind the summary names them ("normal" is Gaussian).
_LINEAR_INITS = {"orthogonal": "orthogonal", "normal": "fan_in_normal"}


def _lecture_section(s: DemoSettings, r: _Runner) -> tuple[dict[str, Any], dict[str, Any]]:
    gains = (1.1, 0.9)
    profiles: dict[str, flow.FlowProfile] = {}
    rows = []
    for w in gains:
        # every row of the table has both measurements, in --quick too (a linear net at the
        # quick width costs little): a row without one would print and store no value
        for kind in ("orthogonal", "normal"):
            name = f"linear_{kind}_{w:g}"
            profiles[name] = r.step(
                f"linear net, {kind} weights x {w:g}, depth {s.depth}",
                functools.partial(
                    flow.depth_profile,
                    "mlp",
                    depth=s.depth,
                    width=s.width,
                    activation="linear",
                    init=f"{_LINEAR_INITS[kind]}:{w:g}",
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
            h = profiles[f"linear_{kind}_{w:g}"].headline()
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
        gm = row["normal_log10_mean"]
        table.add_row(
            f"{row['weight']:g}",
            f"{row['lecture_chain']:.3g}",
            _fmt_ratio(row["orthogonal_log10_mean"]),
            _fmt_ratio(gm),
            f"{row['gaussian_theory_typical']:.3g}",
            f"{_pm(gm, row['normal_log10_std'])} vs "
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
    "lecture 1/√n (LeCun)": "lecun_normal",
    "lecture 2/√n": "fan_in_normal:2",
    "lecture 2/√(n_in+n_out)": "lecture_glorot",
    "lecture K/√n, K=0.9": "fan_in_normal:0.9",
    "orthogonal": "orthogonal",
}
_RELU_INITS = {
    "He N(0, 2/n)": "he_normal",
    "lecture 1/√n (LeCun)": "lecun_normal",
    "lecture 2/√n": "fan_in_normal:2",
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
                functools.partial(
                    flow.depth_profile,
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
            spec = gradlab_init.get(init)
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
            functools.partial(
                flow.depth_profile,
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
