"""Second order: Hessian-vector products against finite differences of the gradient.

As torch's ``gradgradcheck`` does, but per leaf and in parallel. For each perturbation of a
leaf ``θ_k`` (an entry ``e_i``, or a random direction), the numerical column

    (∇F(θ + h·e_i) − ∇F(θ − h·e_i)) / 2h

(the gradient over EVERY checked leaf, ``n`` real rows) is compared with ``H·e_i`` from
``jax.jvp(jax.grad(F))`` (forward-over-reverse, ``autodiff="forward"``, the default) or from
``jax.grad(<jax.grad(F), e_i>)`` (reverse-over-reverse, ``autodiff="reverse"``). A leaf's row in
the report judges its block of ``H`` (its columns, every row).

Reverse-over-reverse computes ``Hᵀe_i`` (the gradient of ``∂F/∂θ_i``), which equals ``H·e_i``
only when autodiff's Hessian is symmetric — a broken rule can break that. So a lost
``∂(∂f/∂b)/∂a`` shows in leaf ``a`` with ``autodiff="forward"`` and in leaf ``b`` with
``autodiff="reverse"``; ``autodiff="both"`` reports both.

Verified in stages, as first order is (:mod:`~gradlab.gradcheck.judging._second_judge` judges):

1. every column at the leaf's step ``h`` (:func:`order2_steps`: ``1e-5`` times the leaf's
   magnitude ``rms|θ_k|``, so a σ ≈ 1e-4 is moved by 1e-9, not by a tenth of itself);
2. leaves not verified there, at ``h/10`` and ``2h`` too: jumps and kinks of the gradient
   (no second derivative: inconclusive with that reason), truncation (Richardson
   extrapolation), crossed kinks and rounding told apart;
3. leaves left unresolved, again at another step: larger where rounding left them open (as
   their noise floor asks), ``h/100`` where truncation or ``f``'s domain did;
4. leaves whose analytical block is zero to rounding, verified as flat when the gradient
   does not move along any of their entries over a wide step, relative to the gradient's
   own scale (a leaf ``f`` is linear in: a critic's output bias, an energy's linear weights,
   ``concatenate`` or ``roll`` along their inputs).

``eps="auto"`` chooses each leaf's step from a Richardson estimate (differences at ``h`` and
``2h`` of a few columns) of truncation against the gradient's rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import jax
import numpy as np

from gradlab._errors import CheckInputError
from gradlab.gradcheck.evaluation._hessian_auto_step import _auto_steps
from gradlab.gradcheck.evaluation._hessian_sweep import (
    gradient_rows,
)
from gradlab.gradcheck.evaluation._sweep import Context
from gradlab.gradcheck.judging._second_stages import _flat, _retry_step, _stage, _zero_block
from gradlab.gradcheck.planning._plan import Base, LeafPlan
from gradlab.gradcheck.planning._step import magnitude
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.report._leaf_report import LeafReport
from gradlab.gradcheck.report._progress import Progress

__all__ = ["nondiff_tracer_errors", "verify_second_order"]

#: Largest retry step, times the leaf's magnitude (Richardson keeps truncation in check).
MAX_RETRY_EPS = 1e-2


@contextlib.contextmanager
def nondiff_tracer_errors() -> Iterator[None]:
    """JAX's error for a traced value in a ``custom_vjp``'s ``nondiff_argnums``, made clear.

    JAX refuses to differentiate such a function at all (``jax.grad`` raises too), so no
    check can run: the error says which construct and what to do.
    """
    try:
        yield
    except jax.errors.UnexpectedTracerError as e:
        if "nondiff_argnums" not in str(e):
            raise
        raise CheckInputError(
            "f passes a traced value (a parameter, or something computed from one) to a "
            "jax.custom_vjp function in a position listed in its nondiff_argnums; JAX cannot "
            "differentiate that (jax.grad raises too). Fix: make that argument a regular "
            "(differentiable) argument of the custom_vjp and return its cotangent from bwd "
            "(None for a non-float), or close over a constant instead."
        ) from e


def verify_second_order(
    ctx: Context,
    plans: Sequence[LeafPlan],
    base: Base,
    th: Thresholds,
    outers: Sequence[str],
    bar: Progress,
    auto: bool = False,
    seed: int = 0,
) -> tuple[list[LeafReport], np.ndarray, int, dict[str, int]]:
    """Checks every leaf's columns of the Hessian against differences of the gradient.

    Returns:
        The rows (one per leaf and outer mode), the summed squares for the overall relative
        error, the number of gradient evaluations, and the evaluations per stage.
    """
    try:
        return _verify(ctx, plans, base, th, outers, bar, auto, seed)
    except CheckInputError as e:
        cause = e.__cause__
        if tuple(outers) != ("forward",) or not (
            isinstance(cause, TypeError) and "custom_vjp" in str(cause)
        ):
            raise
    # forward mode through a custom_vjp is undefined (f differentiates one inside): the
    # gradient's own derivative by reverse-over-reverse, as jax.grad(jax.grad(...)) does
    try:
        rows, totals, n_evals, stages = _verify(
            ctx, plans, base, th, ("reverse",), None, auto, seed
        )
    except (ValueError, TypeError, NotImplementedError) as e:
        raise CheckInputError(
            "f's second derivative cannot be computed by JAX either way. Forward-over-reverse "
            "(jax.jvp of jax.grad, as jax.hessian does) needs forward mode through a "
            f"jax.custom_vjp function, which has none ({cause}); reverse-over-reverse "
            f"(jax.grad of jax.grad) fails too: {type(e).__name__}: "
            f"{str(e).splitlines()[0]}\nFix: in the custom_vjp's fwd, compute the primal "
            "with plain code rather than by calling the custom_vjp function itself (then "
            "forward-over-reverse works), or write the rule as a jax.custom_jvp; for "
            "reverse-over-reverse, replace a lax.while_loop by lax.scan or a fori_loop with "
            "fixed bounds."
        ) from e
    why = (
        "checked reverse-over-reverse: f differentiates a jax.custom_vjp, which has no forward mode"
    )
    rows = [dataclasses.replace(r, note=f"{r.note}; {why}" if r.note else why) for r in rows]
    return rows, totals, n_evals, stages


def _verify(
    ctx: Context,
    plans: Sequence[LeafPlan],
    base: Base,
    th: Thresholds,
    outers: Sequence[str],
    bar: Progress | None,
    auto: bool,
    seed: int,
) -> tuple[list[LeafReport], np.ndarray, int, dict[str, int]]:
    """:func:`verify_second_order` for one choice of outer modes."""
    g0 = gradient_rows(base.grads)  # (K, n)
    stages: dict[str, int] = {}
    estimated: dict[int, float] = {}
    if auto:
        plans, estimated, n_auto = _auto_steps(ctx, plans, g0, th, seed, bar)
        stages["step search"] = n_auto
        bar = None
    leaves, plans, n1, n2 = _stage(ctx, plans, g0, th, outers, bar)
    stages["first step"] = n1
    if n2:
        stages["steps h/10, h and 2h"] = n2
    final = {leaf.plan.k: leaf for leaf in leaves}
    notes: dict[int, str] = {}
    for _ in range(2):
        retry = []
        for leaf in final.values():
            mag = magnitude(ctx.problem.checked_leaves[leaf.plan.k])
            steps = [
                _retry_step(r, leaf.plan.eps, th, MAX_RETRY_EPS * mag) for r in leaf.rows.values()
            ]
            step = max((s for s in steps if s is not None), default=None)
            if step is not None:
                retry.append(dataclasses.replace(leaf.plan, eps=step))
        if not retry:
            break
        again, _, m1, m2 = _stage(ctx, retry, g0, th, outers, None)
        stages["retry at other steps"] = stages.get("retry at other steps", 0) + m1 + m2
        for leaf in again:
            old = final[leaf.plan.k]
            cause = (
                "rounding"
                if leaf.plan.eps > old.plan.eps
                else (
                    "f's domain" if any(r.n_nonfinite for r in old.rows.values()) else "truncation"
                )
            )
            why = f"at eps={old.plan.eps:.0e} {cause} left it open"
            notes[leaf.plan.k] = why
            final[leaf.plan.k] = leaf
    g_scale = float(np.max(np.abs(g0))) if g0.size else 0.0
    h_scale = max((leaf.hvp_max for leaf in final.values()), default=0.0)
    candidates = []
    for leaf in final.values():
        mag = magnitude(ctx.problem.checked_leaves[leaf.plan.k])
        open_ = [r for r in leaf.rows.values() if r.status == "unresolved"]
        if (
            open_
            and all(
                r.status != "wrong" and not r.n_nonfinite and not r.n_kinks
                for r in leaf.rows.values()
            )
            and _zero_block(leaf, max(h_scale, g_scale / mag))
        ):
            candidates.append(leaf)
    flat: dict[int, float] = {}
    if candidates:
        flat, n_flat = _flat(ctx, candidates, g0, th)
        stages["flatness probe"] = n_flat
    rows: list[LeafReport] = []
    totals = np.zeros(3)
    for plan in plans:
        leaf = final[plan.k]
        for o in outers:
            row = leaf.rows[o]
            if plan.k in flat and row.status == "unresolved":
                note = (
                    f"∇f does not move along this leaf's entries: ∇f(θ ± {flat[plan.k]:.0e}·e_i) "
                    f"equals ∇f(θ) to rounding (relative to |∇f|) for every entry, and the "
                    f"analytical block is zero to rounding (max {row.grad_norm:.0e}); "
                    "verified as flat"
                )
                row = dataclasses.replace(row, status="verified", flat=True, note=note)
            elif plan.k in notes:
                why = notes[plan.k]
                note = (
                    f"verified at eps={leaf.plan.eps:.0e}: {why}"
                    if row.status == "verified"
                    else f"{row.note} (retried at eps={leaf.plan.eps:.0e}: {why})"
                )
                row = dataclasses.replace(row, note=note)
            if plan.k in estimated:
                row = dataclasses.replace(row, estimated_error=estimated[plan.k])
            rows.append(row)
            totals += leaf.squares[o]
    n_evals = sum(stages.values())
    return rows, totals, n_evals, stages
