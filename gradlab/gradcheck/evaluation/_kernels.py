"""The compiled kernels of a check: f and its derivatives at θ, and at perturbations of one leaf.

Every kernel is jitted with the :class:`~gradlab.gradcheck.planning._spec.Spec` (and the leaf index,
the perturbation kind, ...) static, so JAX's own cache compiles each once per (program ``f``
traces to at the call — found by its fingerprint, never by the identity of ``f`` —, argument
shapes, leaf, chunk size).

Perturbations are vmapped over ONE leaf while the other leaves stay unbatched: XLA then
computes everything upstream of the leaf once and turns the layers downstream of it into
batched matrix products. The ``+h`` and ``−h`` evaluations of a chunk are batched together.
A perturbation is an ``"entry"`` (a flat index ``i`` of one leaf: ``θ ± h·e_i``), a
``"group"`` row (an entry of one of several small leaves that share a kernel, compiled once
for all of them) or a ``"tree"`` row (one array per leaf, ``θ ± h·d``: directional mode
batches the few random directions of EVERY leaf into one kernel, so that it compiles once
instead of once per leaf).

``f`` may return any pytree of float arrays: the kernels return its projections on ``K``
cotangents ``F_j = <v_j, f(θ)>`` (shape ``(K,)``), evaluating ``f`` once per point. For a
scalar ``f`` the cotangents are ``None`` and ``F = f[None]`` (``K = 1``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

from gradlab.gradcheck.evaluation._slice import entry
from gradlab.gradcheck.evaluation._slices import call_at_entry
from gradlab.gradcheck.planning._calls import Kind
from gradlab.gradcheck.planning._spec import Spec
from gradlab.gradcheck.programs._scope import forgets

__all__ = [
    "fd_chunk",
    "grad_fd_chunk",
    "hvp_chunk",
    "jvp_chunk",
    "project",
    "value",
    "value_and_vjp",
]

Leaves = tuple[jax.Array, ...]
Which = int | tuple[int, ...]  # a leaf's position, or a group's positions
Rest = tuple[tuple[jax.Array, ...], ...]


def project(out: Any, cots: Any) -> jax.Array:
    """``F_j = <v_j, out>`` for each cotangent ``v_j`` (leading axis of ``cots``): ``(K,)``."""
    if cots is None:
        return jnp.asarray(out)[None]
    pairs = zip(jax.tree_util.tree_leaves(cots), jax.tree_util.tree_leaves(out), strict=True)
    return sum(jnp.tensordot(v, o, axes=o.ndim) for v, o in pairs)  # type: ignore[return-value]


def _grads(spec: Spec, checked: Leaves, fixed: Leaves, rest: Rest, cots: Any) -> Leaves:
    """``∇_θ F_j`` for every cotangent: one array ``(K, *leaf.shape)`` per checked leaf."""
    fn = lambda c: spec.call(c, fixed, rest)
    if cots is None:
        return tuple(g[None] for g in jax.grad(fn)(checked))
    _, pull = jax.vjp(fn, checked)
    return jax.vmap(pull)(cots)[0]


def _rows(grads: Sequence[jax.Array]) -> jax.Array:
    """Gradients as real rows ``(K, n)``: complex leaves as ``(∂/∂re, ∂/∂im) = (Re, −Im)``."""
    parts = []
    for g in grads:
        g = g.reshape(g.shape[0], -1)
        parts += [g.real, -g.imag] if jnp.iscomplexobj(g) else [g]
    return jnp.concatenate(parts, axis=1)


def _one(k: Which) -> int:
    """The leaf of an ``"entry"`` kernel (``k`` is a group's tuple for ``"group"`` kernels)."""
    assert isinstance(k, int)
    return k


def _many(k: Which) -> tuple[int, ...]:
    """The leaves of a ``"group"`` kernel."""
    assert isinstance(k, tuple)
    return k


def _with_leaf(checked: Leaves, k: int, leaf: jax.Array) -> Leaves:
    return (*checked[:k], leaf, *checked[k + 1 :])


def _perturb(checked: Leaves, k: Which, kind: Kind, p: Any, step: jax.Array) -> tuple[Leaves, Any]:
    """θ moved by ``step`` along perturbation ``p``; also the move actually made.

    ``"entry"``: entry ``p`` of leaf ``k``; ``"group"``: ``p = (owner, index)``, entry
    ``index`` of leaf ``k[owner]`` (the group's other leaves keep their values exactly);
    ``"tree"``: one array per leaf (zero outside the
    leaf a row belongs to: ``x + h·0 = x`` exactly, so those leaves stay put). The move
    actually made, ``(x + step) − x`` in floating point, differs from the nominal one by
    rounding; the analysis divides by it (entries) or projects on it (tree rows), so that
    error never enters the comparison.
    """
    if kind == "tree":
        rows = tuple(x + (step * d).astype(x.dtype) for x, d in zip(checked, p, strict=True))
        return rows, tuple(m - x for m, x in zip(rows, checked, strict=True))
    if kind == "group":  # p = (owner, index): entry `index` of leaf k[owner] moves
        owner, index = p
        moved, taken = list(checked), jnp.zeros((), step.dtype)
        for pos, j in enumerate(_many(k)):
            mine = lax.eq(owner, jnp.asarray(pos, owner.dtype))
            x, put = _entry(checked[j], jnp.minimum(index, checked[j].size - 1))
            new = lax.select(mine, x + step, x)
            moved[j] = put(new)
            taken = lax.select(mine, new - x, taken)
        return tuple(moved), taken
    k = _one(k)
    x, put = _entry(checked[k], p)
    new = x + step
    return _with_leaf(checked, k, put(new)), new - x


def _entry(leaf: jax.Array, index: Any) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
    """Flat entry ``index`` of ``leaf``, and a function setting it.

    The group kernel clamps an index past a shorter leaf's end (that row's owner is another
    leaf, so the entry read is put back unchanged). A one-hot select, not ``jnp`` indexing:
    exact all the same (one term summed with zeros, the other entries selected unchanged),
    and its ``vmap`` traces in a fraction of the time of a gather and a scatter — a small
    check's group kernel moves an entry of every member leaf, and that tracing was a large
    part of its cold cost.
    """
    flat = leaf.reshape(-1)
    hit = lax.eq(lax.iota(index.dtype, flat.size), lax.broadcast(index, (flat.size,)))
    x = lax.reduce_sum(lax.select(hit, flat, lax.full_like(flat, 0)), (0,))

    def put(value: jax.Array) -> jax.Array:
        return lax.select(hit, lax.broadcast(value, (flat.size,)), flat).reshape(leaf.shape)

    return x, put


def _slot(
    checked: Leaves, k: Which, kind: Kind, p: Any, unit: jax.Array
) -> tuple[Callable[[Any], Leaves], Any, Any]:
    """``(embed, x, t)``: differentiate ``g(embed(x))`` at ``x`` along ``t`` for ``p``.

    The tangent is ``unit·e_i`` for an entry (``unit``: ``1`` or ``1j``; only leaf ``k`` is
    differentiated), and one array per leaf for a tree row.
    """
    if kind == "tree":
        tangent = tuple(d.astype(x.dtype) for d, x in zip(p, checked, strict=True))
        return (lambda c: c), checked, tangent
    if kind == "group":
        owner, index = p
        tangent = tuple(
            jnp.zeros(checked[j].size, checked[j].dtype)
            .at[jnp.minimum(index, checked[j].size - 1)]
            .set(jnp.where(owner == pos, unit, 0))
            .reshape(checked[j].shape)
            for pos, j in enumerate(_many(k))
        )

        def embed(v: Leaves) -> Leaves:
            out = list(checked)
            for j, leaf in zip(_many(k), v, strict=True):
                out[j] = leaf
            return tuple(out)

        return embed, tuple(checked[j] for j in _many(k)), tangent
    k = _one(k)
    leaf = checked[k]
    t = jnp.zeros(leaf.size, leaf.dtype).at[p].set(unit).reshape(leaf.shape)
    return (lambda v: _with_leaf(checked, k, v)), leaf, t


def _pm(one: Any, batch: Any, steps: jax.Array) -> Any:
    """``one(p, ±h)`` over a batch: outputs get a leading ``(2, c)`` (row 0: ``+h``)."""
    return jax.vmap(jax.vmap(one), in_axes=(None, 0))(batch, jnp.stack([steps, -steps]))


@partial(jax.jit, static_argnums=0)
def value(spec: Spec, checked: Leaves, fixed: Leaves, rest: Rest) -> Any:
    """``f`` itself, as the finite differences evaluate it (custom rules' primals run).

    A second, separately traced program computing ``f(θ)``: compared with the sweep's own
    evaluation of ``f(θ)`` it shows whether ``f`` is deterministic. Its ``eval_shape`` is
    cached, unlike ``jax.eval_shape``'s.
    """
    return spec.call(checked, fixed, rest, rules=False)


@partial(jax.jit, static_argnums=0)
def value_and_vjp(
    spec: Spec, checked: Leaves, fixed: Leaves, rest: Rest, cots: Any
) -> tuple[Any, jax.Array, jax.Array, Leaves, jax.Array]:
    """``f(θ)``, its projections ``F``, their rounding scale and gradients; ``F`` again.

    Returns:
        ``(out, F, S, grads, plain)``: the raw output; ``F`` ``(K,)``; ``S_j = Σ|v_j|·|f|``
        ``(K,)``, the size that rounding in ``F_j`` scales with; per checked leaf ``∇F`` as
        ``(K, *leaf.shape)`` (``jax.grad`` for a scalar ``f``, ``jax.vjp`` otherwise);
        ``F`` from ``f`` evaluated as the finite differences evaluate it (custom rules'
        primals, as :func:`value`), in this same program: no program of its own to compile.
    """
    fn = lambda c: spec.call(c, fixed, rest)
    plain = project(spec.call(checked, fixed, rest, rules=False), cots)
    if cots is None:
        out, grads = jax.value_and_grad(fn)(checked)
        return out, out[None], jnp.abs(out)[None], tuple(g[None] for g in grads), plain
    out, pull = jax.vjp(fn, checked)
    scale = project(jax.tree_util.tree_map(jnp.abs, out), jax.tree_util.tree_map(jnp.abs, cots))
    return out, project(out, cots), scale, jax.vmap(pull)(cots)[0], plain


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def fd_chunk(
    spec: Spec,
    k: Which,
    kind: Kind,
    sparse: bool,
    checked: Leaves,
    fixed: Leaves,
    rest: Rest,
    cots: Any,
    batch: jax.Array,
    steps: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``F(θ ± h·p)`` for each perturbation ``p`` of leaf ``k`` in ``batch``, and ``F(θ)``.

    Args:
        spec: The static description of ``f`` and its arguments.
        k: Which checked leaf to perturb.
        kind: ``"entry"`` (``batch``: ``(c,)`` flat indices into leaf ``k``), ``"group"``
            (``batch``: ``(owner, index)``, each ``(c,)``: entry ``index`` of leaf
            ``k[owner]``; ``k`` is a tuple of small leaves sharing this kernel) or ``"tree"``
            (``batch``: per checked leaf ``(c, *leaf.shape)``; ``k`` unused).
        sparse: Evaluate an entry's move as the slice of ``f``'s values it changes
            (:mod:`~gradlab.gradcheck.evaluation._slices`); False evaluates ``f`` on the whole moved
            θ.
        checked: Every checked leaf (float64 or complex128; float32 in the fallback).
        fixed: Integer leaves of the differentiated arguments.
        rest: Dynamic leaves of the other arguments.
        cots: Cotangents with a leading ``K`` axis, or None for a scalar ``f``.
        batch: The perturbations (the entry axis may be sharded over devices).
        steps: ``(c,)`` steps ``h`` (complex ``1j·eps`` moves imaginary parts of entries).

    Returns:
        ``(values, taken, f0)``: values ``(2, c, K)``, row 0 for ``+h``, row 1 for ``−h``; the
        moves actually made, ``(2, c)`` for entries, per leaf ``(2, c, *leaf.shape)`` for
        tree rows; ``F(θ)`` ``(K,)`` evaluated by this same program, so that the one-sided
        differences ``(F(θ+h) − F(θ)) / h`` compare values of one computation.
    """

    def at(leaves: Leaves) -> jax.Array:
        return project(spec.call(leaves, fixed, rest, rules=False), cots)

    def one(p: Any, h: jax.Array) -> tuple[jax.Array, Any]:
        if sparse and kind == "entry":
            i = _one(k)
            x = entry(checked[i], p)
            fn = lambda leaf: at(_with_leaf(checked, i, leaf))
            return call_at_entry(fn, checked[i], p, x + h), (x + h) - x
        moved, taken = _perturb(checked, k, kind, p, h)
        return at(moved), taken

    values, taken = _pm(one, batch, steps)
    return values, taken, at(checked)


@partial(jax.jit, static_argnums=(0, 1, 2))
def jvp_chunk(
    spec: Spec,
    k: Which,
    kind: Kind,
    checked: Leaves,
    fixed: Leaves,
    rest: Rest,
    cots: Any,
    batch: jax.Array,
    units: jax.Array,
) -> jax.Array:
    """Forward mode: ``jax.jvp`` of ``F`` along each perturbation's tangent, ``(c, K)``.

    The tangent is ``unit·e_i`` for an entry (``units``: ``(c,)`` of ``1`` or ``1j``) and
    the row itself for a tree row (``units`` unused).
    """

    def one(p: Any, unit: jax.Array) -> jax.Array:
        embed, x, t = _slot(checked, k, kind, p, unit)
        return jax.jvp(lambda v: project(spec.call(embed(v), fixed, rest), cots), (x,), (t,))[1]

    return jax.vmap(one)(batch, units)


@partial(jax.jit, static_argnums=(0, 1, 2))
def grad_fd_chunk(
    spec: Spec,
    k: Which,
    kind: Kind,
    checked: Leaves,
    fixed: Leaves,
    rest: Rest,
    cots: Any,
    batch: jax.Array,
    steps: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Like :func:`fd_chunk` for the gradient: ``∇F(θ ± h·p)`` as real rows ``(2, c, K, n)``."""

    def one(p: Any, h: jax.Array) -> tuple[jax.Array, Any]:
        moved, taken = _perturb(checked, k, kind, p, h)
        return _rows(_grads(spec, moved, fixed, rest, cots)), taken

    return _pm(one, batch, steps)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def hvp_chunk(
    spec: Spec,
    k: Which,
    kind: Kind,
    outer: Literal["forward", "reverse"],
    checked: Leaves,
    fixed: Leaves,
    rest: Rest,
    cots: Any,
    batch: jax.Array,
    units: jax.Array,
) -> jax.Array:
    """Hessian-vector products ``H·t`` along each perturbation's tangent, ``(c, K, n)``.

    ``outer="forward"``: ``jax.jvp`` of the gradient (forward-over-reverse). ``"reverse"``:
    ``jax.grad`` of ``<∇F, t>`` (reverse-over-reverse), which is ``Hᵀ·t``: the same when
    autodiff's Hessian is symmetric, which a broken rule need not keep. Both go through every
    custom rule's own derivative. Tangents as in :func:`jvp_chunk`; ``n`` counts real rows
    (complex leaves twice: re, im).
    """

    def forward(p: Any, unit: jax.Array) -> jax.Array:
        embed, x, t = _slot(checked, k, kind, p, unit)
        rows = lambda v: _rows(_grads(spec, embed(v), fixed, rest, cots))
        return jax.jvp(rows, (x,), (t,))[1]

    def reverse(p: Any, unit: jax.Array) -> jax.Array:
        t = _slot(checked, k, kind, p, unit)[2]
        pairs = (lambda g: zip(g, t, strict=True)) if kind == "tree" else (lambda g: [(g[k], t)])

        def along(c: Leaves, cot: Any) -> jax.Array:
            g = _grads(spec, c, fixed, rest, None if cot is None else _expand(cot))
            return sum(jnp.sum(jnp.real(gl[0] * tl)) for gl, tl in pairs(g))  # type: ignore[return-value]

        per = lambda cot: _rows(tuple(g[None] for g in jax.grad(along)(checked, cot)))[0]
        return per(None)[None] if cots is None else jax.vmap(per)(cots)

    return jax.vmap(forward if outer == "forward" else reverse)(batch, units)


def _expand(cot: Any) -> Any:
    """One cotangent as a batch of one (leading ``K = 1`` axis)."""
    return jax.tree_util.tree_map(lambda v: v[None], cot)


@forgets
def _clear_kernels() -> None:
    for kernel in (value, value_and_vjp, fd_chunk, jvp_chunk, grad_fd_chunk, hvp_chunk):
        kernel.clear_cache()  # type: ignore[attr-defined]
