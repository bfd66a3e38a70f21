"""The stages of second-order verification, leaf by leaf.

Columns judged at the leaf's step, then at ``h/10`` and ``2h`` for the leaves not verified
there (:mod:`~gradlab.gradcheck.judging._second_judge`), a retry at another step for leaves
left unresolved, and leaves whose analytical block is zero to rounding verified as flat when
the gradient does not move along their entries over a wide step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gradlab.gradcheck.evaluation import _kernels
from gradlab.gradcheck.evaluation._hessian_sweep import (
    _chunks,
    _labeller,
)
from gradlab.gradcheck.evaluation._measured import Columns
from gradlab.gradcheck.evaluation._sweep import Context, Job
from gradlab.gradcheck.judging._judge import SECOND_STEP
from gradlab.gradcheck.judging._second_judge import Part, judge_first, judge_steps, leaf_row, sums
from gradlab.gradcheck.planning._calls import Call
from gradlab.gradcheck.planning._plan import LeafPlan, part_label
from gradlab.gradcheck.planning._step import magnitude
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.report._leaf_report import LeafReport
from gradlab.gradcheck.report._progress import Progress

#: The wide steps (times the leaf's magnitude) over which a flat leaf's gradient must not move,
#: tried largest first: a piecewise-linear ``f`` is flat only up to its nearest kink.
FLAT_STEPS = (4.0, 0.4, 0.04, 0.004)


#: ``∇F(θ ± H·e_i)`` may differ from ``∇F(θ)`` by this many ``u·G`` and still be flat.
FLAT_ROUNDING = 64.0


#: A leaf's analytical block is zero to rounding when no entry exceeds this fraction of the
#: Hessian's scale (the largest HVP entry of the check, or ``G / magnitude``).
ZERO_HESSIAN = 1e-12


@dataclasses.dataclass
class _Leaf:
    """A leaf's rows (one per outer mode), their squares, and its largest HVP entry."""

    plan: LeafPlan
    rows: dict[str, LeafReport] = dataclasses.field(default_factory=dict)
    squares: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    hvp_max: float = 0.0


def _rows_of(plan: LeafPlan, parts: dict[str, list[Part]], th: Thresholds, leaf: _Leaf) -> None:
    """The leaf's rows from its judged chunks."""
    lf = plan.leaf
    for o, ps in parts.items():
        leaf.rows[o] = leaf_row(lf.path, lf.shape, str(lf.dtype), ps, plan.eps, th, o)
        leaf.squares[o] = np.array(
            [sum(p.num_sq for p in ps), sum(p.ana_sq for p in ps), sum(p.diff_sq for p in ps)]
        )


def _judged(
    ctx: Context,
    plans: Sequence[LeafPlan],
    g0: np.ndarray,
    th: Thresholds,
    outers: Sequence[str],
    three: bool,
    bar: Progress | None,
) -> tuple[dict[int, dict[str, list[Part]]], dict[int, bool], dict[int, float], int]:
    """Every chunk judged at ``h`` alone, or at ``h``, ``h/10`` and ``2h`` (``three``)."""
    parts: dict[int, dict[str, list[Part]]] = {p.k: {o: [] for o in outers} for p in plans}
    odd = {p.k: False for p in plans}
    top = {p.k: 0.0 for p in plans}
    n_evals, n = 0, g0.shape[1]
    scales = (1.0, 1.0 / SECOND_STEP, 2.0) if three else (1.0,)
    for seg, meas, hvps, used in _chunks(ctx, plans, outers, scales, bar):
        n_evals += used
        k = seg.plan.k
        for j in range(g0.shape[0]):
            cols = [Columns(g0[j], gp[:, j], gm[:, j], hp, hm) for gp, gm, hp, hm in meas]
            e = judge_steps(cols[0], cols[1], cols[2], th) if three else judge_first(cols[0], th)
            odd[k] |= bool(e.suspect.any())
            label = _labeller(ctx.problem, seg.plan, n, part_label(seg.part, j, ctx.scalar), seg.lo)
            for o in outers:
                ana = hvps[o][:, j].reshape(-1)
                parts[k][o].append(sums(e, ana, label, th))
        for h in hvps.values():
            top[k] = max(top[k], float(np.max(np.abs(h))) if h.size else 0.0)
    return parts, odd, top, n_evals


