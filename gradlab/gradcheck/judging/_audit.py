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

A model may compute in a precision narrower than its parameters on purpose (a float32 MLP
whose matmuls run in bfloat16): its gradient then carries that precision's rounding whatever
its rules. So the tolerance follows the lowest precision ``f`` computes in on the user's
path: where the user's ``f`` has pieces narrower than a leaf's dtype, that leaf is held to
``sqrt(u)`` of the narrowest piece (6.2e-2 for bfloat16), and the report names the pieces. A
rule wrong on the float32 path by more than that still fails; a subtler one is hidden by the
model's own bfloat16 rounding, which the audit says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex

from gradlab.gradcheck.evaluation._base import _device
from gradlab.gradcheck.planning._memory import program_cost
from gradlab.gradcheck.planning._spec import _Static
from gradlab.gradcheck.programs import _program_key, _stored
from gradlab.gradcheck.programs._fingerprint import fingerprint
from gradlab.gradcheck.programs._promote import _where, narrow_dtype
from gradlab.gradcheck.programs._runner import (
    compile_fresh,
    compile_tier,
    compile_tiered,
    executable_key,
)
from gradlab.gradcheck.report._bands import relative_error

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
    lowest: str | None = None  # the narrowest dtype f computes in, when narrower than dtype
    pieces: tuple[str, ...] = ()  # where f computes in ``lowest`` (``"dot_general (f.py:3)"``)

    @property
    def ok(self) -> bool:
        """Within what the dtype's rounding explains."""
        return self.relative_error <= self.tolerance

    def reason(self) -> str:
        """Why the audit failed this leaf, in words (for the report's reasons)."""
        text = (
            f"jax.grad at {self.path}'s own dtype ({self.dtype}) differs from the float64 "
            f"gradient by {self.relative_error:.1e} (relative), more than "
        )
        if self.lowest is None:
            return text + (
                f"{self.dtype} rounding explains ({self.tolerance:.1e}): a rule that is wrong "
                f"on the {self.dtype} path."
            )
        return text + (
            f"the {self.lowest} rounding of f's own {self.lowest} pieces explains "
            f"({self.tolerance:.1e}; {_listed(self.pieces)}): a rule that is wrong on the "
            f"{self.dtype} path."
        )

    def note(self) -> str:
        """The report's note for a leaf audited at the tolerance of f's narrower pieces."""
        return (
            f"the precision audit of {self.path} ({self.dtype}) allows {self.lowest} rounding "
            f"({self.tolerance:.1e}): f computes in {self.lowest} on purpose in "
            f"{_listed(self.pieces)}, so a rule wrong on the {self.dtype} path by less than "
            "that is not told apart from it"
        )


def _listed(pieces: Sequence[str], most: int = 4) -> str:
    more = f" and {len(pieces) - most} more" if len(pieces) > most else ""
    return ", ".join(pieces[:most]) + more


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
        closed, out_tree = _trace(spec, arrays, cot)
        args = jax.tree_util.tree_leaves((arrays, cot))
        program = _program(closed, args)
        grads, moved = jax.tree_util.tree_unflatten(out_tree, program(*args))
    lowest, pieces = _narrowest(closed)
    k_of = np.cumsum(checked) - 1
    rows = []
    for i in todo:
        low = _wide(grads[i])
        rel = _rel(low, np.asarray(reference[k_of[i]]))
        spread = SPREAD_MARGIN * _rel(low, _wide(moved[i]))
        tol = max(audit_tolerance(dtypes[i]), spread)
        row = AuditRow(paths[i], str(dtypes[i]), rel, tol)
        if lowest is not None and audit_tolerance(lowest) > audit_tolerance(dtypes[i]):
            mine = tuple(p for p, d in pieces if audit_tolerance(d) > audit_tolerance(dtypes[i]))
            row = AuditRow(paths[i], str(dtypes[i]), rel, max(tol, audit_tolerance(lowest)),
                           lowest, mine)  # fmt: skip
        rows.append(row)
    return rows


def _trace(spec: _AuditSpec, arrays: tuple[Any, ...], cot: Any) -> tuple[Any, Any]:
    """The audit's program as ``f`` and its gradient trace NOW, and its output structure.

    A new function object each time: JAX's caches of traces, found by the identity of the
    function traced, never hand back an earlier trace of ``f`` (a rule re-defined since, a
    global changed). Traced under the caller's JAX settings (and matmul precision
    ``"highest"``, set by the caller of this function).
    """
    fresh = lambda arrays, cot: _gradients(spec, arrays, cot)
    closed, shape = jax.make_jaxpr(fresh, return_shape=True)(arrays, cot)
    return closed, jax.tree_util.tree_structure(shape)


