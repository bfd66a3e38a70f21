"""The precision audit: ``jax.grad`` at the parameters' own dtype against the float64 one.

The check verifies the mathematics in float64. A model trained in float32 (or bfloat16)
runs another path: a custom rule can branch on dtype, or lose precision only there. So for
every checked leaf given in a dtype narrower than float64, the gradient is computed again
as the user computes it — the given dtypes, the caller's own JAX configuration (x64 as the
caller has it), matmul precision ``"highest"`` so that TF32 passes are not blamed — and
compared with the float64 gradient that the check verified, by the lecture's relative
error. It must stay within what that dtype's rounding explains: ``sqrt(u)`` of the dtype
(:func:`audit_tolerance`: 2.4e-4 for float32, 2.2e-2 for float16, 6.2e-2 for bfloat16), far
above rounding in well-conditioned gradients and far below the error of a wrong rule — or,
when the low-precision gradient is ill-conditioned (near a minimum, cancellation), what its
own rounding measurably does: the gradient is computed a second time with every parameter
moved by one unit in the last place, and :data:`SPREAD_MARGIN` times the change between the
two is allowed too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.gradcheck._bands import relative_error
from gradlab.gradcheck._problem import _Static
from gradlab.gradcheck._promote import narrow_dtype

__all__ = ["SPREAD_MARGIN", "AuditRow", "audit", "audit_tolerance"]

#: Allowed multiple of the low-precision gradient's change under a one-ulp move of θ.
SPREAD_MARGIN = 10.0


@dataclasses.dataclass(frozen=True)
class AuditRow:
    """One leaf's audit: its dtype, the relative error against float64, the tolerance."""

    path: str
    dtype: str
    relative_error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        """Within what the dtype's rounding explains."""
        return self.relative_error <= self.tolerance


def audit_tolerance(dtype: Any) -> float:
    """``sqrt(u)`` of ``dtype``: the relative gradient error its rounding may explain.

    Example:
        >>> f"{audit_tolerance(np.float32):.1e}", f"{audit_tolerance(jnp.bfloat16):.1e}"
        ('2.4e-04', '6.2e-02')
    """
    return float(np.sqrt(float(jnp.finfo(dtype).eps) / 2))


def audit(
    value: Any,
    primals: Sequence[Any],
    argnums: Sequence[int],
    cotangent: Any,
    paths: Sequence[str],
    checked: Sequence[bool],
    reference: Sequence[np.ndarray],
) -> list[AuditRow]:
    """Audits the leaves given in reduced precision (none: an empty list, nothing run).

    Args:
        value: ``f`` without aux: ``value(*primals)``.
        primals: The arguments as the user gave them.
        argnums: The differentiated positions.
        cotangent: The first cotangent for a non-scalar ``f`` (float64 NumPy), or None.
        paths: The path of every leaf of the differentiated arguments, in order.
        checked: Per leaf: is it a checked (floating-point) leaf.
        reference: The float64 gradient of each checked leaf, shaped like the leaf.

    Returns:
        One row per checked leaf whose dtype is narrower than float64.
    """
    diff = [primals[a] for a in argnums]
    leaves = [x for d in diff for x in jax.tree_util.tree_leaves(d)]
    dtypes = [np.asarray(x).dtype if not hasattr(x, "dtype") else x.dtype for x in leaves]
    todo = [
        i for i, (c, d) in enumerate(zip(checked, dtypes, strict=True)) if c and narrow_dtype(d)
    ]
    if not todo:
        return []

    flat, tree = jax.tree_util.tree_flatten(list(primals))
    is_array = tuple(isinstance(x, jax.Array | np.ndarray | np.generic) for x in flat)
    arrays = tuple(x for x, a in zip(flat, is_array, strict=True) if a)
    static = _Static(tuple(None if a else x for x, a in zip(flat, is_array, strict=True)))
    spec = _AuditSpec(value, tuple(argnums), tree, is_array, static)
    with jax.default_matmul_precision("highest"):
        cot = None if cotangent is None else jax.tree_util.tree_map(jnp.asarray, cotangent)
        grads, moved = _gradients(spec, arrays, cot)
    k_of = np.cumsum(checked) - 1
    rows = []
    for i in todo:
        low = _wide(grads[i])
        rel = _rel(low, np.asarray(reference[k_of[i]]))
        spread = SPREAD_MARGIN * _rel(low, _wide(moved[i]))
        rows.append(
            AuditRow(paths[i], str(dtypes[i]), rel, max(audit_tolerance(dtypes[i]), spread))
        )
    return rows


@dataclasses.dataclass(frozen=True)
class _AuditSpec:
    """What is static about the audit's gradient: ``f`` and where its arrays go."""

    value: Any
    argnums: tuple[int, ...]
    tree: Any
    is_array: tuple[bool, ...]
    static: _Static

    def primals(self, arrays: Sequence[Any]) -> list[Any]:
        it = iter(arrays)
        flat = [next(it) if a else s for a, s in zip(self.is_array, self.static.value, strict=True)]
        return jax.tree_util.tree_unflatten(self.tree, flat)


@partial(jax.jit, static_argnums=0)
def _gradients(
    spec: _AuditSpec, arrays: tuple[Any, ...], cotangent: Any
) -> tuple[list[Any], list[Any]]:
    """``jax.vjp`` of ``f`` at the user's own dtypes, at θ and at θ moved by one ulp.

    One compiled program per function and shapes.
    """

    def gradient(arrays: Sequence[Any]) -> list[Any]:
        primals = spec.primals(arrays)

        def fn(*args: Any) -> Any:
            full = list(primals)
            for a, arg in zip(spec.argnums, args, strict=True):
                full[a] = arg
            return spec.value(*full)

        out, pull = jax.vjp(fn, *[primals[a] for a in spec.argnums])
        if cotangent is None:
            cot = jnp.ones_like(out)
        else:
            cot = jax.tree_util.tree_map(lambda v, o: v.astype(o.dtype), cotangent, out)
        return list(jax.tree_util.tree_leaves(pull(cot)))

    return gradient(arrays), gradient(tuple(_one_ulp(x) for x in arrays))


def _wide(g: Any) -> np.ndarray:
    return np.asarray(g, np.complex128 if np.iscomplexobj(g) else np.float64)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return relative_error(
        float(np.sum(np.abs(a) ** 2)),
        float(np.sum(np.abs(b) ** 2)),
        float(np.sum(np.abs(a - b) ** 2)),
    )


def _one_ulp(x: Any) -> Any:
    """A narrow floating-point array with every entry moved by one unit in the last place.

    Up and down alternately (traced: part of the audit's program).
    """
    if not narrow_dtype(x.dtype) or jnp.iscomplexobj(x):
        return x
    up = (jnp.arange(x.size) % 2 == 0).reshape(x.shape)
    return jnp.where(up, jnp.nextafter(x, jnp.inf), jnp.nextafter(x, -jnp.inf)).astype(x.dtype)
