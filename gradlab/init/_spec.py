"""The initialiser signature, and :class:`InitSpec`: an initialiser that says what it draws.

:class:`Initializer` is the protocol ``(key, shape, dtype=jnp.float32) -> Array`` shared with
:mod:`jax.nn.initializers` and Flax; every initialiser :mod:`gradlab.init` makes is an
:class:`InitSpec`, which also carries what :mod:`gradlab.theory` needs (family, ``σ²``, gain).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal, Protocol, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from gradlab._errors import InputError
from gradlab.init._fans import Axes, _float_dtype, _hashable_axes

Array = jax.Array
_FLOAT32 = np.dtype(np.float32)

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


class _Remake(Protocol):
    def __call__(self, *, in_axis: Axes, out_axis: Axes) -> InitSpec: ...


@dataclasses.dataclass(frozen=True)
class InitSpec:
    """A gradlab initialiser: callable as ``(key, shape, dtype)``, and it says what it draws.

    Every initialiser made by :mod:`gradlab.init` is one (the named ones such as
    :func:`he_normal`, and what :func:`normal`, :func:`orthogonal`, :func:`variance_scaling`, ...
    and :func:`get` return). :mod:`gradlab.flow` reads ``family``, ``weight_variance`` and
    ``gain`` to attach the matching :mod:`gradlab.theory` prediction. Two specs with the same
    name, family, numbers, ``batch_axis`` and ``dtype`` draw the same arrays and compare equal
    (so compiled programs keyed on them are shared).

    Called with a key and a shape it draws; called with keyword options only (or nothing) it
    is a factory, as :mod:`jax.nn.initializers` are: ``he_normal()`` is ``he_normal``, and
    ``he_normal(in_axis=0, out_axis=1, batch_axis=(), dtype=jnp.float64)`` is the same
    initialiser reading its fans from other axes, leaving stacking axes out, and drawing
    float64 when no dtype is passed. So both ``kernel_init=gradlab.init.he_normal`` and
    ``kernel_init=gradlab.init.he_normal()`` work, like ``jax.nn.initializers.he_normal()``.

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
        dtype: the dtype drawn when the call passes none.
        remake: builds the same initialiser with other ``in_axis``/``out_axis`` (the
            fan-scaled ones), else None.

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
        >>> init.he_normal() is init.he_normal  # a factory, like jax.nn.initializers.he_normal
        True
        >>> init.he_normal(in_axis=0, out_axis=1).name
        'he_normal(in_axis=0, out_axis=1)'
    """

    name: str
    family: Family
    weight_variance: float | None
    draw: _Draw = dataclasses.field(compare=False, repr=False)
    gain: float | None = None
    batch_axis: Axes = ()
    dtype: np.dtype = _FLOAT32
    remake: _Remake | None = dataclasses.field(default=None, compare=False, repr=False)

    @overload
    def __call__(
        self,
        key: None = None,
        shape: None = None,
        dtype: DTypeLike | None = None,
        *,
        batch_axis: Axes | None = None,
        in_axis: Axes | None = None,
        out_axis: Axes | None = None,
    ) -> InitSpec: ...

    @overload
    def __call__(
        self,
        key: Array,
        shape: Sequence[int],
        dtype: DTypeLike | None = None,
        *,
        batch_axis: Axes | None = None,
    ) -> Array: ...

    def __call__(
        self,
        key: Array | None = None,
        shape: Sequence[int] | None = None,
        dtype: DTypeLike | None = None,
        *,
        batch_axis: Axes | None = None,
        in_axis: Axes | None = None,
        out_axis: Axes | None = None,
    ) -> Array | InitSpec:
        """Draws a weight, or, called without key and shape, makes an initialiser.

        Args:
            key: a JAX PRNG key; None (with no shape) for the factory form.
            shape: the weight's shape, rank >= 2 (any rank for :func:`gaussian`).
            dtype: a real floating dtype (default: the spec's ``dtype``, float32 unless made
                otherwise).
            batch_axis: stacking axes left out of the fans; default the spec's own.
            in_axis: factory form only: the input axis or axes of the weights it will draw.
            out_axis: factory form only: their output axis or axes.

        Returns:
            An array of that shape and dtype; in the factory form, the :class:`InitSpec` with
            those options (this one when none is given).

        Raises:
            InputError: for a rank below 2, a non-floating dtype or bad axes; a key without a
                shape; ``in_axis``/``out_axis`` when drawing, or on an initialiser that has no
                fans (:func:`orthogonal`, :func:`near_identity`, :func:`gaussian`).
        """
        if key is None and shape is None:
            return self._configured(dtype, batch_axis, in_axis, out_axis)
        if shape is None or key is None:
            raise InputError(
                f"{self.name}: pass a key and a shape to draw, {self.name}(key, shape, dtype), "
                f"or keyword options only to make an initialiser, {self.name}(batch_axis=0) "
                "(like jax.nn.initializers)."
            )
        if in_axis is not None or out_axis is not None:
            raise InputError(
                f"{self.name}: in_axis and out_axis are options of the factory form; make the "
                f"initialiser first: {self.name}(in_axis=..., out_axis=...)(key, shape)."
            )
        axes = self.batch_axis if batch_axis is None else _hashable_axes(batch_axis)
        return self.draw(key, shape, self.dtype if dtype is None else dtype, batch_axis=axes)

    def _configured(
        self,
        dtype: DTypeLike | None,
        batch_axis: Axes | None,
        in_axis: Axes | None,
        out_axis: Axes | None,
    ) -> InitSpec:
        """The factory form: this initialiser with other axes or default dtype."""
        spec = self
        if in_axis is not None or out_axis is not None:
            if self.remake is None:
                raise InputError(
                    f"{self.name} has no fans, so no in_axis or out_axis; pass batch_axis or "
                    "dtype only."
                )
            spec = self.remake(
                in_axis=-2 if in_axis is None else in_axis,
                out_axis=-1 if out_axis is None else out_axis,
            )
            spec = dataclasses.replace(spec, batch_axis=self.batch_axis, dtype=self.dtype)
        changes: dict[str, object] = {}
        if batch_axis is not None:
            changes["batch_axis"] = _hashable_axes(batch_axis)
        if dtype is not None:
            changes["dtype"] = _float_dtype(dtype, self.name)
        return dataclasses.replace(spec, **changes) if changes else spec  # type: ignore[arg-type]
