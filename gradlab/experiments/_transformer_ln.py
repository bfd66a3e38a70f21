"""``transformer-ln``: gradients at initialisation and warm-up, post-LN vs pre-LN (Xiong et al.).

Xiong et al. (2020) showed that in the original post-LN transformer (``h ← LN(h + F(h))``) the
gradient of the parameters near the output is large at initialisation, so Adam needs a
learning-rate warm-up, while in the pre-LN transformer (``h ← h + F(LN(h))``) the gradients are
of one size across layers and shrink with depth like ``1/√L`` (their Theorem 1 and Fig. 3), and
it trains without warm-up.

Measured: ``‖∂L/∂W₂‖`` of every layer's second feed-forward weight at initialisation, for both
placements of the layer norm at several depths; then the training loss of both at one depth with
Adam, with and without a linear warm-up. The task reverses a token sequence; a model that does
not mix positions cannot do better than ``ln V`` (the target at a position is independent of the
token there), so "learns" means attention works.

Claims:

1. Post-LN: the gradient grows toward the output, ``‖∂L/∂W₂‖`` last layer / first layer above a
   threshold fixed on the development seeds (midpoint between the two placements); control:
   pre-LN.
2. Pre-LN: the last layer's gradient shrinks with depth like ``L^-1/2`` (slope of log norm
   against log depth within [−0.75, −0.25]); control: post-LN (Theorem 1: independent of ``L``).
3. Without warm-up, post-LN ends with a higher loss than with it (ratio above 1); control:
   pre-LN.
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
from matplotlib.figure import Figure

from gradlab import plots
from gradlab._errors import InputError
from gradlab.experiments import _stats
from gradlab.experiments._result import Claim, Control, Threshold, ratio_claim
from gradlab.experiments._stats import SeedSplit

NAME = "transformer-ln"
SUMMARY = (
    "post-LN vs pre-LN transformer: per-layer gradients at init, training with/without warm-up"
)
PLACEMENTS = ("post", "pre")


@dataclasses.dataclass(frozen=True)
class Config:
    """One size of the experiment.

    Attributes:
        seeds: evaluation seeds.
        dev_seeds: development seeds (they set claim 1's threshold).
        d_model: model width (one attention head of this size).
        length: sequence length.
        vocab: number of tokens.
        batch: sequences per batch.
        depths: numbers of layers at which the gradients at initialisation are measured.
        train_depth: layers of the trained models.
        steps: Adam steps.
        lr: Adam's peak learning rate.
        warmup: warm-up steps (linear from 0).
    """

    seeds: int
    dev_seeds: int
    d_model: int
    length: int
    vocab: int
    batch: int
    depths: tuple[int, ...]
    train_depth: int
    steps: int
    lr: float
    warmup: int


CONFIGS = {
    "tiny": Config(2, 2, 8, 4, 4, 4, (1, 2), 2, 3, 1e-3, 2),
    "default": Config(8, 4, 32, 8, 8, 32, (3, 6, 12, 24), 6, 400, 3e-3, 100),
    "large": Config(16, 8, 128, 16, 16, 64, (3, 6, 12, 24, 48), 12, 3000, 3e-3, 600),
}


def _init(key: jax.Array, cfg: Config, depth: int) -> dict[str, Any]:
    d, f = cfg.d_model, 4 * cfg.d_model
    ks = jax.random.split(key, 3)

    def xavier(k: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        return jax.random.normal(k, shape) * math.sqrt(2.0 / (shape[-2] + shape[-1]))

    lk = jax.random.split(ks[2], 6)
    layers = {
        "wq": xavier(lk[0], (depth, d, d)),
        "wk": xavier(lk[1], (depth, d, d)),
        "wv": xavier(lk[2], (depth, d, d)),
        "wo": xavier(lk[3], (depth, d, d)),
        "w1": xavier(lk[4], (depth, d, f)),
        "w2": xavier(lk[5], (depth, f, d)),
    }
    return {
        "embed": jax.random.normal(ks[0], (cfg.vocab, d)),
        "pos": jax.random.normal(ks[1], (cfg.length, d)),
        "layers": layers,
        "out": xavier(jax.random.fold_in(key, 7), (d, cfg.vocab)),
    }


def _ln(x: jax.Array) -> jax.Array:
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / jnp.sqrt(v + 1e-5)


def _logits(params: dict[str, Any], tokens: jax.Array, pre: bool) -> jax.Array:
    h = params["embed"][tokens] + params["pos"]
    d = h.shape[-1]

    def attn(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        q, k, v = x @ p["wq"], x @ p["wk"], x @ p["wv"]
        a = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) / math.sqrt(d), axis=-1)
        return (a @ v) @ p["wo"]

    def ffn(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        return jax.nn.relu(x @ p["w1"]) @ p["w2"]

    def block(h: jax.Array, p: dict[str, jax.Array]) -> tuple[jax.Array, None]:
        if pre:
            h = h + attn(p, _ln(h))
            h = h + ffn(p, _ln(h))
        else:
            h = _ln(h + attn(p, h))
            h = _ln(h + ffn(p, h))
        return h, None

    h, _ = jax.lax.scan(block, h, params["layers"])
    if pre:
        h = _ln(h)
    return h @ params["out"]


def _batch(key: jax.Array, cfg: Config) -> tuple[jax.Array, jax.Array]:
    tokens = jax.random.randint(key, (cfg.batch, cfg.length), 0, cfg.vocab)
    return tokens, tokens[:, ::-1]


def _loss(params: dict[str, Any], tokens: jax.Array, targets: jax.Array, pre: bool) -> jax.Array:
    logp = jax.nn.log_softmax(_logits(params, tokens, pre))
    return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))


@functools.partial(jax.jit, static_argnames=("cfg", "depth", "pre"))
def _grad_norms(keys: jax.Array, cfg: Config, depth: int, pre: bool) -> jax.Array:
    """``‖∂L/∂W₂‖`` per layer at initialisation, ``(seeds, depth)``."""

    def one(key: jax.Array) -> jax.Array:
        k_p, k_d = jax.random.split(key)
        params = _init(k_p, cfg, depth)
        g = jax.grad(_loss)(params, *_batch(k_d, cfg), pre)
        return jnp.sqrt(jnp.sum(g["layers"]["w2"] ** 2, axis=(1, 2)))

    return jax.vmap(one)(keys)


@functools.partial(jax.jit, static_argnames=("cfg", "pre", "warmup"))
def _train(keys: jax.Array, cfg: Config, pre: bool, warmup: bool) -> jax.Array:
    """Training-loss curves ``(seeds, steps)`` with Adam, with or without linear warm-up."""
    if warmup:
        sched = optax.linear_schedule(0.0, cfg.lr, cfg.warmup)
    else:
        sched = optax.constant_schedule(cfg.lr)
    opt = optax.adam(sched)

    def one(key: jax.Array) -> jax.Array:
        k_p, k_d = jax.random.split(key)
        params = _init(k_p, cfg, cfg.train_depth)

        def step(carry: tuple[Any, Any], k: jax.Array) -> tuple[tuple[Any, Any], jax.Array]:
            p, s = carry
            value, g = jax.value_and_grad(_loss)(p, *_batch(k, cfg), pre)
            upd, s = opt.update(g, s, p)
            return (optax.apply_updates(p, upd), s), value

        _, curve = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(k_d, cfg.steps))
        return curve

    return jax.vmap(one)(keys)


def _keys(seeds: list[int]) -> jax.Array:
    return jnp.stack([jax.random.key(s) for s in seeds])


def run(cfg: Config, seeds: SeedSplit, out: Path) -> dict[str, Any]:
    """Gradients at initialisation and training runs (see the module docstring)."""
    ev, dev = list(seeds.evaluation), list(seeds.development)
    norms = {
        (pl, d): np.asarray(_grad_norms(_keys(ev), cfg, d, pl == "pre"), dtype=np.float64)
        for pl in PLACEMENTS
        for d in cfg.depths
    }
    dev_ratio = {}
    deep = max(cfg.depths)
    for pl in PLACEMENTS:
        g = np.asarray(_grad_norms(_keys(dev), cfg, deep, pl == "pre"), dtype=np.float64)
        dev_ratio[pl] = g[:, -1] / g[:, 0]
    curves = {
        (pl, w): np.asarray(_train(_keys(ev), cfg, pl == "pre", w), dtype=np.float64)
        for pl in PLACEMENTS
        for w in (False, True)
    }
    claims = _claims(cfg, norms, dev_ratio, curves)
    tail = max(cfg.steps // 10, 1)
    results = {
        "grad_norm_w2": {f"{pl}/{d}": v for (pl, d), v in norms.items()},
        "dev_last_over_first": dev_ratio,
        "final_loss": {
            f"{pl}/{'warmup' if w else 'no_warmup'}": np.nanmean(c[:, -tail:], axis=-1)
            for (pl, w), c in curves.items()
        },
        "baseline_loss": math.log(cfg.vocab),
    }
    figures = _figure(cfg, norms, curves, out)
    return {"config": dataclasses.asdict(cfg), "claims": claims, "results": results,
            "figures": figures}  # fmt: skip


def _claims(
    cfg: Config,
    norms: dict[tuple[str, int], np.ndarray],
    dev_ratio: dict[str, np.ndarray],
    curves: dict[tuple[str, bool], np.ndarray],
) -> list[Claim]:
    deep = max(cfg.depths)
    try:
        value = _stats.log_midpoint(dev_ratio["pre"], dev_ratio["post"])
        how = "geometric midpoint between pre-LN's largest and post-LN's smallest ratio"
    except InputError:  # the development groups overlap: the midpoint of their medians
        value = math.sqrt(float(np.median(dev_ratio["pre"]) * np.median(dev_ratio["post"])))
        how = "the development groups overlap; geometric mean of their medians"
    t1 = Threshold(
        "‖∂L/∂W₂‖ last layer / first layer > {value:.3g}",
        max(value, 1e-12),
        "development run",
        f"{how} at depth {deep} on the development seeds {dev_ratio['post'].size} per placement",
    )
    ratio = {pl: norms[(pl, deep)][:, -1] / norms[(pl, deep)][:, 0] for pl in PLACEMENTS}
    claim1 = ratio_claim(
        f"post-LN at depth {deep}: the gradient at initialisation grows toward the output",
        t1,
        ratio["post"],
        below=False,
        control_text="pre-LN's gradient grows toward the output too (must be false)",
        control_ratios=ratio["pre"],
    )
    lo, hi = -0.75, -0.25
    depths = np.log(np.array(cfg.depths, dtype=float))

    def slope(pl: str) -> np.ndarray:
        y = np.log(np.stack([norms[(pl, d)][:, -1] for d in cfg.depths], axis=1))
        x = depths - depths.mean()
        return ((y - y.mean(1, keepdims=True)) @ x) / np.sum(x * x)

    def within(s: np.ndarray) -> tuple[bool, dict[str, Any]]:
        med = float(np.median(s))
        rng = np.random.default_rng(0)
        boot = np.median(s[rng.integers(0, s.size, (4000, s.size))], axis=1)
        a, b = (float(v) for v in np.quantile(boot, [0.025, 0.975]))
        return bool(lo <= a and b <= hi), {"median_slope": med, "interval": [a, b], "per_seed": s}

    ok2, ev2 = within(slope("pre"))
    ok2c, ev2c = within(slope("post"))
    t2 = Threshold(
        f"bootstrap interval of the slope of log ‖∂L/∂W₂‖(last layer) against log L within "
        f"[{lo:g}, {hi:g}]",
        -0.5,
        "theory",
        "Xiong et al. 2020, Theorem 1: pre-LN O(d √(ln d / L)), post-LN independent of L; "
        "±0.25 around −1/2",
    )
    claim2 = Claim(
        f"pre-LN: the last layer's gradient shrinks like L^{ev2['median_slope']:.2f} "
        "(theory L^-0.5)",
        ok2,
        ev2,
        t2,
        Control("post-LN's shrinks the same way (must be false)", ok2c, ev2c),
    )
    tail = max(cfg.steps // 10, 1)
    final = {
        k: np.nanmean(np.where(np.isfinite(c), c, 1e6)[:, -tail:], axis=-1)
        for k, c in curves.items()
    }
    t3 = Threshold(
        "final loss without warm-up / with warm-up > {value:g}",
        1.0,
        "theory",
        "Xiong et al. 2020: post-LN needs the warm-up, pre-LN does not; 1 is no difference",
    )
    claim3 = ratio_claim(
        f"post-LN at depth {cfg.train_depth}, Adam at lr {cfg.lr:g}: without warm-up the loss "
        f"after {cfg.steps} steps is higher than with {cfg.warmup} warm-up steps",
        t3,
        final[("post", False)] / final[("post", True)],
        below=False,
        control_text="pre-LN loses from dropping the warm-up too (must be false)",
        control_ratios=final[("pre", False)] / final[("pre", True)],
        evidence={f"{pl}/{w}": final[(pl, w)] for pl, w in final},
    )
    return [claim1, claim2, claim3]


def _figure(
    cfg: Config,
    norms: dict[tuple[str, int], np.ndarray],
    curves: dict[tuple[str, bool], np.ndarray],
    out: Path,
) -> list[str]:
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for i, pl in enumerate(PLACEMENTS):
        for j, d in enumerate(cfg.depths):
            med = np.median(norms[(pl, d)], axis=0)
            ax1.plot(np.arange(1, d + 1), med, "-" if pl == "post" else "--", marker=".",
                     color=plots.PALETTE[j % len(plots.PALETTE)], alpha=1.0 if i == 0 else 0.7,
                     label=f"{pl}-LN, L = {d}")  # fmt: skip
    ax1.set_yscale("log")
    ax1.set_xscale("log")
    ax1.set_xlabel("layer")
    ax1.set_ylabel("‖∂L/∂W₂‖ at initialisation (median)")
    ax1.set_title("gradient per layer (solid post-LN, dashed pre-LN)")
    ax1.legend(fontsize=6, ncol=2)
    for k, ((pl, w), c) in enumerate(curves.items()):
        ax2.plot(np.nanmedian(c, axis=0), color=plots.PALETTE[k % len(plots.PALETTE)],
                 label=f"{pl}-LN, {'warm-up' if w else 'no warm-up'}")  # fmt: skip
    ax2.axhline(math.log(cfg.vocab), color="k", ls=":", lw=0.8, label="ln V (no attention)")
    ax2.set_xlabel("Adam step")
    ax2.set_ylabel("training loss (median over seeds)")
    ax2.set_title(f"training at depth {cfg.train_depth}, lr {cfg.lr:g}")
    ax2.legend(fontsize=7)
    plots.save(fig, out / "transformer_ln")
    return ["transformer_ln.png", "transformer_ln.svg"]
