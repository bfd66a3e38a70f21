"""How each primitive carries a slice: elementwise, broadcasts, transposes, reshapes, sums, dots."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
from jax import lax

from gradlab.gradcheck.evaluation._slice import (
    Slice,
    _bind,
    _free,
    _unravel,
    broadcast,
    take,
)
from gradlab.gradcheck.evaluation._slice_conv import _conv_general_dilated

#: Primitives that act entry by entry on operands of one shape (or scalars).
ELEMENTWISE = frozenset(
    """abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp complex conj
    convert_element_type copy cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor
    ge gt imag integer_pow is_finite le lgamma log log1p logistic lt max min mul ne neg
    nextafter not or pow real reduce_precision rem round rsqrt select_n sign sin sinh sqrt
    square stop_gradient sub tan tanh xor""".split()
)


def _fits(shape: Sequence[int], out: Sequence[int]) -> bool:
    """``shape`` broadcasts to ``out`` the way lax's binary ops do: same rank, sizes 1 or equal."""
    return len(shape) == len(out) and all(a in (1, b) for a, b in zip(shape, out, strict=True))


def _elementwise(eqn: Any, ins: Sequence[Any]) -> list[Any] | None:
    shape = tuple(eqn.outvars[0].aval.shape)
    ins = list(ins)
    for i, x in enumerate(ins):
        if isinstance(x, Slice) and tuple(x.base.shape) != shape:
            if not _fits(x.base.shape, shape):
                return None
            ins[i] = broadcast(x, shape, tuple(range(len(shape))))
        elif not isinstance(x, Slice) and jnp.ndim(x) and not _fits(jnp.shape(x), shape):
            return None
    slices = [x for x in ins if isinstance(x, Slice)]
    s = slices[0]
    if any(x.key != s.key for x in slices):
        return None

    def on_slice(x: Any) -> Any:
        if isinstance(x, Slice):
            return x.vals
        if jnp.ndim(x) == 0:
            return x
        # a size-1 dimension broadcast along a fixed one: its only position is 0
        size = jnp.shape(x)
        return take(
            x, s.dims, [i if size[d] > 1 else 0 for d, i in zip(s.dims, s.idx, strict=True)]
        )

    bases = _bind(eqn, [x.base if isinstance(x, Slice) else x for x in ins])
    vals = _bind(eqn, [on_slice(x) for x in ins])
    return [Slice(b, s.dims, s.idx, v) for b, v in zip(bases, vals, strict=True)]


def _broadcast_in_dim(eqn: Any, ins: Sequence[Any]) -> list[Any] | None:
    s, *dynamic = ins
    if dynamic or not isinstance(s, Slice):
        return None
    shape, bdims = tuple(eqn.params["shape"]), tuple(eqn.params["broadcast_dimensions"])
    return [broadcast(s, shape, bdims)]


def _transpose(eqn: Any, ins: Sequence[Any]) -> list[Any] | None:
    (s,) = ins
    perm = tuple(eqn.params["permutation"])
    out_dims = tuple(o for o in range(len(perm)) if perm[o] in s.dims)
    free_in = _free(len(perm), s.dims)
    vals = jnp.transpose(s.vals, [free_in.index(perm[o]) for o in _free(len(perm), out_dims)])
    idx = tuple(s.idx[s.dims.index(perm[o])] for o in out_dims)
    return [Slice(lax.transpose(s.base, perm), out_dims, idx, vals)]


def _reshape(eqn: Any, ins: Sequence[Any]) -> list[Any] | None:
    s, *dynamic = ins
    if dynamic or eqn.params.get("dimensions") is not None:
        return None
    shape = tuple(eqn.params["new_sizes"])
    if len(s.dims) != s.base.ndim:  # only a single entry moves through any reshape
        return None
    flat = sum(
        (jnp.asarray(i, jnp.int32) * math.prod(s.base.shape[d + 1 :]) for d, i in enumerate(s.idx)),
        jnp.asarray(0, jnp.int32),
    )
    idx = _unravel(flat, shape)
    return [Slice(jnp.reshape(s.base, shape), tuple(range(len(shape))), idx, s.vals)]


def _squeeze(eqn: Any, ins: Sequence[Any]) -> list[Any] | None:
    (s,) = ins
    gone = tuple(d % s.base.ndim for d in eqn.params["dimensions"])
    renumber = lambda d: d - sum(g < d for g in gone)
    keep = [d for d in s.dims if d not in gone]
    free_in = _free(s.base.ndim, s.dims)
    vals = lax.squeeze(s.vals, tuple(free_in.index(d) for d in gone if d not in s.dims))
    idx = tuple(s.idx[s.dims.index(d)] for d in keep)
    return [Slice(lax.squeeze(s.base, gone), tuple(map(renumber, keep)), idx, vals)]


