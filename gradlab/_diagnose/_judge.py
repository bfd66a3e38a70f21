"""Judging the measurements: flags (vanishing, exploding, a layer that stands out), why, and fixes.

Rules (``decades`` and ``outlier`` come from :class:`~gradlab._diagnose.DiagnoseOptions`):

* depth: ``r_l = log10 ‖∂L/∂h_in,l‖ − log10 ‖∂L/∂h_out,last‖``. If ``|r_0| > decades`` the
  gradient vanishes (``r_0 < 0``) or explodes (``> 0``) over the depth; the flag names the
  layers, from the input side, where ``|r_l| > decades``.
* trend (:mod:`._trend`): below ``decades``, a consistent per-layer growth or decay ``ĝ``
  (median gain of the plain layers, 3 standard errors from 0, shared by 2/3 of them) over more
  layers than ``depth_scales × ξ̂`` (``ξ̂ = 1/(2 ln 10 |ĝ|)``, 6 by default: the trainable depth
  of Schoenholz et al. 2017) is flagged too; the flag names the layers more than
  ``depth_scales × ξ̂`` layers from the output.
* a layer stands out when its gain differs from the median gain of the interior layers by more
  than ``outlier`` decades and by more than 5 robust standard deviations (1.4826 × MAD).
* time: ``log10 ‖∂L/∂s_1‖ − log10 ‖∂L/∂s_T‖`` beyond ``decades`` along a recurrence.

The why uses :mod:`gradlab.theory`: ``σ_w²·fan_in`` against the activation's critical value
(1 for linear/tanh without bias, 2 for ReLU, the tanh mean-field critical line with biases) and
``χ₁``, the depth scale ``ξ = 1/|ln χ₁|`` against the depth; the growth ``(1 + α²c)`` per
residual block; the LSTM cell path ``σ(b_f)^T``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from gradlab import theory as _theory
from gradlab._diagnose._fixes import Fix, Scale, Shift, forget_bias_mask
from gradlab._diagnose._layers import Layer, Recurrence
from gradlab._diagnose._measure import Measured
from gradlab._diagnose._trend import Trend

_LN10 = math.log(10.0)


@dataclasses.dataclass(frozen=True)
class Flag:
    """A problem found in the gradient flow.

    Attributes:
        kind: ``"vanishing"``, ``"exploding"`` or ``"outlier"``.
        where: ``"depth"`` or ``"time"``.
        layers: indices of the flagged layers (depth), empty for time.
        names: their names (or the recurrence's name).
        measured: what was measured, in words and numbers.
        why: the reason, from theory, where gradlab has one ("" otherwise).
        fix: the suggested fix, or None.

    Example:
        >>> flag = Flag("exploding", "depth", (3,), ("[3]",), "gain 10^+1.2", "", None)
        >>> flag.to_dict()["names"]
        ['[3]']
    """

    kind: str
    where: str
    layers: tuple[int, ...]
    names: tuple[str, ...]
    measured: str
    why: str
    fix: Fix | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict.

        Example:
            >>> Flag("vanishing", "time", (), ("rnn",), "...", "", None).to_dict()["fix"] is None
            True
        """
        return {
            "kind": self.kind,
            "where": self.where,
            "layers": list(self.layers),
            "names": list(self.names),
            "measured": self.measured,
            "why": self.why,
            "fix": None if self.fix is None else self.fix.to_dict(),
        }


def _k_words(crit: float) -> str:
    k = math.sqrt(crit)
    if abs(crit - 1.0) < 1e-6:
        return "std 1/√n_prev (LeCun; the lecture's 1/√n_prev, K = 1 in K/√n_prev)"
    if abs(crit - 2.0) < 1e-6:
        return (
            "std √2/√n_prev (He; K = √2 in K/√n_prev — the lecture's 2/√n_prev is K = 2, "
            "variance 4/n, twice too large)"
        )
    return f"std K/√n_prev with K = {k:.3g} (σ_w² = {crit:.3g})"


def _theory_ok(act: str) -> bool:
    return act in _theory.MEAN_FIELD_ACTIVATIONS


def _chain_flag(
    layers: list[Layer], decades: float, trend: Trend | None, scales: float
) -> Flag | None:
    ends = [layers[-1].grad_out, layers[-1].grad_in]
    ref = next((e for e in ends if math.isfinite(e)), None)
    if ref is None:  # not finite even at the output: an overflow, or exactly zero everywhere
        return _nowhere_finite(layers)
    rel = [lay.grad_in - ref for lay in layers]
    total = rel[0]
    if math.isnan(total):
        return None
    if abs(total) <= decades:
        if trend is not None and trend.beyond(scales):
            return _trend_flag(layers, trend, scales)
        return None
    sign = 1.0 if total > 0 else -1.0
    idx = [lay.index for lay, r in zip(layers, rel, strict=True) if sign * r > decades]
    kind = "exploding" if sign > 0 else "vanishing"
    first, last, n = layers[0].name, layers[-1].name, len(layers)
    if total == math.inf:
        measured = f"‖∂L/∂h‖ at the input of {first} is not finite (float overflow)"
        measured += f" while at the output of {last} it is ({n} layers)"
    elif total == -math.inf:
        measured = f"‖∂L/∂h‖ at the input of {first} is exactly zero"
        measured += f" while at the output of {last} it is not ({n} layers)"
    else:
        measured = f"‖∂L/∂h‖ at the input of {first} is 10^{total:+.1f} × that at the output"
        measured += f" of {last} ({n} layers)"
    residual = [lay for lay in layers if lay.residual]
    fix: Fix | None
    if len(residual) >= max(2, len(layers) // 2):
        why, fix = _residual_why(residual)
    else:
        depth = trend.depth if trend is not None else len(layers)
        why, fix = _init_why([layers[i] for i in idx], layers, kind, (depth, scales))
    return Flag(kind, "depth", tuple(idx), tuple(layers[i].name for i in idx), measured, why, fix)


def _trend_flag(layers: list[Layer], trend: Trend, scales: float) -> Flag:
    """A consistent per-layer trend beyond the trainable depth (``_trend.Trend.beyond``)."""
    kind = "exploding" if trend.per_layer > 0 else "vanishing"
    n, xi = trend.depth, trend.xi
    idx = [i for j, i in enumerate(trend.layers) if n - j > scales * xi]
    by_index = {lay.index: lay for lay in layers}
    verb = "grow" if kind == "exploding" else "shrink"
    measured = (
        f"‖∂L/∂h‖ {verb}s by ×{10**trend.per_layer:.3g} per layer going back (median over "
        f"{n} plain layers, 10^{trend.per_layer:+.3f} ± {trend.stderr:.3f}; "
        f"{trend.agreement:.0%} of them {verb} it), 10^{trend.total:+.2f} in all: "
        f"measured χ₁ = {trend.chi1:.3g}, depth scale "
        f"ξ = 1/|ln χ₁| = {xi:.3g} layers, and the depth {n} exceeds the trainable depth "
        f"≈ {scales:g}ξ = {scales * xi:.3g} layers (Schoenholz et al. 2017)"
    )
    p = trend.prediction
    if p is None:
        acts = sorted({by_index[i].activation for i in trend.layers})
        why = (
            f"no mean-field theory for {'/'.join(acts)} layers (gradlab.theory covers "
            f"{', '.join(_theory.MEAN_FIELD_ACTIVATIONS)}): judged on the measured trend alone"
        )
        return Flag(kind, "depth", tuple(idx), tuple(by_index[i].name for i in idx), measured,
                    why, None)  # fmt: skip
    why, fix = _init_why([by_index[i] for i in trend.layers], layers, kind, (n, scales))
    if abs(math.log(p.weight_variance / p.critical)) < 0.15:
        why += (
            "; at infinite width theory predicts no such trend here, so it comes from elsewhere "
            "(a narrow width, inputs far from the fixed point q*, weights that are not "
            "independent draws)"
        )
    return Flag(kind, "depth", tuple(idx), tuple(by_index[i].name for i in idx), measured, why, fix)


def _nowhere_finite(layers: list[Layer]) -> Flag | None:
    inf = [lay.index for lay in layers if lay.grad_in == math.inf]
    zero = [lay.index for lay in layers if lay.grad_in == -math.inf]
    if inf:
        measured = "‖∂L/∂h‖ is not finite (float overflow) down to the output"
        return Flag("exploding", "depth", tuple(inf), tuple(layers[i].name for i in inf),
                    measured, "", None)  # fmt: skip
    if len(zero) < len(layers):
        return None
    measured = "‖∂L/∂h‖ is exactly zero at every layer, the output's included"
    why, fix = _init_why(layers, layers, "vanishing")
    return Flag("vanishing", "depth", tuple(zero), tuple(lay.name for lay in layers),
                measured, why, fix)  # fmt: skip


def _depth_words(chi: float, depth: int, scales: float) -> str:
    """``ξ`` from theory's ``χ₁`` against the depth (the trainable depth ``scales × ξ``)."""
    if abs(math.log(max(chi, 1e-300))) < 1e-9:
        return f"ξ = 1/|ln χ₁| is infinite: {depth} layers are within any trainable depth"
    xi = 1.0 / abs(math.log(max(chi, 1e-300)))
    side = ">" if depth > scales * xi else "≤"
    return (
        f"depth scale ξ = 1/|ln χ₁| = {xi:.3g} layers, so the depth {depth} {side} the "
        f"trainable depth ≈ {scales:g}ξ = {scales * xi:.3g} layers (Schoenholz et al. 2017)"
    )


def _init_why(
    flagged: list[Layer], layers: list[Layer], kind: str, depth: tuple[int, float] | None = None
) -> tuple[str, Fix | None]:
    acts = [lay.activation for lay in flagged if _theory_ok(lay.activation)]
    if not acts:
        return "", None
    act = max(set(acts), key=acts.count)
    same = [lay for lay in flagged if lay.activation == act and lay.weight_variance]
    sw = float(np.median([lay.weight_variance for lay in same]))
    sb = float(np.median([lay.bias_variance for lay in same]))
    crit = float(_theory.critical_weight_variance(act, sb))
    chi = float(_theory.chi1(sw, sb, act))
    bias = f", σ_b² = {sb:.3g}" if sb > 0 else " at zero bias"
    phase = "chaotic" if chi > 1 else "ordered"
    why = (
        f"{len(same)} {act} layers have σ_w²·fan_in ≈ {sw:.3g} against the critical value "
        f"{crit:.3g} ({act}{bias}; gradlab.theory.critical_weight_variance): χ₁ = {chi:.3g}, "
        f"the {phase} phase, each layer multiplies ‖∂L/∂h‖ by about {math.sqrt(chi):.3g}"
    )
    if depth is not None:
        why += "; " + _depth_words(chi, *depth)
    sats = [lay.saturation for lay in same if lay.saturation is not None]
    if sats and act in ("tanh", "sigmoid") and np.mean(sats) > 0.2:
        why += f"; {np.mean(sats):.0%} of the {act} units are saturated"
    if act == "relu" and sats and np.mean(sats) > 0.2:
        why += f"; {np.mean(sats):.0%} of the ReLU units are dead on the whole batch"
    if abs(math.log(sw / crit)) < 0.15:
        return why + " (the initialisation is close to critical)", None
    edits = tuple(
        Scale(leaf, sl, math.sqrt(crit / lay.weight_variance))
        for lay in layers
        if lay.activation == act and lay.weight_variance and not lay.residual
        for leaf, sl in lay.kernels[:1]
    )
    text = f"initialise the {act} layers' kernels with {_k_words(crit)}"
    if kind == "exploding":
        text += "; gradient clipping (optax.clip_by_global_norm) caps the symptom, not the cause"
    return why, Fix(text, edits)


def _residual_why(blocks: list[Layer]) -> tuple[str, Fix]:
    n = len(blocks)
    gain = float(np.median([b.gain for b in blocks]))
    why = (
        f"{n} residual blocks each multiply ‖∂L/∂h‖ by about 10^{gain:+.2f}: the stream adds "
        "every branch, so E‖∂L/∂h‖² grows by (1 + α²c) per block and the growth adds up over "
        "depth"
    )
    b = blocks[0]
    if b.activation in ("relu", "linear") and len(b.kernel_variances) >= 2:
        s1, s2 = b.kernel_variances[0], b.kernel_variances[-1]
        c = s1 * s2 / 2.0 if b.activation == "relu" else s1 * s2
        pred = 0.5 * math.log10(1.0 + c)
        why += f" (branch scale α = 1, c = σ₁²σ₂²{'/2' if b.activation == 'relu' else ''} = "
        why += f"{c:.3g}: theory 10^{pred:+.2f} per block)"
    alpha = 1.0 / math.sqrt(n)
    edits = []
    for blk in blocks:
        edit = Scale(blk.kernels[-1][0], blk.kernels[-1][1], alpha)
        if edit not in edits:
            edits.append(edit)
    text = (
        f"scale each residual branch by 1/√L = 1/√{n} = {alpha:.3g} (multiply the branch's last "
        "kernel, branch_scale=1/√L in gradlab.nn.ResidualStack; Fixup/ReZero start it at zero)"
    )
    return why, Fix(text, tuple(edits))


def _outlier_flags(layers: list[Layer], outlier: float, taken: set[int]) -> list[Flag]:
    inner = [lay for lay in layers[1:-1] if math.isfinite(lay.gain) and lay.same_size]
    if len(inner) < 4:
        return []
    gains = np.array([lay.gain for lay in inner])
    med = float(np.median(gains))
    mad = float(np.median(np.abs(gains - med)))
    tol = max(outlier, 5.0 * 1.4826 * mad)
    flags = []
    for lay in inner:
        if abs(lay.gain - med) <= tol or lay.index in taken:
            continue
        flags.append(_outlier(lay, layers, med))
    return flags


def _outlier(lay: Layer, layers: list[Layer], med: float) -> Flag:
    measured = (
        f"{lay.name} changes ‖∂L/∂h‖ by 10^{lay.gain:+.2f} going back, against 10^{med:+.2f} "
        "for the typical layer"
    )
    peers = [
        o.weight_variance
        for o in layers
        if o is not lay and o.activation == lay.activation and o.weight_variance
    ]
    why, fix = "", None
    if peers and lay.weight_variance:
        typical = float(np.median(peers))
        ratio = lay.weight_variance / typical
        why = (
            f"its σ_w²·fan_in = {lay.weight_variance:.3g} against {typical:.3g} in the other "
            f"{lay.activation} layers (×{ratio:.3g})"
        )
        if lay.saturation is not None and lay.activation in ("tanh", "sigmoid"):
            why += f"; {lay.saturation:.0%} of its {lay.activation} units are saturated"
        if abs(math.log(ratio)) > math.log(1.5):
            target = typical
            if _theory_ok(lay.activation):
                target = float(_theory.critical_weight_variance(lay.activation, lay.bias_variance))
            leaf, sl = lay.kernels[0]
            fix = Fix(
                f"re-initialise {lay.name}'s kernel like the others: {_k_words(target)}",
                (Scale(leaf, sl, math.sqrt(target / lay.weight_variance)),),
            )
    return Flag("outlier", "depth", (lay.index,), (lay.name,), measured, why, fix)


def _time_flag(m: Measured, r: Recurrence, k: int, decades: float) -> Flag | None:
    g = r.grad[np.isfinite(r.grad)]
    if g.size < 2:
        return None
    total = float(g[0] - g[-1])
    if abs(total) <= decades:
        return None
    kind = "exploding" if total > 0 else "vanishing"
    steps = len(r.grad)
    measured = (
        f"‖∂L/∂s_t‖ through {r.name} over {steps} steps: first/last = 10^{total:+.1f} "
        f"({total / (steps - 1):+.3f} decades per step)"
    )
    why, fix = "", None
    if r.forget is not None and kind == "vanishing":
        why, fix = _forget_why(m, r, k, steps, decades)
    elif r.weight_variance and _theory_ok(r.activation):
        crit = float(_theory.critical_weight_variance(r.activation, 0.0))
        why = (
            f"recurrent σ_w²·fan_in = {r.weight_variance:.3g} against {crit:.3g} for {r.activation}"
        )
        fix = Fix(
            f"initialise the recurrent kernel {_k_words(crit)} or orthogonal with gain 1"
            + ("; clip gradients (optax.clip_by_global_norm)" if kind == "exploding" else ""),
            (Scale(r.kernel, None, math.sqrt(crit / r.weight_variance)),),
        )
    return Flag(kind, "time", (), (r.name,), measured, why, fix)


def _forget_why(
    m: Measured, r: Recurrence, k: int, steps: int, decades: float
) -> tuple[str, Fix | None]:
    assert r.forget is not None
    b, s = r.forget
    path = _theory.lstm_cell_path(steps - 1, b, s)
    why = (
        f"LSTM forget gate at b_f ≈ {b:.2f} (pre-activation spread {s:.2f}): the cell path, the "
        f"route meant to carry the gradient over long spans, keeps only "
        f"Π f_t ≈ 10^{math.log10(max(path.typical, 1e-300)):.1f} of it over {steps} steps "
        "(gradlab.theory.lstm_cell_path)"
    )
    target = b
    budget = -0.5 * decades * _LN10
    while (steps - 1) * _theory.lstm_cell_path(1, target, s).per_step_log < budget and target < 30:
        target += 0.25
    forgets = [i for i, f in enumerate(m.program.forgets) if f.units == r.forget_units]
    found = forget_bias_mask(m, forgets[0]) if forgets else None
    if found is None:
        return why, Fix(f"initialise the forget-gate bias at b_f ≈ {target:.2f}", ())
    leaf, mask = found
    short = int(-0.5 * decades * _LN10 / math.log(_sig(1.0)))
    text = (
        f"initialise the forget-gate bias at b_f ≈ {target:.2f} (now {b:.2f}) so that "
        f"σ(b_f)^T stays above 10^-{0.5 * decades:g} over {steps} steps; the usual b_f = 1 "
        f"(Jozefowicz et al. 2015) does that for about {short} steps"
    )
    return why, Fix(text, (Shift(leaf, mask, target - b),))


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def judge(
    m: Measured,
    layers: list[Layer],
    recurrences: list[Recurrence],
    decades: float,
    outlier: float,
    depth_scales: float = 6.0,
    trend: Trend | None = None,
) -> list[Flag]:
    """All flags of a model (see the module docstring); ``trend`` from ``_trend.measure_trend``."""
    flags: list[Flag] = []
    if len(layers) >= 2:
        chain = _chain_flag(layers, decades, trend, depth_scales)
        taken: set[int] = set()
        if chain is not None:
            flags.append(chain)
        flags.extend(_outlier_flags(layers, outlier, taken))
    for k, r in enumerate(recurrences):
        f = _time_flag(m, r, k, decades)
        if f is not None:
            flags.append(f)
    return flags
