"""``lr-scale-grid``: learning rate x initial weight scale for a deep tanh MLP, in one vmap.

Mean-field theory (Poole et al. 2016; Schoenholz et al. 2017) splits ``(σ_w², σ_b²)`` into an
ordered phase, where gradients vanish like ``χ₁^depth``, and a chaotic one, where they explode;
the critical line ``χ₁ = 1`` (:func:`gradlab.theory.critical_weight_variance`) is where deep
networks train. Schoenholz et al. (2017, Fig. 5) found the trainable region bounded by
``depth ≈ 6 ξ_c``, with ``ξ_c`` the correlation depth scale
(:func:`gradlab.theory.correlation_depth_scale`): at depth 30 and ``σ_b² = 0.05`` that bound
excludes ``σ_w² = 0.5, 0.8`` (ordered) and ``12, 20`` (chaotic), and admits ``1.76`` to ``5``.
The claim is that prediction on both sides of the critical line; its control is the same rule
on the values the bound admits with room to spare (``6 ξ_c > 2 depth``). The task is
:func:`gradlab.train.tasks.shells`, which no linear model learns (best linear loss ``ln 2``).
The input dimension (4), the momentum (0.9) and the learning-rate grid were set on the
development seeds 0 and 1, at three weight variances; the claim is judged on the evaluation
seeds. Every cell of the grid is one run of the same vmapped program: the weight scale
multiplies one LeCun draw per seed, the learning rate is a traced hyper-parameter.
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
from gradlab.experiments._result import Claim, Threshold, fraction_claim
from gradlab.experiments._stats import SeedSplit
from gradlab.train import TrainOptions, stack_trees, tasks, train_many

NAME = "lr-scale-grid"
SUMMARY = "deep tanh MLP: learning rate x weight variance heat map, with the critical line"


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes: a ``len(weight_variances) x len(learning_rates)`` grid, ``seeds`` runs per cell."""

    depth: int = 30
    width: int = 32
    dim: int = 4
    bias_variance: float = 0.05
    weight_variances: tuple[float, ...] = (0.5, 0.8, 1.76, 2.5, 5.0, 12.0, 20.0)
    learning_rates: tuple[float, ...] = (0.003, 0.01, 0.03)
    batch: int = 64
    steps: int = 300
    seeds: int = 8
    dev_seeds: int = 2
    fast_compile: bool = False


