"""Verifying every leaf at first order: the sweep's measurements judged in stages.

1. Every entry at the leaf's step; leaves verified there are done.
2. In the others, the suspects (one-sided slopes that disagree, ``f`` not finite) and a few
   random probes are evaluated again at ``h / 10`` by the same compiled kernels (the step is
   an argument: nothing recompiles), and judged with kinks confirmed, curvature and
   rounding told apart and rounding measured (:mod:`~gradlab.gradcheck._judge`).
3. Leaves still unresolved by rounding are retried at the step their noise floor asks for.
4. Leaves whose gradient is zero to rounding are verified as flat if ``f`` does not move
   along any of their entries over a large step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gradlab.gradcheck._judge import (
    SECOND_STEP,
    Measured,
    Second,
    Thresholds,
    judge_leaf,
    judge_part,
    probes,
    slopes,
    squares,
    suspects,
)
from gradlab.gradcheck._problem import Problem
from gradlab.gradcheck._progress import Progress
from gradlab.gradcheck._report import LeafReport
from gradlab.gradcheck._sweep import (
    Base,
    Context,
    LeafPlan,
    Raw,
    leaf_scale,
    part_label,
    sweep_first_order,
)

__all__ = ["Verified", "verify_first_order"]

#: A leaf whose gradient is this small next to the largest gradient entry of the check is
#: zero to autodiff's rounding; it may be verified as flat (see ``_flat_leaves``).
ZERO_GRADIENT = 1e-12
#: The step, relative to the leaf's scale, over which f must not move to be called flat.
FLAT_STEP = 4.0
#: ``f(θ ± H·e_i)`` may differ from ``f(θ)`` by this many ``u·|f|`` and still be flat.
FLAT_ROUNDING = 64.0


@dataclasses.dataclass(frozen=True)
class _Part:
    """What one (part, cotangent) of a leaf measured at the first step."""

    part: str
    j: int
    measured: Measured
    ana: dict[str, np.ndarray]  # per autodiff: analytical values (m,)


def _parts(
    ctx: Context, plan: LeafPlan, raw: dict[tuple[int, str], Raw], base: Base, ads: Sequence[str]
) -> list[_Part]:
    """The first step's measurements of a leaf, per (part, cotangent)."""
    out = []
    for part in plan.parts:
        r = raw[(plan.k, part)]
        values, taken, f0 = r.cat("values"), r.cat("taken"), r.cat("f0")
        grads = base.grads[plan.k].reshape(base.n_cotangents, -1)
        if plan.kind == "entry":
            hp, hm = taken
            # JAX's gradient of a real f in a complex leaf is ∂f/∂re − i·∂f/∂im.
            ana_rev = (-grads.imag if part == "imag" else grads.real)[:, plan.batch]
        else:
            hp, hm = np.full(plan.m, plan.eps), np.full(plan.m, -plan.eps)
            delta = (taken[0] - taken[1]) / (2 * plan.eps)
            ana_rev = np.real(grads @ delta.T)  # <∇F_j, δ>, (K, m)
        anas = {"reverse": ana_rev}
        if "forward" in ads:
            anas["forward"] = r.cat("jvp").T
        for j in range(base.n_cotangents):
            scale = None if ctx.scalar else base.scales[j]
            m = Measured(f0[:, j], values[0, :, j], values[1, :, j], hp, hm, scale)
            out.append(_Part(part, j, m, {ad: a[j] for ad, a in anas.items()}))
    return out


def _indices(plan: LeafPlan) -> tuple[np.ndarray, tuple[int, ...]]:
    if plan.kind == "entry":
        return plan.batch, plan.leaf.shape
    return np.arange(plan.m), (plan.m,)


@dataclasses.dataclass
class Verified:
    """The first-order verdicts of a check, with what they cost."""

    rows: list[LeafReport]
    totals: np.ndarray  # (||num||², ||ana||², ||num − ana||²) over all rows
    n_evaluations: int
    n_unstable: int
    f0: dict[int, np.ndarray]  # per leaf: F(θ) as its sweep's program computed it
    stages: dict[str, int]  # evaluations per stage: first step, second step, retries


