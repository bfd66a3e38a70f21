"""``lstm-adding``: LSTM (both variants) vs a tanh RNN on the adding problem at T = 50, 100, 200.

Predicting 1 always scores MSE 1/6; to beat it a model must carry a marked value across
about T/2 steps. Hochreiter & Schmidhuber (1997) built the LSTM's cell path for this; the
vanilla RNN's gradient through time is a product of ``diag(tanh') U`` factors and vanishes.
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
from matplotlib.ticker import NullFormatter

from gradlab import losses, nn, plots
from gradlab.experiments._result import Claim, claim_all
from gradlab.train import TrainOptions, stack_trees, tasks, train_many

NAME = "lstm-adding"
SUMMARY = "LSTM (standard, slide) vs RNN on the adding problem, T = 50/100/200, vs the 1/6 baseline"

MODELS = ("lstm", "lstm-slide", "rnn")


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes: ``steps[i]`` training steps at sequence length ``lengths[i]``."""

    lengths: tuple[int, ...] = (50, 100, 200)
    steps: tuple[int, ...] = (600, 1000, 600)
    hidden: int = 16
    batch: int = 64
    lr: float = 5e-3
    clip_norm: float = 1.0
    forget_bias: float = 1.0
    seeds: int = 4
    probe_batch: int = 32
    fast_compile: bool = False


CONFIGS = {
    "tiny": Config(
        lengths=(8,), steps=(20,), hidden=4, batch=8, seeds=2, probe_batch=4, fast_compile=True
    ),
    "default": Config(),
    "large": Config(steps=(2000, 4000, 8000), hidden=128, batch=128, lr=1e-3, seeds=16),
}


def _cell(cfg: Config, model: str, seed: int) -> nnx.Module:
    rngs = nnx.Rngs(seed)
    if model == "rnn":
        return nn.RNN(2, cfg.hidden, rngs=rngs)
    variant: Literal["standard", "slide"] = "slide" if model == "lstm-slide" else "standard"
    return nn.LSTM(2, cfg.hidden, variant=variant, forget_bias=cfg.forget_bias, rngs=rngs)


def _params(cfg: Config, model: str, seed: int) -> dict[str, Any]:
    _, cell = nn.pure(_cell(cfg, model, seed))
    w = jax.random.normal(jax.random.key(10_000 + seed), (cfg.hidden, 1)) / cfg.hidden**0.5
    # readout bias 1: the model starts at the baseline's constant prediction
    return {"cell": cell, "head": {"w": w, "b": jnp.ones(1)}}


def _last_state(model: str, apply_fn: Any, cell: Any, x: Any, probes: Any = None) -> Any:
    out = apply_fn(cell, x, probes=probes)
    return out[1] if model == "rnn" else out[1][1]  # a_T


def _loss(model: str, apply_fn: Any, params: Any, batch: Any) -> Any:
    x, y = batch
    a_t = _last_state(model, apply_fn, params["cell"], x)
    return losses.mse(a_t @ params["head"]["w"] + params["head"]["b"], y)


def _grad_through_time(model: str, apply_fn: Any, params: Any, batch: Any) -> Any:
    """``‖∂L/∂a_t‖`` for every step t (norm over batch and units), one run."""
    x, y = batch
    probes = jnp.zeros((*x.shape[:2], params["head"]["w"].shape[0]), x.dtype)

    def loss(p: Any) -> Any:
        a_t = _last_state(model, apply_fn, params["cell"], x, probes=p)
        return losses.mse(a_t @ params["head"]["w"] + params["head"]["b"], y)

    g = jax.grad(loss)(probes)
    return jnp.sqrt(jnp.sum(jnp.square(g), axis=(0, 2)))


