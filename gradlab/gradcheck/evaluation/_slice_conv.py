"""Carrying a slice through ``conv_general_dilated``: a moved kernel entry or input channel."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from jax import lax

from gradlab.gradcheck.evaluation._slice import (
    Slice,
    _bind,
    _div,
    _rem,
    _slice,
    _update,
    put,
    take,
)


def _along(x: Any, dim: int, start: Any, size: int) -> Any:
    """``x[..., start : start + size, ...]`` along ``dim`` (``start`` may be traced)."""
    starts = [jnp.asarray(0, jnp.int32)] * x.ndim
    starts[dim] = jnp.asarray(start, jnp.int32)
    return _slice(x, starts, [size if d == dim else n for d, n in enumerate(x.shape)])


def _spread(s: Slice, narrow: Sequence[int]) -> Any:
    """``Δ(s)`` as an array of the base's rank, zero off the slice.

    Size 1 along ``narrow`` (fixed dimensions the caller restricts the other operand to),
    full elsewhere.
    """
    shape = [1 if d in narrow else n for d, n in enumerate(s.base.shape)]
    at = [0 if d in narrow else i for d, i in zip(s.dims, s.idx, strict=True)]
    return put(jnp.zeros(shape, s.base.dtype), s.dims, at, s.delta())


def _canonical(x: Any, spec: Sequence[int]) -> Any:
    """``x`` with its dimensions ordered as ``spec`` lists them (batch, feature, spatial…)."""
    return lax.transpose(x, tuple(spec))


def _from_canonical(x: Any, spec: Sequence[int]) -> Any:
    """Undoes :func:`_canonical` for an array in the layout ``spec`` describes."""
    return lax.transpose(x, tuple(spec.index(d) for d in range(len(spec))))


def _out_spatial(eqn: Any) -> tuple[int, ...]:
    """The convolution's output sizes along its spatial dimensions, in canonical order."""
    shape, spec = eqn.outvars[0].aval.shape, eqn.params["dimension_numbers"][2]
    return tuple(shape[d] for d in spec[2:])


def _conv(eqn: Any, lhs: Any, rhs: Any) -> Any:
    """The convolution of ``eqn`` (groups 1) on canonical operands: ``(N, O, *out_spatial)``."""
    ident = lax.ConvDimensionNumbers(*[tuple(range(lhs.ndim))] * 3)
    p = eqn.params
    return lax.conv_general_dilated(
        lhs, rhs, p["window_strides"], p["padding"], p["lhs_dilation"], p["rhs_dilation"],
        ident, precision=p.get("precision"), preferred_element_type=p.get("preferred_element_type"),
    )  # fmt: skip


def _accumulated(eqn: Any, x: Any) -> Any:
    """``x`` in the type the convolution accumulates in (``preferred_element_type``, if set)."""
    dtype = eqn.params.get("preferred_element_type")
    return x if dtype is None else x.astype(dtype)


def _padded(eqn: Any, x: Any) -> Any:
    """The canonical input ``x`` dilated and padded as the convolution reads it."""
    p = eqn.params
    pads = [(lo, hi, d - 1) for (lo, hi), d in zip(p["padding"], p["lhs_dilation"], strict=True)]
    return lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (0, 0, 0), *pads])


def _window_at(eqn: Any, padded: Any, channel: Any, at: Sequence[Any]) -> Any:
    """What kernel position ``at`` multiplies at every output position: ``(N, 1, *out)``.

    ``padded`` is :func:`_padded`'s; ``channel`` the input channel read.
    """
    strides, dil = eqn.params["window_strides"], eqn.params["rhs_dilation"]
    out = _out_spatial(eqn)
    starts = [0, channel, *(a * d for a, d in zip(at, dil, strict=True))]
    sizes = [padded.shape[0], 1, *((n - 1) * s + 1 for n, s in zip(out, strides, strict=True))]
    if all(isinstance(i, int) for i in starts):  # a static window: one strided slice
        ends = [i + n for i, n in zip(starts, sizes, strict=True)]
        return lax.slice(padded, starts, ends, (1, 1, *strides))
    x = _slice(padded, [jnp.asarray(i, jnp.int32) for i in starts], sizes)
    return lax.slice(x, [0] * x.ndim, x.shape, (1, 1, *strides))


#: Kernels with at most this many window positions carry a moved input channel as a sum of
#: shifted copies (one per position); larger ones as a one-channel convolution per row.
SHIFTS_LIMIT = 64


def _shifted_sum(eqn: Any, delta: Any, w: Any) -> Any:
    """``conv(delta, w)`` for one input channel as a sum of shifted copies of ``delta``.

    ``delta``: ``(N, 1, *spatial)``, ``w``: ``(O, 1, *window)``, canonical. Each window
    position contributes the padded ``delta`` seen from it times that position's weights:
    elementwise products XLA fuses into one loop. Vmapped over rows, a convolution whose
    operands both vary by row becomes a grouped convolution, which XLA:CPU runs several times
    slower (measured on the benchmark CNN: 36 ms against 8 ms per call of 24 rows).
    """
    padded = _padded(eqn, _accumulated(eqn, delta))
    window = w.shape[2:]
    weights = _accumulated(eqn, w.reshape(w.shape[0], -1))
    change = None
    for k, at in enumerate(itertools.product(*map(range, window))):
        term = _window_at(eqn, padded, 0, at) * weights[:, k].reshape(1, -1, *[1] * len(window))
        change = term if change is None else change + term
    return change


