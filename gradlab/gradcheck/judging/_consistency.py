"""Is ``f`` one function? Determinism across programs, and the primal of custom rules.

Every check evaluates ``f(θ)`` in several separately compiled programs: the
autodiff program (whose primal runs through custom rules' forward passes, and which also
evaluates ``f`` plainly, as the differences do) and each sweep kernel (which computes
``f(θ)`` beside ``f(θ ± h)``).
Evaluations of ``f`` alone must agree to rounding; if they do not, finite differences
measure the noise between programs, not the gradient, so the check fails and says where
the difference comes from. An autodiff primal that differs from ``f`` (a custom rule whose
forward pass computes something else) is reported too.

The programs share ONE trace of ``f`` (:func:`~gradlab.gradcheck.planning._spec.traced_once`), so
an ``f`` whose Python draws values or reads state when traced would look consistent: it is
traced once more afresh (:func:`retraced_value`), and when that trace differs, its ``f(θ)``
joins the comparison.
"""

from __future__ import annotations

import dataclasses
import re
import weakref
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.extend import core as jex

from gradlab.gradcheck.evaluation._kernels import project
from gradlab.gradcheck.planning._spec import Spec, traced_once
from gradlab.gradcheck.programs._fingerprint import fingerprint
from gradlab.gradcheck.programs._promote import promoted

__all__ = ["DETERMINISM_RTOL", "Consistency", "consistency", "retraced_value"]

#: Evaluations of f(θ) by different programs may differ by this much relative to the size
#: of f (reassociated sums in float64 stay many orders below it).
DETERMINISM_RTOL = 1e-8


@dataclasses.dataclass(frozen=True)
class Consistency:
    """What comparing the programs' ``f(θ)`` found.

    Attributes:
        deterministic: Every evaluation of ``f`` alone agreed to rounding.
        spread: The largest relative difference between them.
        cause: Where the difference shows, when not deterministic.
        primal_differs: The autodiff program's primal differs from ``f`` by more than
            rounding (relative difference), or None.
    """

    deterministic: bool
    spread: float
    cause: str = ""
    primal_differs: float | None = None


def _rel(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(a - b) / np.maximum(scale, np.finfo(np.float64).tiny)
    return float(np.max(rel)) if rel.size else 0.0


def consistency(
    plain: np.ndarray,
    sweeps: list[np.ndarray],
    ad_primal: np.ndarray,
    scale: np.ndarray,
    unit_roundoff: float,
    trace: Callable[[], Any],
    autodiff_unit_roundoff: float | None = None,
) -> Consistency:
    """Compares ``F(θ)`` from the plain evaluation, every sweep kernel and the autodiff primal.

    Args:
        plain: ``F(θ)`` ``(K,)`` from the plain evaluation of ``f``.
        sweeps: ``F(θ)`` from each sweep kernel.
        ad_primal: ``F(θ)`` from the autodiff program.
        scale: The size rounding in ``F`` scales with ``(K,)``.
        unit_roundoff: ``u`` of the precision ``f`` computes in.
        trace: Traces ``f`` to a closed jaxpr (called twice when the values disagree).
        autodiff_unit_roundoff: ``u`` of the autodiff program where it is lower (a custom
            rule kept as written in float32): the bound for its ``F(θ)`` only.

    Returns:
        The finding.
    """
    rtol = max(DETERMINISM_RTOL, 1e3 * 8 * unit_roundoff)
    ad_rtol = max(rtol, 1e3 * 8 * (autodiff_unit_roundoff or 0.0))
    scale = np.maximum(np.abs(scale), np.abs(plain))
    spread = max([_rel(plain, s, scale) for s in sweeps] + [0.0])
    primal = _rel(plain, ad_primal, scale)
    differs = primal if primal > ad_rtol else None
    if spread <= rtol:
        return Consistency(True, spread, "", differs)
    return Consistency(False, spread, _cause(trace), differs)


def _cause(trace: Callable[[], Any]) -> str:
    """Why two evaluations of ``f`` differ: its program, its callbacks, or the device."""
    first, second = trace(), trace()
    if _text(first) != _text(second) or any(
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(first.consts, second.consts, strict=False)
    ):
        return (
            "f's traced program changes from one trace to the next: values are drawn or "
            "state is read when f is traced (e.g. np.random or Python state inside f). Pass "
            "randomness in as an argument (a jax.random key) or fix it outside f"
        )
    names = sorted({eqn.primitive.name for eqn in _eqns(first.jaxpr) if "callback" in
                    eqn.primitive.name})  # fmt: skip
    if names:
        return (
            f"f calls host callbacks ({', '.join(names)}) whose results change from call to "
            "call (stateful callbacks); make them pure, or check f without them"
        )
    return (
        "the same program gives different values when run again: non-deterministic "
        "reductions (atomics, scatter-add) on this device; check on the CPU "
        "(host=True) or make the reductions deterministic"
    )


def _text(closed: Any) -> str:
    """A program's text without object addresses (a callback's function, re-made per trace)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", str(closed))


def _eqns(jaxpr: Any) -> list[Any]:
    """Every equation of ``jaxpr``, sub-programs included."""
    out = []
    for eqn in jaxpr.eqns:
        out.append(eqn)
        for value in eqn.params.values():
            for v in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(v, "jaxpr", v)
                if hasattr(inner, "eqns"):
                    out.extend(_eqns(inner))
    return out


#: Shared traces that a fresh trace reproduced once: checked again, they are not retraced
#: (what a later fresh trace could show — Python state changed since — the shared trace, like
#: any of JAX's cached traces, would not follow anyway).
_REPRODUCED: weakref.WeakSet[Any] = weakref.WeakSet()


def retraced_value(spec: Spec, dyn: tuple[Any, ...], cots: Any) -> np.ndarray | None:
    """``F(θ)`` from a fresh trace of ``f``, when it differs from the trace the programs share.

    Returns None when the fresh trace is the same program (the usual case: nothing is
    compiled or run), or when the programs do not share a trace (an unhashable ``f``: each
    traced ``f`` itself, and their values are compared anyway).
    """
    shared = traced_once(spec)
    if not hasattr(shared, "trace"):
        return None
    program = shared.trace(*dyn).jaxpr
    if program in _REPRODUCED:
        return None
    # a new function object: make_jaxpr would return a trace JAX cached for the same one
    afresh = lambda *args: spec.flat_value(*args)
    fresh, shape = jax.make_jaxpr(afresh, return_shape=True)(*dyn)
    if fingerprint(fresh, strict=False) == fingerprint(program, strict=False):
        _REPRODUCED.add(program)
        return None
    run = jex.jaxpr_as_fun(fresh)
    tree = jax.tree_util.tree_structure(shape)

    def value(*leaves: Any) -> Any:
        fn = promoted(run, rules=False) if spec.promote else run
        return project(jax.tree_util.tree_unflatten(tree, fn(*leaves)), cots)

    return np.asarray(jax.jit(value)(*jax.tree_util.tree_leaves(dyn)))
