"""Closed-form predictions for gradient norms through depth and time, at initialisation.

Every function here is a pure function of the architecture's numbers (depth, width, weight
variance, bias variance, forget bias); none touches a network. :mod:`gradlab.flow` measures
the same quantities on real :mod:`gradlab.nn` models, and the tests compare the two.

Conventions. ``g_l = ∂L/∂h_l`` is the gradient with respect to the ``l``-th hidden state of a
network with ``depth`` hidden ``width × width`` layers; a weight "variance ``σ²``" means the
entries are drawn from ``N(0, σ²/fan_in)`` (``σ² = 1`` is LeCun, ``σ² = 2`` is He). The
random quantity most statements are about is the log of a squared-norm ratio,

    ``R = ln(‖g_0‖² / ‖g_depth‖²)``  (backward), or ``ln(‖h_depth‖² / ‖h_0‖²)`` (forward),

returned as a :class:`LogNormRatio` (mean and variance of ``R``, and whether they are exact).
See ``docs/theory.md`` for the derivations and references.

What is exact and what is not:

* :func:`chain`, :func:`orthogonal_linear` — exact (a product of numbers / isometries).
* :func:`gaussian_linear` — exact at every finite width: each layer multiplies the squared norm
  by an independent ``σ²/n · χ²_n``.
* :func:`relu_gaussian` — exact at every finite width, forward and backward, for zero biases:
  each layer multiplies by ``σ²/n · χ²_K`` with ``K ~ Binomial(n, 1/2)`` active units.
* :func:`relu_large_width` — the log-normal limit ``N(-5β/2, 5β)`` (β = Σ 1/n_l) of the above
  (Hanin 2018; Hanin & Nica 2019): approximate, to leading order in ``1/n``.
* The mean-field functions (:func:`q_star`, :func:`chi1`, :func:`critical_weight_variance`,
  :func:`gradient_depth_scale`, :func:`mean_field_profile`; Poole et al. 2016, Schoenholz et
  al. 2017) are exact statements about the infinite-width limit; as predictions for a finite
  network they are approximations (they also assume the backward weights are independent of
  the forward ones, the "gradient independence" assumption); :func:`rnn_mean_field_profile`
  applies the same recursion to a vanilla RNN through time.
* :func:`lstm_cell_path` — exact for the cell path alone (``∂c_T/∂c_0`` through the forget gates)
  when the gate pre-activations are as stated; the full LSTM Jacobian has other paths too.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma as _jax_digamma
from jax.scipy.special import polygamma as _jax_polygamma

__all__ = [
    "MEAN_FIELD_ACTIVATIONS",
    "CellPath",
    "LogNormRatio",
    "beta",
    "chain",
    "chi1",
    "correlation_depth_scale",
    "critical_weight_variance",
    "gaussian_expectation",
    "gaussian_linear",
    "gradient_depth_scale",
    "lstm_cell_path",
    "mean_field_profile",
    "orthogonal_linear",
    "q_map",
    "q_star",
    "relu_gaussian",
    "relu_large_width",
    "rnn_mean_field_profile",
]

_LN10 = math.log(10.0)
ArrayLike = float | int | np.ndarray | Sequence[float]


# --------------------------------------------------------------------------- helpers
def _digamma(x: ArrayLike) -> np.ndarray:
    """ψ(x) in float64 (jax.scipy.special, under a scoped x64 switch)."""
    with jax.enable_x64(True):
        return np.asarray(_jax_digamma(jnp.asarray(x, dtype=jnp.float64)))


def _trigamma(x: ArrayLike) -> np.ndarray:
    """ψ'(x) in float64."""
    with jax.enable_x64(True):
        return np.asarray(_jax_polygamma(1, jnp.asarray(x, dtype=jnp.float64)))


