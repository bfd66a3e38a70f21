"""``clipping``: a badly scaled deep ReLU net trained with and without gradient clipping.

Pascanu et al. (2013): where the loss surface has cliffs, one huge gradient throws the
parameters far away; clipping the gradient's global norm to ``c`` bounds every step by
``lr · c`` (plain SGD) and turns the jump into a step along the same direction. Here the net
is a ReLU MLP initialised above He's scale (``K/√n`` with ``K > √2``): its output and its
gradients grow like ``(K²/2)^(depth/2)``. Clipped and unclipped runs share one ``vmap``: the
clipping threshold is a traced hyper-parameter (``inf`` = no clipping).
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
from matplotlib.figure import Figure

from gradlab import losses, nn, plots
from gradlab.experiments._result import Claim, claim_all
from gradlab.experiments._scaling import from_lecun
from gradlab.train import TrainOptions, stack_trees, tasks, train_many

NAME = "clipping"
SUMMARY = "badly scaled deep ReLU MLP: divergence without clipping, training with it"


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the experiment."""

    depth: int = 20
    width: int = 32
    dim: int = 16
    k: float = 1.8
    separation: float = 3.0
    batch: int = 64
    steps: int = 800
    lr: float = 0.01
    momentum: float = 0.9
    clip_norm: float = 1.0
    seeds: int = 5
    fast_compile: bool = False


CONFIGS = {
    "tiny": Config(depth=20, width=8, dim=4, batch=16, steps=30, seeds=2, fast_compile=True),
    "default": Config(),
    "large": Config(depth=40, width=256, dim=64, batch=256, steps=2000, seeds=16),
}


def _optimizer(cfg: Config, clip: jax.Array) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(clip), optax.sgd(cfg.lr, momentum=cfg.momentum))


def _loss(apply_fn: Any, params: Any, batch: Any) -> Any:
    x, y = batch
    return losses.binary_cross_entropy(apply_fn(params, x)[:, 0], y)


def _model(cfg: Config, seed: int) -> nnx.Module:
    return nn.MLP(cfg.dim, 1, width=cfg.width, depth=cfg.depth, activation="relu",
                  rngs=nnx.Rngs(seed))  # fmt: skip


