"""I.i.d. initialisers: :func:`variance_scaling`, :func:`fan_in_normal` and :func:`gaussian`.

:func:`variance_scaling` is the general form ``Var = scale / n`` (``n`` a fan or their mean,
normal, uniform or truncated normal entries) on which the named initialisers are built;
:func:`fan_in_normal` is its Gaussian ``fan_in`` case named by its multiplier ``K``;
:func:`gaussian` has a fixed std whatever the shape (``jax.nn.initializers.normal``).
:func:`normal` is the former name of :func:`fan_in_normal` and only says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal, NoReturn

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from gradlab._errors import InputError
from gradlab.init._fans import (
    Axes,
    _as_shape,
    _float_dtype,
    _fmt,
    _hashable_axes,
    _nonnegative,
    _split_axes,
    compute_fans,
)
from gradlab.init._spec import InitSpec

Array = jax.Array
#: What ``n`` in ``scale / n`` is: the fan in, the fan out, or their mean.
Mode = Literal["fan_in", "fan_out", "fan_avg"]
#: How entries of a :func:`variance_scaling` initialiser are drawn.
Distribution = Literal["normal", "uniform", "truncated_normal"]

# Standard deviation of a standard normal truncated to (-2, 2), as in jax.nn.initializers.
_TRUNCATED_STD = 0.87962566103423978


def variance_scaling(
    scale: float,
    mode: Mode = "fan_in",
    distribution: Distribution = "normal",
    *,
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
) -> InitSpec:
    """Builds an initialiser with variance ``scale / n``, the common core of the named ones.

    ``n`` is ``fan_in``, ``fan_out`` or ``(fan_in + fan_out) / 2`` for the three modes.
    ``"normal"`` draws ``N(0, scale / n)``; ``"uniform"`` draws ``U(-b, b)`` with ``b =
    sqrt(3 scale / n)`` (same variance); ``"truncated_normal"`` draws a normal truncated at two
    standard deviations and rescaled to variance ``scale / n`` (the :mod:`jax.nn.initializers`
    default). Given the same key, the output equals ``jax.nn.initializers.variance_scaling`` with
    the same arguments (bit for bit for ``"uniform"``; to a float ulp or two for the normal
    distributions, whose scaling XLA fuses into the sampler here). Use it for what the named
    initialisers do not cover (a uniform or truncated ``K/sqrt(n)``, ``fan_out`` modes).

    Args:
        scale: variance multiplier, >= 0.
        mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``.
        distribution: ``"normal"``, ``"uniform"`` or ``"truncated_normal"``.
        in_axis: input axis or axes of the weight.
        out_axis: output axis or axes of the weight.
        batch_axis: stacking axes left out of the fans (see the module docstring).

    Returns:
        An :class:`InitSpec` with ``weight_variance == scale``.

    Raises:
        InputError: for an unknown mode or distribution or a negative scale.

    Example:
        >>> import jax
        >>> init_fn = variance_scaling(2.0, "fan_in", "uniform")
        >>> w = init_fn(jax.random.key(0), (100, 10))
        >>> bool(abs(w).max() <= (3 * 2.0 / 100) ** 0.5)
        True
        >>> init_fn.family, init_fn.weight_variance
        ('uniform', 2.0)
    """
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise InputError(
            f"mode must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}; pick one of those."
        )
    if distribution not in ("normal", "uniform", "truncated_normal"):
        raise InputError(
            f"distribution must be 'normal', 'uniform' or 'truncated_normal', got "
            f"{distribution!r}; pick one of those."
        )
    scale = _nonnegative(scale, "variance_scaling: scale")
    name = f"variance_scaling({_fmt(scale)}, {mode!r}, {distribution!r})"
    return _fan_scaled(name, scale, mode, distribution, batch_axis, in_axis, out_axis)


def _with_axes(base: str, in_axis: Axes, out_axis: Axes) -> str:
    """``base`` with non-default axes written in: ``he_normal(in_axis=0, out_axis=1)``."""
    if (in_axis, out_axis) == (-2, -1):
        return base
    axes = f"in_axis={in_axis}, out_axis={out_axis}"
    return f"{base[:-1]}, {axes})" if base.endswith(")") else f"{base}({axes})"


def _fan_scaled(
    base: str,
    scale: float,
    mode: Mode,
    distribution: Distribution,
    batch_axis: Axes = (),
    in_axis: Axes = -2,
    out_axis: Axes = -1,
) -> InitSpec:
    """The :class:`InitSpec` of ``variance_scaling(scale, mode, distribution)`` named ``base``.

    Non-default axes are written into the name; the spec's ``remake`` makes it with others.
    """
    in_axis, out_axis = _hashable_axes(in_axis), _hashable_axes(out_axis)
    name = _with_axes(base, in_axis, out_axis)

    def draw(key: Array, shape: Sequence[int], dtype: DTypeLike, *, batch_axis: Axes) -> Array:
        return _variance_scaling(
            key, shape, dtype, scale, mode, distribution, in_axis, out_axis, batch_axis, name
        )

    def remake(*, in_axis: Axes, out_axis: Axes) -> InitSpec:
        return _fan_scaled(base, scale, mode, distribution, batch_axis, in_axis, out_axis)

    axes = _hashable_axes(batch_axis)
    return InitSpec(name, distribution, scale, draw, batch_axis=axes, remake=remake)


def _variance_scaling(
    key: Array,
    shape: Sequence[int],
    dtype: DTypeLike,
    scale: float,
    mode: Mode,
    distribution: Distribution,
    in_axis: Axes,
    out_axis: Axes,
    batch_axis: Axes,
    name: str,
) -> Array:
    dtype_ = _float_dtype(dtype, name)
    shape_t = _as_shape(shape, name)
    _split_axes(shape_t, in_axis, out_axis, batch_axis, name)  # validates with this name
    fan_in, fan_out = compute_fans(
        shape_t, in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis
    )
    if math.prod(shape_t) == 0:
        return jnp.zeros(shape_t, dtype_)
    denominator = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}
    variance = jnp.array(scale / denominator[mode], dtype=dtype_)
    return _draw(key, variance, shape=shape_t, dtype=dtype_, distribution=distribution)


# Initialisers run eagerly when a module is built; one compiled program per (shape, dtype)
# instead of one per primitive keeps building models fast. Uniform draws equal the eager ones
# (jax.nn.initializers) bit for bit; in normal draws XLA fuses the scaling into the sampler,
# which can move an entry by a float ulp.
@partial(jax.jit, static_argnames=("shape", "dtype", "distribution"))
def _draw(
    key: Array, variance: Array, *, shape: tuple[int, ...], dtype: np.dtype, distribution: str
) -> Array:
    """Draws i.i.d. entries of mean 0 and the given variance."""
    if distribution == "normal":
        return jax.random.normal(key, shape, dtype) * jnp.sqrt(variance)
    if distribution == "uniform":
        return jax.random.uniform(key, shape, dtype, -1) * jnp.sqrt(3 * variance)
    std = jnp.sqrt(variance) / jnp.array(_TRUNCATED_STD, dtype)
    return jax.random.truncated_normal(key, -2, 2, shape, dtype) * std


def fan_in_normal(scale: float = 1.0, *, batch_axis: Axes = ()) -> InitSpec:
    """Gaussian weights ``N(0, scale^2 / fan_in)``: std ``scale / sqrt(fan_in)``.

    The Gaussian weights ``N(0, σ_w²/n)`` of the theory (``σ_w² = scale²``), and the lecture's
    ``K / sqrt(n_prev)`` with ``K = scale``: its "some cases ``2 / sqrt(n_prev)``" is
    ``fan_in_normal(2.0)`` (variance ``4 / n``, twice He's). ``fan_in_normal(1.0)`` draws the
    same arrays as :func:`lecun_normal` and ``fan_in_normal(2 ** 0.5)`` the same as
    :func:`he_normal`. For a uniform or truncated version use
    ``variance_scaling(scale**2, "fan_in", "uniform")``. Not ``jax.nn.initializers.normal``,
    whose std is fixed: that one is :func:`gaussian`.

    Args:
        scale: the multiplier ``K``, >= 0.
        batch_axis: stacking axes left out of the fans.

    Returns:
        An :class:`InitSpec` named ``"fan_in_normal:<scale>"`` with
        ``weight_variance == scale**2``.

    Example:
        >>> import jax
        >>> w = fan_in_normal(2.0)(jax.random.key(0), (400, 300))
        >>> round(float(w.std() * 400 ** 0.5), 1)
        2.0
        >>> fan_in_normal(2.0).name, fan_in_normal(2.0).weight_variance
        ('fan_in_normal:2', 4.0)
    """
    k = _nonnegative(scale, "fan_in_normal: scale")
    return _fan_scaled(f"fan_in_normal:{_fmt(k)}", k * k, "fan_in", "normal", batch_axis)


#: What the former name ``normal`` is answered with (the Python name and the ``get`` name).
RENAMED_NORMAL = (
    "gradlab.init.normal was renamed fan_in_normal: fan_in_normal(K) draws std "
    "K/sqrt(fan_in) (by name 'fan_in_normal:K'). For a fixed std, as "
    "jax.nn.initializers.normal(stddev) draws, use gaussian(stddev) ('gaussian:std')."
)


def normal(*args: Any, **kwargs: Any) -> NoReturn:
    """The former name of :func:`fan_in_normal`; it raises, naming the two it could mean.

    ``jax.nn.initializers.normal(0.5)`` draws std 0.5 whatever the shape, while gradlab's
    fan-scaled Gaussian draws std ``0.5 / sqrt(fan_in)``: one name for two distributions would
    silently give the wrong one to half of its readers, so neither has it. Use
    :func:`fan_in_normal` (std ``K / sqrt(fan_in)``) or :func:`gaussian` (a fixed std, the
    distribution of ``jax.nn.initializers.normal``).

    Raises:
        InputError: always, saying which name to use.

    Example:
        >>> normal(2.0)
        Traceback (most recent call last):
        ...
        gradlab.InputError: gradlab.init.normal was renamed fan_in_normal: ...
    """
    del args, kwargs
    raise InputError(RENAMED_NORMAL)


def gaussian(std: float, *, batch_axis: Axes = ()) -> InitSpec:
    """``N(0, std^2)`` with a fixed std, whatever the shape (any rank, biases included).

    The distribution of ``jax.nn.initializers.normal(std)``. Unlike :func:`fan_in_normal`, the
    std does not scale with the fans, so it has no ``weight_variance`` (``σ²`` would be
    ``std² · n``, a different number at every width).

    Args:
        std: the standard deviation, >= 0.
        batch_axis: accepted for a uniform signature; a fixed std has no fans to leave out.

    Returns:
        An :class:`InitSpec` named ``"gaussian:<std>"``.

    Example:
        >>> import jax
        >>> gaussian(0.1)(jax.random.key(0), (5,)).shape
        (5,)
    """
    std = _nonnegative(std, "gaussian: std")
    name = f"gaussian:{_fmt(std)}"

    def draw(key: Array, shape: Sequence[int], dtype: DTypeLike, *, batch_axis: Axes) -> Array:
        del batch_axis
        dtype_ = _float_dtype(dtype, name)
        shape_t = _as_shape(shape, name)
        variance = jnp.array(std**2, dtype_)
        return _draw(key, variance, shape=shape_t, dtype=dtype_, distribution="normal")

    return InitSpec(name, "normal", None, draw, batch_axis=_hashable_axes(batch_axis))
