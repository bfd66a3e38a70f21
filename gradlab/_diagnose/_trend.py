"""The per-layer trend of the gradient along depth, measured and predicted by mean-field theory.

A plain deep network at initialisation multiplies ``‖∂L/∂h‖²`` by about ``χ₁`` per layer
(Poole et al. 2016; Schoenholz et al. 2017), so over ``L`` layers by ``χ₁^L = e^{±L/ξ}`` with
the depth scale ``ξ = 1/|ln χ₁|``. Schoenholz et al. found such networks trainable up to about
``6ξ`` layers; past that, the squared gradient changes by more than ``e^6`` over the depth.

Measured: the per-layer gain ``g_l = log10 ‖∂L/∂h_in,l‖ − log10 ‖∂L/∂h_out,l‖`` of every plain
layer (not residual, input and output of one size, finite), summarised by its median ``ĝ``
(robust to a few layers that stand out, which the outlier rule judges) with the standard error
of a median, ``1.2533 · 1.4826 · MAD / √n``. The measured ``χ̂₁ = 10^{2ĝ}`` and
``ξ̂ = 1/|ln χ̂₁| = 1/(2 ln 10 |ĝ|)``. Predicted, where every such layer has an activation the
theory knows: ``χ₁`` from the layers' median ``σ_w²·fan_in`` and ``σ_b²``
(:func:`gradlab.theory.chi1`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from gradlab import theory as _theory
from gradlab._diagnose._layers import Layer

_LN10 = math.log(10.0)
MIN_LAYERS = 8
"""Fewest plain layers for which a per-layer trend is estimated."""
SIGNIFICANCE = 3.0
"""The trend's median must be this many standard errors from zero."""
AGREEMENT = 2.0 / 3.0
"""At least this fraction of the layers must change the gradient in the trend's direction."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Mean-field prediction for a run of layers of one activation.

    Attributes:
        activation: the activation.
        weight_variance: median ``σ_w²·fan_in`` of the layers.
        bias_variance: median ``σ_b²``.
        chi1: ``χ₁`` at the fixed point ``q*``.
        critical: the critical ``σ_w²`` at this ``σ_b²``.
    """

    activation: str
    weight_variance: float
    bias_variance: float
    chi1: float
    critical: float

    @property
    def per_layer(self) -> float:
        """Predicted ``log10`` gain per layer, ``½ log10 χ₁``."""
        return 0.5 * math.log10(max(self.chi1, 1e-300))

    @property
    def xi(self) -> float:
        """``ξ = 1/|ln χ₁|`` in layers (``inf`` at ``χ₁ = 1``)."""
        return depth_scale(self.per_layer)


@dataclasses.dataclass(frozen=True)
class Trend:
    """The measured per-layer trend of ``‖∂L/∂h‖`` along a run of plain layers.

    Attributes:
        layers: indices of the layers in the run, in data-flow order.
        per_layer: median ``log10`` gain per layer (``> 0``: the gradient grows going back).
        stderr: standard error of that median.
        agreement: fraction of the layers whose gain has the sign of ``per_layer``.
        prediction: the mean-field prediction, or None where no theory applies.
    """

    layers: tuple[int, ...]
    per_layer: float
    stderr: float
    agreement: float
    prediction: Prediction | None

    @property
    def depth(self) -> int:
        """Number of layers in the run."""
        return len(self.layers)

    @property
    def total(self) -> float:
        """``per_layer × depth``: the trend's change over the run, in decades."""
        return self.per_layer * self.depth

    @property
    def chi1(self) -> float:
        """Measured ``χ̂₁ = 10^{2ĝ}``."""
        return 10.0 ** (2.0 * self.per_layer)

    @property
    def xi(self) -> float:
        """Measured ``ξ̂ = 1/(2 ln 10 |ĝ|)`` in layers."""
        return depth_scale(self.per_layer)

    def consistent(self) -> bool:
        """The median is ``SIGNIFICANCE`` standard errors from 0 and most layers agree."""
        return abs(self.per_layer) > SIGNIFICANCE * self.stderr and self.agreement >= AGREEMENT

    def beyond(self, scales: float) -> bool:
        """A consistent trend over more layers than ``scales × ξ̂`` (the trainable depth)."""
        return self.consistent() and self.depth > scales * self.xi

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable dict (``xi`` None where infinite).

        Example:
            >>> t = Trend((0, 1), 0.05, 0.01, 1.0, None)
            >>> round(t.to_dict()["xi"], 3), t.to_dict()["prediction"]
            (4.343, None)
        """
        p = self.prediction

        def fin(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "layers": list(self.layers),
            "log10_gain_per_layer": self.per_layer,
            "stderr": self.stderr,
            "agreement": self.agreement,
            "chi1": self.chi1,
            "xi": fin(self.xi),
            "prediction": None
            if p is None
            else {
                "activation": p.activation,
                "weight_variance": p.weight_variance,
                "bias_variance": p.bias_variance,
                "chi1": p.chi1,
                "xi": fin(p.xi),
                "critical_weight_variance": p.critical,
            },
        }


def depth_scale(per_layer: float) -> float:
    """``ξ = 1/(2 ln 10 |g|)`` for a ``log10`` gain ``g`` per layer of ``‖∂L/∂h‖``.

    Example:
        >>> round(depth_scale(0.5 * math.log10(1.37)), 2)  # chi1 = 1.37: xi = 1/ln 1.37
        3.18
        >>> depth_scale(0.0)
        inf
    """
    if per_layer == 0.0:
        return math.inf
    return 1.0 / (2.0 * _LN10 * abs(per_layer))


def predict(run: list[Layer]) -> Prediction | None:
    """Mean-field prediction for ``run``, or None unless every layer's activation is known.

    Example:
        >>> predict([]) is None
        True
    """
    if not run or any(
        lay.activation not in _theory.MEAN_FIELD_ACTIVATIONS or not lay.weight_variance
        for lay in run
    ):
        return None
    acts = [lay.activation for lay in run]
    act = max(set(acts), key=acts.count)
    same = [lay for lay in run if lay.activation == act]
    sw = float(np.median([lay.weight_variance or 0.0 for lay in same]))
    sb = float(np.median([lay.bias_variance for lay in same]))
    return Prediction(
        activation=act,
        weight_variance=sw,
        bias_variance=sb,
        chi1=float(_theory.chi1(sw, sb, act)),
        critical=float(_theory.critical_weight_variance(act, sb)),
    )


def measure_trend(layers: list[Layer]) -> Trend | None:
    """The trend over the plain layers of ``layers`` (None for fewer than ``MIN_LAYERS``).

    Example:
        >>> measure_trend([]) is None
        True
    """
    run = [lay for lay in layers if not lay.residual and lay.same_size and math.isfinite(lay.gain)]
    if len(run) < MIN_LAYERS:
        return None
    gains = np.array([lay.gain for lay in run])
    med = float(np.median(gains))
    mad = float(np.median(np.abs(gains - med)))
    stderr = 1.2533 * 1.4826 * mad / math.sqrt(len(run))
    sign = 1.0 if med >= 0 else -1.0
    agreement = float(np.mean(sign * gains > 0))
    return Trend(tuple(lay.index for lay in run), med, stderr, agreement, predict(run))
