"""One way to write a pytree path, for every report gradlab prints.

Paths are written as JAX writes them with ``jax.tree_util.keystr(path, simple=True,
separator="/")`` (``layers/3/kernel``), the ``value`` attribute of a Flax NNX variable dropped
(the variable's own path names the leaf), and ``.`` for the root itself (a bare array).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

__all__ = ["path_parts", "path_str"]

_NNX_VALUE = ("value", "raw_value")


def _strip_variable(path: Sequence[Any]) -> tuple[Any, ...]:
    path = tuple(path)
    if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name in _NNX_VALUE:
        return path[:-1]
    return path


def path_parts(path: Sequence[Any]) -> tuple[str, ...]:
    """A pytree path as one string per key (NNX ``value`` dropped).

    Example:
        >>> import jax
        >>> [path_parts(p) for p, _ in jax.tree_util.tree_flatten_with_path({"a": [1.0]})[0]]
        [('a', '0')]
    """
    return tuple(
        jax.tree_util.keystr((key,), simple=True, separator="/") for key in _strip_variable(path)
    )


def path_str(path: Sequence[Any], prefix: str = "") -> str:
    """A pytree path as ``a/b/0`` under an optional ``prefix``; ``.`` for the root.

    Args:
        path: A key path from ``jax.tree_util.tree_flatten_with_path``.
        prefix: Written before the path (an argument's name, say), joined by ``/``.

    Example:
        >>> import jax
        >>> tree = {"w": [1.0, 2.0], "b": 3.0}
        >>> [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
        ['b', 'w/0', 'w/1']
        >>> path_str((), prefix="x"), path_str(())
        ('x', '.')
    """
    body = "/".join(path_parts(path))
    if prefix and body:
        return f"{prefix}/{body}"
    return prefix or body or "."
