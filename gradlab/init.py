"""Pure-function weight initialisers.

Every initialiser here has the signature ``init(key, shape, dtype=jnp.float32) -> Array``, the
same as :mod:`jax.nn.initializers` and Flax's ``kernel_init``, so it can be passed to
``flax.nnx.Linear(..., kernel_init=gradlab.init.he_normal)`` as it is. Factories such as
:func:`scaled`, :func:`orthogonal` and :func:`variance_scaling` return one.

Fans and the shape convention
-----------------------------
The *fans* of a weight are computed by :func:`compute_fans`. With the default axes the rule is
the one of :mod:`jax.nn.initializers`:

* the last axis is the output axis and the second-to-last the input axis;
* every other axis is a receptive-field (spatial) axis of a convolution kernel, so a
  ``(3, 3, c_in, c_out)`` kernel has ``fan_in = 9 * c_in`` and a ``(width, c_in, c_out)`` kernel is
  a 1-D convolution;
* axes named in ``batch_axis`` index independent weight matrices (layers stacked for
  ``jax.lax.scan``, heads, ...) and are left out of the fans.

A rank-3 shape is therefore read as a 1-D convolution kernel unless told otherwise. Stacked dense
weights ``(layers, in, out)`` must say so, in one of two ways:

* ``batch_axis=0`` on any initialiser here (``he_normal(key, (L, n, n), batch_axis=0)`` or
  ``orthogonal(batch_axis=0)``). Entry-wise i.i.d. initialisers draw the whole array at once
  (the same draws as ``jax.nn.initializers.variance_scaling(..., batch_axis=0)``); structured
  ones (:func:`orthogonal`, :func:`near_identity`) build every slice separately.
* :func:`stacked` wraps any initialiser, yours included: it splits the key and ``vmap`` s the
  initialiser over the leading axes, so the wrapped initialiser only ever sees one layer's
  shape. This is what :mod:`gradlab.nn` does for its stacked layers.

Normal initialisers draw from an untruncated normal distribution (the Gaussian weights of the
theory, ``N(0, sigma^2 / n)``). :mod:`jax.nn.initializers` and Flax default to a normal truncated
at two standard deviations (and rescaled); use ``variance_scaling(..., "truncated_normal")`` to get
that.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from gradlab import init
    >>> w = init.he_normal(jax.random.key(0), (512, 256))
    >>> round(float(w.std() * jnp.sqrt(512 / 2)), 1)  # std is sqrt(2 / fan_in)
    1.0
    >>> init.compute_fans((3, 3, 16, 32))
    (144, 288)
    >>> init.compute_fans((10, 64, 64), batch_axis=0)  # ten stacked 64x64 layers
    (64, 64)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

__all__ = [
    "Initializer",
    "compute_fans",
    "constant",
    "gaussian",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecture_glorot",
    "lecture_tanh",
    "lecun_normal",
    "lecun_uniform",
    "near_identity",
    "normal",
    "ones",
    "orthogonal",
    "scaled",
    "stacked",
    "variance_scaling",
    "zeros",
]

Array = jax.Array
Axes = int | Sequence[int]
Mode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["normal", "uniform", "truncated_normal"]

# Standard deviation of a standard normal truncated to (-2, 2), as in jax.nn.initializers.
_TRUNCATED_STD = 0.87962566103423978


class Initializer(Protocol):
    """The initialiser signature: ``(key, shape, dtype=jnp.float32) -> Array``."""

    def __call__(
        self, key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32
    ) -> Array: ...


# --------------------------------------------------------------------------- validation


def _float_dtype(dtype: DTypeLike | None, name: str) -> np.dtype:
    dtype = np.dtype(jnp.float32 if dtype is None else dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{name}: weights need a real floating dtype, got {dtype}. "
            "Pass e.g. dtype=jnp.float32 (or jnp.float64 under jax.enable_x64(True))."
        )
    return dtype


def _as_shape(shape: Sequence[int], name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(d) for d in shape)
    except TypeError as e:
        raise ValueError(f"{name}: shape must be a sequence of ints, got {shape!r}.") from e
    if any(d < 0 for d in out):
        raise ValueError(f"{name}: shape has a negative dimension: {out}.")
    return out


def _normalise_axes(axes: Axes, rank: int, what: str) -> tuple[int, ...]:
    axes_t = (axes,) if isinstance(axes, int) else tuple(axes)
    out = []
    for a in axes_t:
        if not -rank <= a < rank:
            raise ValueError(f"{what} {a} is out of range for a weight of rank {rank}.")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ValueError(f"{what} {axes_t} names the same axis twice.")
    return tuple(out)


def _split_axes(
    shape: tuple[int, ...], in_axis: Axes, out_axis: Axes, batch_axis: Axes, name: str
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    rank = len(shape)
    if rank < 2:
        raise ValueError(
            f"{name}: fan-based initialisers need a weight of rank >= 2 such as (in, out) or "
            f"(*spatial, in, out); got shape {shape}. For biases and other vectors use "
            "gradlab.init.zeros, constant(value) or gaussian(std)."
        )
    ins = _normalise_axes(in_axis, rank, "in_axis")
    outs = _normalise_axes(out_axis, rank, "out_axis")
    batch = _normalise_axes(batch_axis, rank, "batch_axis")
    if set(ins) & set(outs) or set(batch) & (set(ins) | set(outs)):
        raise ValueError(
            f"{name}: in_axis={in_axis}, out_axis={out_axis} and batch_axis={batch_axis} "
            "must name different axes."
        )
    return ins, outs, batch


def compute_fans(
    shape: Sequence[int],
    *,
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
) -> tuple[int, int]:
    """Returns ``(fan_in, fan_out)`` of a weight of the given shape.

    ``fan_in = prod(in axes) * receptive_field`` and ``fan_out = prod(out axes) *
    receptive_field``, where the receptive field is the product of all axes that are neither in,
    out nor batch axes. Batch axes (stacked layers) are ignored.

    Args:
        shape: the weight's shape, rank >= 2.
        in_axis: the input axis or axes.
        out_axis: the output axis or axes.
        batch_axis: axes indexing independent weights, e.g. ``0`` for ``(layers, in, out)``.

    Returns:
        ``(fan_in, fan_out)`` as Python ints.

    Raises:
        ValueError: if the rank is below 2 or the axes overlap or are out of range.

    Example:
        >>> compute_fans((784, 256))
        (784, 256)
        >>> compute_fans((5, 32, 64))  # read as a 1-D conv kernel (width, in, out)
        (160, 320)
        >>> compute_fans((5, 32, 64), batch_axis=0)  # five stacked (32, 64) layers
        (32, 64)
    """
    shape_t = _as_shape(shape, "compute_fans")
    ins, outs, batch = _split_axes(shape_t, in_axis, out_axis, batch_axis, "compute_fans")
    receptive = math.prod(d for i, d in enumerate(shape_t) if i not in {*ins, *outs, *batch})
    fan_in = math.prod(shape_t[i] for i in ins) * receptive
    fan_out = math.prod(shape_t[i] for i in outs) * receptive
    return fan_in, fan_out


# --------------------------------------------------------------------------- variance scaling


def variance_scaling(
    scale: float,
    mode: Mode = "fan_in",
    distribution: Distribution = "normal",
    *,
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
) -> Initializer:
    """Builds an initialiser with variance ``scale / n``, the common core of the named ones.

    ``n`` is ``fan_in``, ``fan_out`` or ``(fan_in + fan_out) / 2`` for the three modes.
    ``"normal"`` draws ``N(0, scale / n)``; ``"uniform"`` draws ``U(-b, b)`` with ``b =
    sqrt(3 scale / n)`` (same variance); ``"truncated_normal"`` draws a normal truncated at two
    standard deviations and rescaled to variance ``scale / n`` (the :mod:`jax.nn.initializers`
    default). Given the same key, the output equals ``jax.nn.initializers.variance_scaling`` with
    the same arguments (bit for bit for ``"uniform"``; to a float ulp or two for the normal
    distributions, whose scaling XLA fuses into the sampler here).

    Args:
        scale: variance multiplier, >= 0.
        mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``.
        distribution: ``"normal"``, ``"uniform"`` or ``"truncated_normal"``.
        in_axis: input axis or axes of the weight.
        out_axis: output axis or axes of the weight.
        batch_axis: stacking axes left out of the fans (see the module docstring).

    Returns:
        An :class:`Initializer`.

    Example:
        >>> import jax
        >>> init_fn = variance_scaling(2.0, "fan_in", "uniform")
        >>> w = init_fn(jax.random.key(0), (100, 10))
        >>> bool(abs(w).max() <= (3 * 2.0 / 100) ** 0.5)
        True
    """
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(f"mode must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}.")
    if distribution not in ("normal", "uniform", "truncated_normal"):
        raise ValueError(
            f"distribution must be 'normal', 'uniform' or 'truncated_normal', got {distribution!r}."
        )
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"scale must be a finite number >= 0, got {scale}.")

    def init(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        name = f"variance_scaling({scale}, {mode!r}, {distribution!r})"
        return _variance_scaling(
            key, shape, dtype, scale, mode, distribution, in_axis, out_axis, batch_axis, name
        )

    return init


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


def _named(
    name: str, scale: float, mode: Mode, distribution: Distribution
) -> Callable[[Array, Sequence[int], DTypeLike, Axes], Array]:
    def init(key: Array, shape: Sequence[int], dtype: DTypeLike, batch_axis: Axes) -> Array:
        return _variance_scaling(
            key, shape, dtype, scale, mode, distribution, -2, -1, batch_axis, name
        )

    return init


_lecun_normal = _named("lecun_normal", 1.0, "fan_in", "normal")
_lecun_uniform = _named("lecun_uniform", 1.0, "fan_in", "uniform")
_he_normal = _named("he_normal", 2.0, "fan_in", "normal")
_he_uniform = _named("he_uniform", 2.0, "fan_in", "uniform")
_glorot_normal = _named("glorot_normal", 1.0, "fan_avg", "normal")
_glorot_uniform = _named("glorot_uniform", 1.0, "fan_avg", "uniform")
_lecture_tanh = _named("lecture_tanh", 1.0, "fan_in", "normal")
_lecture_glorot = _named("lecture_glorot", 2.0, "fan_avg", "normal")


def lecun_normal(
    key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32, *, batch_axis: Axes = ()
) -> Array:
    """LeCun et al. (1998): ``N(0, 1 / fan_in)``. Keeps the variance of tanh/linear layers.

    Example:
        >>> import jax
        >>> lecun_normal(jax.random.key(0), (4, 3)).shape
        (4, 3)
    """
    return _lecun_normal(key, shape, dtype, batch_axis)


def lecun_uniform(
    key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32, *, batch_axis: Axes = ()
) -> Array:
    """LeCun, uniform: ``U(-b, b)`` with ``b = sqrt(3 / fan_in)`` (variance ``1 / fan_in``)."""
    return _lecun_uniform(key, shape, dtype, batch_axis)


def he_normal(
    key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32, *, batch_axis: Axes = ()
) -> Array:
    """He et al. (2015): ``N(0, 2 / fan_in)``, std ``sqrt(2 / fan_in)``. For ReLU layers.

    Example:
        >>> import jax
        >>> he_normal(jax.random.key(0), (10, 8, 8), batch_axis=0).shape  # 10 stacked layers
        (10, 8, 8)
    """
    return _he_normal(key, shape, dtype, batch_axis)


def he_uniform(
    key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32, *, batch_axis: Axes = ()
) -> Array:
    """He, uniform: ``U(-b, b)`` with ``b = sqrt(6 / fan_in)`` (variance ``2 / fan_in``)."""
    return _he_uniform(key, shape, dtype, batch_axis)


def glorot_normal(
    key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32, *, batch_axis: Axes = ()
) -> Array:
    """Glorot & Bengio (2010): ``N(0, 2 / (fan_in + fan_out))``."""
    return _glorot_normal(key, shape, dtype, batch_axis)


def glorot_uniform(
    key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32, *, batch_axis: Axes = ()
) -> Array:
    """Glorot & Bengio (2010), uniform: ``U(-b, b)``, ``b = sqrt(6 / (fan_in + fan_out))``."""
    return _glorot_uniform(key, shape, dtype, batch_axis)


def lecture_tanh(
    key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32, *, batch_axis: Axes = ()
) -> Array:
    """The lecture's tanh rule, std ``1 / sqrt(n_prev)``: the same as :func:`lecun_normal`."""
    return _lecture_tanh(key, shape, dtype, batch_axis)