def _diagnostics(
    model: str, apply_fn: Any, with_gates: Any, hidden: int, params: Any, batch: Any
) -> dict:
    """Gradient through time and, for an LSTM, the mean forget-gate bias and activation."""
    out = {"grad_t": _grad_through_time(model, apply_fn, params, batch)}
    if model != "rnn":
        gates = with_gates(params["cell"], batch[0])[2]
        out["forget_bias"] = jnp.mean(params["cell"]["bias"][...][hidden : 2 * hidden])
        out["forget_gate"] = jnp.mean(gates["forget"])
    return out


def _train_one(cfg: Config, model: str, length: int, steps: int, seed_ids: range) -> dict:
    cell = _cell(cfg, model, 0)
    apply_fn, _ = nn.pure(cell)
    params = stack_trees([_params(cfg, model, s) for s in seed_ids])
    keys = jnp.stack([jax.random.key(s) for s in seed_ids])
    data = functools.partial(tasks.adding_problem, batch=cfg.batch, length=length)
    options = TrainOptions(
        clip_norm=cfg.clip_norm,
        chunk=max(1, steps // 10),
        layer_steps=(0, steps - 1),
        description=f"{NAME} {model} T={length}",
        fast_compile=cfg.fast_compile,
    )
    loss_fn = functools.partial(_loss, model, apply_fn)
    opt = optax.adam(cfg.lr)
    final, hist = train_many(loss_fn, params, data, opt, steps, keys, options=options)
    probe = tasks.adding_problem(jax.random.key(99), batch=cfg.probe_batch, length=length)
    with_gates = None if model == "rnn" else nn.pure(cell, method="with_gates")[0]
    diag = functools.partial(_diagnostics, model, apply_fn, with_gates, cfg.hidden)
    # one program for the initial and the final parameters of every seed
    runs = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), params, final)
    fast = {"xla_backend_optimization_level": 0} if cfg.fast_compile else None
    both = jax.jit(jax.vmap(diag, in_axes=(0, None)), compiler_options=fast)(runs, probe)
    n = len(seed_ids)
    out = {"loss": np.asarray(hist.loss)}
    for k, v in both.items():
        v = np.asarray(v).reshape(2, n, *np.shape(v)[1:])
        out[f"{k}_init"], out[f"{k}_final"] = v[0], v[1]
    return out