def _stage(
    ctx: Context,
    plans: Sequence[LeafPlan],
    g0: np.ndarray,
    th: Thresholds,
    outers: Sequence[str],
    bar: Progress | None,
) -> tuple[list[_Leaf], list[LeafPlan], int, int]:
    """Steps 1 and 2 for ``plans``: returns the leaves, the plans as compiled, evaluations."""

    def jobs(call: Call) -> list[Job]:
        static = (call.k, call.kind)
        hvps = [(_kernels.hvp_chunk, (*static, o), (call.batch, call.units)) for o in outers]
        return [(_kernels.grad_fd_chunk, static, (call.batch, call.steps)), *hvps]

    if bar is not None:
        plans = ctx.compile_plans(plans, jobs, bar)
    parts, odd, top, n1 = _judged(ctx, plans, g0, th, outers, False, bar)
    leaves, pending = [], []
    for plan in plans:
        leaf = _Leaf(plan, hvp_max=top[plan.k])
        _rows_of(plan, parts[plan.k], th, leaf)
        if odd[plan.k] or any(r.status != "verified" for r in leaf.rows.values()):
            pending.append(leaf)
        leaves.append(leaf)
    n2 = 0
    if pending:
        # the first step again, beside h/10 and 2h: nothing of the first pass was kept
        parts, _, _, n2 = _judged(ctx, [lf.plan for lf in pending], g0, th, outers, True, None)
        for leaf in pending:
            _rows_of(leaf.plan, parts[leaf.plan.k], th, leaf)
    return leaves, list(plans), n1, n2


def _retry_step(row: LeafReport, eps: float, th: Thresholds, largest: float) -> float | None:
    """Another step for a leaf left unresolved (None: none would help).

    Smaller when truncation was seen (entries judged by Richardson extrapolation) or entries
    left ``f``'s domain at ``h`` and ``h/10`` (an entry far smaller than the leaf's others,
    near a log's 0), else larger, as its rounding noise floor asks.
    """
    if row.status != "unresolved" or row.n_kinks:
        return None
    if row.n_nonfinite or (row.n_restepped and np.isfinite(row.noise_floor)):
        return eps / SECOND_STEP**2
    floor = row.noise_floor
    needed = eps * NOISE_MARGIN_RETRY * floor / th.tolerance if np.isfinite(floor) else np.inf
    step = min(needed, largest)
    return float(step) if step > eps * 1.5 else None


#: Retries aim at a noise floor this many times under the tolerance.
NOISE_MARGIN_RETRY = 3.0


def _zero_block(leaf: _Leaf, scale: float) -> bool:
    """Whether the leaf's analytical Hessian columns are zero to rounding (next to ``scale``)."""
    return leaf.hvp_max == 0.0 or leaf.hvp_max <= ZERO_HESSIAN * scale


def _flat(
    ctx: Context,
    leaves: Sequence[_Leaf],
    g0: np.ndarray,
    th: Thresholds,
) -> tuple[dict[int, float], int]:
    """Leaves whose gradient does not move along any entry over a wide step: ``{k: step}``.

    Each entry is tried at the steps :data:`FLAT_STEPS` (times the leaf's magnitude), largest
    first, until the gradient at ``θ ± H·e_i`` equals ``∇F(θ)`` to ``FLAT_ROUNDING·u·G``
    (``G``: the gradient's largest entry, at θ and at the moved points).
    """
    found, n_evals = {}, 0
    for leaf in leaves:
        plan = leaf.plan
        mag = magnitude(ctx.problem.checked_leaves[plan.k])
        flat = {part: np.zeros(plan.m, bool) for part in plan.parts}
        for factor in FLAT_STEPS:
            wide = dataclasses.replace(plan, eps=factor * mag)
            for seg, meas, _, used in _chunks(ctx, [wide], (), (1.0,), None):
                n_evals += used
                gp, gm, _, _ = meas[0]
                still = np.ones(seg.m, bool)
                for j in range(g0.shape[0]):
                    with np.errstate(invalid="ignore"):
                        g = max(
                            float(np.max(np.abs(g0[j]))),
                            float(np.nanmax(np.abs(gp[:, j]))),
                            float(np.nanmax(np.abs(gm[:, j]))),
                        )
                        moved = np.maximum(np.abs(gp[:, j] - g0[j]), np.abs(gm[:, j] - g0[j]))
                        still &= np.all(np.isfinite(moved), axis=1) & np.all(
                            moved <= FLAT_ROUNDING * th.unit_roundoff * g, axis=1
                        )
                flat[seg.part][seg.lo : seg.lo + seg.m] |= still
            if all(f.all() for f in flat.values()):
                found[plan.k] = factor * mag
                break
    return found, n_evals