def lecture_glorot(
    key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32, *, batch_axis: Axes = ()
) -> Array:
    """The lecture's literal ReLU rule: std ``2 / sqrt(n_prev + n_cur)``.

    Variance ``4 / (fan_in + fan_out)``: twice Glorot's ``2 / (fan_in + fan_out)``, and for a
    square layer equal to ``2 / n``, He's variance. Not Glorot's ``sqrt(2 / (n_in + n_out))``.

    Example:
        >>> import jax
        >>> w = lecture_glorot(jax.random.key(0), (300, 100))
        >>> round(float(w.std() * (300 + 100) ** 0.5 / 2), 1)
        1.0
    """
    return _lecture_glorot(key, shape, dtype, batch_axis)


def scaled(
    k: float, *, distribution: Distribution = "normal", batch_axis: Axes = ()
) -> Initializer:
    """The lecture's ``K / sqrt(n_prev)``: std ``k / sqrt(fan_in)``.

    ``scaled(1.0)`` is :func:`lecun_normal`; ``scaled(2.0)`` is the lecture's "some cases
    2 / sqrt(n)" (variance ``4 / n``, twice He's ``2 / n``); ``scaled(2 ** 0.5)`` is
    :func:`he_normal`.

    Args:
        k: the multiplier K, >= 0.
        distribution: ``"normal"``, ``"uniform"`` or ``"truncated_normal"``; all have std
            ``k / sqrt(fan_in)``.
        batch_axis: stacking axes left out of the fans.

    Returns:
        An :class:`Initializer`.

    Example:
        >>> import jax
        >>> w = scaled(2.0)(jax.random.key(0), (400, 300))
        >>> round(float(w.std() * 400 ** 0.5), 1)
        2.0
    """
    if not (math.isfinite(k) and k >= 0):
        raise ValueError(f"scaled: k must be a finite number >= 0, got {k}.")
    return variance_scaling(k**2, "fan_in", distribution, batch_axis=batch_axis)


