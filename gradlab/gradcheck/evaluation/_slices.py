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

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jex

from gradlab.gradcheck.evaluation._slice import (
    Slice,
    _bind,
    _dense,
    _unravel,
    entry,
)
from gradlab.gradcheck.evaluation._slice_rules import ELEMENTWISE, RULES, _elementwise

__all__ = ["call_at_entry", "call_at_group_entry"]


# Every index the rules compute is an entry's position, a channel or a window offset: never
# negative. Saying so spares a compare and a select per index (JAX's wrap-around of negative
# starts), in tracing and in the compiled program alike.


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
