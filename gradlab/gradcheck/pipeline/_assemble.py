"""The check's report assembled: the judged rows, the audit, the outcome and its notes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from gradlab.gradcheck.evaluation._auto_step import AutoStep
from gradlab.gradcheck.evaluation._sweep import (
    Context,
)
from gradlab.gradcheck.judging._audit import AuditRow
from gradlab.gradcheck.judging._consistency import Consistency
from gradlab.gradcheck.judging._verify import Verified
from gradlab.gradcheck.planning import _directional as directional
from gradlab.gradcheck.planning._options import CheckOptions
from gradlab.gradcheck.planning._plan import Base, LeafPlan
from gradlab.gradcheck.planning._problem import Problem
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.planning._vjp import (
    Output,
    describe_projection,
    split_cotangents,
)
from gradlab.gradcheck.programs._promote import Promotion
from gradlab.gradcheck.report._bands import relative_error, verdict
from gradlab.gradcheck.report._leaf_report import LeafReport
from gradlab.gradcheck.report._report import CheckReport, Outcome


def _report(
    prep: _Prepared,
    found: Verified,
    same: Consistency,
    audited: Sequence[AuditRow],
    opts: CheckOptions,
    ad_name: str,
    compute: str,
    precision_note: str,
    start: float,
) -> CheckReport:
    """The report: rows, the outcome and why, and what the reader should know."""
    rows = found.rows
    if prep.auto:
        paths = [x.path for x in prep.problem.checked]
        est = {p: a.estimated_error for p, a in zip(paths, prep.auto, strict=True)}
        rows = [dataclasses.replace(r, estimated_error=est[r.path]) for r in rows]
    notes = [precision_note] if precision_note else []
    notes += _notes(found.n_unstable, compute, prep.base.out_dtype, prep.problem, opts.mode)
    if prep.promotion.lowest is not None:
        notes.append(
            f"f still computes in {prep.promotion.lowest} where it could not be promoted (see "
            "'kept as written'): that rounding, not float64's, sets the noise floors."
        )
    elif prep.th.autodiff_floor > 0:
        notes.append(
            f"autodiff runs f's custom rules as written, in {prep.promotion.autodiff_lowest} "
            "(see 'kept as written'), while the finite differences run their primals in "
            f"{compute}: a gradient that differs by less than that rounding explains "
            f"({prep.th.autodiff_floor:.1e}, relative) is not called wrong."
        )
    if same.primal_differs is not None and same.deterministic:
        notes.append(
            f"the autodiff program's f(θ) differs from f's own evaluation by "
            f"{same.primal_differs:.1e} (relative): a custom rule whose forward pass computes "
            "something other than f. The one-sided differences use f's own evaluation."
        )
    notes += [a.note() for a in audited if a.ok and a.lowest is not None]
    outcome, reasons = _outcome(rows, same, audited)
    output, cots = prep.output, prep.cots
    rel = relative_error(*found.totals)
    return CheckReport(
        outcome=outcome,
        relative_error=rel,
        verdict=verdict(rel),
        leaves=tuple(rows),
        skipped=tuple(f"{leaf.path} ({leaf.dtype})" for leaf in prep.problem.skipped),
        eps=_report_eps(opts.eps, prep.steps),
        tolerance=prep.th.tolerance,
        dtype=compute,
        value=float(prep.base.plain[0]),
        n_evaluations=found.n_evaluations + sum(a.n_evaluations for a in prep.auto),
        seconds=time.perf_counter() - start,
        entries=_mode_text(opts),
        notes=tuple(notes),
        order=opts.order,
        autodiff=ad_name,
        output="scalar"
        if output.scalar
        else describe_projection(output, opts.cotangents, opts.seed),
        projections=() if cots is None else split_cotangents(cots, opts.cotangents),
        reasons=tuple(reasons),
        stages=tuple(found.stages.items()),
        promoted=tuple(
            prep.promotion.lines() + [f"kept as written: {w}" for w in prep.promotion.kept]
        ),
    )


def _report_eps(eps: float | str | None, steps: Sequence[float]) -> float | str:
    if eps == "auto":
        return "auto"
    if len(set(steps)) > 1:
        return "per leaf"
    return steps[0]


def _mode_text(opts: CheckOptions) -> str:
    if opts.mode == "sample":
        return (
            f"sample ({opts.samples} entries per leaf, uniform without replacement, "
            f"seed {opts.seed})"
        )
    if opts.mode == "directional":
        return directional.describe(opts.directions, opts.seed)
    return opts.mode


def _outcome(
    rows: Sequence[LeafReport], same: Consistency, audited: Sequence[AuditRow]
) -> tuple[Outcome, list[str]]:
    """passed, failed or inconclusive, and why, each reason with what to do."""
    failed, open_ = [], []
    if not same.deterministic:
        failed.append(
            f"f is not deterministic: f(θ) evaluated by different programs differs by "
            f"{same.spread:.1e} (relative), so its finite differences measure that noise. "
            f"{same.cause}."
        )
    for row in rows:
        ad = f" ({row.autodiff} mode)" if row.autodiff != "reverse" else ""
        if row.status == "wrong":
            why = row.note or f"relative error {row.relative_error:.2e} ({row.verdict})"
            failed.append(f"the gradient of {row.path}{ad} is wrong: {why}.")
        elif row.status == "unresolved":
            open_.append(f"{row.path}{ad} was not verified: {row.note}.")
    for a in audited:
        if not a.ok:
            failed.append(a.reason())
    if failed:
        return "failed", failed + open_
    if open_:
        return "inconclusive", open_
    return "passed", []


def _notes(n_unstable: int, compute: str, out_dtype: str, problem: Problem, mode: str) -> list[str]:
    """What the reader of a report should know beyond the table."""
    notes = []
    if n_unstable:
        notes.append(
            f"{n_unstable} perturbed evaluations of f gave different values when repeated: "
            "f is not deterministic, so finite differences there are unreliable."
        )
    if compute == "float64" and out_dtype != "float64":
        notes.append(
            f"f returns {out_dtype} even with float64 inputs: it casts internally, so the "
            "check only resolves gradients to that precision."
        )
    if any(np.issubdtype(leaf.dtype, np.complexfloating) for leaf in problem.checked):
        how = (
            "along complex directions (real and imaginary parts moved together)"
            if mode == "directional"
            else "as real and imaginary parts"
        )
        notes.append(
            f"complex leaves are checked {how}; JAX's convention for a real f is "
            "grad = ∂f/∂re − i·∂f/∂im, compared as (∂f/∂re, ∂f/∂im)."
        )
    return notes


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """Everything known about a check before its sweep: f at θ and the plan."""

    problem: Problem
    dyn: tuple[Any, ...]
    output: Output
    cots: Any
    base: Base
    promotion: Promotion
    th: Thresholds
    ctx: Context
    steps: list[float]
    auto: list[AutoStep]
    plans: list[LeafPlan]
