"""Evaluating ``f`` at ``θ ± h·e_i`` while carrying only what the move changes.

Moving one entry ``W[a, b]`` of a weight changes little downstream: ``x @ W`` changes in
column ``b`` only (by ``h·x[:, a]``), ``tanh`` of that column changes only there, and the
next layer's ``h @ W'`` changes by a rank-one term. A perturbed evaluation written as
``f(θ with W[a, b] moved)`` and vmapped over entries recomputes all the rest too: the full
matmul and every ``tanh`` of the layer, once per entry.

:func:`call_at_entry` evaluates ``fn`` on the moved leaf by interpreting ``fn``'s jaxpr with
the leaf held as a :class:`Slice`: a base value plus the values on the slice where it
differs. Rules carry slices through elementwise primitives, broadcasts, transposes,
reshapes of a single entry, sums, ``dot_general`` (``S @ D = base(S) @ D + Δ(S) @ D``,
with ``Δ`` nonzero on the slice only) and ``conv_general_dilated`` (a moved kernel entry
changes one output channel by a shifted copy of one input channel; a moved input channel
needs that channel's weights only); nested ``jit`` and the primal of ``custom_jvp`` /
``custom_vjp`` functions are interpreted in place. Every other primitive gets the dense
value (the base with the slice written in), so any ``fn`` is evaluated, and evaluated
exactly: the rules change the cost, not the function. Under ``jax.vmap`` over entries the
bases do not depend on the entry, so XLA computes them once per batch.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jex

__all__ = ["Slice", "call_at_entry", "call_at_group_entry", "entry"]


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


# Every index the rules compute is an entry's position, a channel or a window offset: never
# negative. Saying so spares a compare and a select per index (JAX's wrap-around of negative
# starts), in tracing and in the compiled program alike.


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


RULES: dict[str, Callable[[Any, Sequence[Any]], list[Any] | None]] = {
    "broadcast_in_dim": _broadcast_in_dim,
    "conv_general_dilated": _conv_general_dilated,
    "dot_general": _dot_general,
    "reduce_sum": _reduce_sum,
    "reshape": _reshape,
    "squeeze": _squeeze,
    "transpose": _transpose,
}

#: Call-like primitives interpreted in place: nested jit and the primal of custom rules.
CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr",
         "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr"}  # fmt: skip


def _apply(eqn: Any, ins: Sequence[Any]) -> list[Any]:
    if not any(isinstance(x, Slice) for x in ins):
        return _bind(eqn, ins)
    name = eqn.primitive.name
    inner = eqn.params.get(CALLS.get(name, ""))
    if isinstance(inner, jex.ClosedJaxpr):
        return _run(inner.jaxpr, inner.consts, ins)
    rule = RULES.get(name) or (_elementwise if name in ELEMENTWISE else None)
    out = rule(eqn, ins) if rule is not None else None
    return out if out is not None else _bind(eqn, [_dense(x) for x in ins])


def _run(jaxpr: Any, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    env: dict[Any, Any] = {}
    read = lambda v: v.val if isinstance(v, jex.Literal) else env[v]
    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        outs = _apply(eqn, [read(v) for v in eqn.invars])
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def call_at_entry(fn: Callable[[Any], Any], leaf: Any, index: Any, moved: Any) -> Any:
    """``fn(leaf with flat entry index set to moved)``, carrying the change as a slice.

    Args:
        fn: A function of the leaf (closing over everything else); any pytree output.
        leaf: The array one entry of which moves.
        index: Flat index of the entry (an integer scalar, traced under vmap).
        moved: Its new value.

    Returns:
        What ``fn`` returns at the moved leaf: the same as
        ``fn(leaf.reshape(-1).at[index].set(moved).reshape(leaf.shape))`` up to rounding
        (dot products with a moved operand are computed as base plus change).

    Example:
        >>> import jax.numpy as jnp
        >>> w = jnp.arange(6.0).reshape(2, 3)
        >>> fn = lambda w: jnp.tanh(jnp.ones((4, 2)) @ w).sum()
        >>> moved = call_at_entry(fn, w, 4, 7.0)
        >>> bool(jnp.allclose(moved, fn(w.at[1, 1].set(7.0))))
        True
    """
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(leaf)
    idx = _unravel(index, leaf.shape)
    start = Slice(leaf, tuple(range(leaf.ndim)), idx, jnp.asarray(moved, leaf.dtype))
    outs = [_dense(x) for x in _run(closed.jaxpr, closed.consts, [start])]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), outs)


def call_at_group_entry(
    fn: Callable[[tuple[Any, ...]], Any],
    leaves: Sequence[Any],
    owner: Any,
    index: Any,
    step: Any,
) -> tuple[Any, Any]:
    """``fn`` with entry ``index`` of ``leaves[owner]`` moved by ``step``, carried as a slice.

    The kernel that small leaves share moves an entry of a leaf chosen at run time: each leaf
    gets its own sliced evaluation, and the one of ``owner`` is selected. Vmapped over rows whose
    ``owner`` varies, XLA runs every leaf's evaluation for every row, so a row costs the sum
    of the leaves' sliced evaluations — less than one dense evaluation when the slices are
    small (a convnet's biases and first kernel), more compile time for more leaves.

    Args:
        fn: A function of the tuple of leaves (closing over everything else).
        leaves: The leaves of the group.
        owner: Which leaf moves (an integer scalar, traced under vmap).
        index: Flat index of the entry in it (clipped to that leaf's size, as the group
            kernel pads shorter leaves).
        step: The nominal move ``h``.

    Returns:
        ``(fn at the moved leaves, the move actually made)``: the move is ``(x + h) − x``
        in floating point.

    Example:
        >>> import jax.numpy as jnp
        >>> a, b = jnp.arange(3.0), jnp.ones((2, 2))
        >>> fn = lambda t: jnp.sum(jnp.tanh(t[0][:2] @ t[1]))
        >>> out, taken = call_at_group_entry(fn, (a, b), 1, 2, 0.5)  # b[1, 0] moves
        >>> bool(jnp.allclose(out, fn((a, b.at[1, 0].add(0.5)))))
        True
    """
    leaves = tuple(jnp.asarray(x) for x in leaves)

    def branch(j: int) -> Callable[[Any, Any], tuple[Any, Any]]:
        def moved(i: Any, h: Any) -> tuple[Any, Any]:
            i = jnp.minimum(i, leaves[j].size - 1)
            x = entry(leaves[j], i)
            new = x + jnp.asarray(h, x.dtype)
            at = lambda leaf: fn((*leaves[:j], leaf, *leaves[j + 1 :]))
            return call_at_entry(at, leaves[j], i, new), new - x

        return moved

    # every branch, then a select (what lax.switch becomes under vmap, without broadcasting
    # the branches' unbatched operands, so the bases stay computed once per batch)
    outs = [branch(j)(index, step) for j in range(len(leaves))]
    owner = jnp.asarray(owner, jnp.int32)
    pick = lambda *xs: lax.select_n(jnp.clip(owner, 0, len(xs) - 1), *xs)
    return jax.tree_util.tree_map(pick, *outs)
