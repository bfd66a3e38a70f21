"""Verifying every leaf at first order: the sweep's measurements judged in stages.

1. Every entry at the leaf's step; leaves verified there are done.
2. In the others, the suspects (one-sided slopes that disagree, ``f`` not finite) and a few
   random probes are evaluated again at ``h / 10`` by the same compiled kernels (the step is
   an argument: nothing recompiles), and judged with kinks confirmed, curvature and
   rounding told apart and rounding measured (:mod:`~gradlab.gradcheck.judging._judge`).
3. Leaves still unresolved by rounding are retried at the step their noise floor asks for.
4. Leaves whose gradient is zero to rounding are verified as flat if ``f`` does not move
   along any of their entries over a large step.
5. Kinks whose analytical value lies outside their one-sided slopes are re-checked at a
   nearby ``θ + δ`` where the ties that can cause this are broken (:func:`_break_ties`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gradlab.gradcheck.evaluation._sweep import Context, sweep_first_order
from gradlab.gradcheck.judging._extrapolate import _extrapolated
from gradlab.gradcheck.judging._flat import _flat_leaves
from gradlab.gradcheck.judging._judge import (
    SECOND_STEP,
    Second,
)
from gradlab.gradcheck.judging._leaf_parts import _parts, _row, _second_positions
from gradlab.gradcheck.judging._ties import _break_ties
from gradlab.gradcheck.planning._plan import Base, LeafPlan
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.report._leaf_report import LeafReport
from gradlab.gradcheck.report._progress import Progress

__all__ = ["Verified", "verify_first_order"]


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
    """Sweeps every plan and judges each leaf (see :mod:`~gradlab.gradcheck.judging._judge`).

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
    seconds: dict[int, dict[tuple[str, int], Second]] = {}
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
            seconds[plan.k] = extra
            for ad in ads:
                rows[plan.k, ad] = _row(plan, measured[plan.k], ad, extra, th, ctx.problem)
    totals = sum((rows[plan.k, ad][1] for plan in plans for ad in ads), np.zeros(3))
    out = [rows[plan.k, ad][0] for plan in plans for ad in ads]
    tied = {
        p.k: np.unique(np.concatenate([rows[p.k, ad][2] for ad in ads]))
        for p in plans
        if any(rows[p.k, ad][2].size for ad in ads)
    }
    if retry == 2 and tied:  # once, at the top level
        out, n_ties = _break_ties(
            ctx, plans, out, tied, measured, seconds, base, th, ads, seed, verify_first_order
        )
        n_evals += n_ties
        stages["ties broken nearby"] = n_ties
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
        out, n_rich, sq = _extrapolated(ctx, plans, out, base, th, ads)
        by_path = {p.leaf.path: p.k for p in plans}
        for (path, ad), new in sq.items():  # the overall error with the extrapolated values
            totals = totals - rows[by_path[path], ad][1] + new
        if n_rich:
            n_evals += n_rich
            stages["Richardson extrapolation"] = n_rich
        out, n_flat = _flat_leaves(ctx, plans, out, base, th)
        if n_flat:
            n_evals += n_flat
            stages["flatness probe"] = n_flat
    return Verified(out, totals, n_evals, n_unstable, f0, stages)


def _retried(first: LeafReport, again: LeafReport) -> LeafReport:
    """The retry's verdict, saying which steps were tried (and never suggesting one of them)."""
    why = f"at eps={first.eps:g} rounding noise dominated (noise floor {first.noise_floor:.1e})"
    if again.status == "verified":
        return dataclasses.replace(again, note=f"verified at eps={again.eps:.0e}: {why}")
    note = again.note.split(" (retried at eps=")[0]
    if again.resolving_eps is not None and again.resolving_eps <= 2 * (again.eps or 0.0):
        # what the retry's floor asks for is the retry itself: nothing new to suggest
        again = dataclasses.replace(again, resolving_eps=None)
        note = (
            f"rounding noise dominates at eps={again.eps:.0e} too "
            f"(noise floor {again.noise_floor:.1e})"
        )
    return dataclasses.replace(again, note=f"{note} (retried at eps={again.eps:.0e}: {why})")