def verify_first_order(
    ctx: Context,
    plans: Sequence[LeafPlan],
    base: Base,
    th: Thresholds,
    ads: Sequence[str],
    repeat: bool,
    bar: Progress | None,
    seed: int,
    retry: int = 2,
) -> Verified:
    """Sweeps every plan and judges each leaf (see :mod:`~gradlab.gradcheck._judge`).

    1. Every entry at the leaf's step; leaves verified there are done.
    2. In the others, the suspects (one-sided slopes that disagree, ``f`` not finite) and a
       few random probes are evaluated again at ``h / 10`` by the same compiled kernels:
       kinks are confirmed and checked against their one-sided slopes, curvature and
       rounding told apart, rounding measured.
    3. Leaves still unresolved by rounding are retried at the step their noise floor asks
       for (``retry`` times at most), and the report says which step verified them.
    """
    forward = "forward" in ads
    raw, n_evals, n_unstable = sweep_first_order(ctx, plans, forward, repeat, bar)
    stages = {"first step": n_evals}
    measured = {plan.k: _parts(ctx, plan, raw, base, ads) for plan in plans}
    f0 = {p.k: raw[(p.k, p.parts[0])].cat("f0")[0] for p in plans}
    rows = {
        (plan.k, ad): _row(plan, measured[plan.k], ad, None, th, ctx.problem) for plan in plans
        for ad in ads
    }  # fmt: skip
    pending = [p for p in plans if any(rows[p.k, ad][0].status != "verified" for ad in ads)]
    if pending:
        rng = np.random.default_rng((seed, 7))
        picks = {p.k: _second_positions(p, measured[p.k], th, rng) for p in pending}
        second = [
            dataclasses.replace(p, batch=p.batch[picks[p.k][0]], eps=p.eps / SECOND_STEP)
            for p in pending
        ]
        raw2, n2, _ = sweep_first_order(ctx, second, False, False, None)
        n_evals += n2
        stages["second step"] = n2
        for plan, plan2 in zip(pending, second, strict=True):
            at, probe_at = picks[plan.k]
            again = {(pt.part, pt.j): pt for pt in _parts(ctx, plan2, raw2, base, ["reverse"])}
            extra = {
                key: Second(at, pt.measured, probe_at) for key, pt in again.items()
            }  # fmt: skip
            for ad in ads:
                rows[plan.k, ad] = _row(plan, measured[plan.k], ad, extra, th, ctx.problem)
    totals = sum((rows[plan.k, ad][1] for plan in plans for ad in ads), np.zeros(3))
    out = [rows[plan.k, ad][0] for plan in plans for ad in ads]
    retried = [p for p in plans if any(rows[p.k, ad][0].resolving_eps for ad in ads)]
    if retry and retried:  # a retry may itself ask for a larger step once more
        steps = {p.k: max(rows[p.k, ad][0].resolving_eps or 0.0 for ad in ads) for p in retried}
        again_plans = [dataclasses.replace(p, eps=steps[p.k]) for p in retried]
        redo = verify_first_order(ctx, again_plans, base, th, ads, False, None, seed, retry - 1)
        n_evals += redo.n_evaluations
        stages["retry at larger steps"] = redo.n_evaluations
        better = {(r.path, r.autodiff): r for r in redo.rows}
        out = [
            _retried(r, better[r.path, r.autodiff]) if (r.path, r.autodiff) in better else r
            for r in out
        ]
    if retry == 2:  # once, at the top level
        out, n_flat = _flat_leaves(ctx, plans, out, base, th)
        if n_flat:
            n_evals += n_flat
            stages["flatness probe"] = n_flat
    return Verified(out, totals, n_evals, n_unstable, f0, stages)


