"""Mean-field theory of deep networks at infinite width (Poole et al. 2016; Schoenholz et al. 2017).

The length map :func:`q_map` and its fixed point :func:`q_star`, the per-layer gradient factor
:func:`chi1`, the edge of chaos :func:`critical_weight_variance`, and the depth scales
:func:`gradient_depth_scale` and :func:`correlation_depth_scale`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from gradlab._errors import InputError
from gradlab.theory._checks import ArrayLike
from gradlab.theory._gaussian import (
    _BOUNDED,
    _activation,
    _check_variances,
    gaussian_expectation,
)


def q_map(
    q: ArrayLike,
    weight_variance: ArrayLike = 1.0,
    bias_variance: ArrayLike = 0.0,
    activation: str = "tanh",
) -> np.ndarray:
    """One step of the length map: ``q' = σ_w² E[φ(√q z)²] + σ_b²`` (Poole et al. 2016).

    ``q`` is the variance of a unit's pre-activation at infinite width.

    Args:
        q: pre-activation variance(s) of the previous layer.
        weight_variance: ``σ_w²`` (weights ``N(0, σ_w²/n)``).
        bias_variance: ``σ_b²``.
        activation: one of :data:`MEAN_FIELD_ACTIVATIONS`.

    Returns:
        The next layer's pre-activation variance.

    >>> float(q_map(1.0, 2.0, 0.0, "relu"))  # He init preserves q for ReLU
    1.0
    """
    phi, _ = _activation(activation)
    sw, sb = _check_variances(weight_variance, bias_variance)
    if activation == "relu":
        return sw * np.asarray(q, dtype=np.float64) / 2.0 + sb
    if activation == "linear":
        return sw * np.asarray(q, dtype=np.float64) + sb
    return sw * gaussian_expectation(lambda u: phi(u) ** 2, q) + sb


def q_star(
    weight_variance: ArrayLike = 1.0,
    bias_variance: ArrayLike = 0.0,
    activation: str = "tanh",
    *,
    iterations: int = 64,
) -> np.ndarray:
    """The stable fixed point ``q*`` of :func:`q_map` (vectorised over the variances).

    For bounded activations (tanh, sigmoid, erf) ``F(q) = q_map(q) − q`` satisfies
    ``F(0) = σ_b² ≥ 0`` and ``F(σ_w² + σ_b²) ≤ 0`` and is concave, so bisection on
    ``[0, σ_w² + σ_b²]`` (keeping the upper root) finds ``q*`` to float64 precision in 64 steps.
    We bisect rather than iterate the map because at criticality the iteration converges only
    like ``1/(2l)``; the iteration is still what a network does layer by layer (see
    :func:`mean_field_profile`). For ``relu`` and ``linear`` the map is affine:
    ``q* = σ_b²/(1 − σ_w²/2)`` (resp. ``/(1 − σ_w²)``), and ``inf`` where that is not positive.

    Args:
        weight_variance: ``σ_w²``.
        bias_variance: ``σ_b²``.
        activation: one of :data:`MEAN_FIELD_ACTIVATIONS`.
        iterations: bisection steps.

    Returns:
        ``q*`` with the broadcast shape of the variances.

    >>> round(float(q_star(1.5, 0.05)), 6)
    0.418037
    >>> float(q_star(1.0, 0.0))  # critical, no bias: q* = 0
    0.0
    """
    _activation(activation)
    sw, sb = _check_variances(weight_variance, bias_variance)
    sw, sb = np.broadcast_arrays(sw, sb)
    if activation in ("relu", "linear"):
        slope = sw / 2.0 if activation == "relu" else sw
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(slope < 1.0, sb / (1.0 - slope), np.inf)
        return np.where((sb == 0) & (slope <= 1.0), 0.0, q)
    lo = np.zeros_like(sw, dtype=np.float64)
    hi = (sw + sb).astype(np.float64)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        positive = q_map(mid, sw, sb, activation) - mid > 0
        lo = np.where(positive, mid, lo)
        hi = np.where(positive, hi, mid)
    q = np.where(lo == 0.0, 0.0, 0.5 * (lo + hi))
    if activation in ("tanh", "erf"):
        # phi(0) = 0: without bias q = 0 is a fixed point, the stable one when the map's slope
        # there, σ_w² φ'(0)², is <= 1 (bisection would stop at a rounding-level q > 0).
        slope0 = sw * (1.0 if activation == "tanh" else 4.0 / math.pi)
        q = np.where((sb == 0.0) & (slope0 <= 1.0), 0.0, q)
    return q


def _chi_at(q: np.ndarray, sw: np.ndarray, activation: str) -> np.ndarray:
    _, dphi = _activation(activation)
    if activation == "relu":
        return np.broadcast_to(sw / 2.0, np.shape(q)).copy()
    if activation == "linear":
        return np.broadcast_to(sw, np.shape(q)).copy()
    return sw * gaussian_expectation(lambda u: dphi(u) ** 2, q)


def chi1(
    weight_variance: ArrayLike = 1.0,
    bias_variance: ArrayLike = 0.0,
    activation: str = "tanh",
    *,
    q: ArrayLike | None = None,
) -> np.ndarray:
    """``χ₁ = σ_w² E[φ'(√q* z)²]``: the mean per-layer factor of ``‖∂L/∂h‖²`` (infinite width).

    ``χ₁ < 1`` is the ordered phase (gradients vanish like ``χ₁^depth``), ``χ₁ > 1`` the
    chaotic phase (they explode); ``χ₁ = 1`` is the edge of chaos (Poole et al. 2016;
    Schoenholz et al. 2017).

    Args:
        weight_variance: ``σ_w²``.
        bias_variance: ``σ_b²``.
        activation: one of :data:`MEAN_FIELD_ACTIVATIONS`.
        q: evaluate at this pre-activation variance instead of ``q*``.

    Returns:
        ``χ₁`` with the broadcast shape of the inputs.

    >>> float(chi1(1.0, 0.0, "tanh"))
    1.0
    >>> float(chi1(2.0, 0.3, "relu"))
    1.0
    """
    sw, sb = _check_variances(weight_variance, bias_variance)
    qq = q_star(sw, sb, activation) if q is None else np.asarray(q, dtype=np.float64)
    return _chi_at(qq, np.broadcast_to(sw, np.broadcast(sw, sb, qq).shape), activation)


def critical_weight_variance(
    activation: str = "tanh", bias_variance: ArrayLike = 0.0, *, iterations: int = 60
) -> np.ndarray:
    """``σ_w²`` on the edge of chaos: the solution of ``χ₁(σ_w², σ_b²) = 1``.

    Found by bisection on ``σ_w²`` (vectorised over ``bias_variance``): ``χ₁`` is below 1 for
    small ``σ_w²`` and above 1 for large ``σ_w²`` along every line of fixed ``σ_b²``. At
    ``σ_b² = 0`` the answer is 1 for tanh (``q* = 0``, ``φ'(0) = 1``), 2 for ReLU at every
    ``σ_b²``, and 1 for a linear network.

    Args:
        activation: one of :data:`MEAN_FIELD_ACTIVATIONS`.
        bias_variance: ``σ_b²`` (scalar or array).
        iterations: bisection steps.

    Returns:
        The critical ``σ_w²``, shaped like ``bias_variance``.

    >>> float(critical_weight_variance("tanh", 0.0))
    1.0
    >>> round(float(critical_weight_variance("tanh", 0.05)), 4)
    1.761
    """
    _activation(activation)
    sb = np.asarray(bias_variance, dtype=np.float64)
    if np.any(sb < 0):
        raise InputError("bias_variance must be >= 0; pass e.g. 0.0.")
    if activation == "relu":
        return np.full_like(sb, 2.0)
    if activation == "linear":
        return np.full_like(sb, 1.0)
    lo = np.zeros_like(sb)
    hi = np.full_like(sb, 2.0)
    for _ in range(40):  # grow the bracket until chi1(hi) > 1 everywhere
        low = chi1(hi, sb, activation) <= 1.0
        if not np.any(low):
            break
        hi = np.where(low, 2.0 * hi, hi)
    else:
        raise InputError(
            f"No critical weight variance found for {activation!r}: its χ₁ stays below 1 for "
            "every weight variance up to 2^40. Pass an activation with an edge of chaos (one of "
            "MEAN_FIELD_ACTIVATIONS, e.g. 'tanh')."
        )
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = chi1(mid, sb, activation) > 1.0
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    crit = 0.5 * (lo + hi)
    if activation in ("tanh", "erf"):
        # At σ_b² = 0 the transition is where q* = 0 loses stability, σ_w² φ'(0)² = 1; there
        # χ₁ − 1 is second order in σ_w² − 1, so bisection alone resolves it only to ~1e-8.
        crit = np.where(sb == 0.0, 1.0 if activation == "tanh" else math.pi / 4.0, crit)
    return crit


def gradient_depth_scale(
    weight_variance: ArrayLike = 1.0, bias_variance: ArrayLike = 0.0, activation: str = "tanh"
) -> np.ndarray:
    """``ξ_∇ = −1/ln χ₁``: gradients scale like ``exp(−(L−l)/ξ_∇)`` (Schoenholz et al. 2017).

    Positive in the ordered phase (vanishing: e-fold every ``ξ_∇`` layers), negative in the
    chaotic phase (exploding: ``|ξ_∇|`` layers per e-fold), infinite on the critical line.

    Args:
        weight_variance: ``σ_w²``.
        bias_variance: ``σ_b²``.
        activation: one of :data:`MEAN_FIELD_ACTIVATIONS`.

    Returns:
        ``ξ_∇`` (signed).

    >>> round(float(gradient_depth_scale(0.9, 0.0, "linear")), 3)
    9.491
    >>> float(gradient_depth_scale(critical_weight_variance("tanh", 0.05), 0.05))  # the line
    inf
    """
    c = chi1(weight_variance, bias_variance, activation)
    with np.errstate(divide="ignore"):
        log_c = np.log(c)
        # on the critical line χ₁ = 1 up to the bisection's round-off (|ln χ₁| ~ 1e-16)
        return np.where(np.abs(log_c) < 1e-12, np.inf, -1.0 / np.where(log_c == 0, 1.0, log_c))


_Z2_NODES = np.linspace(-9.0, 9.0, 241)
_W2 = np.exp(-0.5 * _Z2_NODES**2) / math.sqrt(2.0 * math.pi) * (_Z2_NODES[1] - _Z2_NODES[0])


def _pair_expectation(f: Callable, g: Callable, q: float, c: float) -> float:
    """``E[f(u1) g(u2)]`` for a bivariate Gaussian with variances ``q`` and correlation ``c``."""
    z1 = _Z2_NODES[:, None]
    z2 = _Z2_NODES[None, :]
    s = math.sqrt(q)
    u1 = s * z1
    u2 = s * (c * z1 + math.sqrt(max(1.0 - c * c, 0.0)) * z2)
    return float(np.sum(_W2[:, None] * _W2[None, :] * f(u1) * g(u2)))


def correlation_depth_scale(
    weight_variance: float = 1.0,
    bias_variance: float = 0.0,
    activation: str = "tanh",
    *,
    iterations: int = 500,
) -> float:
    """``ξ_c = −1/ln χ_c``: how fast two inputs' correlation approaches its fixed point ``c*``.

    ``χ_c = σ_w² E[φ'(u₁) φ'(u₂)]`` with ``(u₁, u₂)`` Gaussian, variance ``q*`` and correlation
    ``c*`` (Schoenholz et al. 2017, eq. 9). In the ordered phase ``c* = 1`` and ``χ_c = χ₁``; in
    the chaotic phase ``c* < 1`` is found by iterating the correlation map from ``c = 0.5``.
    Infinite on the critical line.

    Args:
        weight_variance: ``σ_w²`` (scalar).
        bias_variance: ``σ_b²`` (scalar).
        activation: one of the bounded activations ``tanh``, ``sigmoid``, ``erf``.
        iterations: correlation-map iterations in the chaotic phase.

    Returns:
        ``ξ_c`` (positive; ``inf`` at criticality).

    >>> round(correlation_depth_scale(0.5, 0.0), 3)  # ordered: equals the gradient scale
    1.443
    """
    if activation not in _BOUNDED:
        raise InputError(
            f"correlation_depth_scale supports {', '.join(_BOUNDED)}; got {activation!r}. "
            "Pass one of those (unbounded activations have no correlation fixed point < 1)."
        )
    phi, dphi = _activation(activation)
    sw, sb = float(weight_variance), float(bias_variance)
    q = float(q_star(sw, sb, activation))
    c1 = float(chi1(sw, sb, activation))
    if c1 <= 1.0 or q == 0.0:
        chi_c = c1
    else:
        c = 0.5
        for _ in range(iterations):
            c = (sw * _pair_expectation(phi, phi, q, c) + sb) / q
        chi_c = sw * _pair_expectation(dphi, dphi, q, c)
    if chi_c >= 1.0:
        return math.inf
    return -1.0 / math.log(chi_c)
