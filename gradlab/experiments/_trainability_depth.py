"""``trainability-depth``: which depths a tanh MLP trains at, against ``6ξ`` (Schoenholz et al.).

Schoenholz et al. (2017, Fig. 5) trained tanh networks over a grid of depth × ``σ_w²`` at
``σ_b² = 0.05`` and found the trainable region bounded by ``depth ≈ 6 ξ_c`` on both sides of
the critical line, with ``ξ_c`` the correlation depth scale
(:func:`gradlab.theory.correlation_depth_scale`; in the ordered phase it equals the gradient
depth scale ``1/|ln χ₁|``). This experiment redraws that heat map: every cell (depth, ``σ_w²``)
trains at its best learning rate from a small sweep (chosen on the development seeds, judged on
the evaluation seeds), on :func:`gradlab.train.tasks.shells`, which no linear model learns
(best linear loss ``ln 2``, Bayes floor 0).

A run *trains* when its held-out loss ends below ``0.9 ln 2`` (it beats every linear model
by 10% of ``ln 2``; the rule every classification experiment of the library uses, declared
before this experiment's evaluation run).

Claims (rules fixed before the evaluation run; see ``DESIGN``):

1. Schoenholz et al.'s bound holds in the ordered phase: the trainable depth ``L*`` of every
   ordered column (where the fraction of evaluation seeds that train crosses 1/2, interpolated
   in ``log depth``; the upper end of its bootstrap interval) is at most ``2 × 6ξ_c`` (the
   published 6, and a factor 2: two steps of the ``√2`` depth grid). Control: the same rule
   with a bound that ignores ``ξ`` (``2 × 6ξ_c`` of the most ordered column, for every column)
   must come out false, as the deeper trainable depths of the larger ``ξ`` make it.
   ``c = median L*/ξ`` and the slope of ``log L*`` against ``log ξ`` are reported with their
   bootstrap intervals.
2. At the shallowest depth of the grid at least ``2 × 6ξ_c`` of the most ordered column, the
   critical ``σ_w²`` trains (Wilson interval of the fraction of seeds); control: the most
   ordered column at that depth.

One program (a ``lax.scan`` over layers whose steps past the depth are skipped by a
``lax.cond``; depth, weight variance and learning rate are traced values) is compiled once and
trains every run of every cell, vmapped over runs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from gradlab import losses, plots, theory
from gradlab.experiments._result import Claim, Control, Threshold, fraction_claim
from gradlab.experiments._stats import SeedSplit
from gradlab.train import tasks

NAME = "trainability-depth"
SUMMARY = "tanh MLP depth x sigma_w^2 at sigma_b^2 = 0.05: the trainable depth against 6 xi"


@dataclasses.dataclass(frozen=True)
class Config:
    """One size of the experiment.

    Attributes:
        seeds: evaluation seeds per cell.
        dev_seeds: development seeds per cell and learning rate (they pick the learning rate).
        width: hidden units.
        batch: examples per step (fresh ones each step).
        steps: SGD steps.
        depths: hidden tanh layers, a roughly ``√2``-spaced grid.
        weight_variances: ``σ_w²`` columns (``σ_w² / fan_in`` per weight).
        lrs: the learning-rate sweep.
        bias_variance: ``σ_b²``.
        dim: input dimension of the shells task.
        eval_batch: held-out examples the final loss is measured on.
    """

    seeds: int
    dev_seeds: int
    width: int
    batch: int
    steps: int
    depths: tuple[int, ...]
    weight_variances: tuple[float, ...]
    lrs: tuple[float, ...]
    bias_variance: float = 0.05
    dim: int = 8
    eval_batch: int = 512
    first_seed: int = 5100


DESIGN = {
    "development_runs": [
        {
            "seeds": list(range(1000, 1006)),
            "rule": "final loss < ln 2 / 2; the trainable depth proportional to xi within a "
            "factor 2 across columns",
            "finding": "almost no run reached ln 2 / 2 in 300 steps, so neither claim could be "
            "judged; these seeds are not evaluation seeds of this experiment any more",
        }
    ],
    "evaluation": "fresh seeds from 5100 (never run before the rules below were fixed)",
    "rules_fixed_before_evaluation": [
        "a run trains when its final held-out loss < 0.9 ln 2 (the library's rule for shells)",
        "claim 1: every ordered column's trainable depth at most 2 x 6 xi_c (upper bootstrap "
        "end); control: the same bound with the most ordered column's xi for every column",
        "claim 2: the critical column trains at the shallowest grid depth >= 2 x 6 xi_c of the "
        "most ordered column; control: the most ordered column there",
    ],
}
"""How the rules were chosen: the earlier run whose seeds became development seeds, and the
rules fixed before the evaluation seeds were run (written into ``result.json``)."""


CONFIGS = {
    "tiny": Config(2, 1, 8, 16, 3, (2, 3, 4), (0.4, 1.0, 1.76, 6.0), (0.1, 0.3)),
    "default": Config(
        seeds=8,
        dev_seeds=2,
        width=32,
        batch=64,
        steps=300,
        depths=(3, 4, 6, 8, 11, 16, 23, 32),
        weight_variances=(0.4, 0.55, 0.75, 1.0, 1.76, 3.0, 6.0),
        lrs=(0.03, 0.1, 0.3),
    ),
    "large": Config(
        seeds=16,
        dev_seeds=4,
        width=128,
        batch=128,
        steps=1000,
        depths=(3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 90, 128),
        weight_variances=(0.4, 0.55, 0.75, 1.0, 1.3, 1.76, 2.2, 3.0, 4.0, 6.0),
        lrs=(0.01, 0.03, 0.1, 0.3),
    ),
}

ORDERED_MAX = 1.5
"""Columns with ``σ_w²`` up to this (ordered phase at ``σ_b² = 0.05``) enter the fit of ``c``."""

TRAINED_FRACTION = 0.9
"""A run trains when its final held-out loss is below this fraction of ``ln 2``."""

PUBLISHED_C = 6.0
"""Schoenholz et al. (2017): networks train up to about ``6 ξ_c`` layers."""

SLACK = 2.0
"""The bound's factor: two steps of the ``√2`` depth grid."""


