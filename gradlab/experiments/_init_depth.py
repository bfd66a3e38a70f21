"""``init-depth``: He vs Glorot init in a 30-layer ReLU MLP, with a learning-rate sweep and Adam.

He et al. (2015, Fig. 3): with ReLU, weights ``N(0, 2/n)`` keep the signal's and the gradient's
scale through depth, and a 30-layer net trains with SGD; Glorot's ``1/fan_avg`` (``1/n`` on the
square hidden layers, where it equals LeCun's) halves the squared norm at every layer and the
net stalls. Here that is measured on :func:`gradlab.train.tasks.shells` (inside or outside a
sphere), which no linear model can learn: its best linear loss is exactly ``ln 2``, so
"trains" means the network learned a non-linear function.

With zero biases a ReLU network is positively homogeneous, so a Glorot net is a He net with
every layer scaled: layer ``k`` by ``c_k`` (``c² = 1/2`` on hidden layers, ``(2/(d+w))/(2/d)``
on the input layer, ``(2/(w+1))/(2/w)`` on the readout). At step 0 the weight gradient of
layer ``l`` is therefore ``∏_{k≠l} c_k`` times He's, up to the loss-derivative factor (order 1):
``2^{-14.5} · 0.447 · 0.992 = 1.92e-5`` at depth 30, width 64, input 16.

The controls: the same "stall" rule at depth 4 (where Glorot trains), the same "trains" rule
for the best linear model, SGD at every learning rate of a sweep for both initialisers, and an
Adam arm (Adam's per-parameter step ignores the gradient's scale, so Glorot trains with it:
the stall is SGD's).
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
from gradlab.experiments._baselines import linear_baseline
from gradlab.experiments._figures import loss_curves
from gradlab.experiments._result import Claim, Threshold, fraction_claim, ratio_claim
from gradlab.experiments._scaling import from_lecun, gaussian_init
from gradlab.experiments._stats import SeedSplit
from gradlab.train import TrainOptions, stack_trees, tasks, train_many

NAME = "init-depth"
SUMMARY = "30-layer ReLU MLP on a non-linear task: He trains, Glorot stalls under SGD at every lr"


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the experiment (see :data:`CONFIGS`)."""

    depth: int = 30
    control_depth: int = 4
    width: int = 64
    dim: int = 16
    batch: int = 64
    steps: int = 300
    lrs: tuple[float, ...] = (0.002, 0.005, 0.01)
    momentum: float = 0.9
    adam_lr: float = 1e-3
    seeds: int = 8
    dev_seeds: int = 0
    fast_compile: bool = False


CONFIGS = {
    "tiny": Config(width=8, dim=4, batch=8, steps=10, lrs=(0.01,), seeds=2, fast_compile=True),
    "default": Config(),
    "large": Config(width=256, dim=32, batch=256, steps=1500, seeds=32),
}

INITS = ("he_normal", "glorot_normal")
_KERNELS = {"w_in": None, "w_hidden": 0, "w_out": None}
_LABELS = {"he_normal": "He", "glorot_normal": "Glorot"}

#: A run "trains" when its final loss is below this fraction of ln 2, the best linear model's
#: loss on the shells task (and "stalls" when it stays above it).
TRAINED_FRACTION = 0.9


def _model(cfg: Config, depth: int, seed: int) -> nnx.Module:
    """The MLP with LeCun-normal kernels; :func:`from_lecun` turns them into the others."""
    return nn.MLP(cfg.dim, 1, width=cfg.width, depth=depth, activation="relu", rngs=nnx.Rngs(seed))


def _loss(apply_fn: Any, params: Any, batch: Any) -> Any:
    x, y = batch
    logits = apply_fn(params, x)[:, 0]
    loss = losses.binary_cross_entropy(logits, y)
    return loss, {"accuracy": jnp.mean((logits > 0) == (y > 0.5))}


