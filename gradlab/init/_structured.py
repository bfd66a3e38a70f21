"""Structured initialisers: :func:`orthogonal`, :func:`near_identity`, and :func:`stacked`.

Unlike the i.i.d. ones, these build a weight matrix as a whole (a Haar orthogonal matrix, the
identity plus noise), so a stack of layers is built slice by slice; :func:`stacked` does that
for any initialiser by splitting the key and ``vmap`` ping it over the leading axes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from gradlab._errors import InputError
from gradlab.init._constants import ones, zeros
from gradlab.init._fans import (
    Axes,
    _as_shape,
    _float_dtype,
    _fmt,
    _hashable_axes,
    _nonnegative,
    _split_axes,
)
from gradlab.init._scaling import _draw
from gradlab.init._spec import Initializer, InitSpec

Array = jax.Array


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
    return jnp.transpose(slices, tuple(int(i) for i in np.argsort(perm)))


def orthogonal(gain: float = 1.0, *, batch_axis: Axes = ()) -> InitSpec:
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
        An :class:`InitSpec` named ``"orthogonal:<gain>"`` (``weight_variance == gain**2``).

    Raises:
        InputError: for a gain that is not a finite number >= 0.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w = orthogonal(1.1)(jax.random.key(0), (6, 6))
        >>> bool(jnp.allclose(w.T @ w, 1.21 * jnp.eye(6), atol=1e-5))
        True
    """
    gain = _nonnegative(gain, "orthogonal: gain")
    name = f"orthogonal:{_fmt(gain)}"

    def draw(key: Array, shape: Sequence[int], dtype: DTypeLike, *, batch_axis: Axes) -> Array:
        dtype_ = _float_dtype(dtype, name)
        shape_t = _as_shape(shape, name)
        _, _, batch = _split_axes(shape_t, -2, -1, batch_axis, name)
        if math.prod(shape_t) == 0:
            return jnp.zeros(shape_t, dtype_)
        compute = dtype_ if dtype_.itemsize >= 4 else np.dtype(np.float32)
        gain_ = jnp.array(gain, compute)
        return _orthogonal(key, gain_, shape=shape_t, batch=batch, dtype=dtype_)

    axes = _hashable_axes(batch_axis)
    return InitSpec(name, "orthogonal", gain * gain, draw, gain=gain, batch_axis=axes)


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


def near_identity(noise_std: float = 0.01, *, batch_axis: Axes = ()) -> InitSpec:
    """The identity plus ``N(0, noise_std^2)`` noise: "as close to 1 as possible, not 1".

    For ``(in, out)`` the base is ``jnp.eye(in, out)`` (ones on the main diagonal, also when not
    square). For a convolution kernel ``(*spatial, in, out)`` the base is the identity
    convolution: ``eye(in, out)`` at the centre tap (index ``k // 2`` of every spatial axis),
    zeros elsewhere. With ``batch_axis`` every slice gets the same base; the noise is i.i.d.

    Args:
        noise_std: standard deviation of the added noise (absolute, not scaled by the fans).
        batch_axis: stacking axes.

    Returns:
        An :class:`InitSpec` named ``"near_identity:<noise_std>"`` (no ``weight_variance``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w = near_identity(0.0)(jax.random.key(0), (3, 3))
        >>> bool((w == jnp.eye(3)).all())
        True
    """
    noise_std = _nonnegative(noise_std, "near_identity: noise_std")
    name = f"near_identity:{_fmt(noise_std)}"

    def draw(key: Array, shape: Sequence[int], dtype: DTypeLike, *, batch_axis: Axes) -> Array:
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

    return InitSpec(name, "near_identity", None, draw, batch_axis=_hashable_axes(batch_axis))


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
        raise InputError(f"stacked: num_axes must be >= 1, got {num_axes}; pass num_axes=1.")

    def wrapped(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        shape_t = _as_shape(shape, "stacked")
        if len(shape_t) <= num_axes:
            raise InputError(
                f"stacked: shape {shape_t} has no per-layer axes after the {num_axes} "
                "stacking axes; pass (*stack, *layer_shape) or a smaller num_axes."
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