def _init(key: jax.Array, sw: jax.Array, cfg: Config, dmax: int) -> dict[str, jax.Array]:
    k0, k1, k2, k3 = jax.random.split(key, 4)
    w = cfg.width
    return {
        "w0": jax.random.normal(k0, (cfg.dim, w)) * jnp.sqrt(sw / cfg.dim),
        "ws": jax.random.normal(k1, (max(dmax - 1, 1), w, w)) * jnp.sqrt(sw / w),
        "bs": jax.random.normal(k2, (dmax, w)) * math.sqrt(cfg.bias_variance),
        "wo": jax.random.normal(k3, (w, 1)) * math.sqrt(1.0 / w),
    }


def _forward(p: dict[str, jax.Array], x: jax.Array, depth: jax.Array) -> jax.Array:
    h = jnp.tanh(x @ p["w0"] + p["bs"][0])

    def layer(h: jax.Array, wbl: tuple[jax.Array, ...]) -> tuple[jax.Array, None]:
        w, b, idx = wbl
        # depth is the same for every vmapped run: the predicate stays unbatched, so layers
        # past the depth are skipped, not computed and masked
        h = jax.lax.cond(idx < depth, lambda h: jnp.tanh(h @ w + b), lambda h: h, h)
        return h, None

    n = p["ws"].shape[0]
    h, _ = jax.lax.scan(layer, h, (p["ws"], p["bs"][1 : n + 1], jnp.arange(1, n + 1)))
    return (h @ p["wo"])[:, 0]


def _train_one(
    key: jax.Array, sw: jax.Array, lr: jax.Array, depth: jax.Array, cfg: Config, dmax: int
) -> jax.Array:
    """Final held-out loss of one run (``inf`` if it diverged)."""
    k_init, k_data, k_eval = jax.random.split(key, 3)
    params = _init(k_init, sw, cfg, dmax)

    def loss(p: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
        return losses.binary_cross_entropy(_forward(p, x, depth), y)

    def step(p: dict[str, jax.Array], k: jax.Array) -> tuple[dict[str, jax.Array], None]:
        x, y = tasks.shells(k, batch=cfg.batch, dim=cfg.dim)
        g = jax.grad(loss)(p, x, y)
        return jax.tree.map(lambda a, b: a - lr * b, p, g), None

    params, _ = jax.lax.scan(step, params, jax.random.split(k_data, cfg.steps))
    xe, ye = tasks.shells(k_eval, batch=cfg.eval_batch, dim=cfg.dim)
    final = loss(params, xe, ye)
    return jnp.where(jnp.isfinite(final), final, jnp.inf)


@functools.cache
def _program(cfg: Config) -> Any:
    dmax = max(cfg.depths)
    one = functools.partial(_train_one, cfg=cfg, dmax=dmax)
    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None)))


