"""``init-depth``: which initialisers let a 30-layer ReLU MLP train with SGD + momentum.

He et al. (2015): with ReLU, weights ``N(0, 2/n)`` keep the signal's and the gradient's scale
through depth; Glorot's (and LeCun's) ``1/n`` halve the squared norm at every layer, so after
30 layers the output barely depends on the input, every weight gradient is ~``2^-15`` times
He's, and SGD stalls at the constant prediction (loss ``ln 2``). Larger ``K/√n`` explode.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
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

NAME = "init-depth"
SUMMARY = "30-layer ReLU MLP, SGD+momentum: He trains, Glorot/LeCun stall, K/sqrt(n) sweep"


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the experiment (see :data:`CONFIGS`)."""

    depth: int = 30
    width: int = 64
    dim: int = 16
    separation: float = 3.0
    batch: int = 64
    steps: int = 300
    lr: float = 0.005
    momentum: float = 0.9
    seeds: int = 5
    ks: tuple[float, ...] = (0.8, 1.2, 1.6, 2.0)
    fast_compile: bool = False


CONFIGS = {
    "tiny": Config(
        depth=30, width=16, dim=4, batch=16, steps=40, seeds=2, ks=(2.0,), fast_compile=True
    ),
    "default": Config(),
    "large": Config(width=256, dim=64, batch=256, steps=1000, seeds=16),
}

#: The initialisers compared, by :func:`gradlab.init.get` name (and ``fan_in_normal:K`` for each K).
BASE_INITS = ("he_normal", "glorot_normal", "lecun_normal", "lecture_glorot")


def _inits(cfg: Config) -> list[str]:
    return [*BASE_INITS, *(f"fan_in_normal:{k:g}" for k in cfg.ks)]


_KERNELS = {"w_in": None, "w_hidden": 0, "w_out": None}


def _model(cfg: Config, seed: int) -> nnx.Module:
    """The MLP with LeCun-normal kernels; :func:`from_lecun` turns them into the others."""
    return nn.MLP(
        cfg.dim, 1, width=cfg.width, depth=cfg.depth, activation="relu", rngs=nnx.Rngs(seed)
    )


def _loss(apply_fn: Any, params: Any, batch: Any) -> Any:
    x, y = batch
    logits = apply_fn(params, x)[:, 0]
    loss = losses.binary_cross_entropy(logits, y)
    return loss, {"accuracy": jnp.mean((logits > 0) == (y > 0.5))}


