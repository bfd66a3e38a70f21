"""Residual stacks: the mean square of the gradient through dense residual blocks.

:func:`residual_stack` is the infinite-width law of Hanin & Rolnick (2018) for ReLU or linear
branches scaled by ``α`` (unscaled, Fixup-like ``α² = 1/depth``, or ReZero's ``α = 0``).
"""

from __future__ import annotations

import math

import numpy as np

from gradlab._errors import InputError
from gradlab.theory._checks import ArrayLike, _as_depth
from gradlab.theory._results import LogNormRatio


def residual_stack(
    depth: ArrayLike,
    weight_variance: float = 2.0,
    branch_scale: float = 1.0,
    activation: str = "relu",
) -> LogNormRatio:
    """Dense residual stack at infinite width: ``E‖g_(l−1)‖² = (1 + α²c)·E‖g_l‖²``.

    Blocks ``h_l = h_(l−1) + α·φ(h_(l−1) W_1) W_2`` (zero biases, no LayerNorm) with both
    kernels ``N(0, σ²/n)``: the branch multiplies a squared norm by ``c = σ⁴/2`` on average for
    ReLU (``σ²/2`` per ReLU layer, ``σ²`` per linear one) and by ``c = σ⁴`` for a linear branch,
    independently of the skip path at infinite width. Backward, each block therefore multiplies
    ``E‖g‖²`` by ``1 + α²c``, and the log of the mean square after ``depth`` blocks is

        ``depth · ln(1 + α²c)``

    (Hanin & Rolnick 2018). With He's ``σ² = 2`` and ``α = 1`` that is ``depth·ln 3``: an
    unscaled residual stack explodes although its skips are identities; ``α² = 1/depth``
    (:class:`gradlab.nn.ResidualStack`'s ``"fixup"``) keeps it at ``ln(1 + c/depth)·depth ≈ c``;
    ``α = 0`` (``"rezero"``) makes every block the identity, exactly.

    This is the log of the mean square, not the mean of the log that the other functions give:
    approximate (``exact`` is True only for ``α = 0``), and ``variance`` is reported as 0 (not
    modelled).

    Args:
        depth: number of residual blocks (scalar or array).
        weight_variance: ``σ²`` of both branch kernels (2 for He).
        branch_scale: ``α``, the branch multiplier.
        activation: ``"relu"`` or ``"linear"``.

    Returns:
        A :class:`LogNormRatio` (variance 0).

    Raises:
        InputError: for another activation or a negative variance.

    >>> r = residual_stack(150, weight_variance=2.0, branch_scale=1.0)
    >>> round(float(r.mean / 150), 4)  # ln 3 per block
    1.0986
    >>> float(residual_stack(150, branch_scale=0.0).typical_norm_ratio)
    1.0
    """
    if activation not in ("relu", "linear"):
        raise InputError(
            f"residual_stack models ReLU and linear branches, got {activation!r}; pass "
            "activation='relu' or 'linear' (measure others with gradlab.flow)."
        )
    if not (math.isfinite(weight_variance) and weight_variance >= 0):
        raise InputError(
            f"weight_variance must be a finite number >= 0, got {weight_variance!r}; "
            "pass e.g. 2.0 (He)."
        )
    d = _as_depth(depth)
    s2 = float(weight_variance)
    c = s2 * s2 / 2.0 if activation == "relu" else s2 * s2
    alpha2 = float(branch_scale) ** 2
    mean = d * math.log1p(alpha2 * c)
    return LogNormRatio(
        mean=mean,
        variance=np.zeros_like(mean),
        exact=alpha2 == 0.0,
        note=(
            f"residual: E‖g_(l-1)‖² = (1 + α²c)·E‖g_l‖², α²={alpha2:.4g}, c={c:g} (log of the "
            "mean square, infinite width; Hanin & Rolnick 2018)"
        ),
    )
