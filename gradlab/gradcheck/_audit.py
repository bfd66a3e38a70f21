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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.gradcheck._promote import narrow_dtype
from gradlab.gradcheck.bands import relative_error

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

    def fn(*args: Any) -> Any:
        full = list(primals)
        for a, arg in zip(argnums, args, strict=True):
            full[a] = arg
        return value(*full)

    def gradient(args: Sequence[Any]) -> list[np.ndarray]:
        out, pull = jax.vjp(fn, *args)
        if cotangent is None:
            cot = jnp.ones_like(out)
        else:
            cot = jax.tree_util.tree_map(lambda v, o: jnp.asarray(v, o.dtype), cotangent, out)
        return list(jax.tree_util.tree_leaves(pull(cot)))

    with jax.default_matmul_precision("highest"):
        grads = gradient(diff)
        moved = gradient(_one_ulp(diff))
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


def _wide(g: Any) -> np.ndarray:
    return np.asarray(g, np.complex128 if np.iscomplexobj(g) else np.float64)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return relative_error(
        float(np.sum(np.abs(a) ** 2)),
        float(np.sum(np.abs(b) ** 2)),
        float(np.sum(np.abs(a - b) ** 2)),
    )


def _one_ulp(tree: Any) -> Any:
    """Every narrow floating-point entry moved by one unit in the last place, up or down."""
    rng = np.random.default_rng(0)

    def move(x: Any) -> Any:
        if not hasattr(x, "dtype") or not narrow_dtype(x.dtype) or jnp.iscomplexobj(x):
            return x
        up = jnp.asarray(rng.random(jnp.shape(x)) < 0.5)
        return jnp.where(up, jnp.nextafter(x, jnp.inf), jnp.nextafter(x, -jnp.inf)).astype(x.dtype)

    return jax.tree_util.tree_map(move, tree)