def run(cfg: Config, seeds: int, out: Path, first_seed: int = 0) -> dict[str, Any]:
    """Trains ``seeds`` nets without and with clipping in one vmapped run."""
    seed_ids = range(first_seed, first_seed + seeds)
    apply_fn, _ = nn.pure(_model(cfg, 0))
    kernels = {"w_in": None, "w_hidden": 0, "w_out": None}
    nets = [from_lecun(nn.pure(_model(cfg, 1000 + s))[1], f"fan_in_normal:{cfg.k:g}", kernels)
            for s in seed_ids]  # fmt: skip
    params = stack_trees(nets + nets)  # the same nets, unclipped then clipped
    keys = jnp.stack([jax.random.key(s) for s in seed_ids] * 2)
    clips = jnp.array([math.inf] * seeds + [cfg.clip_norm] * seeds)
    data = functools.partial(
        tasks.gaussian_mixture, batch=cfg.batch, dim=cfg.dim, separation=cfg.separation
    )
    options = TrainOptions(chunk=max(1, cfg.steps // 5), layer_steps=(), description=NAME,
                           fast_compile=cfg.fast_compile)  # fmt: skip
    opt = functools.partial(_optimizer, cfg)
    loss_fn = functools.partial(_loss, apply_fn)
    _, hist = train_many(loss_fn, params, data, opt, cfg.steps, keys, hparams=clips,
                         options=options)  # fmt: skip
    loss = np.asarray(hist.loss).reshape(2, seeds, -1)
    grad = np.asarray(hist.grad_norm).reshape(2, seeds, -1)
    stats = {name: _stats(loss[i], grad[i]) for i, name in enumerate(("unclipped", "clipped"))}
    results = {**stats, "clip_norm": cfg.clip_norm, "baseline_loss": tasks.BCE_BASELINE}
    return {"config": dataclasses.asdict(cfg), "claims": _claims(cfg, stats), "results": results,
            "figures": _figures(cfg, loss, grad, out)}  # fmt: skip


def _stats(loss: np.ndarray, grad: np.ndarray) -> dict[str, np.ndarray]:
    """Per seed: divergence step (-1 if none), final loss, loss spikes, largest finite grad norm.

    A spike is a step whose loss is over 10x the step before's and above ln 2 (chance).
    """
    finite = np.isfinite(loss)
    diverged = ~finite.all(axis=1)
    first_bad = np.where(diverged, np.argmin(finite, axis=1), -1)
    n = max(1, loss.shape[1] // 10)
    with np.errstate(invalid="ignore", over="ignore"):
        final = np.where(diverged, np.inf, loss[:, -n:].mean(axis=1))
        jump = (loss[:, 1:] > 10 * loss[:, :-1]) & (loss[:, 1:] > tasks.BCE_BASELINE)
        spikes = np.sum(finite[:, 1:] & jump, axis=1)
    max_grad = np.max(np.where(np.isfinite(grad), grad, 0.0), axis=1)
    return {"diverged_at": first_bad, "final_loss": final, "loss_spikes": spikes,
            "max_grad_norm": max_grad}  # fmt: skip


def _claims(cfg: Config, stats: dict[str, dict[str, np.ndarray]]) -> list[Claim]:
    free, clipped = stats["unclipped"], stats["clipped"]
    trained = 0.5 * tasks.BCE_BASELINE
    return [
        claim_all(
            f"Without clipping, the K = {cfg.k} net diverges (the loss becomes non-finite)",
            free["diverged_at"], "diverged_at >= 0 (step of the first non-finite loss)",
            free["diverged_at"] >= 0,
        ),
        claim_all(
            f"Before diverging, its gradient norm exceeds 100 x the clipping threshold "
            f"{cfg.clip_norm:g}",
            free["max_grad_norm"], f"max finite gradient norm > {100 * cfg.clip_norm:g}",
            free["max_grad_norm"] > 100 * cfg.clip_norm,
        ),
        claim_all(
            f"With clipping at {cfg.clip_norm:g}, the same nets train: no divergence, final "
            "loss below half of ln 2",
            clipped["final_loss"], f"final loss < {trained:.4f} (inf: diverged)",
            clipped["final_loss"] < trained,
        ),
    ]  # fmt: skip


def _figures(cfg: Config, loss: np.ndarray, grad: np.ndarray, out: Path) -> list[str]:
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    ax_l, ax_g = fig.subplots(1, 2)
    for i, name in enumerate(("no clipping", f"clip at {cfg.clip_norm:g}")):
        color = plots.PALETTE[i]
        for s in range(loss.shape[1]):
            label = name if s == 0 else None
            ax_l.plot(loss[i, s], color=color, lw=0.8, alpha=0.8, label=label)
            ax_g.plot(grad[i, s], color=color, lw=0.8, alpha=0.8, label=label)
    ax_l.axhline(tasks.BCE_BASELINE, color="k", ls=":", label="ln 2 (chance)")
    ax_g.axhline(cfg.clip_norm, color="k", ls="--", label="clipping threshold")
    for ax, ylabel in ((ax_l, "training loss (BCE)"), (ax_g, "global gradient norm")):
        ax.set_yscale("log")
        ax.set_xscale("symlog", linthresh=10)  # the first steps, where runs diverge, stay visible
        ax.set_xlim(0, loss.shape[-1])
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    ax_l.set_title(f"ReLU MLP depth {cfg.depth}, weights K/sqrt(n), K = {cfg.k} (every seed)")
    ax_g.set_title("gradient norm before clipping (lines end where the loss diverged)")
    plots.save(fig, out / "clipping")
    return ["clipping.png", "clipping.svg"]
