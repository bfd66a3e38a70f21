"""The :mod:`gradlab.theory` prediction that goes with a measured configuration.

Each function takes a configuration and the :class:`gradlab.init.InitSpec` of its initialiser
(None for a callable gradlab did not make) and returns a :class:`TheoryLine`, or None where
gradlab has no formula. The numbers all come from :mod:`gradlab.theory`; nothing here is a
formula of its own.
"""

from __future__ import annotations

import math

import numpy as np

from gradlab import theory as _theory
from gradlab.flow._programs import _DepthConfig, _TimeConfig
from gradlab.flow._results import TheoryLine
from gradlab.init import InitSpec

# Families whose entries are i.i.d. with variance σ²/n but not Gaussian: the Gaussian formula
# is then an approximation.
_NON_GAUSSIAN = ("uniform", "truncated_normal")
_IID = ("normal", *_NON_GAUSSIAN)


def _line(index: np.ndarray, r: _theory.LogNormRatio, exact: bool, note: str) -> TheoryLine:
    return TheoryLine(
        index=index,
        mean=np.asarray(r.log10_norm_mean, dtype=np.float64),
        std=np.asarray(r.log10_norm_std, dtype=np.float64),
        exact=bool(exact),
        note=note,
    )


def _alpha(branch_scale: object, depth: int) -> float:
    """The residual branch multiplier ``α`` at init for a :class:`gradlab.nn.ResidualStack`."""
    if branch_scale == "rezero":
        return 0.0
    if branch_scale == "fixup":
        return 1.0 / math.sqrt(max(depth, 1))
    if branch_scale is None:
        return 1.0
    return float(branch_scale)  # type: ignore[arg-type]


def depth_line(cfg: _DepthConfig, spec: InitSpec | None) -> TheoryLine | None:
    """The prediction for ``grad_h_rel`` of a depth profile, or None if gradlab has none."""
    act, L, n = cfg.activation, cfg.depth, cfg.width
    if not isinstance(act, str) or spec is None or spec.weight_variance is None:
        return None
    index = np.arange(L + 1)
    remaining = (L - index).astype(np.float64)
    s2 = spec.weight_variance
    if cfg.arch == "residual":
        if cfg.layer_norm or act not in ("relu", "linear") or spec.family not in _IID:
            return None
        r = _theory.residual_stack(remaining, s2, _alpha(cfg.branch_scale, L), act)
        return _line(index, r, r.exact, r.note)
    r_or_none: _theory.LogNormRatio | None = None
    if act == "linear" and spec.family == "orthogonal":
        r_or_none = _theory.orthogonal_linear(remaining, spec.gain or 1.0)
    elif act == "linear" and spec.family in _IID:
        r_or_none = _theory.gaussian_linear(remaining, n, s2)
    elif act == "relu" and spec.family in _IID:
        r_or_none = _theory.relu_gaussian(remaining, n, s2)
    elif act in ("tanh", "sigmoid") and spec.family in (*_IID, "orthogonal"):
        # z_0 = x W_in + b_in with x ~ N(0, I_width): variance σ² (biases start at zero).
        orthogonal = spec.family == "orthogonal"
        r_or_none = _theory.mean_field_profile(
            L, s2, 0.0, act, input_q=s2, width=n, orthogonal=orthogonal
        )
    if r_or_none is None:
        return None
    r = r_or_none
    # Biases start at zero, so the zero-bias laws apply; uniform weights are not Gaussian.
    approximate = spec.family in _NON_GAUSSIAN
    note = r.note + (
        f"; {spec.family} weights: Gaussian formula, approximate" if approximate else ""
    )
    return _line(index, r, r.exact and not approximate, note)


def rnn_line(cfg: _TimeConfig, rec: InitSpec | None, inp: InitSpec | None) -> TheoryLine | None:
    """Mean-field prediction for an RNN's ``grad_h_rel``, or None if gradlab has none."""
    act = cfg.activation
    if not isinstance(act, str) or act not in _theory.MEAN_FIELD_ACTIVATIONS:
        return None
    if rec is None or inp is None or rec.weight_variance is None or inp.weight_variance is None:
        return None
    if rec.family not in (*_IID, "orthogonal") or inp.family not in (*_IID, "orthogonal"):
        return None
    # x_t W with x_t ~ input_scale·N(0, I_D): variance input_scale²·σ_in²·D/fan (fan_in = D;
    # Glorot's fan_avg is exact only when D == hidden).
    s_x = cfg.input_scale**2 * inp.weight_variance
    r = _theory.rnn_mean_field_profile(
        cfg.steps,
        rec.weight_variance,
        s_x,
        act,
        width=cfg.hidden,
        orthogonal=rec.family == "orthogonal",
    )
    note = f"RNN mean field: the q-map with the input as a bias of variance {s_x:g}; " + r.note
    return _line(np.arange(1, cfg.steps + 1), r, False, note)


def cell_path_line(steps: int, forget_bias: float, spread: float) -> TheoryLine:
    """The LSTM cell path ``Π f_s`` at the measured spread of the forget pre-activations."""
    t = np.arange(1, steps + 1)
    rate = _theory.lstm_cell_path(1, forget_bias, spread).per_step_log
    zero_spread = -math.log1p(math.exp(-forget_bias)) / math.log(10.0)
    return TheoryLine(
        index=t,
        mean=(steps - t) * rate / math.log(10.0),
        std=np.zeros(steps),
        exact=False,
        note=(
            f"cell path: exp((T-t)·E[ln σ(b_f + z)]), z ~ N(0, {spread:.3f}²) (measured "
            f"spread); at zero spread σ(b_f)^(T-t), log10 slope {zero_spread:.4f}"
        ),
    )
