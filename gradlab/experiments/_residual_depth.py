"""``residual-depth``: plain vs residual stacks at depth 50-100 on a task no linear model learns.

He et al. (2016) made very deep networks trainable with identity skips. With He-initialised
branches ``F(h) = W_2 relu(W_1 h + b_1) + b_2`` the stream's variance grows ``×3`` per block
(``Var h_l = Var h_{l-1} + 2 Var h_{l-1}``), ``3^depth`` at init, so the branches need scaling
down. Per block, a weight gradient is ``‖h_{l-1}‖ · ‖∂L/∂h_l‖ ∝ 3^{(l-1)/2} · 3^{(depth-l)/2}``:
every block's gradient grows like ``3^{depth/2}``, which the experiment measures at init
between two depths and compares with ``×2`` (``2^{depth/2}``), the rate a single He layer per
block would give.

The variants: ``plain`` (He MLP), ``residual`` (unscaled He branches), ``rezero`` (Bachlechner
et al. 2020: every branch times a learned scalar that starts at 0), ``branch-scaled`` (the
branch's last layer multiplied by ``depth^-1/2``: a variance-only scaling, which keeps the
sum of the branch variances O(1) and nothing else of Fixup) and ``zero-branch`` (the branch's
last layer starts at zero and its first layer is scaled by ``depth^-1/2``: Fixup's
initialisation without its scalar biases and multiplier) and ``fixup`` (Fixup itself, Zhang et
al. 2019, for two-layer branches: the branch's last layer and the readout start at zero, its
first layer is He's scaled by ``depth^{-1/(2m-2)} = depth^-1/2``, a scalar bias (init 0) before
each weight layer and the activation, a scalar multiplier (init 1) on every branch, and a
scalar bias before the readout). The task is
:func:`gradlab.train.tasks.shells`: ReZero and ``zero-branch`` start as a linear map of the
input, and the best linear model's loss there is ``ln 2``, so "trains" means more than a
linear model can do.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from matplotlib.figure import Figure

from gradlab import init, losses, nn, plots
from gradlab.experiments._baselines import linear_baseline
from gradlab.experiments._figures import loss_curves
from gradlab.experiments._result import Claim, Threshold, fraction_claim, ratio_claim
from gradlab.experiments._stats import SeedSplit
from gradlab.train import TrainOptions, layer_grad_norms, stack_trees, tasks, train_many

NAME = "residual-depth"
SUMMARY = "plain vs residual vs ReZero vs Fixup ReLU stacks at depth 50-100 (x3 per block)"

ARCHS = ("plain", "residual", "rezero", "branch-scaled", "zero-branch", "fixup")
_BLOCK_LEAVES = frozenset(
    {"w_hidden", "b_hidden", "kernel1", "bias1", "kernel2", "bias2", "alpha", "shifts", "scale"}
)
FIXUP_M = 2
"""Weight layers per residual branch (Fixup scales them by ``depth^{-1/(2m-2)}``)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the experiment."""

    depths: tuple[int, ...] = (50, 100)
    probe_depths: tuple[int, int] = (10, 30)
    width: int = 32
    dim: int = 16
    batch: int = 64
    steps: int = 200
    lr: float = 0.01
    momentum: float = 0.9
    seeds: int = 8
    dev_seeds: int = 0
    fast_compile: bool = False


CONFIGS = {
    "tiny": Config(
        depths=(20,),
        probe_depths=(4, 8),
        width=8,
        dim=4,
        batch=16,
        steps=20,
        seeds=2,
        fast_compile=True,
    ),
    "default": Config(),
    "large": Config(depths=(50, 100, 150), width=128, batch=256, steps=2000, seeds=16),
}


def block_group(path: tuple[str, ...]) -> str:
    """Groups the stacked per-block leaves of either architecture into one ``"block"`` layer.

    >>> block_group(("kernel2",)), block_group(("w_out",))
    ('block', 'w_out')
    """
    return "block" if path[0] in _BLOCK_LEAVES else path[0]


def _model(cfg: Config, arch: str, depth: int, seed: int) -> nnx.Module:
    rngs = nnx.Rngs(seed)
    if arch == "plain":
        return nn.MLP(cfg.dim, 1, width=cfg.width, depth=depth, activation="relu",
                      kernel_init=init.he_normal, rngs=rngs)  # fmt: skip
    scales: dict[str, Literal["rezero", "fixup"] | None] = {
        "residual": None, "rezero": "rezero", "branch-scaled": "fixup", "zero-branch": None
    }  # fmt: skip
    scale = scales[arch]
    return nn.ResidualStack(cfg.dim, 1, width=cfg.width, depth=depth, branch_scale=scale,
                            kernel_init=init.he_normal, rngs=rngs)  # fmt: skip


def fixup_params(cfg: Config, depth: int, seed: int) -> dict[str, jax.Array]:
    """Fixup (Zhang et al. 2019) for ``depth`` blocks ``h + s (W_2 relu(W_1 (h + a) + b) + c) + d``.

    The input projection is He-initialised; each branch's ``W_1`` is He's times
    ``depth^{-1/(2m-2)}`` (``m = 2``), its ``W_2`` and the readout start at zero; ``shifts``
    holds the four scalar biases ``a, b, c, d`` per block (init 0), ``scale`` the multiplier
    ``s`` (init 1); ``out_shift`` is the scalar bias before the readout.

    >>> p = fixup_params(Config(width=4, dim=3), depth=5, seed=0)
    >>> p["kernel1"].shape, p["shifts"].shape, float(p["kernel2"].std()), float(p["scale"][0])
    ((5, 4, 4), (5, 4), 0.0, 1.0)
    """
    k_in, k1 = jax.random.split(jax.random.key(seed))
    w = cfg.width
    branch = depth ** (-1.0 / (2 * FIXUP_M - 2))
    return {
        "in_kernel": init.he_normal(k_in, (cfg.dim, w)),
        "in_bias": jnp.zeros(w),
        "kernel1": init.stacked(init.he_normal)(k1, (depth, w, w)) * branch,
        "kernel2": jnp.zeros((depth, w, w)),
        "shifts": jnp.zeros((depth, 4)),
        "scale": jnp.ones(depth),
        "out_shift": jnp.zeros(()),
        "out_kernel": jnp.zeros((w, 1)),
        "out_bias": jnp.zeros(1),
    }


def fixup_apply(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """The Fixup stack's logits, ``(batch, 1)``."""

    def block(h: jax.Array, p: tuple[jax.Array, ...]) -> tuple[jax.Array, None]:
        k1, k2, (a, b, c, d), s = p
        f = jax.nn.relu((h + a) @ k1 + b)
        return h + s * ((f + c) @ k2) + d, None

    h = x @ params["in_kernel"] + params["in_bias"]
    blocks = (params["kernel1"], params["kernel2"], params["shifts"], params["scale"])
    h, _ = jax.lax.scan(block, h, blocks)
    return (h + params["out_shift"]) @ params["out_kernel"] + params["out_bias"]


