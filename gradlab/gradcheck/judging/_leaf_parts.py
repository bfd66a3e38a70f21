"""A leaf's parts measured from a sweep, and judged into its report row."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from gradlab.gradcheck.evaluation._measured import Measured
from gradlab.gradcheck.evaluation._sweep import Context, Raw
from gradlab.gradcheck.judging._judge import (
    Second,
    judge_leaf,
    judge_part,
    squares,
)
from gradlab.gradcheck.judging._slopes import probes, slopes, suspects
from gradlab.gradcheck.planning._plan import Base, LeafPlan, leaf_scale, part_label
from gradlab.gradcheck.planning._problem import Problem
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.report._leaf_report import LeafReport


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
    nearby: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[LeafReport, np.ndarray, np.ndarray]:
    """A leaf's row for one autodiff, its squared norms, and its kinks outside their slopes.

    The squared norms feed the overall error; the kinks are positions (those within the range
    of ``f``'s slopes at ``nearby`` points, per part, are ties: see :func:`_break_ties`).
    """
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
            None if nearby is None else nearby[pt.part, pt.j],
        )
        for pt in parts
    ]
    scale = leaf_scale(np.asarray(problem.checked_leaves[plan.k]))
    row = judge_leaf(
        plan.leaf.path, plan.leaf.shape, str(plan.leaf.dtype), results, plan.eps, th, scale
    )
    bad = np.unique(np.concatenate([r.bad_at for r in results] + [np.zeros(0, np.int64)]))
    size = math.prod(plan.leaf.shape)
    n_checked = plan.m if plan.kind == "direction" or plan.m < size else None
    row = dataclasses.replace(row, autodiff=ad, n_checked=n_checked)
    return row, squares(results), bad