def _reduce_sum(eqn: Any, ins: Sequence[Any]) -> list[Any] | None:
    (s,) = ins
    axes = tuple(eqn.params["axes"])
    base = _bind(eqn, [s.base])[0]
    free_in = _free(s.base.ndim, s.dims)
    on_free = tuple(free_in.index(d) for d in axes if d not in s.dims)
    keep = [d for d in s.dims if d not in axes]
    out_dims = tuple(d - sum(a < d for a in axes) for d in keep)
    idx = tuple(s.idx[s.dims.index(d)] for d in keep)
    if len(keep) == len(s.dims):  # the slice survives whole: sum its values
        return [Slice(base, out_dims, idx, jnp.sum(s.vals, axis=on_free))]
    change = jnp.sum(s.delta(), axis=on_free)
    if not keep:
        return [base + change]
    return [Slice(base, out_dims, idx, take(base, out_dims, idx) + change)]


def _dot_general(eqn: Any, ins: Sequence[Any]) -> list[Any] | None:
    lhs, rhs = ins
    if isinstance(lhs, Slice) and isinstance(rhs, Slice):
        rhs = rhs.dense()
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    kw = {
        "precision": eqn.params.get("precision"),
        "preferred_element_type": eqn.params.get("preferred_element_type"),
    }
    on_left = isinstance(lhs, Slice)
    s, d = (lhs, rhs) if on_left else (rhs, lhs)
    sc, dc, sb, db = (lc, rc, lb, rb) if on_left else (rc, lc, rb, lb)
    d = jnp.asarray(d)
    base_ops = (s.base, d) if on_left else (d, s.base)
    base = lax.dot_general(base_ops[0], base_ops[1], eqn.params["dimension_numbers"], **kw)
    # S = base(S) + Δ, Δ nonzero on the slice only: D is needed where the slice is fixed in
    # a contracting or batch dimension, at the slice's position.
    at = {
        b: s.idx[s.dims.index(a)]
        for a, b in [*zip(sc, dc, strict=True), *zip(sb, db, strict=True)]
        if a in s.dims
    }
    d_dims = tuple(sorted(at))
    d_on = take(d, d_dims, [at[b] for b in d_dims])
    s_left, d_left = _free(s.base.ndim, s.dims), _free(d.ndim, d_dims)
    pairs_c = [
        (s_left.index(a), d_left.index(b)) for a, b in zip(sc, dc, strict=True) if a not in s.dims
    ]
    pairs_b = [
        (s_left.index(a), d_left.index(b)) for a, b in zip(sb, db, strict=True) if a not in s.dims
    ]
    sc2, dc2 = (tuple(p) for p in zip(*pairs_c, strict=True)) if pairs_c else ((), ())
    sb2, db2 = (tuple(p) for p in zip(*pairs_b, strict=True)) if pairs_b else ((), ())
    if on_left:
        change = lax.dot_general(s.delta(), d_on, ((sc2, dc2), (sb2, db2)), **kw)
    else:
        change = lax.dot_general(d_on, s.delta(), ((dc2, sc2), (db2, sb2)), **kw)
    # The output is (batch, lhs free, rhs free): the slice stays fixed where it was fixed in
    # a batch dimension or in a free dimension of its own operand.
    s_free = [a for a in range(s.base.ndim) if a not in sc and a not in sb]
    n_lhs_free = jnp.ndim(lhs.base if on_left else lhs) - len(lc) - len(lb)
    offset = len(lb) if on_left else len(lb) + n_lhs_free
    fixed = {i: s.idx[s.dims.index(a)] for i, a in enumerate(sb) if a in s.dims}
    fixed |= {offset + j: s.idx[s.dims.index(a)] for j, a in enumerate(s_free) if a in s.dims}
    change = change.astype(base.dtype)
    if not fixed:
        return [base + change]
    out_dims = tuple(sorted(fixed))
    idx = tuple(fixed[o] for o in out_dims)
    return [Slice(base, out_dims, idx, take(base, out_dims, idx) + change)]


RULES: dict[str, Callable[[Any, Sequence[Any]], list[Any] | None]] = {
    "broadcast_in_dim": _broadcast_in_dim,
    "conv_general_dilated": _conv_general_dilated,
    "dot_general": _dot_general,
    "reduce_sum": _reduce_sum,
    "reshape": _reshape,
    "squeeze": _squeeze,
    "transpose": _transpose,
}