def _log_binomial_pmf(n: int) -> np.ndarray:
    """ln P(K = k), k = 0..n, for K ~ Binomial(n, 1/2); stable for large n."""
    k = np.arange(n + 1)
    log_choose = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(i + 1) for i in k])
        - np.array([math.lgamma(n - i + 1) for i in k])
    )
    return log_choose - n * math.log(2.0)


def _check_width(width: int) -> int:
    if int(width) != width or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}.")
    return int(width)


def _as_depth(depth: ArrayLike) -> np.ndarray:
    d = np.asarray(depth, dtype=np.float64)
    if np.any(d < 0):
        raise ValueError(f"depth must be >= 0, got {depth!r}.")
    return d


@dataclasses.dataclass(frozen=True)
class LogNormRatio:
    """Distribution summary of ``R = ln(‖out‖² / ‖in‖²)`` for a random network.

    Attributes:
        mean: ``E[R]`` (broadcasts with the ``depth`` it was computed for).
        variance: ``Var[R]``.
        exact: True when ``mean`` and ``variance`` are exact at finite width; False for
            large-width or mean-field approximations.
        p_zero: probability that the ratio is exactly 0 (``R = -inf``), e.g. a ReLU layer
            with no active unit. ``mean`` and ``variance`` are then conditional on ``R``
            being finite.
        note: one line saying what the numbers are.
    """

    mean: np.ndarray
    variance: np.ndarray
    exact: bool
    p_zero: np.ndarray | float = 0.0
    note: str = ""

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of ``R``."""
        return np.sqrt(self.variance)

    @property
    def log10_norm_mean(self) -> np.ndarray:
        """``E[log10(‖out‖/‖in‖)] = E[R] / (2 ln 10)`` — the units gradlab's plots use."""
        return np.asarray(self.mean) / (2.0 * _LN10)

    @property
    def log10_norm_std(self) -> np.ndarray:
        """Standard deviation of ``log10(‖out‖/‖in‖)``."""
        return self.std / (2.0 * _LN10)

    @property
    def typical_norm_ratio(self) -> np.ndarray:
        """``exp(E[R]/2)``: the geometric-mean (typical) norm ratio ``‖out‖/‖in‖``."""
        return np.exp(np.asarray(self.mean) / 2.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (lists for arrays)."""

        def conv(x: Any) -> Any:
            a = np.asarray(x, dtype=np.float64)
            return a.tolist() if a.ndim else float(a)

        return {
            "mean": conv(self.mean),
            "variance": conv(self.variance),
            "exact": self.exact,
            "p_zero": conv(self.p_zero),
            "note": self.note,
        }


# --------------------------------------------------------------------------- the lecture
def chain(weight: ArrayLike, depth: ArrayLike) -> np.ndarray:
    """The lecture's chain of scalar weights: ``weight ** depth``.

    A gradient flowing back through ``depth`` layers that each multiply it by ``weight``.
    For a network this is exact only when each layer is ``weight`` times an isometry (see
    :func:`orthogonal_linear`); Gaussian layers do worse (:func:`gaussian_linear`).

    Args:
        weight: the per-layer factor.
        depth: number of layers.

    Returns:
        ``weight ** depth`` as a float64 numpy value.

    >>> float(chain(1.1, 150))  # "1.6 million"
    1617717.8
    >>> float(chain(0.9, 150))  # "1.4e-7"
    1.37e-07
    """
    return np.power(np.asarray(weight, dtype=np.float64), _as_depth(depth))


def orthogonal_linear(depth: ArrayLike, gain: float = 1.0) -> LogNormRatio:
    """Deep linear network with scaled orthogonal weights ``gain · Q``: exact.

    Every layer multiplies every vector's norm by exactly ``gain``, forward and backward, so
    ``R = 2·depth·ln(gain)`` with zero variance: the lecture's ``1.1**150`` made literal.

    Args:
        depth: number of layers (scalar or array).
        gain: the orthogonal matrices' scale.

    Returns:
        A :class:`LogNormRatio` with zero variance.

    >>> r = orthogonal_linear(150, gain=1.1)
    >>> float(r.typical_norm_ratio), float(r.variance)
    (1617717.8, 0.0)
    """
    if gain <= 0:
        raise ValueError(f"gain must be > 0, got {gain!r}.")
    d = _as_depth(depth)
    return LogNormRatio(
        mean=2.0 * d * math.log(gain),
        variance=np.zeros_like(d),
        exact=True,
        note=f"orthogonal weights x {gain}: norm ratio exactly gain**depth",
    )


def gaussian_linear(depth: ArrayLike, width: int, weight_variance: float = 1.0) -> LogNormRatio:
    """Deep linear network with i.i.d. ``N(0, σ²/n)`` weights, width ``n``: exact.

    For a fixed vector ``g``, ``W g`` has ``n`` independent ``N(0, σ²‖g‖²/n)`` entries, so
    ``‖W g‖²/‖g‖² = σ²/n · χ²_n`` whatever ``g`` is; by rotational invariance the layers'
    factors are independent. With ``E ln χ²_n = ψ(n/2) + ln 2`` and ``Var ln χ²_n = ψ'(n/2)``:

        ``E[R] = depth · (ln σ² + ψ(n/2) + ln(2/n))``,  ``Var[R] = depth · ψ'(n/2)``.

    The same holds backward (``Wᵀ`` has the same law). Note ``E[‖out‖²/‖in‖²] = σ^(2·depth)``
    exactly, yet the *typical* ratio is smaller by ``exp(depth·(ψ(n/2) + ln(2/n))/2) ≈
    exp(-depth/(2n))``: at width 64 and depth 150 a factor 0.31.

    Args:
        depth: number of layers (scalar or array).
        width: the layers' width ``n``.
        weight_variance: ``σ²`` (1 for LeCun, 2 for He).

    Returns:
        A :class:`LogNormRatio` (exact).

    >>> r = gaussian_linear(150, width=64)
    >>> round(float(r.mean), 3), round(float(r.variance), 3)
    (-2.356, 4.762)
    """
    n = _check_width(width)
    if weight_variance <= 0:
        raise ValueError(f"weight_variance must be > 0, got {weight_variance!r}.")
    d = _as_depth(depth)
    per_layer_mean = math.log(weight_variance) + float(_digamma(n / 2)) + math.log(2.0 / n)
    per_layer_var = float(_trigamma(n / 2))
    return LogNormRatio(
        mean=d * per_layer_mean,
        variance=d * per_layer_var,
        exact=True,
        note=f"linear, Gaussian N(0, {weight_variance}/n) weights, width {n}: exact",
    )


def relu_gaussian(depth: ArrayLike, width: int, weight_variance: float = 2.0) -> LogNormRatio:
    """ReLU network, i.i.d. ``N(0, σ²/n)`` weights, zero biases, width ``n``: exact.

    Forward: given ``h``, the pre-activations ``z = W h`` are i.i.d. ``N(0, σ²‖h‖²/n)``; the
    ``K ~ Binomial(n, 1/2)`` positive ones survive and their squares are i.i.d. ``χ²_1`` given
    the signs, so ``‖relu(W h)‖²/‖h‖² = σ²/n · χ²_K``, independently across layers. Backward,
    for an output gradient whose direction is independent of the layers (a random readout),
    ``‖g_0‖²/‖g_depth‖²`` has *the same law*: flipping the sign of each row ``w_j`` by the
    independent sign of the upstream gradient makes the rows Gaussian again, and a ``χ²_n``
    times an independent ``Beta(K/2, (n−K)/2)`` is a ``χ²_K`` (derivation in docs/theory.md).

    With probability ``2**-n`` a layer has ``K = 0`` and the ratio is exactly 0. Mean and
    variance below are conditional on no layer being dead (``K ≥ 1`` everywhere), and
    ``p_zero = 1 − (1 − 2**-n)**depth``. Per layer, by the laws of total expectation and
    variance over ``K``:

        ``m = E_K[ln(σ²/n) + ψ(K/2) + ln 2]``,  ``v = E_K[ψ'(K/2)] + Var_K[ψ(K/2)]``,

    and ``E[R] = depth·m``, ``Var[R] = depth·v``. For large ``n``: ``m ≈ ln(σ²/2) − 5/(2n)``,
    ``v ≈ 5/n`` (see :func:`relu_large_width`).

    Args:
        depth: number of ReLU layers (scalar or array).
        width: the layers' width ``n``.
        weight_variance: ``σ²`` (2 for He).

    Returns:
        A :class:`LogNormRatio` (exact, with ``p_zero``).

    >>> r = relu_gaussian(150, width=64)
    >>> round(float(r.mean), 3), round(float(r.variance), 3)
    (-6.016, 12.45)
    """
    n = _check_width(width)
    if weight_variance <= 0:
        raise ValueError(f"weight_variance must be > 0, got {weight_variance!r}.")
    d = _as_depth(depth)
    k = np.arange(1, n + 1, dtype=np.float64)
    logp = _log_binomial_pmf(n)[1:]
    p = np.exp(logp - np.logaddexp.reduce(logp))  # conditional on K >= 1
    layer = math.log(weight_variance / n) + math.log(2.0) + _digamma(k / 2)
    m = float(np.sum(p * layer))
    v = float(np.sum(p * _trigamma(k / 2)) + np.sum(p * (layer - m) ** 2))
    p_dead_layer = 2.0**-n
    p_zero = -np.expm1(d * math.log1p(-p_dead_layer))
    return LogNormRatio(
        mean=d * m,
        variance=d * v,
        exact=True,
        p_zero=p_zero,
        note=(
            f"ReLU, Gaussian N(0, {weight_variance}/n) weights, zero bias, width {n}: exact, "
            "conditional on no dead layer"
        ),
    )


def beta(widths: int | Sequence[int], depth: int | None = None) -> float:
    """Hanin's architecture constant ``β = Σ_l 1/n_l`` over the hidden layers.

    Args:
        widths: the hidden widths, or one width repeated ``depth`` times.
        depth: number of layers when ``widths`` is a single int.

    Returns:
        ``β`` as a float.

    >>> beta(64, depth=150)
    2.34375
    >>> beta([10, 20, 20])
    0.2
    """
    if isinstance(widths, int | np.integer):
        if depth is None:
            raise ValueError("beta(width) needs depth=... when widths is a single int.")
        return float(depth) / _check_width(int(widths))
    ws = [_check_width(int(w)) for w in widths]
    return float(sum(1.0 / w for w in ws))


def relu_large_width(
    depth: ArrayLike, width: int | Sequence[int], weight_variance: float = 2.0
) -> LogNormRatio:
    """ReLU network, large-width log-normal law: ``R ≈ N(depth·ln(σ²/2) − 5β/2, 5β)``.

    Expanding :func:`relu_gaussian` for large ``n`` (``K = n/2·(1+ε)``, ``Var ε = 1/n``;
    ``χ²_K/K = 1+δ``, ``Var δ ≈ 4/n``) gives per layer mean ``−5/(2n)`` and variance ``5/n``;
    summing, the variance is ``5β`` with ``β = Σ 1/n_l``, and ``E[‖out‖²/‖in‖²] = 1`` (for
    ``σ² = 2``) forces the mean ``−5β/2``. This is the regime of Hanin (2018), where the second
    moment of the squared Jacobian entries grows like ``exp(cβ)``, and of Hanin & Nica (2019),
    who prove the log-norm of the product applied to a fixed vector is asymptotically Gaussian
    when depth and width grow together. The constants here are our leading-order expansion of
    the exact law; use :func:`relu_gaussian` for exact numbers.

    Args:
        depth: number of layers (used with a single ``width``; with a sequence of widths it is
            ignored except to broadcast).
        width: one width, or the sequence of hidden widths.
        weight_variance: ``σ²`` (2 for He).

    Returns:
        A :class:`LogNormRatio` (approximate).

    >>> r = relu_large_width(150, 64)
    >>> round(float(r.mean), 3), round(float(r.variance), 3)
    (-5.859, 11.719)
    """
    d = _as_depth(depth)
    if isinstance(width, int | np.integer):
        b = d / _check_width(int(width))
        n_layers = d
    else:
        b = np.full_like(d, beta(width))
        n_layers = np.full_like(d, len(list(width)))
    return LogNormRatio(
        mean=n_layers * math.log(weight_variance / 2.0) - 2.5 * b,
        variance=5.0 * b,
        exact=False,
        note="ReLU, large-width log-normal approximation N(-5β/2, 5β)",
    )


# --------------------------------------------------------------------------- mean field
# Gaussian expectations E[f(sqrt(q) z)], z ~ N(0, 1), by the trapezoid rule on a uniform grid
# over z in [-10, 10]. For integrands analytic in a strip |Im u| < a around the real u-axis
# (u = sqrt(q) z) the trapezoid rule converges like exp(-2*pi*a / (sqrt(q) h)); tanh and sech
# have their nearest poles at a = pi/2, so a step h = 0.2/sqrt(q) is ample. The grid is chosen
# for the largest q of a call (101 to 4001 points; 1001 at q = 100). Measured: relative error
# < 1e-13 for E[sech^4(sqrt(q) z)] for q <= 1000, whereas 101-point Gauss-Hermite is off by
# 2% at q = 10 (its nodes are too sparse near 0 once the integrand's width 1/sqrt(q) is below
# their spacing).
def _grid(q_max: float) -> tuple[np.ndarray, np.ndarray]:
    h = 0.2 / math.sqrt(max(q_max, 1.0))
    n = int(min(max(math.ceil(20.0 / h), 100), 4000)) + 1
    return _grid_n(n)


@functools.lru_cache(maxsize=32)
def _grid_n(n: int) -> tuple[np.ndarray, np.ndarray]:
    z = np.linspace(-10.0, 10.0, n)
    w = np.exp(-0.5 * z**2)
    return z, w / np.sum(w)  # normalised: E[1] = 1 to rounding (the truncation is < 1e-21)


def gaussian_expectation(fn: Callable[[np.ndarray], np.ndarray], q: ArrayLike) -> np.ndarray:
    """``E[fn(√q · z)]`` for ``z ~ N(0, 1)``, elementwise over an array of variances ``q``.

    Trapezoid rule on a uniform grid over ``z ∈ [−10, 10]`` with step ``0.2/√q_max``: relative
    error below ``1e-13`` for integrands such as ``tanh²`` or ``sech⁴`` up to ``q = 1000``.

    Args:
        fn: a numpy-vectorised function.
        q: variance(s) ``≥ 0``.

    Returns:
        An array shaped like ``q``.

    >>> float(gaussian_expectation(np.square, 2.5))
    2.5
    """
    q = np.asarray(q, dtype=np.float64)
    z, w = _grid(float(np.max(q, initial=0.0)))
    u = np.sqrt(np.maximum(q, 0.0))[..., None] * z
    return np.sum(fn(u) * w, axis=-1)


def _sech2(u: np.ndarray) -> np.ndarray:
    return 1.0 / np.cosh(np.clip(u, -350.0, 350.0)) ** 2


def _sigmoid(u: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * u))


def _erf_np(u: np.ndarray) -> np.ndarray:
    with jax.enable_x64(True):
        return np.asarray(jax.scipy.special.erf(jnp.asarray(u, dtype=jnp.float64)))


# name -> (phi, phi'), both numpy-vectorised
_ACTIVATIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], ...]] = {
    "tanh": (np.tanh, _sech2),
    "sigmoid": (_sigmoid, lambda u: _sigmoid(u) * (1.0 - _sigmoid(u))),
    "erf": (_erf_np, lambda u: 2.0 / math.sqrt(math.pi) * np.exp(-(u**2))),
    "relu": (lambda u: np.maximum(u, 0.0), lambda u: (u > 0).astype(np.float64)),
    "linear": (lambda u: u, np.ones_like),
}
#: Activations the mean-field functions accept.
MEAN_FIELD_ACTIVATIONS: tuple[str, ...] = tuple(_ACTIVATIONS)
_BOUNDED = ("tanh", "sigmoid", "erf")


def _activation(name: str) -> tuple[Callable[[np.ndarray], np.ndarray], ...]:
    if not isinstance(name, str) or name not in _ACTIVATIONS:
        raise ValueError(
            f"Unsupported activation {name!r} for mean-field theory; supported: "
            f"{', '.join(MEAN_FIELD_ACTIVATIONS)}. (Other activations need their own "
            "Gaussian integrals; measure them with gradlab.flow instead.)"
        )
    return _ACTIVATIONS[name]


def _check_variances(weight_variance: ArrayLike, bias_variance: ArrayLike):
    sw = np.asarray(weight_variance, dtype=np.float64)
    sb = np.asarray(bias_variance, dtype=np.float64)
    if np.any(sw < 0) or np.any(sb < 0):
        raise ValueError("weight_variance and bias_variance must be >= 0.")
    return sw, sb


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
        raise ValueError("bias_variance must be >= 0.")
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
        raise RuntimeError(f"No critical weight variance found for {activation!r}.")
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
    """
    c = chi1(weight_variance, bias_variance, activation)
    with np.errstate(divide="ignore"):
        return np.where(c == 1.0, np.inf, -1.0 / np.log(c))


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
        raise ValueError(
            f"correlation_depth_scale supports {', '.join(_BOUNDED)}; got {activation!r}."
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


def mean_field_profile(
    depth: int,
    weight_variance: float = 1.0,
    bias_variance: float = 0.0,
    activation: str = "tanh",
    *,
    input_q: float = 1.0,
    width: int | None = None,
    orthogonal: bool = False,
) -> LogNormRatio:
    """Predicted ``ln(‖∂L/∂h_l‖²/‖∂L/∂h_depth‖²)`` for ``l = 0..depth`` (mean field).

    The hidden states are ``h_0 = φ(z_0)``, ``h_l = φ(h_{l−1} W_l + b_l)``; ``input_q`` is the
    variance of ``z_0``'s entries. The length map gives ``q_l`` for ``l = 1..depth`` and the
    backward step through layer ``l`` multiplies ``E‖g‖²`` by ``χ(q_l) = σ_w² E[φ'(√q_l z)²]``
    (gradient independence), so the infinite-width mean of the log-ratio at layer ``l`` is
    ``Σ_{k=l+1}^{depth} ln χ(q_k)``. Unlike :func:`chi1` this follows the transient of ``q_l``:
    at ``σ_w² = 1, σ_b² = 0`` (LeCun + tanh), ``q_l ≈ 1/(2l)`` and gradients decay like a power
    law, ``‖g_l‖²/‖g_depth‖² ≈ l/depth``, not exponentially.

    With ``width=n`` a leading-order finite-width correction is added per layer: the squared
    norm is multiplied by ``σ²/n·χ²_n`` times ``Σ_j φ'(z_j)² ĝ_j²`` with ``ĝ`` uniform on the
    sphere, whose log has mean ``ln χ − (1 + 3κ/2)/n`` and variance ``(2 + 3κ)/n`` with
    ``κ = Var[φ'²]/E[φ'²]²`` (for ReLU ``κ = 1``, recovering ``−5/(2n)`` and ``5/n``). With
    ``orthogonal=True`` (scaled orthogonal weights, an exact isometry) the ``χ²_n`` part drops
    and what is left is mean ``ln χ − 3κ/(2n)``, variance ``3κ/n``. Approximate: it ignores the
    fluctuations of ``q_l`` at finite width.

    The same recursion describes a vanilla RNN ``a_t = φ(x_t W + a_{t−1} U)`` through time: the
    fresh input term acts as a bias of variance ``input_q`` at every step, so use
    ``bias_variance=input_q`` and ``depth=T−1`` (see :func:`rnn_mean_field_profile`).

    Args:
        depth: number of hidden layers.
        weight_variance: ``σ_w²`` of the hidden layers.
        bias_variance: ``σ_b²``.
        activation: one of :data:`MEAN_FIELD_ACTIVATIONS`.
        input_q: variance of the first pre-activation ``z_0``.
        width: if given, include the ``1/width`` correction to mean and variance.
        orthogonal: the weights are scaled orthogonal matrices (``weight_variance = gain²``).

    Returns:
        A :class:`LogNormRatio` whose arrays have length ``depth + 1`` (index ``l``; the last
        entry is 0).

    >>> r = mean_field_profile(100, 1.0, 0.0, "tanh", input_q=1.0)
    >>> round(float(np.exp(r.mean[50])), 2)  # ≈ 50/100: a power law, not exponential
    0.5
    """
    _, dphi = _activation(activation)
    sw, sb = float(weight_variance), float(bias_variance)
    depth = int(depth)
    qs = np.empty(depth)
    q = float(input_q)
    for i in range(depth):
        q = float(q_map(q, sw, sb, activation))
        qs[i] = q
    chis = _chi_at(qs, np.full_like(qs, sw), activation)
    with np.errstate(divide="ignore"):
        log_chi = np.log(chis)
    step_mean = log_chi
    step_var = np.zeros_like(qs)
    if width is not None:
        n = _check_width(width)
        if activation in ("relu",):
            kappa = np.ones_like(qs)
        elif activation == "linear":
            kappa = np.zeros_like(qs)
        else:
            e2 = gaussian_expectation(lambda u: dphi(u) ** 2, qs)
            e4 = gaussian_expectation(lambda u: dphi(u) ** 4, qs)
            kappa = e4 / e2**2 - 1.0
        chi2_part = 0.0 if orthogonal else 1.0
        step_mean = log_chi - (chi2_part + 1.5 * kappa) / n
        step_var = (2.0 * chi2_part + 3.0 * kappa) / n
    # entry l sums the steps through layers l+1..depth (qs[l:]).
    mean = np.concatenate([np.cumsum(step_mean[::-1])[::-1], [0.0]])
    var = np.concatenate([np.cumsum(step_var[::-1])[::-1], [0.0]])
    return LogNormRatio(
        mean=mean,
        variance=var,
        exact=False,
        note=(
            f"mean field, {activation}, {'orthogonal ' if orthogonal else ''}σ_w²={sw:g}, "
            f"σ_b²={sb:g}" + (f", 1/n correction at width {width}" if width else ", infinite width")
        ),
    )


def rnn_mean_field_profile(
    steps: int,
    recurrent_variance: float = 1.0,
    input_variance: float = 1.0,
    activation: str = "tanh",
    *,
    width: int | None = None,
    orthogonal: bool = True,
) -> LogNormRatio:
    """Predicted ``ln(‖∂L/∂a_t‖²/‖∂L/∂a_T‖²)`` for ``t = 1..T`` in a vanilla RNN (mean field).

    ``a_t = φ(z_t)``, ``z_t = x_t W + a_{t−1} U`` with ``a_0 = 0``: the pre-activation variance
    follows ``q_1 = s_x²``, ``q_t = s_x² + σ_U² E[φ(√q_{t−1} z)²]`` (``s_x²`` is
    ``input_variance``, the variance of ``x_t W``), and each step back multiplies ``E‖∂L/∂a‖²``
    by ``σ_U² E[φ'(√q_t z)²]`` — exactly :func:`mean_field_profile` with the input playing the
    part of a bias. Approximate (mean field; the input-driven ``q*`` keeps ``χ < 1`` for tanh
    even with an orthogonal ``U``, which is why vanilla RNN gradients vanish through time).

    Args:
        steps: ``T``.
        recurrent_variance: ``σ_U²`` (``gain²`` for a scaled orthogonal ``U``).
        input_variance: variance of each entry of ``x_t W``.
        activation: one of :data:`MEAN_FIELD_ACTIVATIONS`.
        width: hidden size, for the ``1/width`` correction.
        orthogonal: ``U`` is scaled orthogonal (default, as in :class:`gradlab.nn.RNN`).

    Returns:
        A :class:`LogNormRatio` with arrays of length ``T`` (index ``t − 1``; last entry 0).

    >>> r = rnn_mean_field_profile(100, 1.0, 1.0)
    >>> round(float(r.log10_norm_mean[0]), 1)  # ~0.2 decades lost per step
    -19.8
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}.")
    return mean_field_profile(
        steps - 1,
        recurrent_variance,
        input_variance,
        activation,
        input_q=input_variance,
        width=width,
        orthogonal=orthogonal,
    )


# --------------------------------------------------------------------------- LSTM
class CellPath(NamedTuple):
    """The LSTM cell path ``∂c_T/∂c_0 = Π_t f_t`` (one unit, direct path only).

    Attributes:
        typical: ``exp(T · E[ln σ(z)])`` — the geometric-mean (typical) product.
        mean: ``(E[σ(z)])^T`` — the expected product (independent steps).
        per_step_log: ``E[ln σ(z)]``, the decay rate per step (natural log).
    """

    typical: float
    mean: float
    per_step_log: float


def lstm_cell_path(
    steps: int, forget_bias: float = 1.0, preactivation_std: float = 0.0
) -> CellPath:
    """Gradient along the LSTM's cell path: ``∂c_T/∂c_0 = Π_{t=1}^T f_t`` (elementwise).

    With ``c_t = u_t ⊙ c̃_t + f_t ⊙ c_{t−1}``, the direct path from ``c_0`` to ``c_T`` multiplies
    by the forget gates ``f_t = σ(z_t)``. If the forget pre-activations sit at the bias,
    ``z_t = b_f``, this is ``σ(b_f)^T`` exactly — 0.731^T for ``b_f = 1``, 0.5^T for ``b_f = 0``.
    If ``z_t ~ N(b_f, s²)`` independently across steps, the typical product is
    ``exp(T·E[ln σ(z)])`` (smaller: ``ln σ`` is concave) and the mean is ``(E σ(z))^T``.
    The full ``∂c_T/∂c_0`` also has paths through ``a_t`` and the gates; this is the path the
    LSTM was designed to keep open.

    Args:
        steps: ``T``.
        forget_bias: ``b_f``.
        preactivation_std: ``s``, the standard deviation of the forget pre-activations.

    Returns:
        A :class:`CellPath`.

    >>> p = lstm_cell_path(100, forget_bias=1.0)
    >>> p.typical  # sigmoid(1)**100
    2.5e-14
    >>> round(lstm_cell_path(100, forget_bias=5.0).typical, 3)
    0.511
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps!r}.")
    if preactivation_std < 0:
        raise ValueError(f"preactivation_std must be >= 0, got {preactivation_std!r}.")
    b, s = float(forget_bias), float(preactivation_std)
    log_sig = lambda u: -np.logaddexp(0.0, -(u + b))
    sig = lambda u: np.exp(log_sig(u))
    per_step_log = float(gaussian_expectation(log_sig, s * s))
    mean_gate = float(gaussian_expectation(sig, s * s))
    return CellPath(
        typical=math.exp(steps * per_step_log),
        mean=mean_gate**steps,
        per_step_log=per_step_log,
    )