def _apply_fn(cfg: Config, arch: str, depth: int) -> Any:
    if arch == "fixup":
        return fixup_apply
    return nn.pure(_model(cfg, arch, depth, 0))[0]


def _params(cfg: Config, arch: str, depth: int, seed: int) -> Any:
    if arch == "fixup":
        return fixup_params(cfg, depth, seed)
    params = nn.pure(_model(cfg, arch, depth, seed))[1]
    if arch != "zero-branch":
        return params
    # Fixup's initialisation (Zhang et al. 2019) for two-layer branches: the branch's last
    # layer starts at zero (every block is the identity), its first layer scaled by depth^-1/2.
    scale = lambda path, w: (w * 0 if path[0].key == "kernel2" else
                             w * depth**-0.5 if path[0].key == "kernel1" else w)  # fmt: skip
    return jax.tree_util.tree_map_with_path(scale, params)


def _loss(apply_fn: Any, params: Any, batch: Any) -> Any:
    x, y = batch
    logits = apply_fn(params, x)[:, 0]
    return losses.binary_cross_entropy(logits, y), {"accuracy": jnp.mean((logits > 0) == y)}


#: Architectures with the same parameters and forward pass (they differ only in their init):
#: each group trains in one vmapped program.
_GROUPS = (("plain",), ("rezero",), ("residual", "branch-scaled", "zero-branch"), ("fixup",))


