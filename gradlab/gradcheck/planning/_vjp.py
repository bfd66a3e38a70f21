"""Vector-valued functions: ``f``'s output, and the random cotangents it is checked through.

A function with a non-scalar output (an array, or a pytree of float arrays) is checked
through ``K`` random unit cotangents ``v_j``: every leaf compares ``J(θ)ᵀv_j`` (``jax.vjp``)
with centered differences of the scalar ``<v_j, f(θ)>``. Each perturbed point evaluates ``f``
once and projects that one output on all ``K`` cotangents, so checking ``K`` projections costs
no more evaluations than checking one. A bug in ``J`` survives all ``K`` random projections
only on a set of measure zero.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab._errors import CheckInputError
from gradlab._treepath import path_parts

__all__ = ["Output", "describe_projection", "inspect_output", "make_cotangents"]

#: Stream of ``np.random.default_rng((seed, stream))`` that draws cotangents.
COTANGENT_STREAM = 1


@dataclasses.dataclass(frozen=True)
class Output:
    """The structure of ``f``'s output.

    Attributes:
        treedef: The output's pytree structure.
        paths: Each output leaf's path.
        shapes: Each output leaf's shape.
        dtypes: Each output leaf's dtype.
    """

    treedef: Any
    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]

    @property
    def scalar(self) -> bool:
        """True when ``f`` returns one array of shape ``()``: no cotangents are needed."""
        return self.treedef.num_leaves == 1 and not self.paths[0] and self.shapes[0] == ()

    @property
    def size(self) -> int:
        """Number of output entries."""
        return sum(int(np.prod(s)) for s in self.shapes)

    def describe(self) -> str:
        """The output as ``dtype[shape]`` items, e.g. ``"float64[4, 3]"``."""
        items = [
            f"{p + ': ' if p else ''}{d}[{', '.join(map(str, s))}]"
            for p, s, d in zip(self.paths, self.shapes, self.dtypes, strict=True)
        ]
        return items[0] if len(items) == 1 else "{" + "; ".join(items) + "}"


def inspect_output(out: Any, has_aux: bool) -> Output:
    """Validates ``f``'s output structure (from ``eval_shape``) and describes it.

    Args:
        out: ``f``'s output as ``jax.ShapeDtypeStruct`` leaves.
        has_aux: Whether ``f`` was declared to return ``(value, aux)``.

    Returns:
        The output's description.

    Raises:
        CheckInputError: The output is not a float array or a pytree of float arrays.

    Example:
        >>> o = inspect_output(jax.ShapeDtypeStruct((4, 3), np.float64), has_aux=False)
        >>> o.scalar, o.size, o.describe()
        (False, 12, 'float64[4, 3]')
    """
    with_path, treedef = jax.tree_util.tree_flatten_with_path(out)
    if (
        not has_aux
        and isinstance(out, tuple)
        and len(out) == 2
        and getattr(out[0], "shape", None) == ()
    ):
        raise CheckInputError(
            "f returned a pair (scalar, ...): if it is (loss, aux), pass has_aux=True. To "
            "check both parts as one vector-valued output, return them in a list or dict."
        )
    if not with_path:
        raise CheckInputError(f"f returned {out!r}, which holds no arrays to check.")
    paths, shapes, dtypes = [], [], []
    for path, leaf in with_path:
        where = "/".join(path_parts(path))
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise CheckInputError(
                f"f must return a scalar array (or float arrays), got {type(leaf).__name__}"
                f"{' at ' + where if where else ''}. If f returns (loss, aux), pass "
                "has_aux=True."
            )
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            hint = (
                "check jnp.real(...) and jnp.imag(...) separately"
                if jnp.issubdtype(leaf.dtype, jnp.complexfloating)
                else "return floats, or move integer results into aux with has_aux=True"
            )
            raise CheckInputError(
                "f must return a real floating-point scalar, or real float arrays (checked "
                f"through random cotangents); output {where or 'value'} has dtype "
                f"{leaf.dtype}: {hint}."
            )
        paths.append(where)
        shapes.append(tuple(leaf.shape))
        dtypes.append(np.dtype(leaf.dtype))
    if sum(int(np.prod(s)) for s in shapes) == 0:
        raise CheckInputError("f returned only empty arrays: there is nothing to check.")
    return Output(treedef, tuple(paths), tuple(shapes), tuple(dtypes))


def make_cotangents(output: Output, count: int, seed: int) -> Any:
    """``count`` random cotangents of unit norm, stacked.

    A pytree like ``f``'s output whose leaves have a leading axis of ``count``.

    Drawn from ``np.random.default_rng((seed, 1))``, standard normal, each ``v_j`` scaled to
    ``Σ_leaves ||v_j||² = 1``.

    Example:
        >>> o = inspect_output(jax.ShapeDtypeStruct((5,), np.float64), has_aux=False)
        >>> v = make_cotangents(o, 3, seed=0)
        >>> v.shape, np.allclose((v**2).sum(axis=1), 1.0)
        ((3, 5), True)
    """
    rng = np.random.default_rng((seed, COTANGENT_STREAM))
    leaves = [rng.standard_normal((count, *s)) for s in output.shapes]
    norm = np.sqrt(sum(np.sum(v.reshape(count, -1) ** 2, axis=1) for v in leaves))
    leaves = [
        (v / norm.reshape(-1, *([1] * (v.ndim - 1)))).astype(d)
        for v, d in zip(leaves, output.dtypes, strict=True)
    ]
    return jax.tree_util.tree_unflatten(output.treedef, leaves)


def describe_projection(output: Output, count: int, seed: int) -> str:
    """What a report says was checked of a vector-valued output.

    Example:
        >>> o = inspect_output(jax.ShapeDtypeStruct((2, 3), np.float32), has_aux=False)
        >>> describe_projection(o, 1, 0)
        'float32[2, 3] projected on 1 random unit cotangent (seed 0)'
    """
    plural = "s" if count > 1 else ""
    return f"{output.describe()} projected on {count} random unit cotangent{plural} (seed {seed})"


def split_cotangents(cots: Any, count: int) -> tuple[Any, ...]:
    """The stacked cotangents as ``count`` separate pytrees of NumPy arrays (for reports)."""
    return tuple(
        jax.tree_util.tree_map(lambda v, j=j: np.asarray(v[j]), cots) for j in range(count)
    )
