"""``residual-depth``: plain vs residual vs ReZero vs Fixup stacks at depth 50-150.

He et al. (2016) made very deep networks trainable with identity skips; but an unscaled
residual stack with He-initialised branches doubles the stream's variance at every block
(``2^depth`` at init), so its branches need scaling down. ReZero (Bachlechner et al. 2020)
multiplies every branch by a learned scalar that starts at 0. ``fixup`` is
:class:`gradlab.nn.ResidualStack`'s ``branch_scale="fixup"``: only Fixup's variance budget, the
branch's last layer multiplied by ``depth^-1/2``. ``fixup-zero`` is closer to Fixup itself
(Zhang et al. 2019): the branch's last layer starts at zero and its first layer is scaled by
``depth^-1/2`` (no scalar biases or multiplier). The plain ReLU MLP with He init keeps the
variance only on average; at finite width its gradient's log-norm spreads like
``5 depth / width``.
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
from gradlab.experiments._result import Claim, claim_all
from gradlab.train import TrainOptions, stack_trees, tasks, train_many

NAME = "residual-depth"
SUMMARY = "plain vs residual vs ReZero vs Fixup-scaled ReLU stacks at depth 50-150, SGD+momentum"

ARCHS = ("plain", "residual", "rezero", "fixup", "fixup-zero")
_BLOCK_LEAVES = frozenset({"w_hidden", "b_hidden", "kernel1", "bias1", "kernel2", "bias2", "alpha"})


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the experiment."""

    depths: tuple[int, ...] = (50, 100, 150)
    width: int = 32
    dim: int = 16
    separation: float = 3.0
    batch: int = 64
    steps: int = 200
    lr: float = 0.01
    momentum: float = 0.9
    seeds: int = 3
    fast_compile: bool = False


CONFIGS = {
    "tiny": Config(depths=(50,), width=8, dim=4, batch=16, steps=20, seeds=2, fast_compile=True),
    "default": Config(),
    "large": Config(width=128, batch=256, steps=2000, seeds=16),
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
        "residual": None, "rezero": "rezero", "fixup": "fixup", "fixup-zero": None
    }  # fmt: skip
    scale = scales[arch]
    return nn.ResidualStack(cfg.dim, 1, width=cfg.width, depth=depth, branch_scale=scale,
                            kernel_init=init.he_normal, rngs=rngs)  # fmt: skip


def _params(cfg: Config, arch: str, depth: int, seed: int) -> Any:
    params = nn.pure(_model(cfg, arch, depth, seed))[1]
    if arch != "fixup-zero":
        return params
    # Fixup (Zhang et al. 2019) for two-layer branches: the branch's last layer starts at
    # zero (every block is the identity) and its first layer is scaled by depth^-1/2.
    scale = lambda path, w: (w * 0 if path[0].key == "kernel2" else
                             w * depth**-0.5 if path[0].key == "kernel1" else w)  # fmt: skip
    return jax.tree_util.tree_map_with_path(scale, params)


def _loss(apply_fn: Any, params: Any, batch: Any) -> Any:
    x, y = batch
    logits = apply_fn(params, x)[:, 0]
    return losses.binary_cross_entropy(logits, y), {"accuracy": jnp.mean((logits > 0) == y)}


#: Architectures with the same parameters and forward pass (they differ only in their init):
#: each group trains in one vmapped program.
_GROUPS = (("plain",), ("rezero",), ("residual", "fixup", "fixup-zero"))


def _train(cfg: Config, archs: tuple[str, ...], depth: int, seed_ids: range) -> dict:
    """Trains a group of architectures together; returns ``{arch: measurements}``."""
    apply_fn, _ = nn.pure(_model(cfg, archs[0], depth, 0))
    params = stack_trees([_params(cfg, a, depth, 1000 + s) for a in archs for s in seed_ids])
    keys = jnp.stack([jax.random.key(s) for _ in archs for s in seed_ids])
    data = functools.partial(
        tasks.gaussian_mixture, batch=cfg.batch, dim=cfg.dim, separation=cfg.separation
    )
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