def _runs(
    cfg: Config, seeds: list[int], sws: list[float], lrs: list[float], depth: int
) -> np.ndarray:
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    out = _program(cfg)(keys, jnp.asarray(sws), jnp.asarray(lrs), jnp.int32(depth))
    return np.asarray(out, dtype=np.float64)


def _boundary(frac: np.ndarray, depths: np.ndarray) -> float:
    """Depth where the trained fraction crosses 1/2 (log-interpolated).

    nan if it does not train at the shallowest depth, ``inf`` if it trains at every depth.
    """
    if frac[0] < 0.5:
        return math.nan
    below = np.nonzero(frac < 0.5)[0]
    if below.size == 0:
        return math.inf
    k = int(below[0])
    f0, f1 = frac[k - 1], frac[k]
    t = (f0 - 0.5) / (f0 - f1)
    return float(np.exp(np.log(depths[k - 1]) + t * (np.log(depths[k]) - np.log(depths[k - 1]))))


def run(cfg: Config, seeds: SeedSplit, out: Path) -> dict[str, Any]:
    """Trains the grid; claims, results and the heat map (see the module docstring)."""
    sws, lrs, depths = list(cfg.weight_variances), list(cfg.lrs), list(cfg.depths)
    dev, ev = list(seeds.development), list(seeds.evaluation)
    threshold = TRAINED_FRACTION * tasks.BCE_BASELINE
    best_lr = np.zeros((len(depths), len(sws)))
    loss = np.zeros((len(depths), len(sws), len(ev)))
    dev_loss = np.zeros((len(depths), len(sws), len(lrs), len(dev)))
    for i, d in enumerate(depths):
        grid = [
            (s, a, k) for s in range(len(sws)) for a in range(len(lrs)) for k in range(len(dev))
        ]
        vals = _runs(cfg, [dev[k] for *_, k in grid], [sws[s] for s, *_ in grid],
                     [lrs[a] for _, a, _ in grid], d)  # fmt: skip
        dev_loss[i] = vals.reshape(len(sws), len(lrs), len(dev))
        # the learning rate with the lowest median development loss (diverged runs count inf)
        pick = np.argmin(np.median(dev_loss[i], axis=-1), axis=-1)
        best_lr[i] = [lrs[a] for a in pick]
        grid_e = [(s, k) for s in range(len(sws)) for k in range(len(ev))]
        vals = _runs(cfg, [ev[k] for _, k in grid_e], [sws[s] for s, _ in grid_e],
                     [float(best_lr[i, s]) for s, _ in grid_e], d)  # fmt: skip
        loss[i] = vals.reshape(len(sws), len(ev))
    trained = loss < threshold  # (depths, sws, seeds)
    xi = np.array([theory.correlation_depth_scale(s, cfg.bias_variance) for s in sws])
    xi_grad = np.abs(
        np.array([float(theory.gradient_depth_scale(s, cfg.bias_variance)) for s in sws])
    )
    fit = _fit(trained, np.array(depths, dtype=float), np.array(sws), xi)
    claims = _claims(cfg, trained, fit, xi, threshold)
    results = {
        "final_loss": loss,
        "trained": trained,
        "trained_fraction": trained.mean(-1),
        "best_lr": best_lr,
        "dev_loss": dev_loss,
        "xi_c": xi,
        "xi_grad": xi_grad,
        "six_xi_c": 6 * xi,
        "critical_weight_variance": float(
            theory.critical_weight_variance("tanh", cfg.bias_variance)
        ),
        "boundary": fit["boundary"],
        "c": fit["c"],
        "c_interval": fit["c_interval"],
        "c_per_column": fit["c_per_column"],
        "c_published": PUBLISHED_C,
        "slope": fit["slope"],
        "slope_interval": fit["slope_interval"],
        "boundary_interval": fit["boundary_interval"],
        "design": DESIGN,
        "loss_threshold": threshold,
        "linear_baseline_loss": tasks.BCE_BASELINE,
    }
    figures = _figure(cfg, trained.mean(-1), xi, fit, out)
    return {"config": dataclasses.asdict(cfg), "claims": claims, "results": results,
            "figures": figures}  # fmt: skip


