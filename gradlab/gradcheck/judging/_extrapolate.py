"""Leaves no single step settled, judged by Richardson extrapolation.

Leaves unresolved after the retries, or found wrong only at a retry's larger step (where
truncation enters), are measured on a ladder of steps and their differences extrapolated to
``h → 0`` (:mod:`~gradlab.gradcheck.evaluation._richardson`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gradlab.gradcheck.evaluation import _richardson
from gradlab.gradcheck.evaluation._sweep import Context, sweep_first_order
from gradlab.gradcheck.judging._flat import ZERO_GRADIENT
from gradlab.gradcheck.judging._judge import (
    MAX_RETRY_EPS,
    MAX_RETRY_EPS_FLOAT32,
    NOISE_MARGIN,
    TYPICAL_ROUNDING,
    autodiff_rounding_note,
)
from gradlab.gradcheck.judging._leaf_parts import _indices, _parts
from gradlab.gradcheck.judging._slopes import slopes
from gradlab.gradcheck.planning._plan import Base, LeafPlan, leaf_scale, part_label
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.report._bands import relative_error, verdict
from gradlab.gradcheck.report._leaf_report import EntryMismatch, LeafReport, LeafStatus


def _extrapolated(
    ctx: Context,
    plans: Sequence[LeafPlan],
    rows: list[LeafReport],
    base: Base,
    th: Thresholds,
    ads: Sequence[str],
) -> tuple[list[LeafReport], int, dict[tuple[str, str], np.ndarray]]:
    """Leaves no single step settled, judged by Richardson extrapolation (see the module).

    Candidates: leaves unresolved after the retries, or found wrong only at a retry's larger
    step (where truncation enters), with no kinks and every entry finite, whose gradient is
    not zero to rounding (those go to the flatness probe). The ladder starts at 4× the
    largest retry step.

    Returns:
        The rows, the evaluations of ``f`` this took, and the new rows' squared norms
        ``(||num||², ||ana||², ||num − ana||²)`` per ``(path, autodiff)``.
    """
    scale_g = max((float(np.max(np.abs(g))) for g in base.grads if g.size), default=0.0)
    todo = []
    for plan in plans:
        mine = [r for r in rows if r.path == plan.leaf.path]
        open_ = [r for r in mine if r.status == "unresolved" or (
            r.status == "wrong" and r.eps is not None and r.eps != plan.eps)]  # fmt: skip
        if not open_ or any(r.n_kinks or r.n_nonfinite or r.n_ties for r in mine):
            continue
        if float(np.max(np.abs(base.grads[plan.k]))) <= ZERO_GRADIENT * max(scale_g, 1e-300):
            continue
        todo.append(plan)
    if not todo:
        return rows, 0, {}
    largest = MAX_RETRY_EPS if th.compute_dtype == "float64" else MAX_RETRY_EPS_FLOAT32
    starts = {
        p.k: 4 * largest * leaf_scale(np.asarray(ctx.problem.checked_leaves[p.k])) for p in todo
    }
    d: dict[tuple[int, str, int], list[np.ndarray]] = {}
    noise: dict[tuple[int, str, int], list[np.ndarray]] = {}
    ana: dict[tuple[int, str, int], dict[str, np.ndarray]] = {}
    n_evals = 0
    for level in range(_richardson.LADDER):
        at = [dataclasses.replace(p, eps=_richardson.ladder(starts[p.k])[level]) for p in todo]
        raw, n, _ = sweep_first_order(ctx, at, "forward" in ads, False, None)
        n_evals += n
        for plan in at:
            for pt in _parts(ctx, plan, raw, base, ads):
                s = slopes(pt.measured, th)
                key = (plan.k, pt.part, pt.j)
                d.setdefault(key, []).append(s.num)
                noise.setdefault(key, []).append(s.noise * TYPICAL_ROUNDING / th.noise_factor)
                ana[key] = pt.ana
    out, squares_of = [], {}
    for r in rows:
        found = next((p for p in todo if p.leaf.path == r.path), None)
        if found is None:
            out.append(r)
            continue
        plan = found
        sq, worst = np.zeros(4), []
        indices, shape = _indices(plan)
        for (k, part, j), ds in d.items():
            if k != plan.k:
                continue
            value, err = _richardson.extrapolate(np.stack(ds), np.stack(noise[k, part, j]))
            a = ana[k, part, j][r.autodiff]
            sq += [np.sum(value**2), np.sum(a**2), np.sum((value - a) ** 2), np.sum(err**2)]
            label = part_label(part, j, ctx.scalar)
            for i in np.argsort(-np.abs(value - a))[: th.max_worst]:
                index = tuple(int(x) for x in np.unravel_index(int(indices[i]), shape))
                worst.append(
                    EntryMismatch(index, float(value[i]), float(a[i]), float(abs(value[i] - a[i])),
                                  part=label)
                )  # fmt: skip
        rel = relative_error(sq[0], sq[1], sq[2])
        denom = float(np.sqrt(sq[0]) + np.sqrt(sq[1]))
        res = float(np.sqrt(sq[3]) / denom) if denom > 0 else float("inf")
        steps = _richardson.ladder(starts[plan.k])
        how = (
            f"Richardson extrapolation over steps {steps[0]:.0e} … {steps[-1]:.0e} gives "
            f"relative error {rel:.1e} with an estimated error of {res:.1e}"
        )
        tried = f"eps={plan.eps:g}" + (f" and {r.eps:.0e}" if r.eps != plan.eps else "")
        was = (
            f"single steps ({tried}) left it unresolved"
            if r.status == "unresolved"
            else f"at eps={r.eps:.0e} it differed by {r.relative_error:.1e}"
        )
        status: LeafStatus
        if rel <= th.tolerance and res <= th.tolerance:
            status, note = "verified", f"verified by {how}; {was}"
        elif rel > th.tolerance and rel > NOISE_MARGIN * res and rel > th.autodiff_floor:
            status, note = "wrong", f"{how}; {was}"
        elif rel > th.tolerance and rel > NOISE_MARGIN * res:
            status, note = "unresolved", f"{autodiff_rounding_note(rel, th)} ({how}; {was})"
        else:
            status = "unresolved"
            note = (
                f"the gradient is too small next to |f|, or f too noisy, for finite "
                f"differences in {th.compute_dtype}: neither a single step nor extrapolation "
                f"resolves it ({how}, above the tolerance {th.tolerance:g}; {was}); check this "
                "leaf on a loss without the large terms, or where its gradient is larger"
            )
        worst.sort(key=lambda w: -w.abs_error)
        squares_of[r.path, r.autodiff] = sq[:3]
        out.append(
            dataclasses.replace(
                r, status=status, relative_error=rel, verdict=verdict(rel), noise_floor=res,
                note=note, resolving_eps=None, worst=tuple(worst[: th.max_worst]),
            )
        )  # fmt: skip
    return out, n_evals, squares_of