def _final(loss: np.ndarray) -> np.ndarray:
    n = max(1, loss.shape[-1] // 10)
    return loss[..., -n:].mean(-1)


def run(cfg: Config, seeds: int, out: Path, first_seed: int = 0) -> dict[str, Any]:
    """Trains every model at every length on ``seeds`` seeds; returns the result."""
    seed_ids = range(first_seed, first_seed + seeds)
    runs = {
        (m, t): _train_one(cfg, m, t, s, seed_ids)
        for t, s in zip(cfg.lengths, cfg.steps, strict=True)
        for m in MODELS
    }
    final = {f"{m} T={t}": _final(r["loss"]) for (m, t), r in runs.items()}
    results: dict[str, Any] = {
        "baseline_mse": tasks.ADDING_BASELINE,
        "final_mse": final,
        "grad_first_over_last_init": {
            f"{m} T={t}": r["grad_t_init"][:, 0] / r["grad_t_init"][:, -1]
            for (m, t), r in runs.items()
        },
        "forget_gate": {
            f"{m} T={t}": {k: r[k] for k in r if k.startswith("forget")}
            for (m, t), r in runs.items()
            if m != "rnn"
        },
    }
    claims = _claims(cfg, final, results["grad_first_over_last_init"])
    figures = _figures(cfg, runs, out)
    return {"config": dataclasses.asdict(cfg), "claims": claims, "results": results,
            "figures": figures}  # fmt: skip


def _claims(cfg: Config, final: dict[str, np.ndarray], reach: dict[str, np.ndarray]) -> list[Claim]:
    base = tasks.ADDING_BASELINE
    beats = 0.5 * base  # 'beats the baseline': final MSE below half of it, for every model
    mid = sorted(cfg.lengths)[len(cfg.lengths) // 2]
    short = min(cfg.lengths)
    claims = []
    for model, t in (("lstm", t) for t in sorted({short, mid})):
        v = final[f"{model} T={t}"]
        claims.append(
            claim_all(
                f"The standard LSTM beats the 1/6 baseline at T = {t}: final MSE below half of it",
                v, f"final MSE < {beats:.4f}", v < beats,
            )
        )  # fmt: skip
    for t in sorted({mid, max(cfg.lengths)}):
        v = final[f"rnn T={t}"]
        claims.append(
            claim_all(
                f"The tanh RNN does not beat the baseline at T = {t}: its final MSE stays above "
                "half of it",
                v, f"final MSE > {beats:.4f}", v > beats,
            )
        )  # fmt: skip
    ratio = reach[f"lstm T={mid}"] / np.maximum(reach[f"rnn T={mid}"], 1e-30)
    claims.append(
        claim_all(
            f"At initialisation (T = {mid}), the share of the gradient that reaches t = 0, "
            "||dL/da_0|| / ||dL/da_T||, is over 10x larger in the LSTM than in the RNN",
            ratio, "LSTM share / RNN share > 10 (same seed)", ratio > 10,
        )
    )  # fmt: skip
    return claims


def _figures(cfg: Config, runs: dict[tuple[str, int], dict], out: Path) -> list[str]:
    fig = Figure(figsize=(14.0, 4.2), layout="constrained")
    ax_t, ax_loss, ax_grad = fig.subplots(1, 3)
    mid = sorted(cfg.lengths)[len(cfg.lengths) // 2]
    for i, model in enumerate(MODELS):
        color = plots.PALETTE[i]
        finals = np.array([_final(runs[(model, t)]["loss"]) for t in cfg.lengths])
        for j, t in enumerate(cfg.lengths):
            ax_t.scatter(np.full(finals.shape[1], t) * (1 + 0.03 * (i - 1)), finals[j],
                         color=color, s=12)  # fmt: skip
        ax_t.plot(cfg.lengths, np.median(finals, axis=1), color=color, label=model, marker="o")
        loss = runs[(model, mid)]["loss"]
        for s in range(loss.shape[0]):
            smooth = np.convolve(loss[s], np.ones(20) / 20, mode="valid")
            ax_loss.plot(smooth, color=color, lw=1.0, label=model if s == 0 else None)
        g = runs[(model, mid)]
        for key, ls, when in (("grad_t_init", "-", "init"), ("grad_t_final", "--", "trained")):
            rel = g[key] / g[key][:, -1:]
            ax_grad.plot(np.median(rel, axis=0), color=color, ls=ls, label=f"{model}, {when}")
    for ax in (ax_t, ax_loss):
        ax.axhline(tasks.ADDING_BASELINE, color="k", ls=":", label="baseline 1/6")
        ax.set_yscale("log")
    ax_t.set_xscale("log")
    ax_t.set_xticks(cfg.lengths, [str(t) for t in cfg.lengths])
    ax_t.xaxis.set_minor_formatter(NullFormatter())
    ax_t.set_xlabel("sequence length T")
    ax_t.set_ylabel("final MSE (last 10% of steps)")
    ax_t.set_title("final MSE: median line, dots = seeds")
    ax_t.legend(fontsize=8)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training MSE (20-step mean)")
    ax_loss.set_title(f"training at T = {mid}, every seed")
    ax_loss.legend(fontsize=8)
    ax_grad.set_yscale("log")
    ax_grad.set_xlabel("time step t")
    ax_grad.set_ylabel(r"$\|\partial L/\partial a_t\| \,/\, \|\partial L/\partial a_T\|$")
    ax_grad.set_title(f"gradient through time, T = {mid} (median over seeds)")
    ax_grad.legend(fontsize=7)
    plots.save(fig, out / "lstm_adding")
    return ["lstm_adding.png", "lstm_adding.svg"]