CONFIGS = {
    "tiny": Config(depth=10, width=8, weight_variances=(0.5, 1.76, 20.0), dev_seeds=0,
                   learning_rates=(0.01, 0.1), batch=16, steps=20, seeds=2, fast_compile=True),
    "default": Config(),
    "large": Config(depth=60, width=256, batch=256, steps=2000, seeds=16,
                    weight_variances=(0.5, 0.8, 1.2, 1.76, 2.5, 3.5, 5.0, 8.0, 12.0, 20.0),
                    learning_rates=(0.001, 0.003, 0.01, 0.03, 0.1)),
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


def _sgd(lr: Any) -> optax.GradientTransformation:
    """SGD with momentum 0.9 at a traced learning rate."""
    return optax.sgd(lr, momentum=0.9)


def _loss(apply_fn: Any, params: Any, batch: Any) -> Any:
    x, y = batch
    return losses.binary_cross_entropy(apply_fn(params, x)[:, 0], y)


def run(cfg: Config, split: SeedSplit, out: Path) -> dict[str, Any]:
    """Trains every (weight variance, learning rate, evaluation seed) cell in one vmapped run."""
    seed_ids = split.evaluation
    seeds = len(seed_ids)
    apply_fn, _ = nn.pure(_model(cfg, 0))
    base = [nn.pure(_model(cfg, 10_000 + s))[1] for s in seed_ids]
    sw, lr = cfg.weight_variances, cfg.learning_rates
    cells = [(v, r, i) for v in sw for r in lr for i in range(seeds)]
    params = stack_trees([_scaled(base[i], v) for v, _, i in cells])
    keys = jnp.stack([jax.random.key(seed_ids[i]) for _, _, i in cells])
    rates = jnp.array([r for _, r, _ in cells])
    data = functools.partial(tasks.shells, batch=cfg.batch, dim=cfg.dim)
    options = TrainOptions(chunk=max(1, cfg.steps // 5), layer_steps=(), description=NAME,
                           fast_compile=cfg.fast_compile)  # fmt: skip
    _, hist = train_many(functools.partial(_loss, apply_fn), params, data, _sgd,
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
        "six_xi_c": six_xi(cfg),
        "task": "shells",
        "linear_baseline_loss": tasks.BCE_BASELINE,
        "bayes_floor_loss": tasks.shells_bayes_loss(0.0),
    }
    return {"config": dataclasses.asdict(cfg), "claims": _claims(cfg, final, critical),
            "results": results, "figures": _figures(cfg, final, critical, out)}  # fmt: skip


def six_xi(cfg: Config) -> list[float]:
    """``6 ξ_c`` at every weight variance of the grid (Schoenholz et al.'s trainable depth)."""
    return [
        6.0 * float(theory.correlation_depth_scale(v, cfg.bias_variance, "tanh"))
        for v in cfg.weight_variances
    ]


def _claims(cfg: Config, final: np.ndarray, critical: float) -> list[Claim]:
    sw = np.array(cfg.weight_variances)
    bound = np.array(six_xi(cfg))
    best = final.min(axis=1)  # (weight variance, seed): the best learning rate per cell
    beyond = bound < cfg.depth  # the bound says: not trainable at this depth
    inside = bound > 2 * cfg.depth  # trainable with room to spare
    value = TRAINED_FRACTION * tasks.BCE_BASELINE
    fails = Threshold(
        "final loss > {value:.4f} at every learning rate of the grid",
        value,
        "theory",
        f"{TRAINED_FRACTION:g} x ln 2, the best linear model's loss on the shells task; the "
        "σ_w² it applies to are those with 6 ξ_c < depth (Schoenholz et al. 2017)",
    )
    names = lambda m: ", ".join(f"{v:g}" for v in sw[m])
    return [
        fraction_claim(
            f"Where depth {cfg.depth} exceeds 6 ξ_c (σ_w² = {names(beyond)}, on both sides of "
            f"the critical line σ_w² = {critical:.3f}), no learning rate of the grid trains "
            "the tanh MLP (judged per seed over all those σ_w²)",
            fails, (best[beyond] > value).all(axis=0),
            control_text=f"the same holds where 6 ξ_c > 2 x depth (σ_w² = {names(inside)})",
            control_passed=(best[inside] > value).all(axis=0),
            evidence={"best_final_loss": {f"{v:g}": best[i] for i, v in enumerate(sw) if beyond[i]},
                      "six_xi_c": dict(zip([f"{v:g}" for v in sw], bound, strict=True))},
            control_evidence={"best_final_loss": {f"{v:g}": best[i]
                                                  for i, v in enumerate(sw) if inside[i]}},
        ),
    ]  # fmt: skip


TRAINED_FRACTION = 0.9


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
    beyond = np.array(six_xi(cfg)) < cfg.depth
    for v in sw[beyond]:
        ax.axvspan(v / 1.15, v * 1.15, color="w", alpha=0.25, lw=0)
    ax.plot(
        [], [], color="w", alpha=0.6, lw=6, label=f"6 ξ_c < depth {cfg.depth}: predicted to fail"
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sw, [f"{v:g}" for v in sw])
    ax.set_yticks(lr, [f"{r:g}" for r in lr])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(r"weight variance $\sigma_w^2$ (weights $\sim N(0, \sigma_w^2/n)$)")
    ax.set_ylabel("learning rate (SGD, momentum 0.9)")
    ax.set_title(f"tanh MLP depth {cfg.depth}, σ_b² = {cfg.bias_variance}: final loss")
    ax.legend(fontsize=8, loc="upper right")
    plots.save(fig, out / "lr_scale_grid")
    return ["lr_scale_grid.png", "lr_scale_grid.svg"]
