"""``lr-scale-grid``: learning rate x initial weight scale for a deep tanh MLP, in one vmap.

Mean-field theory (Poole et al. 2016; Schoenholz et al. 2017) splits ``(σ_w², σ_b²)`` into an
ordered phase, where gradients vanish like ``χ₁^depth``, and a chaotic one, where they explode;
the critical line ``χ₁ = 1`` (:func:`gradlab.theory.critical_weight_variance`) is where deep
networks train. Every cell of the grid is one run of the same vmapped program: the weight
scale multiplies one LeCun draw per seed, the learning rate is a traced hyper-parameter.
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
import optax
from flax import nnx
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from gradlab import init, losses, nn, plots, theory
from gradlab.experiments._result import Claim, claim_all
from gradlab.train import TrainOptions, stack_trees, tasks, train_many

NAME = "lr-scale-grid"
SUMMARY = "deep tanh MLP: learning rate x weight variance heat map, with the critical line"


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes: a ``len(weight_variances) x len(learning_rates)`` grid, ``seeds`` runs per cell."""

    depth: int = 30
    width: int = 32
    dim: int = 16
    bias_variance: float = 0.05
    weight_variances: tuple[float, ...] = (0.5, 0.8, 1.2, 1.76, 2.5, 3.5, 5.0)
    learning_rates: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3)
    separation: float = 3.0
    batch: int = 64
    steps: int = 300
    seeds: int = 3
    fast_compile: bool = False


CONFIGS = {
    "tiny": Config(depth=10, width=8, dim=4, weight_variances=(0.5, 1.76, 5.0),
                   learning_rates=(0.01, 0.1), batch=16, steps=20, seeds=2, fast_compile=True),
    "default": Config(),
    "large": Config(depth=60, width=256, dim=64, batch=256, steps=2000, seeds=8,
                    weight_variances=tuple(np.round(np.geomspace(0.5, 5.0, 15), 3)),
                    learning_rates=tuple(np.round(np.geomspace(1e-3, 1.0, 10), 5))),
}  # fmt: skip


def _model(cfg: Config, seed: int) -> nnx.Module:
    bias_init = init.gaussian(math.sqrt(cfg.bias_variance))
    return nn.MLP(cfg.dim, 1, width=cfg.width, depth=cfg.depth, activation="tanh",
                  bias_init=bias_init, rngs=nnx.Rngs(seed))  # fmt: skip


def _scaled(params: Any, weight_variance: float) -> Any:
    """LeCun kernels ``N(0, 1/n)`` times ``σ_w``: ``N(0, σ_w²/n)`` (the readout stays LeCun)."""
    s = math.sqrt(weight_variance)
    scale = lambda path, w: w * s if path[0].key in ("w_in", "w_hidden") else w
    return jax.tree_util.tree_map_with_path(scale, params)


def _loss(apply_fn: Any, params: Any, batch: Any) -> Any:
    x, y = batch
    return losses.binary_cross_entropy(apply_fn(params, x)[:, 0], y)