def normal(sigma: float, *, batch_axis: Axes = ()) -> Initializer:
    """Gaussian weights of the theory, ``N(0, sigma^2 / fan_in)``; the same as ``scaled(sigma)``.

    Example:
        >>> import jax
        >>> normal(1.5)(jax.random.key(0), (8, 8)).shape
        (8, 8)
    """
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"normal: sigma must be a finite number >= 0, got {sigma}.")
    return variance_scaling(sigma**2, "fan_in", "normal", batch_axis=batch_axis)


def gaussian(std: float) -> Initializer:
    """``N(0, std^2)`` with a fixed std, whatever the shape (any rank, biases included).

    Example:
        >>> import jax
        >>> gaussian(0.1)(jax.random.key(0), (5,)).shape
        (5,)
    """
    if not (math.isfinite(std) and std >= 0):
        raise ValueError(f"gaussian: std must be a finite number >= 0, got {std}.")

    def init(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        name = f"gaussian({std})"
        dtype_ = _float_dtype(dtype, name)
        shape_t = _as_shape(shape, name)
        variance = jnp.array(std**2, dtype_)
        return _draw(key, variance, shape=shape_t, dtype=dtype_, distribution="normal")

    return init


# --------------------------------------------------------------------------- structured


def _move_batch_front(
    shape: tuple[int, ...], batch: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], list[int]]:
    """Returns (batch shape, slice shape, permutation moving batch axes to the front)."""
    rest = [i for i in range(len(shape)) if i not in batch]
    perm = [*batch, *rest]
    return tuple(shape[i] for i in batch), tuple(shape[i] for i in rest), perm