def _conv_input_moved(eqn: Any, s: Slice, rhs: Any) -> tuple[Any, dict[int, Any]]:
    """The change of the output (canonical layout) when the input ``s`` moves; where fixed.

    Where the output is fixed is given in the out layout.

    A fixed batch dimension keeps the output fixed in its batch dimension; a fixed feature
    (channel) needs only that channel's weights: a one-channel convolution of its change
    (:func:`_shifted_sum`), into its group's output channels.
    """
    (lb, lf, *_), rspec, (ob, *_) = eqn.params["dimension_numbers"]
    groups = eqn.params["feature_group_count"]
    delta = _spread(s, [d for d in (lb, lf) if d in s.dims])
    fixed = {ob: s.idx[s.dims.index(lb)]} if lb in s.dims else {}
    if lf not in s.dims:
        change = _bind(eqn, [delta, rhs])[0]
        return _canonical(change, eqn.params["dimension_numbers"][2]), fixed
    w = _canonical(rhs, rspec)  # (O, I, *window)
    n_out, per_group = w.shape[0], w.shape[1]
    out_per_group = n_out // groups
    c = jnp.asarray(s.idx[s.dims.index(lf)], jnp.int32)
    g = _div(c, per_group)
    w = _along(_along(w, 1, _rem(c, per_group), 1), 0, g * out_per_group, out_per_group)
    delta = _canonical(delta, eqn.params["dimension_numbers"][0])  # (N', 1, *spatial)
    if math.prod(w.shape[2:]) <= SHIFTS_LIMIT:
        change = _shifted_sum(eqn, delta, w)
    else:
        change = _conv(eqn, delta, w)
    if groups > 1:  # the group's output channels, zero elsewhere
        full = (change.shape[0], n_out, *change.shape[2:])
        at = [jnp.asarray(0, jnp.int32)] * change.ndim
        at[1] = g * out_per_group
        change = _update(jnp.zeros(full, change.dtype), change, at)
    return change, fixed


def _conv_kernel_moved(eqn: Any, lhs: Any, s: Slice) -> tuple[Any, dict[int, Any]] | None:
    """The change of the output when the kernel ``s`` moves, canonical ``(N, 1, *spatial)``.

    One output channel: a moved single entry multiplies one input channel, shifted by the
    entry's window position (a slice of the padded input); a larger slice of one output
    channel's kernel is a convolution with one output channel.
    """
    lspec, rspec, (_, of, *_) = eqn.params["dimension_numbers"]
    ro, ri, *rsp = rspec
    if ro not in s.dims:
        return None  # no single kernel entry moves like this: evaluate densely
    groups = eqn.params["feature_group_count"]
    n_out, per_group = s.base.shape[ro], s.base.shape[ri]
    o = jnp.asarray(s.idx[s.dims.index(ro)], jnp.int32)
    g = _div(o, n_out // groups)
    x = _canonical(lhs, lspec)  # (N, C, *spatial): does not move, computed once per batch
    if len(s.dims) == s.base.ndim:  # one entry: one shifted input channel times its change
        at = [s.idx[s.dims.index(d)] for d in rsp]
        c = g * per_group + jnp.asarray(s.idx[s.dims.index(ri)], jnp.int32)
        delta = _accumulated(eqn, s.delta())
        change = _window_at(eqn, _padded(eqn, _accumulated(eqn, x)), c, at) * delta
    else:
        delta = _canonical(_spread(s, [ro]), rspec)  # (1, I, *window)
        if groups > 1:  # the kernel over all input channels, zero outside o's group
            full = (1, x.shape[1], *delta.shape[2:])
            at = [jnp.asarray(0, jnp.int32)] * delta.ndim
            at[1] = g * per_group
            delta = _update(jnp.zeros(full, delta.dtype), delta, at)
        change = _conv(eqn, x, delta)
    return change, {of: o}


def _conv_general_dilated(eqn: Any, ins: Sequence[Any]) -> list[Any] | None:
    """A convolution with one moved operand: base convolution plus the change.

    The change is computed on the channels (and batch element) the move touches.

    Example:
        >>> import jax.numpy as jnp
        >>> from jax import lax
        >>> from gradlab.gradcheck.evaluation._slices import call_at_entry
        >>> x, k = jnp.ones((1, 2, 5, 5)), jnp.ones((4, 2, 3, 3))  # NCHW, OIHW
        >>> fn = lambda k: jnp.tanh(lax.conv(x, k, (1, 1), "SAME"))
        >>> moved = call_at_entry(fn, k, 7, 2.0)  # k[0, 0, 2, 1]: output channel 0 changes
        >>> bool(jnp.allclose(moved, fn(k.at[0, 0, 2, 1].set(2.0))))
        True
    """
    lhs, rhs = ins
    if eqn.params["batch_group_count"] != 1 or 0 in eqn.outvars[0].aval.shape:
        return None
    if isinstance(lhs, Slice) and isinstance(rhs, Slice):
        rhs = rhs.dense()
    if isinstance(lhs, Slice):
        base = _bind(eqn, [lhs.base, rhs])[0]
        change, fixed = _conv_input_moved(eqn, lhs, jnp.asarray(rhs))
    else:
        base = _bind(eqn, [lhs, rhs.base])[0]
        found = _conv_kernel_moved(eqn, jnp.asarray(lhs), rhs)
        if found is None:
            return None
        change, fixed = found
    change = _from_canonical(change, eqn.params["dimension_numbers"][2]).astype(base.dtype)
    if not fixed:
        return [base + change]
    out_dims = tuple(sorted(fixed))
    idx = tuple(fixed[o] for o in out_dims)
    change = lax.squeeze(change, out_dims)
    return [Slice(base, out_dims, idx, take(base, out_dims, idx) + change)]