def _fit(
    trained: np.ndarray, depths: np.ndarray, sws: np.ndarray, xi: np.ndarray
) -> dict[str, Any]:
    """Boundaries per column with bootstrap intervals, ``c`` and the slope of ``log L*``.

    ``c = median L*/ξ`` and the slope of ``log L*`` against ``log ξ`` are over the ordered
    columns.
    """
    ordered = sws <= ORDERED_MAX
    bounds = np.array([_boundary(trained[:, j].mean(-1), depths) for j in range(len(sws))])
    ratio = bounds / xi
    use = ordered & np.isfinite(ratio)
    rng = np.random.default_rng(0)
    n = trained.shape[-1]
    boot_b, boot_c, boot_slope = [], [], []
    for _ in range(1000):
        idx = rng.integers(0, n, n)
        b = np.array([_boundary(trained[:, j][:, idx].mean(-1), depths) for j in range(len(sws))])
        boot_b.append(b)
        r = (b / xi)[use]
        if r.size and np.all(np.isfinite(r)):
            boot_c.append(np.median(r))
            if use.sum() >= 2:
                boot_slope.append(_slope(xi[use], b[use]))
    # a column that does not train at the shallowest depth (nan) lies below any bound: 0
    bb = np.nan_to_num(np.array(boot_b), nan=0.0, posinf=np.inf)
    b_int = np.stack([np.quantile(bb, 0.025, axis=0), np.quantile(bb, 0.975, axis=0)], -1)
    c = float(np.median(ratio[use])) if use.any() else math.nan
    return {
        "boundary": bounds,
        "boundary_interval": b_int,
        "c": c,
        "c_interval": _q(boot_c),
        "c_per_column": ratio,
        "columns_fitted": use,
        "ordered": ordered,
        "slope": _slope(xi[use], bounds[use]) if use.sum() >= 2 else math.nan,
        "slope_interval": _q(boot_slope),
    }


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _q(v: list[float]) -> list[float]:
    if not v:
        return [math.nan, math.nan]
    return [float(x) for x in np.quantile(v, [0.025, 0.975])]


def _claims(
    cfg: Config, trained: np.ndarray, fit: dict[str, Any], xi: np.ndarray, threshold: float
) -> list[Claim]:
    sws = np.array(cfg.weight_variances)
    ordered = fit["ordered"]
    far = int(np.argmin(sws))
    bound = SLACK * PUBLISHED_C * xi
    upper = fit["boundary_interval"][:, 1]
    t1 = Threshold(
        "upper end of the bootstrap interval of L* at most {value:g} x 6 xi_c in every ordered "
        "column",
        SLACK,
        "published",
        f"Schoenholz et al. (2017, Fig. 5): the trainable depth is bounded by about 6 ξ_c; a "
        f"factor {SLACK:g} is two steps of the √2-spaced depth grid",
    )
    ok = bool(ordered.any() and np.all(upper[ordered] <= bound[ordered]))
    flat = np.full_like(bound, bound[far])
    ok_flat = bool(ordered.any() and np.all(upper[ordered] <= flat[ordered]))
    cols = [f"{w:g}" for w in sws[ordered]]
    claim1 = Claim(
        f"in the ordered phase (σ_w² = {', '.join(cols)}) no column trains beyond "
        f"{SLACK:g} × 6ξ_c (Schoenholz et al. 2017's bound); measured c = median L*/ξ_c = "
        f"{fit['c']:.2f} (95% interval {fit['c_interval'][0]:.2f}–{fit['c_interval'][1]:.2f}; "
        f"published 6), slope of log L* on log ξ_c {fit['slope']:.2f} "
        f"({fit['slope_interval'][0]:.2f}–{fit['slope_interval'][1]:.2f}; proportional: 1)",
        ok,
        {
            "columns": sws[ordered],
            "boundary": fit["boundary"][ordered],
            "boundary_interval": fit["boundary_interval"][ordered],
            "bound": bound[ordered],
            "c_per_column": fit["c_per_column"][ordered],
            "c": fit["c"],
            "c_interval": fit["c_interval"],
            "slope": fit["slope"],
            "slope_interval": fit["slope_interval"],
            "judged_by": "every ordered column's upper bootstrap end of L* at most the bound",
        },
        t1,
        Control(
            f"the same rule with a bound that ignores ξ: {SLACK:g} × 6ξ_c of σ_w² = "
            f"{sws[far]:g} ({flat[far]:.1f} layers) for every ordered column (must be false)",
            ok_flat,
            {"bound": flat[ordered], "boundary_interval": fit["boundary_interval"][ordered]},
        ),
    )
    t2 = Threshold(
        "final held-out loss < {value:.4f}",
        threshold,
        "theory",
        f"{TRAINED_FRACTION:g} x ln 2: ln 2 is the loss of the best linear model on shells "
        "(exact: the labels are symmetric under x -> -x and the loss is convex); the Bayes "
        "floor is 0",
    )
    crit = int(
        np.argmin(
            np.abs(np.log(sws / float(theory.critical_weight_variance("tanh", cfg.bias_variance))))
        )
    )
    depths = np.array(cfg.depths)
    beyond = np.nonzero(depths >= bound[far])[0]
    at = int(beyond[0]) if beyond.size else len(depths) - 1
    claim2 = fraction_claim(
        f"at depth {depths[at]} (at least {SLACK:g} × 6ξ_c of σ_w² = {sws[far]:g}) the critical "
        f"σ_w² = {sws[crit]:g} trains",
        t2,
        trained[at, crit],
        control_text=(
            f"σ_w² = {sws[far]:g} (6ξ_c = {6 * xi[far]:.1f} layers) trains at depth "
            f"{depths[at]} too (must be false)"
        ),
        control_passed=trained[at, far],
    )
    return [claim1, claim2]