def _sgd_or_adam(h: dict[str, Any]) -> optax.GradientTransformation:
    """SGD + momentum at ``h["lr"]``, or Adam when ``h["adam"]`` is 1 (vmappable: both run)."""
    sgd, adam = optax.sgd(h["lr"], momentum=h["momentum"]), optax.adam(h["lr"])

    def init(params: Any) -> Any:
        return sgd.init(params), adam.init(params)

    def update(grads: Any, state: Any, params: Any = None) -> Any:
        u_sgd, s_sgd = sgd.update(grads, state[0], params)
        u_adam, s_adam = adam.update(grads, state[1], params)
        pick = lambda a, b: h["adam"] * b + (1.0 - h["adam"]) * a
        return jax.tree.map(pick, u_sgd, u_adam), (s_sgd, s_adam)

    return optax.GradientTransformation(init, update)


def _final(a: np.ndarray) -> np.ndarray:
    """Mean over the last 10% of steps; a diverged run's is ``inf``."""
    n = max(1, a.shape[-1] // 10)
    with np.errstate(invalid="ignore", over="ignore"):
        v = a[..., -n:].mean(-1)
    return np.where(np.isfinite(v), v, np.inf)


def _train(
    cfg: Config, depth: int, arms: list[tuple[str, float, bool]], seeds: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Trains ``arms`` (initialiser, lr, adam) x ``seeds`` in one vmapped program."""
    apply_fn, _ = nn.pure(_model(cfg, depth, 0))
    base = [nn.pure(_model(cfg, depth, 10_000 + s))[1] for s in seeds]
    # paired design: a seed has the same weight noise and data under every arm
    params = stack_trees([from_lecun(b, init, _KERNELS) for init, _, _ in arms for b in base])
    keys = jnp.stack([jax.random.key(s) for _ in arms for s in seeds])
    hparams = {
        "lr": jnp.array([lr for _, lr, _ in arms for _ in seeds], jnp.float32),
        "adam": jnp.array([float(a) for _, _, a in arms for _ in seeds], jnp.float32),
        "momentum": jnp.full(len(arms) * len(seeds), cfg.momentum, jnp.float32),
    }
    data = functools.partial(tasks.shells, batch=cfg.batch, dim=cfg.dim)
    options = TrainOptions(
        chunk=max(1, cfg.steps // 5),
        layer_steps=(0,),
        stacked=("w_hidden", "b_hidden"),
        description=f"{NAME} depth {depth}",
        fast_compile=cfg.fast_compile,
    )
    loss_fn = functools.partial(_loss, apply_fn)
    _, hist = train_many(
        loss_fn, params, data, _sgd_or_adam, cfg.steps, keys, hparams=hparams, options=options
    )
    shape = (len(arms), len(seeds))
    idx = [hist.layer_names.index(f"w_hidden[{i}]") for i in range(depth)]
    return {
        "loss": np.asarray(hist.loss).reshape(*shape, -1),
        "grad0": np.asarray(hist.layer_norms)[:, 0][..., idx].reshape(*shape, depth),
    }


def theory_ratio(cfg: Config, depth: int) -> float:
    """``∏_{k≠l} c_k``: Glorot's step-0 hidden weight gradient over He's (see the module doc).

    >>> round(theory_ratio(Config(), 30), 7)
    1.92e-05
    """
    he, _ = gaussian_init("he_normal")
    gl, _ = gaussian_init("glorot_normal")
    c2_hidden = (gl / cfg.width) / (he / cfg.width)
    c2_in = (gl / ((cfg.dim + cfg.width) / 2)) / (he / cfg.dim)
    c2_out = (gl / ((cfg.width + 1) / 2)) / (he / cfg.width)
    return math.sqrt(c2_hidden ** (depth - 1) * c2_in * c2_out)


def run(cfg: Config, seeds: SeedSplit, out: Path) -> dict[str, Any]:
    """Trains every arm on the evaluation seeds (the thresholds come from theory)."""
    ev = seeds.evaluation
    arms = [(i, lr, False) for i in INITS for lr in cfg.lrs] + [
        ("glorot_normal", cfg.adam_lr, True)
    ]
    deep = _train(cfg, cfg.depth, arms, ev)
    control_arms = [(i, lr, False) for i in INITS for lr in cfg.lrs]
    shallow = _train(cfg, cfg.control_depth, control_arms, ev)
    linear = linear_baseline(cfg.dim, cfg.batch, cfg.steps, ev)
    final = {f"{i} lr={lr:g}{' adam' if a else ''}": _final(deep["loss"][k])
             for k, (i, lr, a) in enumerate(arms)}  # fmt: skip
    final_control = {f"{i} lr={lr:g}": _final(shallow["loss"][k])
                     for k, (i, lr, _) in enumerate(control_arms)}  # fmt: skip
    n_lr = len(cfg.lrs)
    results = {
        "task": "shells",
        "linear_baseline_loss": {"theory": tasks.BCE_BASELINE, "measured": _final(linear)},
        "bayes_floor_loss": tasks.shells_bayes_loss(0.0),
        "final_loss": final,
        f"final_loss_depth_{cfg.control_depth}": final_control,
        "step0_hidden_grad_norm_median": {
            _LABELS[i]: np.median(deep["grad0"][k * n_lr], axis=0) for k, i in enumerate(INITS)
        },
    }
    claims = _claims(cfg, deep, shallow, _final(linear))
    figures = _figures(cfg, arms, deep, shallow, linear, out)
    return {"config": dataclasses.asdict(cfg), "claims": claims, "results": results,
            "figures": figures}  # fmt: skip


def _claims(cfg: Config, deep: dict, shallow: dict, linear: np.ndarray) -> list[Claim]:
    n = len(cfg.lrs)
    fin, fin_c = _final(deep["loss"]), _final(shallow["loss"])  # (arms, seeds)
    he, gl, adam = fin[:n], fin[n : 2 * n], fin[2 * n]
    gl_c = fin_c[n : 2 * n]
    value = TRAINED_FRACTION * tasks.BCE_BASELINE
    where = (
        f"{TRAINED_FRACTION:g} x ln 2, the best linear model's loss on the shells task (exact: the "
        "task is symmetric under x -> -x, so the best linear logit is constant)"
    )
    trains = Threshold("final loss < {value:.4f}", value, "theory", where)
    stalls = Threshold("final loss > {value:.4f}", value, "theory", where)
    lrs = ", ".join(f"{lr:g}" for lr in cfg.lrs)
    d, dc = cfg.depth, cfg.control_depth
    claims = [
        fraction_claim(
            f"He init trains the {d}-layer ReLU MLP with SGD+momentum at every learning rate "
            f"of the sweep ({lrs}): its worst final loss beats every linear model",
            trains, he.max(0) < value,
            control_text="the best linear model (logistic regression, Adam) reaches the same "
            "loss (the task needs a non-linear function)",
            control_passed=linear < value,
            evidence={"worst_final_loss": he.max(0)}, control_evidence={"final_loss": linear},
        ),
        fraction_claim(
            f"Glorot init stalls at depth {d} under SGD+momentum at every learning rate of the "
            f"sweep ({lrs}): its best final loss stays near ln 2",
            stalls, gl.min(0) > value,
            control_text=f"Glorot stalls at depth {dc} too (at its best learning rate)",
            control_passed=gl_c.min(0) > value,
            evidence={"best_final_loss": gl.min(0)},
            control_evidence={"best_final_loss": gl_c.min(0)},
        ),
        fraction_claim(
            f"The stall is SGD's: Glorot init trains at depth {d} with Adam (lr {cfg.adam_lr:g}), "
            "whose per-parameter step does not scale with the gradient",
            trains, adam < value,
            control_text=f"Glorot trains at depth {d} with SGD+momentum (its best learning rate)",
            control_passed=gl.min(0) < value,
            evidence={"final_loss": adam}, control_evidence={"best_final_loss": gl.min(0)},
        ),
    ]  # fmt: skip
    theory = theory_ratio(cfg, d)
    ratio = _gmean(deep["grad0"][n] / deep["grad0"][0])  # Glorot / He, same lr index 0
    ratio_c = _gmean(shallow["grad0"][n] / shallow["grad0"][0])
    band = Threshold(
        "median of log10 ratio within 1 of log10({value:.2e})",
        theory,
        "theory",
        "prod over the other layers of the Glorot/He weight scale c_k (ReLU nets are "
        f"homogeneous), depth {d}, width {cfg.width}, input {cfg.dim}; the band allows the "
        "order-1 loss-derivative factor",
    )
    claims.append(
        ratio_claim(
            f"At step 0 Glorot's hidden-layer weight gradients are {theory:.1e} times He's "
            "(geometric mean over layers; within a factor 10), as the product of the layers' "
            "scale factors predicts",
            band, ratio, within=10.0,
            control_text=f"the same ratio at depth {dc} matches the depth-{d} prediction",
            control_ratios=ratio_c,
            evidence={"theory": theory, "per_seed": ratio},
            control_evidence={"theory_at_control_depth": theory_ratio(cfg, dc)},
        )
    )  # fmt: skip
    return claims


def _gmean(r: np.ndarray) -> np.ndarray:
    """Geometric mean over the last axis (the hidden layers)."""
    with np.errstate(divide="ignore"):
        return np.exp(np.mean(np.log(r), axis=-1))


def _figures(
    cfg: Config,
    arms: list[tuple[str, float, bool]],
    deep: dict,
    shallow: dict,
    linear: np.ndarray,
    out: Path,
) -> list[str]:
    fig = Figure(figsize=(15.0, 4.4), layout="constrained")
    ax_loss, ax_lr, ax_grad = fig.subplots(1, 3)
    top = 3.0
    n = len(cfg.lrs)
    best = n - 1  # the largest lr of the sweep
    shown = [(0 * n + best, "He, SGD"), (1 * n + best, "Glorot, SGD"), (2 * n, "Glorot, Adam")]
    for c, (k, label) in enumerate(shown):
        lr = arms[k][1]
        loss_curves(ax_loss, deep["loss"][k], color=plots.PALETTE[c], label=f"{label} lr {lr:g}",
                    top=top)  # fmt: skip
    loss_curves(ax_loss, linear, color="gray", label="best linear model", top=top, ls="--")
    value = TRAINED_FRACTION * tasks.BCE_BASELINE
    ax_loss.axhline(value, color="k", ls=":", lw=1, label=f"{TRAINED_FRACTION:g} ln 2 (rule)")
    ax_loss.set_yscale("log")
    ax_loss.set_ylim(0.1, top)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (BCE)")
    ax_loss.set_title(f"depth {cfg.depth}, shells task (thin: seeds)")
    ax_loss.legend(fontsize=7)
    fin, fin_c = _final(deep["loss"]), _final(shallow["loss"])
    for c, init in enumerate(INITS):
        for f, ls, d in ((fin, "-", cfg.depth), (fin_c, "--", cfg.control_depth)):
            v = np.minimum(f[c * n : (c + 1) * n], top)
            ax_lr.plot(cfg.lrs, np.median(v, axis=1), color=plots.PALETTE[c], ls=ls, marker="o",
                       label=f"{_LABELS[init]}, depth {d}")  # fmt: skip
            for j, lr in enumerate(cfg.lrs):
                ax_lr.scatter(np.full(v.shape[1], lr), v[j], color=plots.PALETTE[c], s=8)
    ax_lr.axhline(value, color="k", ls=":", lw=1)
    ax_lr.set_xscale("log")
    ax_lr.set_yscale("log")
    ax_lr.set_xlabel("SGD learning rate")
    ax_lr.set_ylabel("final loss (last 10% of steps)")
    ax_lr.set_title("learning-rate sweep (dots: seeds; capped at the top)")
    ax_lr.legend(fontsize=7)
    layers = np.arange(1, cfg.depth + 1)
    for c, init in enumerate(INITS):
        ax_grad.plot(layers, np.median(deep["grad0"][c * n], axis=0), color=plots.PALETTE[c],
                     label=_LABELS[init])  # fmt: skip
    he = np.median(deep["grad0"][0], axis=0)
    ax_grad.plot(layers, he * theory_ratio(cfg, cfg.depth), color="k", ls=":",
                 label="He x theory ratio")  # fmt: skip
    ax_grad.set_yscale("log")
    ax_grad.set_xlabel("hidden layer l")
    ax_grad.set_ylabel(r"$\|\partial L/\partial W_l\|_F$ at step 0 (median over seeds)")
    ax_grad.set_title("per-layer weight gradients at initialisation")
    ax_grad.legend(fontsize=7)
    plots.save(fig, out / "init_depth")
    return ["init_depth.png", "init_depth.svg"]
