"""The precision audit: ``jax.grad`` at the parameters' own dtype against the float64 one.

The check verifies the mathematics in float64. A model trained in float32 (or bfloat16)
runs another path: a custom rule can branch on dtype, or lose precision only there. So for
every checked leaf given in a dtype narrower than float64, the gradient is computed again
as the user computes it — the given dtypes, the caller's own JAX configuration (x64 as the
caller has it), matmul precision ``"highest"`` so that TF32 passes are not blamed — and
compared with the float64 gradient that the check verified, by the lecture's relative
error. It must stay within what that dtype's rounding explains: :func:`audit_tolerance`,
``sqrt(u)`` of the dtype (2.4e-4 for float32, 2.2e-2 for float16, 6.3e-2 for bfloat16), far
above rounding in well-conditioned gradients and far below the error of a wrong rule.
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

__all__ = ["AuditRow", "audit", "audit_tolerance"]


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

    with jax.default_matmul_precision("highest"):
        out, pull = jax.vjp(fn, *diff)
        if cotangent is None:
            cot = jnp.ones_like(out)
        else:
            cot = jax.tree_util.tree_map(lambda v, o: jnp.asarray(v, o.dtype), cotangent, out)
        grads = jax.tree_util.tree_leaves(pull(cot))
    k_of = np.cumsum(checked) - 1
    rows = []
    for i in todo:
        low = np.asarray(grads[i], np.complex128 if np.iscomplexobj(grads[i]) else np.float64)
        ref = np.asarray(reference[k_of[i]])
        rel = relative_error(
            float(np.sum(np.abs(low) ** 2)),
            float(np.sum(np.abs(ref) ** 2)),
            float(np.sum(np.abs(low - ref) ** 2)),
        )
        rows.append(AuditRow(paths[i], str(dtypes[i]), rel, audit_tolerance(dtypes[i])))
    return rows
