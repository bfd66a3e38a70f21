"""Deep linear and ReLU chains at finite width: exact laws of the log norm ratio, and Hanin's limit.

:func:`chain` (scalar weights), :func:`orthogonal_linear`, :func:`gaussian_linear` and
:func:`relu_gaussian` are exact at every width; :func:`relu_large_width` is their large-width
log-normal limit in terms of :func:`beta` (Hanin 2018; Hanin & Nica 2019).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma as _jax_digamma
from jax.scipy.special import polygamma as _jax_polygamma

from gradlab._errors import InputError
from gradlab.theory._checks import ArrayLike, _as_depth, _check_width
from gradlab.theory._results import LogNormRatio


def _digamma(x: ArrayLike) -> np.ndarray:
    """ψ(x) in float64 (jax.scipy.special, under a scoped x64 switch)."""
    with jax.enable_x64(True):
        return np.asarray(_jax_digamma(jnp.asarray(x, dtype=jnp.float64)))


def _trigamma(x: ArrayLike) -> np.ndarray:
    """ψ'(x) in float64."""
    with jax.enable_x64(True):
        return np.asarray(_jax_polygamma(1, jnp.asarray(x, dtype=jnp.float64)))


def _log_binomial_pmf(n: int) -> np.ndarray:
    """The log-pmf ln P(K = k), k = 0..n, for K ~ Binomial(n, 1/2); stable for large n."""
    k = np.arange(n + 1)
    log_choose = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(i + 1) for i in k])
        - np.array([math.lgamma(n - i + 1) for i in k])
    )
    return log_choose - n * math.log(2.0)


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
        raise InputError(f"gain must be > 0, got {gain!r}; pass e.g. 1.1.")
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
        raise InputError(
            f"weight_variance must be > 0, got {weight_variance!r}; "
            "pass e.g. 1.0 (LeCun) or 2.0 (He)."
        )
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
        raise InputError(
            f"weight_variance must be > 0, got {weight_variance!r}; "
            "pass e.g. 1.0 (LeCun) or 2.0 (He)."
        )
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
            raise InputError(
                "beta(width) needs depth=... when widths is a single int; pass beta(64, depth=150)."
            )
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
