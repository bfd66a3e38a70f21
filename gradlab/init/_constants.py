"""Constant initialisers: :func:`zeros`, :func:`ones` and :func:`constant` (biases, mostly)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from gradlab.init._fans import _as_shape
from gradlab.init._spec import Initializer

Array = jax.Array


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
    """All ones. ``key`` is ignored.

    Example:
        >>> import jax
        >>> ones(jax.random.key(0), (2,))
        Array([1., 1.], dtype=float32)
    """
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
