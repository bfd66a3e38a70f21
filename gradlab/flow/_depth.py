"""Gradient norms layer by layer: :func:`depth_profile`."""

from __future__ import annotations

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
    _name,
    _positive_int,
)
from gradlab.flow._programs import _compiled_depth, _DepthConfig, _run
from gradlab.flow._results import FlowProfile, Series, TheoryLine
from gradlab.flow._theory_lines import depth_line

__all__ = ["depth_profile"]


def depth_profile(
    arch: Literal["mlp", "residual"] = "mlp",
    *,
    depth: int = 150,
    width: int = 64,
    activation: str | Callable[[jax.Array], jax.Array] = "tanh",
    init: str | Initializer = "lecun_normal",
    seeds: int = 32,
    batch: int = 8,
    key: int | jax.Array = 0,
    loss: Literal["readout", "bce"] = "readout",
    dtype: Literal["float32", "float64"] = "float32",
    branch_scale: float | str | None = None,
    layer_norm: bool = False,
    use_bias: bool = True,
    weight_gradients: bool = True,
    theory: bool = True,
) -> FlowProfile:
    """Measures gradient norms layer by layer in deep networks at initialisation.

    Builds ``seeds`` independent networks (``gradlab.nn.MLP`` or dense
    ``gradlab.nn.ResidualStack``, ``in_features = width``, one output), feeds each a batch of
    ``x ~ N(0, I)`` with random labels, and records per example (see the module docstring for
    the loss):

    * ``"grad_h"``: ``log10 ‖∂ℓ/∂h_l‖``, ``l = 0..depth`` (through zero probes);
    * ``"grad_h_rel"``: the same minus its value at ``l = depth`` — the profile the theory
      predicts, attached as ``series["grad_h_rel"].theory`` where gradlab has a formula;
    * ``"grad_w"``: ``log10 ‖∂ℓ/∂W_l‖_F``, ``l = 1..depth`` (per-example weight gradients of the
      hidden layers; for a residual block both kernels together);
    * ``"h"``: ``log10 ‖h_l‖`` (forward).

    One compiled function per configuration: a second call with the same arguments (any
    ``key``) reuses it. Theory lines (``theory=True``): exact for linear networks with
    orthogonal or Gaussian weights and for ReLU with Gaussian weights (zero bias); mean field
    with a ``1/width`` correction (approximate) for tanh/sigmoid; the mean-square growth
    ``(1 + α²c)^depth`` for dense ReLU / linear residual stacks (approximate).

    Args:
        arch: ``"mlp"`` or ``"residual"``.
        depth: number of hidden layers / residual blocks.
        width: units per layer.
        activation: ``"tanh"``, ``"relu"``, ``"linear"``, ``"sigmoid"``, ``"gelu"`` or a callable.
        init: the hidden kernels' initialiser: a name of :data:`gradlab.init.NAMES` (e.g.
            ``"he_normal"``, ``"orthogonal:1.1"``, ``"fan_in_normal:2"`` for the lecture's
            ``2/sqrt(n_prev)``), a :mod:`gradlab.init` initialiser, or any callable
            ``(key, shape, dtype) -> Array`` (measured, but with no theory line).
        seeds: number of independent networks.
        batch: examples per network.
        key: an int seed or a JAX key.
        loss: ``"readout"`` (``ℓ_i = y_i``) or ``"bce"`` (binary cross-entropy, random labels).
        dtype: ``"float32"`` or ``"float64"`` (float64 is enabled only inside this call).
        branch_scale: residual only: None, a float, ``"rezero"`` or ``"fixup"``.
        layer_norm: residual only: pre-LayerNorm in each branch.
        use_bias: MLP only: biases (initialised at zero) or none.
        weight_gradients: also measure per-example weight gradients (costs ``batch`` backward
            passes).
        theory: attach theory lines where available.

    Returns:
        A :class:`FlowProfile`.

    Raises:
        InputError: for an unknown arch, init or activation, or non-positive sizes.

    Example:
        >>> from gradlab import flow
        >>> p = flow.depth_profile("mlp", depth=20, width=16, activation="linear",
        ...                        init="orthogonal:0.9", seeds=2, batch=2)
        >>> round(float(p["grad_h_rel"].mean[0]), 4)  # log10(0.9 ** 20)
        -0.9151
        >>> p["grad_h_rel"].theory.exact
        True
    """
    _choice("arch", arch, ("mlp", "residual"))
    _choice("loss", loss, ("readout", "bce"))
    depth = _positive_int("depth", depth, 0)
    width = _positive_int("width", width)
    seeds = _positive_int("seeds", seeds)
    batch = _positive_int("batch", batch)
    _dtype(dtype)
    kernel = _as_init(init)  # validates the name early
    _nn.get_activation(activation)
    cfg = _DepthConfig(
        arch=arch,
        depth=depth,
        width=width,
        activation=activation,
        init=kernel.fn,
        seeds=seeds,
        batch=batch,
        loss=loss,
        dtype=dtype,
        branch_scale=branch_scale if arch == "residual" else None,
        layer_norm=bool(layer_norm) if arch == "residual" else False,
        use_bias=bool(use_bias),
        weight_gradients=bool(weight_gradients),
    )
    raw, seconds, compiled = _run(lambda: _compiled_depth(cfg), key, seeds, dtype)
    line = depth_line(cfg, kernel.spec) if theory else None
    config = _config(cfg, kernel.name, key)
    return FlowProfile("depth", config, _series(raw, line), seconds=seconds, compiled=compiled)


def _series(raw: dict[str, np.ndarray], line: TheoryLine | None) -> dict[str, Series]:
    """The named series of a depth profile from the raw ``log10`` arrays."""
    grad_h = raw["grad_h"]
    layers = np.arange(grad_h.shape[-1])
    rel = grad_h - grad_h[..., -1:]
    series = {
        "grad_h": Series("grad_h", "‖∂L/∂h_l‖", layers, grad_h),
        "grad_h_rel": Series("grad_h_rel", "‖∂L/∂h_l‖/‖∂L/∂h_L‖", layers, rel, line),
        "h": Series("h", "‖h_l‖", layers, raw["h"]),
    }
    if "grad_w" in raw:
        series["grad_w"] = Series("grad_w", "‖∂L/∂W_l‖", layers[1:], raw["grad_w"])
    return series


def _config(cfg: _DepthConfig, init_name: str, key: int | jax.Array) -> dict[str, Any]:
    """The JSON-serialisable configuration recorded in the profile."""
    return {
        "arch": cfg.arch,
        "depth": cfg.depth,
        "width": cfg.width,
        "activation": _name(cfg.activation),
        "init": init_name,
        "seeds": cfg.seeds,
        "batch": cfg.batch,
        "loss": cfg.loss,
        "dtype": cfg.dtype,
        "branch_scale": _name(cfg.branch_scale),
        "layer_norm": cfg.layer_norm,
        "use_bias": cfg.use_bias,
        "key": key if isinstance(key, int) else "jax key",
    }