def run(cfg: Config, seeds: int, out: Path, first_seed: int = 0) -> dict[str, Any]:
    """Trains every (weight variance, learning rate, seed) cell in one vmapped run."""
    seed_ids = range(first_seed, first_seed + seeds)
    apply_fn, _ = nn.pure(_model(cfg, 0))
    base = [nn.pure(_model(cfg, 1000 + s))[1] for s in seed_ids]
    sw, lr = cfg.weight_variances, cfg.learning_rates
    cells = [(v, r, i) for v in sw for r in lr for i in range(seeds)]
    params = stack_trees([_scaled(base[i], v) for v, _, i in cells])
    keys = jnp.stack([jax.random.key(seed_ids[i]) for _, _, i in cells])
    rates = jnp.array([r for _, r, _ in cells])
    data = functools.partial(
        tasks.gaussian_mixture, batch=cfg.batch, dim=cfg.dim, separation=cfg.separation
    )
    options = TrainOptions(chunk=max(1, cfg.steps // 5), layer_steps=(), description=NAME,
                           fast_compile=cfg.fast_compile)  # fmt: skip
    _, hist = train_many(functools.partial(_loss, apply_fn), params, data, optax.sgd,
                         cfg.steps, keys, hparams=rates, options=options)  # fmt: skip
    loss = np.asarray(hist.loss).reshape(len(sw), len(lr), seeds, -1)
    n = max(1, cfg.steps // 10)
    with np.errstate(invalid="ignore", over="ignore"):
        final = loss[..., -n:].mean(-1)
    final = np.where(np.isfinite(final), final, np.inf)
    critical = float(theory.critical_weight_variance("tanh", cfg.bias_variance))
    results = {
        "weight_variances": list(sw),
        "learning_rates": list(lr),
        "final_loss": final,  # (weight variance, learning rate, seed); inf = diverged
        "critical_weight_variance": critical,
        "chi1": theory.chi1(np.array(sw), cfg.bias_variance, "tanh"),
        "baseline_loss": tasks.BCE_BASELINE,
    }
    return {"config": dataclasses.asdict(cfg), "claims": _claims(cfg, final, critical),
            "results": results, "figures": _figures(cfg, final, critical, out)}  # fmt: skip


def _claims(cfg: Config, final: np.ndarray, critical: float) -> list[Claim]:
    sw = np.array(cfg.weight_variances)
    best_lr = final.min(axis=1)  # (weight variance, seed): the best learning rate per cell
    best_sw = sw[np.argmin(best_lr, axis=0)]  # per seed
    near = np.abs(np.log(best_sw / critical)) <= np.log(2.0)
    ordered = best_lr[np.argmin(sw)]
    stalled = 0.9 * tasks.BCE_BASELINE
    return [
        claim_all(
            f"The weight variance that trains best (at its best learning rate) lies within a "
            f"factor 2 of the critical line σ_w² = {critical:.3f} (σ_b² = {cfg.bias_variance})",
            best_sw, "best σ_w² within [critical / 2, 2 critical]", near,
        ),
        claim_all(
            f"Deep in the ordered phase (σ_w² = {sw.min():g}) no learning rate of the grid "
            f"trains the depth-{cfg.depth} net: final loss stays above 0.9 ln 2",
            ordered, f"min over learning rates of final loss > {stalled:.4f}", ordered > stalled,
        ),
    ]  # fmt: skip


def _log_edges(v: np.ndarray) -> np.ndarray:
    """Cell edges halfway between grid points on a log axis."""
    lv = np.log(v)
    inner = (lv[1:] + lv[:-1]) / 2
    return np.exp(
        np.concatenate([[1.5 * lv[0] - 0.5 * lv[1]], inner, [1.5 * lv[-1] - 0.5 * lv[-2]]])
    )


def _figures(cfg: Config, final: np.ndarray, critical: float, out: Path) -> list[str]:
    sw, lr = np.array(cfg.weight_variances), np.array(cfg.learning_rates)
    med = np.median(np.minimum(final, 10.0), axis=-1)  # diverged cells drawn at 10
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    norm = mcolors.LogNorm(vmin=max(med.min(), 1e-3), vmax=max(med.max(), 1.0))
    mesh = ax.pcolormesh(_log_edges(sw), _log_edges(lr), med.T, cmap="viridis", norm=norm)
    fig.colorbar(mesh, ax=ax, label="final training loss (median over seeds)")
    for i, v in enumerate(sw):
        for j, r in enumerate(lr):
            ax.text(v, r, f"{med[i, j]:.2g}", ha="center", va="center", fontsize=7, color="w")
    ax.axvline(critical, color="r", lw=2, label=f"critical line χ₁ = 1 (σ_w² = {critical:.2f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sw, [f"{v:g}" for v in sw])
    ax.set_yticks(lr, [f"{r:g}" for r in lr])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(r"weight variance $\sigma_w^2$ (weights $\sim N(0, \sigma_w^2/n)$)")
    ax.set_ylabel("learning rate (SGD)")
    ax.set_title(f"tanh MLP depth {cfg.depth}, σ_b² = {cfg.bias_variance}: final loss")
    ax.legend(fontsize=8, loc="upper right")
    plots.save(fig, out / "lr_scale_grid")
    return ["lr_scale_grid.png", "lr_scale_grid.svg"]
