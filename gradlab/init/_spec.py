"""The initialiser signature, and :class:`InitSpec`: an initialiser that says what it draws.

:class:`Initializer` is the protocol ``(key, shape, dtype=jnp.float32) -> Array`` shared with
:mod:`jax.nn.initializers` and Flax; every initialiser :mod:`gradlab.init` makes is an
:class:`InitSpec`, which also carries what :mod:`gradlab.theory` needs (family, ``σ²``, gain).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal, Protocol

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from gradlab.init._fans import Axes, _hashable_axes

Array = jax.Array

#: How an :class:`InitSpec` draws its entries.
Family = Literal["normal", "uniform", "truncated_normal", "orthogonal", "near_identity"]


class Initializer(Protocol):
    """The initialiser signature: ``(key, shape, dtype=jnp.float32) -> Array``.

    Any function or callable object of this form is an initialiser: those of
    :mod:`jax.nn.initializers`, Flax's, yours, and every :class:`InitSpec` made here.

    Example:
        >>> import jax
        >>> from gradlab import init
        >>> def tiny(key, shape, dtype=jax.numpy.float32):
        ...     return 1e-3 * jax.random.normal(key, shape, dtype)
        >>> init.stacked(tiny)(jax.random.key(0), (2, 3, 3)).shape  # any initialiser fits
        (2, 3, 3)
    """

    def __call__(self, key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        """Draws a weight of the given shape and dtype from ``key``.

        Args:
            key: a JAX PRNG key.
            shape: the weight's shape.
            dtype: a floating dtype.

        Returns:
            An array of that shape and dtype.
        """
        ...


class _Draw(Protocol):
    def __call__(
        self, key: Array, shape: Sequence[int], dtype: DTypeLike, *, batch_axis: Axes
    ) -> Array: ...


@dataclasses.dataclass(frozen=True)
class InitSpec:
    """A gradlab initialiser: callable as ``(key, shape, dtype)``, and it says what it draws.

    Every initialiser made by :mod:`gradlab.init` is one (the named ones such as
    :func:`he_normal`, and what :func:`normal`, :func:`orthogonal`, :func:`variance_scaling`, ...
    and :func:`get` return). :mod:`gradlab.flow` reads ``family``, ``weight_variance`` and
    ``gain`` to attach the matching :mod:`gradlab.theory` prediction. Two specs with the same
    name, family, numbers and ``batch_axis`` draw the same arrays and compare equal (so compiled
    programs keyed on them are shared).

    Attributes:
        name: the name :func:`get` accepts (``"he_normal"``, ``"normal:2"``,
            ``"orthogonal:1.1"``), or a description for :func:`variance_scaling`.
        family: how entries are drawn: ``"normal"``, ``"uniform"`` or ``"truncated_normal"``
            (i.i.d.), ``"orthogonal"`` or ``"near_identity"``.
        weight_variance: ``σ²`` such that a square ``n × n`` layer's entries have variance
            ``σ²/n`` (1 for LeCun, 2 for He, ``gain²`` for orthogonal); None when the variance
            does not scale as ``1/n`` (:func:`gaussian`, :func:`near_identity`).
        gain: the common singular value of an orthogonal initialiser, else None.
        draw: the drawing function ``(key, shape, dtype, *, batch_axis) -> Array``.
        batch_axis: the default stacking axes (see :func:`compute_fans`).

    Example:
        >>> import jax
        >>> from gradlab import init
        >>> spec = init.orthogonal(1.1)
        >>> spec.name, spec.family, round(spec.weight_variance, 2), spec.gain
        ('orthogonal:1.1', 'orthogonal', 1.21, 1.1)
        >>> spec(jax.random.key(0), (4, 4)).shape
        (4, 4)
        >>> spec == init.get("orthogonal:1.1")
        True
    """

    name: str
    family: Family
    weight_variance: float | None
    draw: _Draw = dataclasses.field(compare=False, repr=False)
    gain: float | None = None
    batch_axis: Axes = ()

    def __call__(
        self,
        key: Array,
        shape: Sequence[int],
        dtype: DTypeLike = jnp.float32,
        *,
        batch_axis: Axes | None = None,
    ) -> Array:
        """Draws a weight.

        Args:
            key: a JAX PRNG key.
            shape: the weight's shape, rank >= 2 (any rank for :func:`gaussian`).
            dtype: a real floating dtype.
            batch_axis: stacking axes left out of the fans; default the spec's own.

        Returns:
            An array of that shape and dtype.

        Raises:
            InputError: for a rank below 2, a non-floating dtype or bad axes.
        """
        axes = self.batch_axis if batch_axis is None else _hashable_axes(batch_axis)
        return self.draw(key, shape, dtype, batch_axis=axes)