def _train(cfg: Config, archs: tuple[str, ...], depth: int, seed_ids: tuple[int, ...]) -> dict:
    """Trains a group of architectures together; returns ``{arch: measurements}``."""
    apply_fn = _apply_fn(cfg, archs[0], depth)
    params = stack_trees([_params(cfg, a, depth, 10_000 + s) for a in archs for s in seed_ids])
    keys = jnp.stack([jax.random.key(s) for _ in archs for s in seed_ids])
    data = functools.partial(tasks.shells, batch=cfg.batch, dim=cfg.dim)
    options = TrainOptions(
        chunk=max(1, cfg.steps // 5),
        layer_steps=(0, cfg.steps - 1),
        group_by=block_group,
        stacked=("block",),
        description=f"{NAME} {'/'.join(archs)} depth {depth}",
        fast_compile=cfg.fast_compile,
    )
    opt = optax.sgd(cfg.lr, momentum=cfg.momentum)
    loss_fn = functools.partial(_loss, apply_fn)
    _, hist = train_many(loss_fn, params, data, opt, cfg.steps, keys, options=options)
    blocks = [hist.layer_names.index(f"block[{i}]") for i in range(depth)]
    n = len(seed_ids)
    split = lambda a: np.asarray(a).reshape(len(archs), n, *np.shape(a)[1:])
    loss, grad = split(hist.loss), split(hist.grad_norm)
    layers = split(np.asarray(hist.layer_norms)[..., blocks])  # (archs, seeds, 2, depth)
    return {
        a: {"loss": loss[i], "grad_norm": grad[i], "block_grad_norms": layers[i]}
        for i, a in enumerate(archs)
    }


def _final(loss: np.ndarray) -> np.ndarray:
    n = max(1, loss.shape[-1] // 10)
    with np.errstate(invalid="ignore", over="ignore"):
        v = loss[..., -n:].mean(-1)
    return np.where(np.isfinite(v), v, np.inf)


def _block_grads_at_init(cfg: Config, arch: str, depth: int, seeds: tuple[int, ...]) -> Any:
    """Median over blocks of ``‖∂L/∂θ_block‖`` at init, per seed (one batch of 256)."""
    apply_fn, _ = nn.pure(_model(cfg, arch, depth, 0))
    params = stack_trees([_params(cfg, arch, depth, 10_000 + s) for s in seeds])
    batch = tasks.shells(jax.random.key(7), batch=256, dim=cfg.dim)

    def one(p: Any) -> Any:
        grads = jax.grad(lambda q: _loss(apply_fn, q, batch)[0])(p)
        return layer_grad_norms(grads, group_by=block_group, stacked=("block",))

    names, _ = one(jax.tree.map(lambda a: a[0], params))
    norms = jax.jit(jax.vmap(lambda p: one(p)[1]))(params)
    idx = [names.index(f"block[{i}]") for i in range(depth)]
    return np.median(np.asarray(norms)[:, idx], axis=1)


def run(cfg: Config, split: SeedSplit, out: Path) -> dict[str, Any]:
    """Trains every architecture at every depth on the evaluation seeds; returns the result."""
    seed_ids = split.evaluation
    runs = {
        (a, d): r
        for d in cfg.depths
        for group in _GROUPS
        for a, r in _train(cfg, group, d, seed_ids).items()
    }
    final = {a: np.array([_final(runs[(a, d)]["loss"]) for d in cfg.depths]) for a in ARCHS}
    d1, d2 = cfg.probe_depths
    probe = {a: {d: _block_grads_at_init(cfg, a, d, seed_ids) for d in (d1, d2)}
             for a in ("residual", "branch-scaled")}  # fmt: skip
    linear = linear_baseline(cfg.dim, cfg.batch, cfg.steps, seed_ids)
    results = {
        "depths": list(cfg.depths),
        "final_loss": final,  # (depths, seeds); inf = diverged
        "initial_grad_norm": {
            a: [runs[(a, d)]["grad_norm"][:, 0] for d in cfg.depths] for a in ARCHS
        },
        "block_grad_norm_at_init": {a: {str(d): v for d, v in p.items()} for a, p in probe.items()},
        "task": "shells",
        "linear_baseline_loss": {"theory": tasks.BCE_BASELINE, "measured": _final(linear)},
        "bayes_floor_loss": tasks.shells_bayes_loss(0.0),
    }
    return {"config": dataclasses.asdict(cfg), "claims": _claims(cfg, final, probe, _final(linear)),
            "results": results, "figures": _figures(cfg, runs, final, out)}  # fmt: skip


TRAINED_FRACTION = 0.9


def _claims(
    cfg: Config, final: dict[str, np.ndarray], probe: dict, linear: np.ndarray
) -> list[Claim]:
    value = TRAINED_FRACTION * tasks.BCE_BASELINE
    trains = Threshold(
        "final loss < {value:.4f} at every depth", value, "theory",
        f"{TRAINED_FRACTION:g} x ln 2, the best linear model's loss on the shells task",
    )  # fmt: skip
    worst = {a: final[a].max(axis=0) for a in ARCHS}  # worst depth, per seed
    depths = ", ".join(map(str, cfg.depths))
    d1, d2 = cfg.probe_depths
    theory = 3.0 ** ((d2 - d1) / 2)
    growth = Threshold(
        "median of log10 ratio within 1 of log10({value:.3g})", theory, "theory",
        f"3^(({d2} - {d1})/2): the stream's variance grows x3 per block with He branches, and "
        "every block's weight gradient like 3^(depth/2); x2 per block would give "
        f"{2.0 ** ((d2 - d1) / 2):.3g}",
    )  # fmt: skip
    ratio = probe["residual"][d2] / probe["residual"][d1]
    ratio_c = probe["branch-scaled"][d2] / probe["branch-scaled"][d1]
    return [
        fraction_claim(
            f"ReZero trains at every depth ({depths}) beyond what any linear model reaches",
            trains, worst["rezero"] < value,
            control_text="the best linear model (logistic regression, Adam) reaches it",
            control_passed=linear < value,
            evidence={"worst_final_loss": worst["rezero"]},
            control_evidence={"final_loss": linear},
        ),
        fraction_claim(
            f"The zero-branch stack (Fixup's initialisation) trains at every depth ({depths})",
            trains, worst["zero-branch"] < value,
            control_text="the unscaled residual stack (He branches) trains at every depth",
            control_passed=worst["residual"] < value,
            evidence={"worst_final_loss": worst["zero-branch"]},
            control_evidence={"worst_final_loss": worst["residual"]},
        ),
        fraction_claim(
            f"Fixup (scalar biases and multipliers, zero-initialised last branch layers and "
            f"readout) trains at every depth ({depths})",
            trains, worst["fixup"] < value,
            control_text="the unscaled residual stack (He branches) trains at every depth",
            control_passed=worst["residual"] < value,
            evidence={"worst_final_loss": worst["fixup"]},
            control_evidence={"worst_final_loss": worst["residual"]},
        ),
        ratio_claim(
            "With He branches the stream's variance grows x3 per block, so the per-block weight "
            f"gradient at init grows like 3^(depth/2): from depth {d1} to {d2} by {theory:.3g} "
            "(within a factor 10; x2 per block would give 1.8 decades less)",
            growth, ratio, within=10.0,
            control_text="the branch-scaled stack (last branch layer x depth^-1/2) grows the same",
            control_ratios=ratio_c,
            evidence={"per_seed": ratio}, control_evidence={"per_seed": ratio_c},
        ),
    ]  # fmt: skip


def _figures(cfg: Config, runs: dict, final: dict[str, np.ndarray], out: Path) -> list[str]:
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    ax_f, ax_l = fig.subplots(1, 2)
    cap = 10 * tasks.BCE_BASELINE  # diverged runs are drawn at the top, as crosses
    for i, arch in enumerate(ARCHS):
        color = plots.PALETTE[i]
        shown = np.minimum(final[arch], cap)
        ax_f.plot(cfg.depths, np.median(shown, axis=1), color=color, marker="o", label=arch)
        for j, d in enumerate(cfg.depths):
            x = np.full(shown.shape[1], d * (1 + 0.02 * (i - 2)))
            bad = ~np.isfinite(final[arch][j]) | (final[arch][j] >= cap)
            ax_f.scatter(x[~bad], shown[j][~bad], color=color, s=10)
            ax_f.scatter(x[bad], np.full(bad.sum(), cap), color=color, marker="x", s=40,
                         clip_on=False)  # fmt: skip
        loss_curves(ax_l, runs[(arch, max(cfg.depths))]["loss"], color=color, label=arch, top=cap)
    value = TRAINED_FRACTION * tasks.BCE_BASELINE
    for ax in (ax_f, ax_l):
        ax.axhline(tasks.BCE_BASELINE, color="k", ls=":", lw=1, label="ln 2 (best linear model)")
        ax.axhline(value, color="k", ls="--", lw=0.8, label=f"{TRAINED_FRACTION:g} ln 2 (rule)")
        ax.set_yscale("log")
        ax.set_ylim(0.1, cap)
    ax_f.set_xlabel("depth (blocks or layers)")
    ax_f.set_ylabel("final training loss (BCE)")
    ax_f.set_title("final loss vs depth (median; dots: seeds; x: diverged)")
    ax_f.legend(fontsize=7)
    ax_l.set_xlabel("step")
    ax_l.set_ylabel("training loss (BCE)")
    ax_l.set_title(f"training at depth {max(cfg.depths)} (x: diverged there)")
    ax_l.legend(fontsize=7)
    plots.save(fig, out / "residual_depth")
    return ["residual_depth.png", "residual_depth.svg"]