def _per_slice(
    key: Array,
    shape: tuple[int, ...],
    batch: tuple[int, ...],
    fn: Callable[[Array], Array],
) -> Array:
    """Calls ``fn(key) -> slice`` once per batch index with split keys and assembles ``shape``."""
    if not batch:
        return fn(key)
    batch_shape, slice_shape, perm = _move_batch_front(shape, batch)
    keys = jax.random.split(key, math.prod(batch_shape))
    slices = jax.vmap(fn)(keys).reshape(batch_shape + slice_shape)
    return jnp.transpose(slices, np.argsort(perm))


def orthogonal(gain: float = 1.0, *, batch_axis: Axes = ()) -> Initializer:
    """Saxe et al. (2013): ``gain`` times a uniformly random (Haar) orthogonal matrix.

    A weight ``(*spatial, in, out)`` is drawn as a ``(prod(spatial) * in, out)`` matrix with
    orthonormal columns (or rows, when it is wide) and reshaped, as in
    ``jax.nn.initializers.orthogonal`` (same key, same array when ``batch_axis`` is empty). Every
    singular value equals ``gain``, so through ``L`` square layers ``|x W_1 ... W_L| = gain^L
    |x|`` exactly: the lecture's ``1.1^150`` with no spread. With ``batch_axis``, each slice
    (each stacked layer) is orthogonal on its own.

    The QR decomposition runs in float32 for dtypes narrower than float32 and the result is cast.

    Args:
        gain: the common singular value.
        batch_axis: stacking axes; each slice along them is a separate orthogonal matrix.

    Returns:
        An :class:`Initializer`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w = orthogonal(1.1)(jax.random.key(0), (6, 6))
        >>> bool(jnp.allclose(w.T @ w, 1.21 * jnp.eye(6), atol=1e-5))
        True
    """
    if not math.isfinite(gain):
        raise ValueError(f"orthogonal: gain must be finite, got {gain}.")

    def init(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        name = f"orthogonal({gain})"
        dtype_ = _float_dtype(dtype, name)
        shape_t = _as_shape(shape, name)
        _, _, batch = _split_axes(shape_t, -2, -1, batch_axis, name)
        if math.prod(shape_t) == 0:
            return jnp.zeros(shape_t, dtype_)
        compute = dtype_ if dtype_.itemsize >= 4 else np.dtype(np.float32)
        gain_ = jnp.array(gain, compute)
        return _orthogonal(key, gain_, shape=shape_t, batch=batch, dtype=dtype_)

    return init


@partial(jax.jit, static_argnames=("shape", "batch", "dtype"))
def _orthogonal(
    key: Array, gain: Array, *, shape: tuple[int, ...], batch: tuple[int, ...], dtype: np.dtype
) -> Array:
    _, slice_shape, _ = _move_batch_front(shape, batch)
    n_cols = slice_shape[-1]
    n_rows = math.prod(slice_shape) // n_cols

    def one(k: Array) -> Array:
        q = jax.random.orthogonal(k, n_rows, (), gain.dtype, n_cols)
        return (gain * q).reshape(slice_shape)

    return _per_slice(key, shape, batch, one).astype(dtype)


def near_identity(noise_std: float = 0.01, *, batch_axis: Axes = ()) -> Initializer:
    """The identity plus ``N(0, noise_std^2)`` noise: "as close to 1 as possible, not 1".

    For ``(in, out)`` the base is ``jnp.eye(in, out)`` (ones on the main diagonal, also when not
    square). For a convolution kernel ``(*spatial, in, out)`` the base is the identity
    convolution: ``eye(in, out)`` at the centre tap (index ``k // 2`` of every spatial axis),
    zeros elsewhere. With ``batch_axis`` every slice gets the same base; the noise is i.i.d.

    Args:
        noise_std: standard deviation of the added noise (absolute, not scaled by the fans).
        batch_axis: stacking axes.

    Returns:
        An :class:`Initializer`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w = near_identity(0.0)(jax.random.key(0), (3, 3))
        >>> bool((w == jnp.eye(3)).all())
        True
    """
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"near_identity: noise_std must be a finite number >= 0, got {noise_std}.")

    def init(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        name = f"near_identity({noise_std})"
        dtype_ = _float_dtype(dtype, name)
        shape_t = _as_shape(shape, name)
        _, _, batch = _split_axes(shape_t, -2, -1, batch_axis, name)
        batch_shape, slice_shape, perm = _move_batch_front(shape_t, batch)
        base = np.zeros(slice_shape, dtype=np.float64)
        centre = tuple(d // 2 for d in slice_shape[:-2])
        if math.prod(slice_shape):
            base[centre] = np.eye(slice_shape[-2], slice_shape[-1])
        base = np.broadcast_to(base, batch_shape + slice_shape).transpose(np.argsort(perm))
        variance = jnp.array(noise_std**2, dtype_)
        noise = _draw(key, variance, shape=shape_t, dtype=dtype_, distribution="normal")
        return jnp.asarray(base, dtype_) + noise

    return init


# --------------------------------------------------------------------------- helpers


def stacked(init: Initializer, *, num_axes: int = 1) -> Initializer:
    """Makes an initialiser for stacked weights ``(*stack, *layer_shape)``.

    The key is split into one key per stacked layer and ``init`` is ``vmap`` ped over them with
    the per-layer shape ``shape[num_axes:]``, so fans, orthogonality or identity are per layer
    whatever ``init`` is.

    Args:
        init: any initialiser.
        num_axes: how many leading axes are stacking axes.

    Returns:
        An :class:`Initializer`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w = stacked(orthogonal())(jax.random.key(0), (4, 5, 5))
        >>> bool(jnp.allclose(w[2].T @ w[2], jnp.eye(5), atol=1e-5))
        True
    """
    if num_axes < 1:
        raise ValueError(f"stacked: num_axes must be >= 1, got {num_axes}.")

    def wrapped(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        shape_t = _as_shape(shape, "stacked")
        if len(shape_t) <= num_axes:
            raise ValueError(
                f"stacked: shape {shape_t} has no per-layer axes after the {num_axes} "
                "stacking axes."
            )
        stack, layer = shape_t[:num_axes], shape_t[num_axes:]
        if init is zeros or init is ones:  # no randomness: skip the per-layer vmap
            return init(key, shape_t, dtype)
        out = _stacked(key, init=init, layers=math.prod(stack), layer=layer, dtype=dtype)
        return out.reshape(shape_t)

    return wrapped


def _stacked_eager(
    key: Array, *, init: Initializer, layers: int, layer: tuple[int, ...], dtype: DTypeLike
) -> Array:
    keys = jax.random.split(key, layers)
    return jax.vmap(lambda k: init(k, layer, dtype))(keys)


_stacked_jit = jax.jit(_stacked_eager, static_argnames=("init", "layers", "layer", "dtype"))


def _stacked(
    key: Array, *, init: Initializer, layers: int, layer: tuple[int, ...], dtype: DTypeLike
) -> Array:
    try:
        hash(init)
    except TypeError:  # an unhashable callable cannot be a static argument: run it eagerly
        return _stacked_eager(key, init=init, layers=layers, layer=layer, dtype=dtype)
    return _stacked_jit(key, init=init, layers=layers, layer=layer, dtype=dtype)


def zeros(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
    """All zeros (the usual bias initialiser). ``key`` is ignored.

    Example:
        >>> import jax
        >>> zeros(jax.random.key(0), (2,))
        Array([0., 0.], dtype=float32)
    """
    del key
    return jnp.zeros(_as_shape(shape, "zeros"), jnp.float32 if dtype is None else dtype)


def ones(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
    """All ones. ``key`` is ignored."""
    del key
    return jnp.ones(_as_shape(shape, "ones"), jnp.float32 if dtype is None else dtype)


def constant(value: ArrayLike) -> Initializer:
    """Every entry equal to ``value``.

    Example:
        >>> import jax
        >>> constant(0.5)(jax.random.key(0), (2,))
        Array([0.5, 0.5], dtype=float32)
    """

    def init(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        del key
        shape_t = _as_shape(shape, "constant")
        return jnp.full(shape_t, value, jnp.float32 if dtype is None else dtype)

    return init
