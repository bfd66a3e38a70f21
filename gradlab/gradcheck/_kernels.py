"""The compiled kernels of a check: value-and-gradient, and centered differences of one leaf.

Both are jitted with the :class:`~gradlab.gradcheck._problem.Spec` as a static argument, so
JAX's own cache compiles each once per (function, argument shapes, leaf, chunk size).

Centered differences are vmapped over the flat indices of ONE leaf while the other leaves stay
unbatched: XLA then computes everything upstream of the leaf once and turns the layers
downstream of it into batched matrix products. The ``+eps`` and ``-eps`` evaluations of a chunk
are batched together.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp

from gradlab.gradcheck._problem import Spec

__all__ = ["fd_chunk", "value", "value_and_grad"]


@partial(jax.jit, static_argnums=0)
def value(
    spec: Spec,
    checked: tuple[jax.Array, ...],
    fixed: tuple[jax.Array, ...],
    rest: tuple[tuple[jax.Array, ...], ...],
) -> jax.Array:
    """``f`` itself (its ``eval_shape`` is cached, unlike ``jax.eval_shape``'s)."""
    return spec.call(checked, fixed, rest)


@partial(jax.jit, static_argnums=0)
def value_and_grad(
    spec: Spec,
    checked: tuple[jax.Array, ...],
    fixed: tuple[jax.Array, ...],
    rest: tuple[tuple[jax.Array, ...], ...],
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """``f`` and ``jax.grad(f)`` with respect to every checked leaf."""
    return jax.value_and_grad(lambda c: spec.call(c, fixed, rest))(checked)


def _perturbed_value(
    spec: Spec,
    k: int,
    checked: Sequence[jax.Array],
    fixed: Sequence[jax.Array],
    rest: Sequence[Sequence[jax.Array]],
    index: jax.Array,
    step: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """``f`` with entry ``index`` of leaf ``k`` moved by ``step``; also the step actually taken.

    The step actually taken, ``(x + step) - x`` in floating point, differs from ``step`` by
    rounding; dividing by it instead of by ``step`` removes that error from the difference.
    """
    leaf = checked[k]
    flat = leaf.reshape(-1)
    x = flat[index]
    moved = x + step
    new_leaf = flat.at[index].set(moved).reshape(leaf.shape)
    leaves = (*checked[:k], new_leaf, *checked[k + 1 :])
    return spec.call(leaves, fixed, rest), moved - x


@partial(jax.jit, static_argnums=(0, 1))
def fd_chunk(
    spec: Spec,
    k: int,
    checked: tuple[jax.Array, ...],
    fixed: tuple[jax.Array, ...],
    rest: tuple[tuple[jax.Array, ...], ...],
    indices: jax.Array,
    steps: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """``f(θ ± h·e_i)`` for each flat index ``i`` of leaf ``k`` in ``indices``.

    Args:
        spec: The static description of ``f`` and its arguments.
        k: Which checked leaf to perturb.
        checked: Every checked leaf (float64 or complex128).
        fixed: Integer leaves of the differentiated arguments.
        rest: Dynamic leaves of the other arguments.
        indices: ``(c,)`` flat indices into leaf ``k`` (may be sharded over devices).
        steps: ``(c,)`` steps ``h`` (possibly complex, e.g. ``1j·eps`` for imaginary parts).

    Returns:
        ``(values, taken)``, each ``(2, c)``: row 0 for ``+h``, row 1 for ``−h``; ``taken``
        are the steps actually taken. The entry axis keeps the sharding of ``indices``.
    """
    one = lambda i, h: _perturbed_value(spec, k, checked, fixed, rest, i, h)
    over_entries = jax.vmap(one)
    return jax.vmap(over_entries, in_axes=(None, 0))(indices, jnp.stack([steps, -steps]))
