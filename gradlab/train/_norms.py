"""Per-layer gradient norms of any parameter pytree, grouped by the leaves' paths."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp

from gradlab._errors import InputError
from gradlab._treepath import path_parts

__all__ = ["GroupBy", "layer_grad_norms", "layer_names", "path_names"]

Array = jax.Array

GroupBy: TypeAlias = Callable[[tuple[str, ...]], str]
"""Maps a leaf's path (its keys as strings, outermost first) to the name of its layer.

Example:
    >>> group_by = lambda path: "encoder" if path[0].startswith("enc") else path[0]
    >>> group_by(("enc_1", "kernel")), group_by(("head", "bias"))
    ('encoder', 'head')
"""


def path_names(path: tuple[Any, ...]) -> tuple[str, ...]:
    """A pytree path as strings, dropping the ``value`` attribute of Flax NNX variables.

    >>> import jax
    >>> [path_names(p) for p, _ in jax.tree_util.tree_flatten_with_path({"a": [1.0]})[0]]
    [('a', '0')]
    """
    return path_parts(path)


def _top_level(names: tuple[str, ...]) -> str:
    return names[0] if names else "."


def _groups(
    tree: Any, group_by: GroupBy | None, stacked: Collection[str]
) -> tuple[dict[str, list[Array]], tuple[str, ...]]:
    group_by = group_by or _top_level
    groups: dict[str, list[Array]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        groups.setdefault(group_by(path_names(path)), []).append(jnp.asarray(leaf))
    names: list[str] = []
    for name, leaves in groups.items():
        if name in stacked:
            depths = {leaf.shape[0] if leaf.ndim else -1 for leaf in leaves}
            if len(depths) != 1 or -1 in depths:
                raise InputError(
                    f"layer_grad_norms: the leaves of stacked group {name!r} must all have the "
                    f"same leading (layer) axis, got shapes {[leaf.shape for leaf in leaves]}; "
                    "name only groups of layers stacked along axis 0 in `stacked`."
                )
            names += [f"{name}[{i}]" for i in range(depths.pop())]
        else:
            names.append(name)
    return groups, tuple(names)


def layer_names(
    tree: Any, *, group_by: GroupBy | None = None, stacked: Collection[str] = ()
) -> tuple[str, ...]:
    """The layer names :func:`layer_grad_norms` returns for a tree of this structure.

    >>> import jax.numpy as jnp
    >>> layer_names({"w_in": jnp.ones(2), "w_hidden": jnp.ones((3, 2, 2))}, stacked={"w_hidden"})
    ('w_hidden[0]', 'w_hidden[1]', 'w_hidden[2]', 'w_in')
    """
    return _groups(tree, group_by, stacked)[1]


def layer_grad_norms(
    grads: Any, *, group_by: GroupBy | None = None, stacked: Collection[str] = ()
) -> tuple[tuple[str, ...], Array]:
    """The Euclidean norm of the gradient of each layer.

    A *layer* is a group of leaves: by default the leaves under one top-level key of the
    pytree (one module, or one top-level parameter of a flat parameter dict); ``group_by`` maps
    a leaf's path (keys as strings) to another group name. A group named in ``stacked`` holds
    layers stacked along a leading axis (scan-over-layers parameters such as
    :class:`gradlab.nn.MLP`'s ``w_hidden``): it gives one norm per index along that axis,
    named ``"name[i]"``. Groups appear in the order of their first leaf in the flattened tree.

    Works inside ``jit``/``vmap`` (the names are static Python strings).

    Args:
        grads: any pytree of arrays (a gradient, or parameters).
        group_by: ``path -> group name``; default: the path's first key.
        stacked: group names whose leaves have a leading layer axis.

    Returns:
        ``(names, norms)`` with ``norms`` of shape ``(len(names),)``.

    Raises:
        InputError: if the leaves of a stacked group disagree on their leading axis.

    Example:
        >>> import jax.numpy as jnp
        >>> g = {"w": jnp.full((2, 3), 1.0), "b": jnp.full((2,), 2.0), "out": jnp.ones(4)}
        >>> names, norms = layer_grad_norms(g, group_by=lambda p: "out" if p[0] == "out"
        ...                                 else "hidden", stacked={"hidden"})
        >>> names, norms.tolist()  # per row: sqrt(3 * 1 + 4), and the readout's sqrt(4)
        (('hidden[0]', 'hidden[1]', 'out'), [2.6457512378692627, 2.6457512378692627, 2.0])
    """
    groups, names = _groups(grads, group_by, stacked)
    parts = []
    for name, leaves in groups.items():
        if name in stacked:
            sq = [jnp.sum(jnp.square(x).reshape(x.shape[0], -1), axis=1) for x in leaves]
        else:
            sq = [jnp.sum(jnp.square(x))[None] for x in leaves]
        parts.append(sum(sq[1:], sq[0]))
    if not parts:
        raise InputError(
            "layer_grad_norms: the pytree has no leaves; pass a gradient (or params) with at "
            "least one array."
        )
    dtype = jnp.result_type(*[p.dtype for p in parts])
    return names, jnp.sqrt(jnp.concatenate([p.astype(dtype) for p in parts]))