#: Stands for the audit's program in the executables' keys (beside the check's kernels).
_AUDIT = "gradlab precision audit"


def _program(closed: Any, args: Sequence[Any]) -> Callable[..., Any]:
    """The audit's program compiled, or found compiled under the fingerprint of ``closed``.

    Keyed as the check's own programs are (:mod:`~gradlab.gradcheck.programs._runner`): by
    the strict fingerprint of the jaxpr traced at this check (every equation, constant,
    literal and custom rule's body), the arguments' shapes, dtypes, weak types and
    placements, and the environment that shapes the compile (device, JAX settings — x64,
    matmul precision — compile tier, versions, the checker's source): never by the identity
    of ``f``. Kept in this process and, where the check keeps programs on disk
    (:mod:`~gradlab.gradcheck.programs._stored`) and the arguments live on one device, there
    too. Without a fingerprint (a host callback, a parameter it cannot see into) it is
    compiled afresh and kept nowhere.
    """
    run = jex.jaxpr_as_fun(closed)

    def precision_audit(*leaves: Any) -> Any:  # the name JAX's compile logs show
        return run(*leaves)

    lower = lambda: jax.jit(precision_audit).lower(*args)
    one = _device(args)
    device = one or _default_device()
    cost = program_cost(closed.jaxpr)
    tier = compile_tier(device.platform, cost.flops, convolutions=cost.convolutions,
                        loops=cost.loops)  # fmt: skip
    found = fingerprint(closed)
    if found is None:
        return compile_fresh(lower, tier)
    env = _program_key.environment(device, tier)
    chosen = str(getattr(jax.config, "jax_default_device", None))
    weak = tuple(bool(getattr(a, "weak_type", False)) for a in args)
    key = executable_key(_AUDIT, (found, env, chosen, weak), args, ())
    stored = None
    if one is not None and _stored.directory() is not None:
        stored = _program_key.program_key("precision_audit", found, (chosen, weak), args, env)
    return compile_tiered([key], [lower], [tier], [stored], device=one)[0].compiled


def _default_device() -> jax.Device:
    chosen = getattr(jax.config, "jax_default_device", None)
    if isinstance(chosen, jax.Device):
        return chosen
    return jax.devices(chosen)[0] if isinstance(chosen, str) else jax.devices()[0]


def _narrowest(closed: Any) -> tuple[str | None, list[tuple[str, str]]]:
    """The narrowest float dtype the user's ``f`` (and its gradient) computes in, and where.

    ``closed``: the audit's program (:func:`_trace`).

    Returns:
        ``(dtype, [(piece, dtype), …])``: each equation with a floating-point output narrower
        than float64, as ``"dot_general (file.py:12)"``, narrowest first.
    """
    found: dict[str, str] = {}
    widths: list[str] = []

    def scan(jaxpr: Any) -> None:
        for eqn in jaxpr.eqns:
            for v in eqn.outvars:
                dt = getattr(getattr(v, "aval", None), "dtype", None)
                if dt is not None and jnp.issubdtype(dt, jnp.floating) and narrow_dtype(dt):
                    name = np.dtype(dt).name
                    widths.append(name)
                    where = _where(eqn)
                    piece = f"{eqn.primitive.name}" + (f" ({where})" if where else "")
                    found.setdefault(piece, name)
            for param in eqn.params.values():
                for sub in param if isinstance(param, list | tuple) else [param]:
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        scan(inner)

    scan(closed.jaxpr)
    if not widths:
        return None, []
    lowest = max(widths, key=lambda d: float(jnp.finfo(d).eps))
    return lowest, sorted(found.items(), key=lambda kv: -float(jnp.finfo(kv[1]).eps))


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


def _gradients(
    spec: _AuditSpec, arrays: tuple[Any, ...], cotangent: Any
) -> tuple[list[Any], list[Any]]:
    """``jax.vjp`` of ``f`` at the user's own dtypes, at θ and at θ moved by one ulp.

    Traced afresh at each check (:func:`_trace`), compiled once per fingerprint.
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