def _flat_leaves(
    ctx: Context, plans: Sequence[LeafPlan], rows: list[LeafReport], base: Base, th: Thresholds
) -> tuple[list[LeafReport], int]:
    """Unresolved leaves on which ``f`` does not depend (see :data:`FLAT_STEP`).

    A gradient that is zero by symmetry (the key bias of softmax attention, anything before
    a normalisation it is invariant to) is computed as rounding, ~1e-17, and its centered
    differences are rounding too: no relative error can be established between two noises.
    What can be established is that ``f`` does not change along each entry over a large
    interval: ``f(θ ± H·e_i) = f(θ)`` to rounding at ``H = FLAT_STEP·max(1, rms|θ|)``, which
    a gradient larger than ``64·u·|f|/H`` (3.5e-15·|f| in float64) could not hide; with
    ``jax.grad`` zero to rounding there too, the leaf is verified as flat. Anything else
    stays unresolved.
    """
    scale_g = max((float(np.max(np.abs(g))) for g in base.grads if g.size), default=0.0)
    todo = []
    for plan in plans:
        mine = [r for r in rows if r.path == plan.leaf.path]
        if not mine or any(r.status != "unresolved" or r.n_nonfinite for r in mine):
            continue
        if float(np.max(np.abs(base.grads[plan.k]))) > ZERO_GRADIENT * max(scale_g, 1e-300):
            continue
        h = FLAT_STEP * leaf_scale(np.asarray(ctx.problem.checked_leaves[plan.k]))
        todo.append(dataclasses.replace(plan, eps=h))
    if not todo:
        return rows, 0
    raw, n_evals, _ = sweep_first_order(ctx, todo, False, False, None)
    flat = {}
    for plan in todo:
        parts = _parts(ctx, plan, raw, base, ["reverse"])
        ok = True
        for pt in parts:
            m = pt.measured
            size = np.maximum(np.abs(m.f0), np.maximum(np.abs(m.fp), np.abs(m.fm)))
            if m.scale is not None:
                size = np.maximum(size, m.scale)
            moved = np.maximum(np.abs(m.fp - m.f0), np.abs(m.fm - m.f0))
            ok &= bool(
                np.all(np.isfinite(moved) & (moved <= FLAT_ROUNDING * th.unit_roundoff * size))
            )
        if ok:
            flat[plan.leaf.path] = plan.eps
    out = []
    for r in rows:
        if r.path in flat:
            note = (
                f"f does not depend on this leaf at θ: f(θ ± {flat[r.path]:g}·e_i) equals f(θ) "
                f"to rounding for every entry, and jax.grad is zero to rounding (max "
                f"{r.grad_norm:.0e}); verified as flat"
            )
            r = dataclasses.replace(r, status="verified", flat=True, note=note)
        out.append(r)
    return out, n_evals


def _retried(first: LeafReport, again: LeafReport) -> LeafReport:
    """The retry's verdict, saying which step gave it."""
    why = f"at eps={first.eps:g} rounding noise dominated (noise floor {first.noise_floor:.1e})"
    if again.status == "verified":
        note = f"verified at eps={again.eps:.0e}: {why}"
    else:
        note = f"{again.note} (retried at eps={again.eps:.0e}: {why})"
    return dataclasses.replace(again, note=note)


def _second_positions(
    plan: LeafPlan, parts: list[_Part], th: Thresholds, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Positions to evaluate at the second step: suspects of any part, and random probes."""
    odd = np.zeros(plan.m, bool)
    for pt in parts:
        odd |= suspects(slopes(pt.measured, th), th)
    probe_at = probes(plan.m, rng)
    return np.union1d(np.flatnonzero(odd), probe_at), probe_at


def _row(
    plan: LeafPlan,
    parts: list[_Part],
    ad: str,
    second: dict[tuple[str, int], Second] | None,
    th: Thresholds,
    problem: Problem,
) -> tuple[LeafReport, np.ndarray]:
    """A leaf's row for one autodiff, and its squared norms for the overall error."""
    indices, shape = _indices(plan)
    results = [
        judge_part(
            shape,
            indices,
            pt.ana[ad],
            pt.measured,
            th,
            None if second is None else second[pt.part, pt.j],
            part_label(pt.part, pt.j, pt.measured.scale is None),
        )
        for pt in parts
    ]
    scale = leaf_scale(np.asarray(problem.checked_leaves[plan.k]))
    row = judge_leaf(
        plan.leaf.path, plan.leaf.shape, str(plan.leaf.dtype), results, plan.eps, th, scale
    )
    return dataclasses.replace(row, autodiff=ad), squares(results)
