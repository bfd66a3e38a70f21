"""Fans of a weight shape, and the validation every initialiser shares.

:func:`compute_fans` reads a shape as ``(*receptive_field, in, out)`` (the convention of
:mod:`jax.nn.initializers`), leaving out stacking ``batch_axis`` axes; the private helpers check
shapes, dtypes, axes and numbers and raise :class:`~gradlab.InputError` saying the fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from gradlab._errors import InputError
from gradlab._validate import nonnegative_number

#: One axis or several: ``in_axis``, ``out_axis`` and ``batch_axis`` take either.
Axes = int | Sequence[int]


def _hashable_axes(axes: Axes) -> Axes:
    return axes if isinstance(axes, int) else tuple(int(a) for a in axes)


def _fmt(x: float) -> str:
    """A short exact decimal for names: ``2.0 -> '2'``, ``1.1 -> '1.1'``, else ``repr``."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def _nonnegative(value: float, what: str) -> float:
    return nonnegative_number(what, value)


# --------------------------------------------------------------------------- validation


def _float_dtype(dtype: DTypeLike | None, name: str) -> np.dtype:
    dtype = np.dtype(jnp.float32 if dtype is None else dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise InputError(
            f"{name}: weights need a real floating dtype, got {dtype}. "
            "Pass e.g. dtype=jnp.float32 (or jnp.float64 under jax.enable_x64(True))."
        )
    return dtype


def _as_shape(shape: Sequence[int], name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(d) for d in shape)
    except TypeError as e:
        raise InputError(
            f"{name}: shape must be a sequence of ints, got {shape!r}; pass e.g. (64, 32)."
        ) from e
    if any(d < 0 for d in out):
        raise InputError(f"{name}: shape {out} has a negative dimension; use sizes >= 0.")
    return out


def _normalise_axes(axes: Axes, rank: int, what: str) -> tuple[int, ...]:
    axes_t = (axes,) if isinstance(axes, int) else tuple(axes)
    out = []
    for a in axes_t:
        if not -rank <= a < rank:
            raise InputError(
                f"{what} {a} is out of range for a weight of rank {rank}; use an axis in "
                f"-{rank}..{rank - 1}."
            )
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise InputError(f"{what} {axes_t} names the same axis twice; list each axis once.")
    return tuple(out)


def _split_axes(
    shape: tuple[int, ...], in_axis: Axes, out_axis: Axes, batch_axis: Axes, name: str
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    rank = len(shape)
    if rank < 2:
        raise InputError(
            f"{name}: fan-based initialisers need a weight of rank >= 2 such as (in, out) or "
            f"(*spatial, in, out); got shape {shape}. For biases and other vectors use "
            "gradlab.init.zeros, constant(value) or gaussian(std)."
        )
    ins = _normalise_axes(in_axis, rank, "in_axis")
    outs = _normalise_axes(out_axis, rank, "out_axis")
    batch = _normalise_axes(batch_axis, rank, "batch_axis")
    if set(ins) & set(outs) or set(batch) & (set(ins) | set(outs)):
        raise InputError(
            f"{name}: in_axis={in_axis}, out_axis={out_axis} and batch_axis={batch_axis} "
            "must name different axes; give each role its own axis."
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
        InputError: if the rank is below 2 or the axes overlap or are out of range.

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