def _final(a: np.ndarray) -> np.ndarray:
    """Mean over the last 10% of steps (non-finite stays non-finite)."""
    n = max(1, a.shape[-1] // 10)
    return a[..., -n:].mean(-1)


def run(cfg: Config, seeds: int, out: Path, first_seed: int = 0) -> dict[str, Any]:
    """Trains every initialiser on ``seeds`` seeds in one vmapped run; returns the result."""
    names = _inits(cfg)
    apply_fn, _ = nn.pure(_model(cfg, 0))
    seed_ids = range(first_seed, first_seed + seeds)
    base = [nn.pure(_model(cfg, 1000 + s))[1] for s in seed_ids]
    params = stack_trees([from_lecun(b, n, _KERNELS) for n in names for b in base])
    # paired design: seed s has the same weight noise and data under every initialiser
    keys = jnp.stack([jax.random.key(s) for _ in names for s in seed_ids])
    data = functools.partial(
        tasks.gaussian_mixture, batch=cfg.batch, dim=cfg.dim, separation=cfg.separation
    )
    layer_steps = (0, cfg.steps // 10, cfg.steps - 1)
    options = TrainOptions(
        chunk=max(1, cfg.steps // 10),
        layer_steps=layer_steps,
        stacked=("w_hidden", "b_hidden"),
        description=NAME,
        fast_compile=cfg.fast_compile,
    )
    opt = optax.sgd(cfg.lr, momentum=cfg.momentum)
    loss_fn = functools.partial(_loss, apply_fn)
    _, hist = train_many(loss_fn, params, data, opt, cfg.steps, keys, options=options)
    shape = (len(names), seeds)
    loss = np.asarray(hist.loss).reshape(*shape, -1)
    acc = np.asarray(hist.metrics["accuracy"]).reshape(*shape, -1)
    hidden = [f"w_hidden[{i}]" for i in range(cfg.depth)]
    idx = [hist.layer_names.index(n) for n in hidden]
    layer = np.asarray(hist.layer_norms)[..., idx].reshape(*shape, len(layer_steps), cfg.depth)
    final_loss, final_acc = _final(loss), _final(acc)
    results = {
        "inits": names,
        "final_loss": final_loss,
        "final_accuracy": final_acc,
        "initial_loss": loss[..., 0],
        "bayes_accuracy": tasks.gaussian_mixture_bayes_accuracy(cfg.separation),
        "baseline_loss": tasks.BCE_BASELINE,
        "layer_steps": list(layer_steps),
        "hidden_grad_norm_median": np.median(layer, axis=1),
    }
    claims = _claims(names, final_loss, layer, cfg)
    figures = _figures(names, loss, layer, layer_steps, cfg, out)
    return {"config": dataclasses.asdict(cfg), "claims": claims, "results": results,
            "figures": figures}  # fmt: skip


def _claims(names: list[str], final: np.ndarray, layer: np.ndarray, cfg: Config) -> list[Claim]:
    he, gl, lc = (names.index(n) for n in ("he_normal", "glorot_normal", "lecun_normal"))
    trained, stalled = 0.5 * tasks.BCE_BASELINE, 0.9 * tasks.BCE_BASELINE
    fin = np.where(np.isfinite(final), final, np.inf)
    claims = [
        claim_all(
            f"He init trains the {cfg.depth}-layer ReLU MLP: final loss below half of ln 2",
            fin[he], f"final loss < {trained:.4f}", fin[he] < trained,
        ),
        claim_all(
            f"Glorot init stalls at depth {cfg.depth}: final loss stays above 0.9 ln 2",
            fin[gl], f"final loss > {stalled:.4f}", fin[gl] > stalled,
        ),
        claim_all(
            "LeCun init (= Glorot for square layers) stalls too",
            fin[lc], f"final loss > {stalled:.4f}", fin[lc] > stalled,
        ),
    ]  # fmt: skip
    # step 0: every hidden layer's weight gradient under Glorot vs He, same seed and data
    ratio = np.max(layer[gl, :, 0] / layer[he, :, 0], axis=-1)
    predicted = 2.0 ** (-cfg.depth / 2)
    claims.append(
        claim_all(
            "At step 0, Glorot's weight gradients are orders of magnitude smaller than He's "
            f"at every hidden layer (theory: about 2^-{cfg.depth}/2 = {predicted:.1e})",
            ratio, "max over layers of |dW_l| Glorot / He < 1e-2", ratio < 1e-2,
        )
    )  # fmt: skip
    return claims


_LABELS = {
    "he_normal": "He",
    "glorot_normal": "Glorot",
    "lecun_normal": "LeCun",
    "lecture_glorot": "lecture 2/sqrt(n_in + n_out)",
}


def _label(name: str) -> str:
    return _LABELS.get(name) or f"lecture K/sqrt(n), K = {name.partition(':')[2]}"


def _figures(
    names: list[str],
    loss: np.ndarray,
    layer: np.ndarray,
    layer_steps: tuple[int, ...],
    cfg: Config,
    out: Path,
) -> list[str]:
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    ax_loss, ax_grad = fig.subplots(1, 2)
    steps = np.arange(loss.shape[-1])
    for i, name in enumerate(names):
        color = plots.PALETTE[i % len(plots.PALETTE)]
        finite = np.where(np.isfinite(loss[i]), loss[i], np.nan)
        with warnings.catch_warnings():  # all-NaN steps (every seed diverged) stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(finite, axis=0)
        ax_loss.plot(steps, med, color=color, label=_label(name), lw=1.5)
        for s in range(loss.shape[1]):
            ax_loss.plot(steps, finite[s], color=color, lw=0.4, alpha=0.3)
        ax_grad.plot(np.arange(1, cfg.depth + 1), np.median(layer[i, :, 0], axis=0), color=color)
        ax_grad.plot(
            np.arange(1, cfg.depth + 1), np.median(layer[i, :, -1], axis=0), color=color, ls="--"
        )
    ax_loss.axhline(tasks.BCE_BASELINE, color="k", ls=":", label="ln 2 (constant prediction)")
    ax_loss.set_yscale("log")
    ax_loss.set_ylim(0.05, 5.0)  # diverging runs leave through the top
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (BCE)")
    ax_loss.set_title(f"ReLU MLP, depth {cfg.depth}, SGD+momentum (median, thin: seeds)")
    ax_loss.legend(fontsize=7)
    ax_grad.set_yscale("log")
    ax_grad.set_xlabel("hidden layer l")
    ax_grad.set_ylabel(r"$\|\partial L/\partial W_l\|_F$ (median over seeds)")
    ax_grad.set_title(f"per-layer gradient norms: step 0 (solid), step {layer_steps[-1]} (dashed)")
    plots.save(fig, out / "init_depth")
    return ["init_depth.png", "init_depth.svg"]