def run(cfg: Config, seeds: int, out: Path, first_seed: int = 0) -> dict[str, Any]:
    """Trains every architecture at every depth on ``seeds`` seeds; returns the result."""
    seed_ids = range(first_seed, first_seed + seeds)
    runs = {
        (a, d): r
        for d in cfg.depths
        for group in _GROUPS
        for a, r in _train(cfg, group, d, seed_ids).items()
    }
    final = {a: np.array([_final(runs[(a, d)]["loss"]) for d in cfg.depths]) for a in ARCHS}
    results = {
        "depths": list(cfg.depths),
        "final_loss": final,  # (depths, seeds); inf = diverged
        "initial_grad_norm": {
            a: [runs[(a, d)]["grad_norm"][:, 0] for d in cfg.depths] for a in ARCHS
        },
        "baseline_loss": tasks.BCE_BASELINE,
    }
    return {"config": dataclasses.asdict(cfg), "claims": _claims(cfg, final), "results": results,
            "figures": _figures(cfg, runs, final, out)}  # fmt: skip


def _claims(cfg: Config, final: dict[str, np.ndarray]) -> list[Claim]:
    trained, failed = 0.5 * tasks.BCE_BASELINE, 0.9 * tasks.BCE_BASELINE
    worst = {a: final[a].max(axis=0) for a in ARCHS}  # worst depth, per seed
    best = {a: final[a].min(axis=0) for a in ARCHS}
    depths = ", ".join(map(str, cfg.depths))
    return [
        claim_all(
            f"ReZero trains at every depth ({depths}): final loss below half of ln 2",
            worst["rezero"], f"max over depths of final loss < {trained:.4f}",
            worst["rezero"] < trained,
        ),
        claim_all(
            f"Fixup (branch output initialised at zero, first layer scaled by depth^-1/2) "
            f"trains at every depth ({depths})",
            worst["fixup-zero"], f"max over depths of final loss < {trained:.4f}",
            worst["fixup-zero"] < trained,
        ),
        claim_all(
            f"The unscaled residual stack (He branches) fails at every depth ({depths}): its "
            "stream's variance doubles per block, the loss diverges or stays at chance",
            best["residual"], f"min over depths of final loss > {failed:.4f} (inf: diverged)",
            best["residual"] > failed,
        ),
    ]  # fmt: skip


def _figures(cfg: Config, runs: dict, final: dict[str, np.ndarray], out: Path) -> list[str]:
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    ax_f, ax_g = fig.subplots(1, 2)
    cap = 10 * tasks.BCE_BASELINE  # diverged runs are drawn at the top
    for i, arch in enumerate(ARCHS):
        color = plots.PALETTE[i]
        shown = np.minimum(final[arch], cap)
        ax_f.plot(cfg.depths, np.median(shown, axis=1), color=color, marker="o", label=arch)
        for j, d in enumerate(cfg.depths):
            ax_f.scatter(np.full(shown.shape[1], d + 2 * (i - 1.5)), shown[j], color=color, s=10)
        g = runs[(arch, max(cfg.depths))]["block_grad_norms"][:, 0]  # step 0
        with np.errstate(invalid="ignore"):
            ax_g.plot(np.arange(1, g.shape[-1] + 1), np.nanmedian(g, axis=0), color=color,
                      label=arch)  # fmt: skip
    ax_f.axhline(tasks.BCE_BASELINE, color="k", ls=":", label="ln 2 (chance)")
    ax_f.axhline(cap, color="gray", ls="--", lw=0.8, label="diverged / capped")
    ax_f.set_yscale("log")
    ax_f.set_xlabel("depth (blocks or layers)")
    ax_f.set_ylabel("final training loss (BCE)")
    ax_f.set_title("final loss vs depth (median, dots = seeds)")
    ax_f.legend(fontsize=8)
    ax_g.set_yscale("log")
    ax_g.set_xlabel("block / layer l")
    ax_g.set_ylabel(r"$\|\partial L/\partial \theta_l\|$ at step 0 (median)")
    ax_g.set_title(f"per-block gradient norms at init, depth {max(cfg.depths)}")
    ax_g.legend(fontsize=8)
    plots.save(fig, out / "residual_depth")
    return ["residual_depth.png", "residual_depth.svg"]
