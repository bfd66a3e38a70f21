"""Judging Hessian columns: curvature, kinks, jumps and rounding told apart with steps.

For each moved entry ``e_i`` of a leaf the numerical column is the centered difference of
the gradient ``D(h) = (∇F(θ + h·e_i) − ∇F(θ − h·e_i)) / 2h``; each of its ``n`` rows is
judged like an entry at first order (:mod:`~gradlab.gradcheck.judging._judge`), with the gradient in
the role of ``f``. Rounding in a gradient row scales with the gradient as a whole, not with
the row: a row that is zero by symmetry (a shift-invariant logit offset) is computed as a
sum of O(1) terms that cancel, and its rounding is that of the terms. So the tests that
decide *what* an element is (suspect, kink, jump, rounding) use the scale ``max(|row|, G)``,
with ``G`` the gradient's largest entry; the noise a verified element may carry uses the
row's own scale, or what the steps measured when larger.

1. **First step** ``h``: every element. A leaf whose every element is smooth-looking (the
   one-sided differences agree, :func:`~gradlab.gradcheck.judging._slopes.suspects`) and agrees
   within tolerance at a resolution under it is verified there.
2. **Three steps** ``h/10``, ``h``, ``2h`` for the other leaves; per element:

   * **a jump** of the gradient (abs at 0, relu's step, ties in max or sort, a clip bound):
     ``∇F(θ+h) − ∇F(θ−h)`` does not shrink with the step;
   * **a kink** of the gradient (relu(x)·x at 0): both one-sided slopes stay put while
     their difference stands above rounding (as at first order);
   * both are points where the second derivative does not exist: left out of the relative
     error and counted; a leaf with them is inconclusive *with that reason*, never failed
     for them (its other elements can still fail it);
   * **rounding**: ``D(h)`` and ``D(h/10)`` agree within the modelled rounding: ``D(h)`` is
     taken, with ``|D(h) − D(h/10)| / 10`` as its measured rounding;
   * **truncation** (curvature that changes within the step, as for a Gaussian NLL at a
     small σ): the two Richardson extrapolations ``(4D(h) − D(2h))/3`` and
     ``(100·D(h/10) − D(h))/99`` agree far better than the differences themselves; the
     second is taken, with the extrapolations' disagreement as its error;
   * **a jump or kink crossed** between ``h/10`` and ``h`` (near, not at, θ): the one-sided
     slopes agree again at ``h/10``; ``D(h/10)`` is taken;
   * anything else: ``D(h)`` with ``|D(h) − D(h/10)|`` as its error (noise the model misses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from gradlab.gradcheck.evaluation._measured import Columns
from gradlab.gradcheck.judging._judge import NOISE_MARGIN, SECOND_STEP, judged_row
from gradlab.gradcheck.judging._slopes import KINK_NOISE, confirmed_kinks, slopes, suspects
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.report._bands import relative_error
from gradlab.gradcheck.report._leaf_report import EntryMismatch, LeafReport, LeafStatus

__all__ = ["Elements", "Part", "gradient_scale", "judge_first", "judge_steps", "leaf_row", "sums"]

#: ``c`` of the typical rounding ``c·u·|∇F|``: the resolution a verified leaf needs.
TYPICAL_ROUNDING = 1.0
#: Truncation: the two Richardson extrapolations agree within this fraction of ``|D(h) −
#: D(h/10)|`` (for an ``h²`` error they agree to ``O(h⁴)``; at a crossed jump they do not).
RICHARDSON_AGREEMENT = 0.1
#: A jump of the gradient: ``|∇F(θ+h/10) − ∇F(θ−h/10)|`` keeps more than this fraction of
#: ``|∇F(θ+h) − ∇F(θ−h)|`` (a smooth gradient keeps ``1/SECOND_STEP`` of it).
JUMP_KEPT = 0.5


def gradient_scale(c: Columns) -> float:
    """``G``: the largest entry of the gradient at θ and at the moved points."""
    parts = [np.abs(c.g0)] + [np.abs(x[np.isfinite(x)]) for x in (c.gp, c.gm)]
    return float(max((np.max(p) for p in parts if p.size), default=0.0))


@dataclasses.dataclass(frozen=True)
class Elements:
    """Per element ``(m·n,)``: the value judged, its error bounds and what it is."""

    num: np.ndarray
    err: np.ndarray  # the bound (c = noise_factor), or measured
    typical: np.ndarray  # the typical rounding (c = 1), or measured
    used: np.ndarray  # in the relative error
    singular: np.ndarray  # a jump or kink of the gradient: no second derivative
    nonfinite: np.ndarray
    restepped: np.ndarray  # judged at h/10 or by Richardson extrapolation
    suspect: np.ndarray  # (m,) columns to measure again


def judge_first(c: Columns, th: Thresholds) -> Elements:
    """The elements at the first step, and which columns need more steps."""
    local = slopes(c.measured(None), th)
    wide = slopes(c.measured(gradient_scale(c)), th)
    odd = suspects(wide, th)
    m = c.gp.shape[0]
    return Elements(
        num=local.num,
        err=local.noise,
        typical=local.noise * TYPICAL_ROUNDING / th.noise_factor,
        used=local.finite,
        singular=np.zeros(local.num.shape, bool),
        nonfinite=~local.finite,
        restepped=np.zeros(local.num.shape, bool),
        suspect=np.asarray(odd.reshape(m, -1).any(axis=1)),
    )


def judge_steps(c1: Columns, c_small: Columns, c_big: Columns, th: Thresholds) -> Elements:
    """The elements measured at ``h``, ``h/10`` and ``2h`` (see the module docstring)."""
    g = max(gradient_scale(c1), gradient_scale(c_small), gradient_scale(c_big))
    s1, s2, s3 = (slopes(c.measured(g), th) for c in (c1, c_small, c_big))
    loc1, loc2 = slopes(c1.measured(None), th), slopes(c_small.measured(None), th)
    span1, span2 = 2 * s1.h, 2 * s2.h
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        both = s1.finite & s2.finite
        odd1 = suspects(s1, th) & s1.finite
        moved1, moved2 = np.abs(s1.num) * span1, np.abs(s2.num) * span2
        jump = both & (moved2 > JUMP_KEPT * moved1) & (np.abs(s2.num) > KINK_NOISE * s2.noise)
        kink = both & odd1 & confirmed_kinks(s1, s2) & ~jump
        singular = jump | kink
        d12 = np.where(both, np.abs(s1.num - s2.num), 0.0)  # measured where both are finite
        apart = d12 > NOISE_MARGIN * (s1.noise + s2.noise)
        r_big = (4 * s1.num - s3.num) / 3
        r_small = (SECOND_STEP**2 * s2.num - s1.num) / (SECOND_STEP**2 - 1)
        r_err = np.abs(r_big - r_small)
        truncation = apart & s3.finite & (r_err <= RICHARDSON_AGREEMENT * d12)
        # a jump or kink between h/10 and h: gone at h/10 (rounding would grow it)
        left = (np.abs(s2.jump) < 2 * np.abs(s1.jump) / SECOND_STEP) & (moved2 < JUMP_KEPT * moved1)
        crossed = apart & ~truncation & left
    num = s1.num.copy()
    err = np.maximum(loc1.noise, d12 / SECOND_STEP)
    typical = np.maximum(loc1.noise * TYPICAL_ROUNDING / th.noise_factor, d12 / SECOND_STEP)
    noisy = apart & ~truncation & ~crossed
    err, typical = np.where(noisy, d12, err), np.where(noisy, d12, typical)
    for where, value, e, t in (
        (truncation, r_small, r_err + loc2.noise, r_err + loc2.noise / th.noise_factor),
        (crossed, s2.num, loc2.noise, loc2.noise / th.noise_factor),
    ):
        num, err, typical = (
            np.where(where, a, b) for a, b in ((value, num), (e, err), (t, typical))
        )
    # not finite at h, finite at h/10: judged there
    late = ~s1.finite & s2.finite
    num = np.where(late, s2.num, num)
    err = np.where(late, loc2.noise, err)
    typical = np.where(late, loc2.noise / th.noise_factor, typical)
    finite = s1.finite | s2.finite
    return Elements(
        num=num,
        err=np.where(finite, err, 0.0),
        typical=np.where(finite, typical, 0.0),
        used=finite & ~singular,
        singular=singular,
        nonfinite=~finite,
        restepped=(truncation | crossed | late) & ~singular,
        suspect=np.zeros(c1.gp.shape[0], bool),
    )


@dataclasses.dataclass(frozen=True)
class Part:
    """One (part, cotangent) of a leaf judged for one autodiff mode: sums and entries."""

    num_sq: float
    ana_sq: float
    diff_sq: float
    err_sq: float
    typical_sq: float
    n_singular: int
    n_nonfinite: int
    n_restepped: int
    worst: tuple[EntryMismatch, ...]
    singular: tuple[EntryMismatch, ...]


def sums(
    e: Elements,
    ana: np.ndarray,
    label: Callable[[int], tuple[tuple[int, ...], str]],
    th: Thresholds,
) -> Part:
    """The sums of one part and its worst and singular entries (``label(flat) → index, part``)."""
    used = e.used
    num = np.where(used, e.num, 0.0)
    a = np.where(used, ana, 0.0)
    err = np.where(e.used | e.singular, np.abs(e.num - ana), np.inf)
    err = np.where(e.singular, 0.0, err)

    def entry(j: int) -> EntryMismatch:
        index, part = label(int(j))
        return EntryMismatch(
            index=index,
            numerical=float(e.num[j]),
            analytical=float(ana[j]),
            abs_error=float(abs(e.num[j] - ana[j])),
            kink=bool(e.singular[j]),
            part=part,
        )

    order = np.argsort(-err, kind="stable")[: th.max_worst]
    return Part(
        num_sq=float(np.sum(num**2)),
        ana_sq=float(np.sum(a**2)),
        diff_sq=float(np.sum((num - a) ** 2)),
        err_sq=float(np.sum(np.where(used, e.err, 0.0) ** 2)),
        typical_sq=float(np.sum(np.where(used, e.typical, 0.0) ** 2)),
        n_singular=int(np.sum(e.singular)),
        n_nonfinite=int(np.sum(e.nonfinite)),
        n_restepped=int(np.sum(e.restepped)),
        worst=tuple(entry(j) for j in order if err[j] != 0.0),
        singular=tuple(entry(j) for j in np.flatnonzero(e.singular)[: th.max_worst]),
    )


def leaf_row(
    path: str,
    shape: tuple[int, ...],
    dtype: str,
    parts: list[Part],
    eps: float,
    th: Thresholds,
    autodiff: str,
) -> LeafReport:
    """The verdict on one leaf's block of Hessian columns from its judged parts.

    ``"wrong"`` when the relative error stands ``NOISE_MARGIN`` error floors clear of what the
    steps measured; ``"verified"`` when it is within tolerance at a typical floor within
    tolerance and every element was used; else ``"unresolved"`` with the reason (rounding,
    ``f`` not finite, no second derivative at some elements).
    """
    num_sq = sum(p.num_sq for p in parts)
    ana_sq = sum(p.ana_sq for p in parts)
    diff_sq = sum(p.diff_sq for p in parts)
    rel = relative_error(num_sq, ana_sq, diff_sq)
    denom = float(np.sqrt(num_sq) + np.sqrt(ana_sq))
    floor = float(np.sqrt(sum(p.err_sq for p in parts)) / denom) if denom > 0 else np.inf
    typical = float(np.sqrt(sum(p.typical_sq for p in parts)) / denom) if denom > 0 else np.inf
    n_singular = sum(p.n_singular for p in parts)
    n_nonfinite = sum(p.n_nonfinite for p in parts)
    worst = sorted((w for p in parts for w in p.worst), key=lambda w: -w.abs_error)
    status: LeafStatus
    note = ""
    if rel > th.tolerance and rel > NOISE_MARGIN * floor:
        status = "wrong"
        if n_singular:
            note = (
                f"relative error {rel:.2e} over the entries where the second derivative "
                f"exists ({n_singular} entries where it does not were left out)"
            )
    elif n_singular and (rel > th.tolerance or typical > th.tolerance) and not np.isfinite(floor):
        status = "unresolved"
        note = (
            f"the second derivative does not exist at {n_singular} entries: the gradient jumps "
            "or has a kink there (relu or abs at 0, ties in max or sort, a clip bound), "
            "confirmed at two steps; the other entries are zero on both sides"
        )
    elif rel > th.tolerance or typical > th.tolerance:
        status = "unresolved"
        note = (
            f"the Hessian is too small next to |∇f|, or ∇f too noisy, for differences of the "
            f"gradient in {th.compute_dtype} at eps={eps:g} (noise floor {floor:.1e})"
            if np.isfinite(floor)
            else (
                f"∇f does not change measurably along this leaf's entries at eps={eps:g}: "
                "its Hessian block is zero on both sides only up to rounding"
            )
        )
    elif n_nonfinite:
        status = "unresolved"
        note = (
            f"{n_nonfinite} entries leave f's domain (∇f(θ ± h) not finite at eps={eps:g} and "
            f"eps={eps / SECOND_STEP:g}): they were not verified"
        )
    elif n_singular:
        status = "unresolved"
        note = (
            f"the second derivative does not exist at {n_singular} entries: the gradient jumps "
            "or has a kink there (relu or abs at 0, ties in max or sort, a clip bound), "
            "confirmed at two steps; the other entries agree"
        )
    else:
        status = "verified"
    return judged_row(
        path, shape, dtype, rel, status, th,
        n_kinks=n_singular,
        n_nonfinite=n_nonfinite,
        floor=floor,
        ana_sq=ana_sq,
        worst=worst,
        eps=eps,
        n_restepped=sum(p.n_restepped for p in parts),
        kinks=[k for p in parts for k in p.singular],
        note=note,
        autodiff=autodiff,
    )  # fmt: skip
