"""Gradient norms step by step through an LSTM or RNN: :func:`time_profile`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import jax
import numpy as np

from gradlab import nn as _nn
from gradlab.flow._common import (
    Initializer,
    _as_init,
    _choice,
    _dtype,
    _Init,
    _name,
    _positive_int,
)
from gradlab.flow._programs import _compiled_time, _run, _TimeConfig
from gradlab.flow._results import FlowProfile, Series
from gradlab.flow._theory_lines import cell_path_line, rnn_line

__all__ = ["time_profile"]


def time_profile(
    arch: Literal["lstm", "rnn"] = "lstm",
    *,
    steps: int = 100,
    hidden: int = 64,
    in_features: int | None = None,
    seeds: int = 32,
    batch: int = 8,
    key: int | jax.Array = 0,
    init: str | Initializer = "orthogonal",
    input_init: str | Initializer | None = None,
    activation: str | Callable[[jax.Array], jax.Array] = "tanh",
    forget_bias: float = 1.0,
    variant: Literal["standard", "slide"] = "standard",
    input_scale: float = 1.0,
    loss: Literal["readout", "bce"] = "readout",
    dtype: Literal["float32", "float64"] = "float32",
    theory: bool = True,
) -> FlowProfile:
    """Measures gradient norms step by step through an LSTM or RNN at initialisation.

    The loss reads only the last step: ``ℓ_i = r·a_T`` with a random readout
    ``r ~ N(0, I/hidden)`` (or its BCE against a random label with ``loss="bce"``), so
    ``∂ℓ/∂a^(t)`` is how much step ``t`` matters to the end of the sequence. Series, for
    ``t = 1..steps``:

    * ``"grad_h"``: ``log10 ‖∂ℓ/∂a^(t)‖`` (through zero probes), ``"grad_h_rel"`` the same minus
      its value at ``t = steps``;
    * ``"grad_x"``: ``log10 ‖∂ℓ/∂x^(t)‖``; ``"h"``: ``log10 ‖a^(t)‖``;
    * LSTM only, ``"cell_path"``: ``log10 Π_{s=t+1}^{T} f_s`` (geometric mean over units) — the
      cell path ``∂c_T/∂c_t``, with the theory :func:`gradlab.theory.lstm_cell_path` at the
      measured spread of the forget pre-activations.

    Args:
        arch: ``"lstm"`` or ``"rnn"``.
        steps: sequence length ``T``.
        hidden: hidden size ``H``.
        in_features: input size (default ``hidden``).
        seeds: number of independent networks.
        batch: sequences per network.
        key: an int seed or a JAX key.
        init: recurrent initialiser (name or callable; default orthogonal, gain 1).
        input_init: input-kernel initialiser (default: ``glorot_uniform`` for the LSTM,
            ``lecun_normal`` for the RNN, as in :mod:`gradlab.nn`).
        activation: RNN activation.
        forget_bias: LSTM forget-gate bias at init.
        variant: LSTM variant, ``"standard"`` or ``"slide"``.
        input_scale: inputs are ``input_scale · N(0, I)``.
        loss: ``"readout"`` (``ℓ_i = r·a_T``) or ``"bce"`` (of that logit, random labels).
        dtype: ``"float32"`` or ``"float64"``.
        theory: attach the cell-path theory (LSTM).

    Returns:
        A :class:`FlowProfile` with ``kind == "time"``.

    Raises:
        InputError: for an unknown arch, variant, loss, initialiser or activation, or
            non-positive sizes.

    Example:
        >>> from gradlab import flow
        >>> p = flow.time_profile("lstm", steps=20, hidden=8, forget_bias=1.0, seeds=2, batch=2)
        >>> p.kind, p["cell_path"].log10.shape
        ('time', (2, 2, 20))
    """
    _choice("arch", arch, ("lstm", "rnn"))
    _choice("loss", loss, ("readout", "bce"))
    _choice("variant", variant, ("standard", "slide"))
    steps = _positive_int("steps", steps)
    hidden = _positive_int("hidden", hidden)
    seeds = _positive_int("seeds", seeds)
    batch = _positive_int("batch", batch)
    d_in = hidden if in_features is None else _positive_int("in_features", in_features)
    _dtype(dtype)
    if input_init is None:
        input_init = "glorot_uniform" if arch == "lstm" else "lecun_normal"
    rec, inp = _as_init(init), _as_init(input_init, "input_init")
    if arch == "rnn":
        _nn.get_activation(activation)
    cfg = _TimeConfig(
        arch=arch,
        steps=steps,
        hidden=hidden,
        in_features=d_in,
        activation=activation if arch == "rnn" else "tanh",
        init=rec.fn,
        input_init=inp.fn,
        forget_bias=float(forget_bias) if arch == "lstm" else 0.0,
        variant=variant if arch == "lstm" else "standard",
        seeds=seeds,
        batch=batch,
        loss=loss,
        dtype=dtype,
        input_scale=float(input_scale),
    )
    raw, seconds, compiled = _run(lambda: _compiled_time(cfg), key, seeds, dtype)
    series = _series(raw)
    config = _config(cfg, rec, inp, key)
    if arch == "lstm":
        spread = float(np.mean(raw["forget_pre_std"]))
        config["forget_preactivation_std"] = spread
        line = cell_path_line(steps, cfg.forget_bias, spread) if theory else None
        t = series["grad_h"].index
        series["cell_path"] = Series("cell_path", "Π f_s (s>t)", t, raw["cell_path"], line)
    elif theory:
        rel = series["grad_h_rel"]
        series["grad_h_rel"] = dataclasses.replace(rel, theory=rnn_line(cfg, rec.spec, inp.spec))
    return FlowProfile("time", config, series, seconds=seconds, compiled=compiled)


def _series(raw: dict[str, np.ndarray]) -> dict[str, Series]:
    """The named series of a time profile (``cell_path`` is added by the caller)."""
    grad_h = raw["grad_h"]
    t = np.arange(1, grad_h.shape[-1] + 1)
    return {
        "grad_h": Series("grad_h", "‖∂L/∂a_t‖", t, grad_h),
        "grad_h_rel": Series("grad_h_rel", "‖∂L/∂a_t‖/‖∂L/∂a_T‖", t, grad_h - grad_h[..., -1:]),
        "grad_x": Series("grad_x", "‖∂L/∂x_t‖", t, raw["grad_x"]),
        "h": Series("h", "‖a_t‖", t, raw["h"]),
    }


def _config(cfg: _TimeConfig, rec: _Init, inp: _Init, key: int | jax.Array) -> dict[str, Any]:
    """The JSON-serialisable configuration recorded in the profile."""
    config: dict[str, Any] = {
        "arch": cfg.arch,
        "steps": cfg.steps,
        "hidden": cfg.hidden,
        "in_features": cfg.in_features,
        "init": rec.name,
        "input_init": inp.name,
        "seeds": cfg.seeds,
        "batch": cfg.batch,
        "loss": cfg.loss,
        "dtype": cfg.dtype,
        "input_scale": cfg.input_scale,
        "key": key if isinstance(key, int) else "jax key",
    }
    if cfg.arch == "lstm":
        config.update(forget_bias=cfg.forget_bias, variant=cfg.variant)
    else:
        config["activation"] = _name(cfg.activation)
    return config
