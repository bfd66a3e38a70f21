"""``isometry``: the input–output Jacobian's spectrum at initialisation, Gaussian vs orthogonal.

Saxe et al. (2014) showed that deep linear networks with orthogonal weights learn in a time
independent of depth, and Pennington et al. (2017) that what matters is the whole spectrum of
the input–output Jacobian ``J = ∂h_L/∂h_0``, not only its mean square (``χ₁^L``, which
criticality sets to 1): with Gaussian weights the squared singular values ``λ`` of ``J`` spread
like ``v(λ) = L`` (free probability, linear regime; ``v = var/mean²``, the relative
variance), with orthogonal weights and tanh near
``q* = 0`` they stay near 1 (dynamical isometry), and ReLU has no isometry even with orthogonal
weights (its derivative is 0 on half the units).

Measured: ``λ`` of ``J`` at one input per network for tanh at the critical point
``σ_w² = 1, σ_b² = 0`` and ReLU at He's ``σ_w² = 2``, each with Gaussian and (scaled)
orthogonal weights, over a grid of depths; and how many SGD steps a tanh network needs on
:func:`gradlab.train.tasks.shells` (which no linear model learns) at a shallow and a deep depth.

Claims:

1. Gaussian tanh: ``v(λ)`` grows linearly in depth with slope 1 (Pennington et al. 2017);
   control: the same fit for orthogonal tanh (slope near 0).
2. Orthogonal tanh stays isometric at the deepest depth, ``v(λ) < 1`` (a Gaussian network's
   value at one layer); control: orthogonal ReLU at that depth.
3. At the deepest trained depth, orthogonal tanh reaches the loss threshold in fewer steps than
   Gaussian; control: the same rule at the shallow depth.
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
from matplotlib.figure import Figure

from gradlab import losses, plots
from gradlab.experiments import _stats
from gradlab.experiments._result import Claim, Control, Threshold, ratio_claim
from gradlab.experiments._stats import SeedSplit
from gradlab.train import tasks

NAME = "isometry"
SUMMARY = "Jacobian singular values at init, Gaussian vs orthogonal (tanh, ReLU), and SGD speed"

ARMS = (("tanh", "gaussian"), ("tanh", "orthogonal"), ("relu", "gaussian"), ("relu", "orthogonal"))
WEIGHT_VARIANCE = {"tanh": 1.0, "relu": 2.0}


@dataclasses.dataclass(frozen=True)
class Config:
    """One size of the experiment.

    Attributes:
        seeds: evaluation seeds.
        dev_seeds: development seeds (0: every threshold comes from theory).
        width: units per layer (the Jacobian is ``width × width``).
        depths: depths at which the spectrum is measured.
        input_variance: variance of the input's entries (``q`` of the first layer).
        train_depths: depths trained (shallow, deep).
        train_width: units per layer of the trained networks.
        steps: SGD steps.
        lr: SGD learning rate.
        batch: examples per step.
        dim: shells input dimension.
    """

    seeds: int
    dev_seeds: int
    width: int
    depths: tuple[int, ...]
    input_variance: float
    train_depths: tuple[int, int]
    train_width: int
    steps: int
    lr: float
    batch: int = 64
    dim: int = 8


CONFIGS = {
    "tiny": Config(2, 0, 8, (1, 2, 4), 0.01, (2, 4), 8, 3, 0.05),
    "default": Config(8, 0, 128, (1, 2, 4, 8, 16, 32), 0.01, (2, 32), 32, 400, 0.05),
    "large": Config(16, 0, 512, (1, 2, 4, 8, 16, 32, 64, 128), 0.01, (2, 128), 128, 2000, 0.05),
}


def _np_weights(rng: np.random.Generator, kind: str, n: int, sw: float) -> np.ndarray:
    g = rng.normal(size=(n, n))
    if kind == "orthogonal":
        q, r = np.linalg.qr(g)
        return q * np.sign(np.diag(r)) * math.sqrt(sw)  # Haar-distributed, scaled
    return g * math.sqrt(sw / n)


def _spectrum(seed: int, act: str, kind: str, width: int, depth: int, q0: float) -> np.ndarray:
    """Squared singular values of ``J = ∂h_depth/∂h_0`` at an input ``N(0, q0 I)`` (float64).

    ``J = Π_l W_l D_l`` with ``D_l = diag(φ'(z_l))`` at the pre-activations ``z_l = h W_l``.
    """
    rng = np.random.default_rng(seed)
    sw = WEIGHT_VARIANCE[act]
    h = rng.normal(size=width) * math.sqrt(q0)
    jac = np.eye(width)
    for _ in range(depth):
        w = _np_weights(rng, kind, width, sw)
        z = h @ w
        if act == "tanh":
            h, dphi = np.tanh(z), 1.0 - np.tanh(z) ** 2
        else:
            h, dphi = np.maximum(z, 0.0), (z > 0).astype(np.float64)
        jac = jac @ (w * dphi[None, :])
    return np.linalg.svd(jac, compute_uv=False) ** 2


def _steps_to(curve: np.ndarray, threshold: float, window: int = 20) -> float:
    """SGD steps until the running mean of the training loss falls below ``threshold``."""
    smooth = np.convolve(curve, np.ones(window) / window, mode="valid")
    below = np.nonzero(smooth < threshold)[0]
    return float(below[0] + window) if below.size else math.inf


def _np_init(rng: np.random.Generator, kind: str, n_in: int, n_out: int, sw: float) -> np.ndarray:
    """An ``(n_in, n_out)`` weight: Gaussian ``N(0, sw/n_in)`` or Haar-orthogonal times ``√sw``."""
    if kind == "orthogonal":
        big, small = max(n_in, n_out), min(n_in, n_out)
        q, r = np.linalg.qr(rng.normal(size=(big, small)))
        q = q * np.sign(np.diag(r))
        return (q if n_in >= n_out else q.T) * math.sqrt(sw)
    return rng.normal(size=(n_in, n_out)) * math.sqrt(sw / n_in)


def _init_params(seeds: list[int], kind: str, cfg: Config, depth: int) -> list[jax.Array]:
    """The trained networks' weights at ``σ_w² = 1``, stacked over seeds (drawn with NumPy).

    The orthogonal draws are made here, outside the training program: a QR decomposition
    vmapped inside a compiled program runs as parallel tasks on XLA:CPU's thread pool, which
    on a 2-core machine can wait on itself forever.
    """
    w = cfg.train_width
    shapes = [(cfg.dim, w)] + [(w, w)] * (depth - 1)
    per_seed = []
    for seed in seeds:
        rng = np.random.default_rng((seed, depth))
        ws = [_np_init(rng, kind, a, b, 1.0) for a, b in shapes]
        ws.append(rng.normal(size=(w, 1)) / math.sqrt(w))
        per_seed.append(ws)
    return [jnp.asarray(np.stack(layer), jnp.float32) for layer in zip(*per_seed, strict=True)]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _train(params: list[jax.Array], keys: jax.Array, cfg: Config) -> jax.Array:
    """Training-loss curves ``(seeds, steps)`` of tanh MLPs from ``params``, vmapped over seeds."""

    def one(params: list[jax.Array], key: jax.Array) -> jax.Array:
        def loss(ps: list[jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
            h = x
            for p in ps[:-1]:
                h = jnp.tanh(h @ p)
            return losses.binary_cross_entropy((h @ ps[-1])[:, 0], y)

        def step(ps: list[jax.Array], k: jax.Array) -> tuple[list[jax.Array], jax.Array]:
            x, y = tasks.shells(k, batch=cfg.batch, dim=cfg.dim)
            value, g = jax.value_and_grad(loss)(ps, x, y)
            return [p - cfg.lr * gp for p, gp in zip(ps, g, strict=True)], value

        _, curve = jax.lax.scan(step, params, jax.random.split(key, cfg.steps))
        return curve

    return jax.vmap(one)(params, keys)


def run(cfg: Config, seeds: SeedSplit, out: Path) -> dict[str, Any]:
    """Spectra and training runs; claims, results, figure (see the module docstring)."""
    ev = list(seeds.evaluation)
    var = np.zeros((len(ARMS), len(cfg.depths), len(ev)))
    mean = np.zeros_like(var)
    spectra: dict[str, list[float]] = {}
    for a, (act, kind) in enumerate(ARMS):
        for d, depth in enumerate(cfg.depths):
            for s, seed in enumerate(ev):
                lam = _spectrum(seed, act, kind, cfg.width, depth, cfg.input_variance)
                mean[a, d, s], var[a, d, s] = lam.mean(), lam.var() / lam.mean() ** 2
                if s == 0 and depth == max(cfg.depths):
                    spectra[f"{act}/{kind}"] = np.sort(lam).tolist()
    threshold = 0.5 * tasks.BCE_BASELINE
    steps = np.zeros((2, len(cfg.train_depths), len(ev)))
    curves = np.zeros((2, len(cfg.train_depths), len(ev), cfg.steps))
    for k, kind in enumerate(("gaussian", "orthogonal")):
        for d, depth in enumerate(cfg.train_depths):
            keys = jnp.stack([jax.random.key(seed) for seed in ev])
            params = _init_params(ev, kind, cfg, depth)
            curves[k, d] = np.asarray(_train(params, keys, cfg), dtype=np.float64)
            steps[k, d] = [_steps_to(c, threshold) for c in curves[k, d]]
    slopes = _slopes(np.array(cfg.depths, dtype=float), var)
    claims = _claims(cfg, var, slopes, steps)
    results = {
        "depths": list(cfg.depths),
        "arms": [f"{a}/{k}" for a, k in ARMS],
        "mean_lambda": mean,
        "var_lambda": var,
        "slope_var_lambda": slopes,
        "spectra_deepest_first_seed": spectra,
        "steps_to_threshold": steps,
        "loss_threshold": threshold,
        "train_depths": list(cfg.train_depths),
    }
    figures = _figure(cfg, var, spectra, curves, threshold, out)
    return {"config": dataclasses.asdict(cfg), "claims": claims, "results": results,
            "figures": figures}  # fmt: skip


def _slopes(depths: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Least-squares slope of ``v(λ)`` against depth, per arm and seed."""
    x = depths - depths.mean()
    return np.einsum("d,ads->as", x, var - var.mean(axis=1, keepdims=True)) / np.sum(x * x)


def _claims(cfg: Config, var: np.ndarray, slopes: np.ndarray, steps: np.ndarray) -> list[Claim]:
    lo, hi = 0.5, 1.5
    t1 = Threshold(
        f"bootstrap interval of the median slope of v(λ) against depth within [{lo:g}, {hi:g}]",
        1.0,
        "theory",
        "Pennington et al. 2017: v(λ) = L for Gaussian weights in the linear regime (slope "
        "1); the band allows ±50% for finite width",
    )

    def within(v: np.ndarray) -> tuple[bool, dict[str, Any]]:
        st = _stats.log_median(np.maximum(v, 1e-12))
        a, b = (10**x for x in st["interval"])
        return bool(lo <= a and b <= hi), {**st, "slope_interval": [a, b], "per_seed": v}

    ok1, ev1 = within(slopes[0])
    ok1c, ev1c = within(slopes[1])
    claim1 = Claim(
        "Gaussian tanh at σ_w² = 1: v(λ) of the Jacobian grows linearly in depth with "
        f"slope {10 ** ev1['log10_median']:.2f} (theory 1)",
        ok1,
        ev1,
        t1,
        Control("orthogonal tanh grows the same way (must be false)", ok1c, ev1c),
    )
    deep = len(cfg.depths) - 1
    t2 = Threshold(
        "v(λ) < {value:g} at depth " + str(cfg.depths[deep]),
        1.0,
        "theory",
        "v(λ) = L for Gaussian weights: 1 is its value at a single layer",
    )
    claim2 = ratio_claim(
        f"orthogonal tanh stays isometric at depth {cfg.depths[deep]}",
        t2,
        np.maximum(var[1, deep], 1e-12),
        below=True,
        control_text=(
            f"orthogonal ReLU is isometric at depth {cfg.depths[deep]} too (must be false)"
        ),
        control_ratios=np.maximum(var[3, deep], 1e-12),
        evidence={"gaussian_tanh": var[0, deep]},
    )
    cap = 2.0 * cfg.steps  # a run that never gets there counts as twice the budget
    ratio = np.minimum(steps[0], cap) / np.minimum(steps[1], cap)
    t3 = Threshold(
        "steps(Gaussian)/steps(orthogonal) > {value:g}",
        1.0,
        "theory",
        "Saxe et al. 2014: learning time independent of depth with orthogonal weights, growing "
        "with depth for Gaussian ones; 1 is no difference",
    )
    claim3 = ratio_claim(
        f"at depth {cfg.train_depths[-1]} orthogonal tanh reaches loss < ln2/2 in fewer SGD "
        "steps than Gaussian",
        t3,
        ratio[-1],
        below=False,
        control_text=f"the same at depth {cfg.train_depths[0]} (must be false)",
        control_ratios=ratio[0],
        evidence={"steps_gaussian": steps[0, -1], "steps_orthogonal": steps[1, -1]},
        control_evidence={"steps_gaussian": steps[0, 0], "steps_orthogonal": steps[1, 0]},
    )
    return [claim1, claim2, claim3]


def _figure(
    cfg: Config,
    var: np.ndarray,
    spectra: dict[str, list[float]],
    curves: np.ndarray,
    threshold: float,
    out: Path,
) -> list[str]:
    fig = Figure(figsize=(13.5, 4.0), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    depths = np.array(cfg.depths)
    for a, (act, kind) in enumerate(ARMS):
        c = plots.PALETTE[a % len(plots.PALETTE)]
        ls = "-" if kind == "orthogonal" else "--"
        ax1.plot(
            depths, np.median(var[a], axis=-1), ls, marker="o", color=c, label=f"{act}, {kind}"
        )
        lam = np.maximum(np.array(spectra[f"{act}/{kind}"]), 1e-12)
        ax2.plot(np.sort(lam), np.linspace(0, 1, lam.size), ls, color=c, label=f"{act}, {kind}")
    ax1.plot(depths, depths, ":", color="k", label="theory, Gaussian: v(λ) = L")
    ax1.set_xscale("log")
    ax1.set_yscale("symlog", linthresh=1e-3)
    ax1.set_xlabel("depth L")
    ax1.set_ylabel("v(λ) = var(λ)/mean(λ)², λ = squared singular value of J")
    ax1.set_title("spread of the Jacobian's spectrum")
    ax1.legend(fontsize=7)
    ax2.set_xscale("log")
    ax2.set_xlabel(f"λ at depth {depths.max()}")
    ax2.set_ylabel("fraction of singular values ≤ λ")
    ax2.set_title("spectrum at the deepest depth (one seed)")
    for k, kind in enumerate(("gaussian", "orthogonal")):
        for d, depth in enumerate(cfg.train_depths):
            c = plots.PALETTE[(2 * d + k) % len(plots.PALETTE)]
            med = np.median(curves[k, d], axis=0)
            ax3.plot(med, "-" if kind == "orthogonal" else "--", color=c,
                     label=f"tanh {kind}, depth {depth}")  # fmt: skip
    ax3.axhline(threshold, color="k", lw=0.8, ls=":", label="ln 2 / 2")
    ax3.set_xlabel("SGD step")
    ax3.set_ylabel("training loss (median over seeds)")
    ax3.set_title("training speed")
    ax3.legend(fontsize=7)
    plots.save(fig, out / "isometry")
    return ["isometry.png", "isometry.svg"]
