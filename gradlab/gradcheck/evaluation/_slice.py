"""A leaf held as a base value plus the values on the slice where a move changes it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from jax import lax

__all__ = ["Slice", "entry"]


@dataclasses.dataclass(frozen=True)
class Slice:
    """A value equal to ``base`` except on one slice, where it is ``vals``.

    Attributes:
        base: The value off the slice (full shape).
        dims: The dimensions the slice is fixed in, ascending.
        idx: Its position along each of them (integer scalars; traced).
        vals: The values on the slice: ``base.shape`` without ``dims``.
    """

    base: Any
    dims: tuple[int, ...]
    idx: tuple[Any, ...]
    vals: Any

    @property
    def key(self) -> tuple[Any, ...]:
        """Slices with equal keys cover the same positions (the same index values)."""
        return self.dims, tuple(map(id, self.idx))

    def take(self, x: Any) -> Any:
        """``x`` (shaped like ``base``) on this slice."""
        return take(x, self.dims, self.idx)

    def dense(self) -> Any:
        """The value as an ordinary array."""
        return put(self.base, self.dims, self.idx, self.vals)

    def delta(self) -> Any:
        """The value minus ``base``, on the slice."""
        return self.vals - self.take(self.base)


def _unravel(flat: Any, shape: Sequence[int]) -> tuple[Any, ...]:
    """The position of flat index ``flat`` (in bounds, C order) in an array of ``shape``.

    ``jnp.unravel_index`` also handles negative and out-of-bounds indices; the checker's are
    neither, and plain integer arithmetic is less for XLA to compile in every kernel.
    """
    flat = jnp.asarray(flat, jnp.int32)
    out = []
    for d in range(len(shape)):
        inner = math.prod(shape[d + 1 :])
        i = lax.div(flat, jnp.int32(inner)) if inner > 1 else flat
        out.append(lax.rem(i, jnp.int32(shape[d])) if d else i)
    return tuple(out)


def _starts(ndim: int, dims: Sequence[int], idx: Sequence[Any]) -> list[Any]:
    pos = dict(zip(dims, idx, strict=True))
    return [jnp.asarray(pos.get(d, 0), jnp.int32) for d in range(ndim)]


def _slice(x: Any, starts: Sequence[Any], sizes: Sequence[int]) -> Any:
    """``lax.dynamic_slice`` at non-negative ``starts``."""
    return lax.dynamic_slice(x, starts, sizes, allow_negative_indices=False)


def _update(x: Any, update: Any, starts: Sequence[Any]) -> Any:
    """``lax.dynamic_update_slice`` at non-negative ``starts``."""
    return lax.dynamic_update_slice(x, update, starts, allow_negative_indices=False)


def _div(i: Any, n: int) -> Any:
    """``i // n`` for a non-negative int32 ``i`` (C division: no sign correction)."""
    return lax.div(jnp.asarray(i, jnp.int32), jnp.int32(n))


def _rem(i: Any, n: int) -> Any:
    """``i % n`` for a non-negative int32 ``i`` (C remainder: no sign correction)."""
    return lax.rem(jnp.asarray(i, jnp.int32), jnp.int32(n))


def take(x: Any, dims: Sequence[int], idx: Sequence[Any]) -> Any:
    """``x`` at positions ``idx`` along ``dims``, those dimensions dropped."""
    if not dims:
        return x
    x = jnp.asarray(x)
    sizes = [1 if d in dims else n for d, n in enumerate(x.shape)]
    return lax.squeeze(_slice(x, _starts(x.ndim, dims, idx), sizes), tuple(dims))


def entry(leaf: Any, index: Any) -> Any:
    """Entry ``index`` (flat, non-negative, in range) of ``leaf``, without a gather.

    One dynamic slice, whatever the leaf's size: what a leaf's own kernel reads per row.
    (A group kernel, whose leaves are small, reads by a one-hot select instead:
    ``_kernels._entry``, which also writes the entry back.)

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w = jnp.arange(6.0).reshape(2, 3)
        >>> float(entry(w, 4)), jax.vmap(lambda i: entry(w, i))(jnp.array([5, 0])).tolist()
        (4.0, [5.0, 0.0])
    """
    return take(jnp.reshape(leaf, -1), (0,), (index,))


def put(base: Any, dims: Sequence[int], idx: Sequence[Any], vals: Any) -> Any:
    """``base`` with the slice at ``idx`` along ``dims`` set to ``vals``."""
    if not dims:
        return vals
    update = lax.expand_dims(jnp.asarray(vals, base.dtype), tuple(dims))
    return _update(base, update, _starts(base.ndim, dims, idx))


def _bind(eqn: Any, ins: Sequence[Any], **changed: Any) -> list[Any]:
    """``eqn``'s primitive applied to ``ins``, with the parameters in ``changed`` replaced."""
    params = {**eqn.primitive.get_bind_params(eqn.params), **changed}
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*ins, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _dense(x: Any) -> Any:
    return x.dense() if isinstance(x, Slice) else x


def _free(ndim: int, dims: Sequence[int]) -> list[int]:
    return [d for d in range(ndim) if d not in dims]


def broadcast(s: Slice, shape: tuple[int, ...], bdims: tuple[int, ...]) -> Slice:
    """``lax.broadcast_in_dim`` of a slice: still a slice, along the dimensions kept."""
    base = lax.broadcast_in_dim(s.base, shape, bdims)
    # A fixed size-1 dimension broadcast to more is changed along all of it: not fixed.
    keep = [d for d in s.dims if s.base.shape[d] == shape[bdims[d]]]
    dropped = [d for d in s.dims if d not in keep]
    order = sorted(_free(s.base.ndim, s.dims) + dropped)
    vals = lax.expand_dims(s.vals, tuple(order.index(d) for d in dropped))
    out_dims = tuple(bdims[d] for d in keep)
    out_free = _free(len(shape), out_dims)
    vals = lax.broadcast_in_dim(
        vals, tuple(shape[o] for o in out_free), tuple(out_free.index(bdims[d]) for d in order)
    )
    idx = tuple(s.idx[s.dims.index(d)] for d in keep)
    return Slice(base, out_dims, idx, vals)