def _figure(
    cfg: Config, frac: np.ndarray, xi: np.ndarray, fit: dict[str, Any], out: Path
) -> list[str]:
    sws = np.array(cfg.weight_variances)
    depths = np.array(cfg.depths, dtype=float)
    fig = Figure(figsize=(6.6, 4.4), layout="constrained")
    ax = fig.subplots()
    edges_x = _edges(np.log(sws))
    edges_y = _edges(np.log(depths))
    mesh = ax.pcolormesh(np.exp(edges_x), np.exp(edges_y), frac, cmap="viridis",
                         norm=mcolors.Normalize(0, 1), shading="flat")  # fmt: skip
    fig.colorbar(mesh, ax=ax, label="fraction of evaluation seeds that train")
    grid = np.exp(np.linspace(np.log(sws.min()) - 0.1, np.log(sws.max()) + 0.1, 200))
    crit = float(theory.critical_weight_variance("tanh", cfg.bias_variance))
    grid = grid[np.abs(np.log(grid / crit)) > 0.02]
    line = np.array([6 * theory.correlation_depth_scale(s, cfg.bias_variance) for s in grid])
    for side in (grid < crit, grid > crit):
        ax.plot(grid[side], line[side], "w--", lw=1.5)
    ax.plot([], [], "w--", label="6ξ_c (Schoenholz et al. 2017)")
    if math.isfinite(fit["c"]) and fit["c"] > 0:
        cl = fit["c"] * np.array(
            [theory.correlation_depth_scale(s, cfg.bias_variance) for s in grid]
        )
        for side in (grid < crit, grid > crit):
            ax.plot(grid[side], cl[side], ":", color="tab:orange", lw=1.5)
        ax.plot([], [], ":", color="tab:orange", label=f"c·ξ_c, fitted c = {fit['c']:.2f}")
    ok = np.isfinite(fit["boundary"])
    ax.plot(sws[ok], fit["boundary"][ok], "o", color="tab:red", ms=4, label="measured L*")
    ax.axvline(crit, color="w", lw=0.8, alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(np.exp(edges_x[0]), np.exp(edges_x[-1]))
    ax.set_ylim(np.exp(edges_y[0]), np.exp(edges_y[-1]))
    ax.set_xlabel(f"σ_w² (σ_b² = {cfg.bias_variance:g})")
    ax.set_ylabel("depth")
    ax.set_title("tanh MLP: trainable depth against 6ξ")
    ax.legend(fontsize=7, loc="lower left")
    plots.save(fig, out / "trainability_depth")
    return ["trainability_depth.png", "trainability_depth.svg"]


def _edges(centres: np.ndarray) -> np.ndarray:
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = 0.5 * (centres[1:] + centres[:-1])
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])
