"""Judging a leaf from its finite differences: agreement established, or not.

Per entry ``i`` of a leaf (one real part, one cotangent), with ``f0 = f(θ)`` and ``f± =
f(θ ± h·e_i)`` from ONE compiled program and the steps actually taken ``h+ > 0 > h−``:

* centered difference ``num = (f+ − f−) / (h+ − h−)``; one-sided ``fwd = (f+ − f0) / h+``,
  ``bwd = (f0 − f−) / (−h−)``; their disagreement ``jump = fwd − bwd``;
* rounding: each evaluation is off by about ``e = c·u·scale`` (``u`` the unit roundoff of the
  precision ``f`` computes in, ``c = noise_factor``), so ``num`` carries ``e·2/(h+ − h−)``
  and each one-sided slope ``2e/h``.

A leaf is **verified** only when agreement is *established* for every entry: the lecture's
relative error ``||num − ana|| / (||num|| + ||ana||)`` over the entries is within tolerance,
and every entry left out of that sum was checked another way. Nothing is excluded because it
looks odd. The one-sided slopes disagree for four reasons, and only one is a kink:

1. **curvature**: ``jump ≈ f''·h`` shrinks with the step;
2. **a kink** (relu at 0, ties in a max, abs at 0, a clip bound): ``jump`` stays as the
   step shrinks, and the one-sided slopes themselves do not move;
3. **rounding**: ``jump`` grows like ``1/h`` as the step shrinks, at random;
4. an ``f(θ)`` from another program, or a non-deterministic ``f`` (ruled out before: the
   sweep evaluates ``f(θ)`` in the same program, and the check compares programs).

So entries whose slopes disagree at the first step ("suspects", with entries where ``f``
was not finite) are evaluated again at ``h/10`` (:data:`SECOND_STEP`). An entry is a
**confirmed kink** when both one-sided slopes stay put (within :data:`KINK_STABILITY` of the
jump; curvature moves each by ``0.45·jump``) and the jump stands above rounding at both
steps. A confirmed kink is still checked: the analytical value must lie between the
one-sided slopes (a subgradient check), else the entry is wrong. Other suspects stay in the
relative error: with the first step's difference, or the second's when the two disagree
beyond rounding (a kink closer than ``h`` but farther than ``h/10``).

The noise floor (the relative error rounding alone can cause) is the model's ``e``, or,
when larger, what a few random entries ("probes") measured: ``|num(h) − num(h/10)| / 10``
estimates the rounding of ``num(h)`` from the computation itself, which the model misses
when intermediates are far larger than ``f`` or pieces of ``f`` compute in low precision.
A leaf is **verified** when its relative error AND its resolution (the noise floor for the
typical rounding ``u·|f|``, or what the probes measured) are within tolerance: an agreement
that rounding could fake, such as ``0 = 0`` when ``f``'s change is below its last bit,
establishes nothing. It is **wrong** when the error stands ``NOISE_MARGIN`` floors
clear of rounding (or a kink fails its subgradient check), else **unresolved**: the check
retries it at the step its floor asks for, and stays inconclusive if that does not settle
it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from gradlab.gradcheck.evaluation._measured import Measured
from gradlab.gradcheck.judging._slopes import KINK_NOISE, _subgradient_ok, finite_kinks, slopes
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.report._bands import relative_error, verdict
from gradlab.gradcheck.report._leaf_report import EntryMismatch, LeafReport, LeafStatus

__all__ = [
    "NOISE_MARGIN",
    "SECOND_STEP",
    "PartResult",
    "autodiff_rounding_note",
    "judge_leaf",
    "judge_part",
]

#: A wrong leaf must disagree by more than this many noise floors.
NOISE_MARGIN = 3.0
#: Suspects are evaluated again at ``h / SECOND_STEP``.
SECOND_STEP = 10.0
#: ``c`` of the typical rounding ``c·u·|f|`` of one evaluation: the resolution a verified
#: leaf needs (the bound ``noise_factor`` decides between wrong and unresolved).
TYPICAL_ROUNDING = 1.0
#: The range of a conservative gradient at a tie is measured from f sampled on lines
#: through nearby points (see ``_ties._slope_range``); a kink between two samples smears
#: its jump over a secant, so the range is known to this fraction of its ends.
TIE_RESOLUTION = 1e-2
#: Largest step the check retries an unresolved leaf at (relative to the leaf's scale):
#: beyond it the truncation error O(h²) of centered differences is no longer negligible.
MAX_RETRY_EPS = 1e-2
#: The same in the float32 fallback, whose steps start at ~1.4e-2 (truncation, measured by
#: the probes, then enters the noise floor).
MAX_RETRY_EPS_FLOAT32 = 1e-1


@dataclasses.dataclass(frozen=True)
class PartResult:
    """One part of a leaf (real/imaginary part, one cotangent), judged.

    ``num_sq``, ``ana_sq``, ``diff_sq``, ``noise_sq`` are sums over the entries in the
    relative error (all but confirmed kinks and entries never finite); ``probe_noise`` the
    per-probe rounding estimates ``|num(h) − num(h/10)| / 10``.
    """

    num_sq: float
    ana_sq: float
    diff_sq: float
    noise_sq: float
    n_used: int
    n_kinks: int
    n_bad_kinks: int
    n_nonfinite: int
    n_restepped: int
    probe_noise: np.ndarray
    worst: tuple[EntryMismatch, ...]
    kinks: tuple[EntryMismatch, ...] = ()
    bad_at: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    n_tied: int = 0  # kinks outside their slopes here, verified at a nearby θ + δ instead


@dataclasses.dataclass(frozen=True)
class Second:
    """The second-step evaluations of a part: positions and what was measured there.

    Positions index into the first step's entries.
    """

    at: np.ndarray
    measured: Measured
    probes: np.ndarray  # positions (into the first step's entries) of the probes


def judge_part(
    shape: tuple[int, ...],
    indices: np.ndarray,
    ana: np.ndarray,
    first: Measured,
    th: Thresholds,
    second: Second | None = None,
    part: str = "",
    nearby: tuple[np.ndarray, np.ndarray] | None = None,
) -> PartResult:
    """Judges the entries of one part of a leaf.

    Args:
        shape: The leaf's shape (for reporting indices).
        indices: Flat indices of the entries ``(m,)`` (positions for directions).
        ana: The analytical value per entry ``(m,)``.
        first: The evaluations at the check's step.
        th: The thresholds.
        second: Evaluations of some entries at ``h / SECOND_STEP``; None before (then no
            entry is a confirmed kink and entries never finite count as unverified).
        part: Label of worst entries (``"real"``, ``"v0"``, ...).
        nearby: Per entry ``(lo, hi)``: the range of ``f``'s slopes at nearby points
            ``θ + δ_j`` where ties are broken (NaN where not measured; see
            :mod:`~gradlab.gradcheck.judging._verify`). A confirmed kink outside its one-sided
            slopes but within that range (and the slopes) is counted as a tie, not as bad.

    Returns:
        The part's sums, counts and worst entries.
    """
    s1 = slopes(first, th)
    num, noise = s1.num.copy(), s1.noise.copy()
    finite = s1.finite.copy()
    kink = np.zeros(num.shape, bool)
    bad = np.zeros(num.shape, bool)
    restepped = np.zeros(num.shape, bool)
    probe_noise = np.zeros(0)
    if second is not None and second.at.size:
        at = second.at
        a1 = dataclasses.replace(
            s1, **{f.name: getattr(s1, f.name)[at] for f in dataclasses.fields(s1)}
        )
        s2 = slopes(second.measured, th)
        kink[at] = finite_kinks(a1, s2)
        bad[at] = kink[at] & ~_subgradient_ok(a1, s2, ana[at], th)
        with np.errstate(invalid="ignore"):
            apart = np.abs(a1.num - s2.num) > NOISE_MARGIN * (a1.noise + s2.noise)
            # a kink between h/10 and h: the jump vanishes at h/10 (rounding would grow it)
            left = np.abs(s2.jump) < 2 * np.abs(a1.jump) / SECOND_STEP
        # entries not finite at h but finite at h/10, or with a kink between the two steps:
        # judged by the second step's difference
        use2 = s2.finite & ~kink[at] & (~a1.finite | (apart & left))
        num[at[use2]], noise[at[use2]] = s2.num[use2], s2.noise[use2]
        finite[at[use2]] = True
        restepped[at[use2]] = True
        on_probe = np.isin(at, second.probes) & a1.finite & s2.finite & ~kink[at] & ~use2
        # |num(h) − num(h/10)| is rounding at h/10 (10× that at h) when the model explains
        # it, else truncation at h (or rounding the model misses): taken whole
        d = np.abs(a1.num[on_probe] - s2.num[on_probe])
        explained = d <= NOISE_MARGIN * s2.noise[on_probe]
        probe_noise = np.where(explained, d / SECOND_STEP, d)
    n_tied = 0
    if nearby is not None and bad.any():
        ends = np.stack([nearby[0], nearby[1], s1.fwd, s1.bwd])
        with np.errstate(invalid="ignore"):
            lo, hi = ends.min(axis=0), ends.max(axis=0)
            slack = TIE_RESOLUTION * (np.abs(lo) + np.abs(hi)) + KINK_NOISE * s1.noise_one_sided
            tie = bad & (ana >= lo - slack) & (ana <= hi + slack)
        n_tied = int(np.sum(tie))
        bad &= ~tie
    bad_at = np.flatnonzero(bad)
    used = finite & ~kink
    diff = np.where(used, num - ana, 0.0)
    err = np.where(finite | kink, np.abs(num - ana), np.inf)
    err = np.where(kink & ~bad, 0.0, err)  # a verified kink is not a mismatch

    def entry(j: int) -> EntryMismatch:
        return EntryMismatch(
            index=tuple(int(i) for i in np.unravel_index(int(indices[j]), shape)),
            numerical=float(num[j]),
            analytical=float(ana[j]),
            abs_error=float(abs(num[j] - ana[j])),
            kink=bool(kink[j]),
            part=part,
            one_sided=(float(s1.bwd[j]), float(s1.fwd[j])) if kink[j] else None,
        )

    order = np.argsort(-err, kind="stable")[: th.max_worst]
    worst = [entry(j) for j in order if err[j] != 0.0]
    kinks = [entry(j) for j in np.flatnonzero(kink)[: th.max_worst]]
    return PartResult(
        num_sq=float(np.sum(np.where(used, num, 0.0) ** 2)),
        ana_sq=float(np.sum(np.where(used, ana, 0.0) ** 2)),
        diff_sq=float(np.sum(diff**2)),
        noise_sq=float(np.sum(np.where(used, noise, 0.0) ** 2)),
        n_used=int(np.sum(used)),
        n_kinks=int(np.sum(kink)),
        n_bad_kinks=int(np.sum(bad)),
        n_nonfinite=int(np.sum(~finite & ~kink)),
        n_restepped=int(np.sum(restepped)),
        probe_noise=probe_noise,
        worst=tuple(worst),
        kinks=tuple(kinks),
        bad_at=bad_at,
        n_tied=n_tied,
    )


def squares(parts: list[PartResult]) -> np.ndarray:
    """``(||num||², ||ana||², ||num − ana||²)`` summed over parts (for overall errors)."""
    return np.array(
        [sum(p.num_sq for p in parts), sum(p.ana_sq for p in parts), sum(p.diff_sq for p in parts)]
    )


def _floor(parts: list[PartResult], denom: float, model: float = 1.0) -> float:
    """The relative error rounding alone can cause.

    The model's (scaled by ``model``), or the probes' if larger.
    """
    noise_sq = sum(p.noise_sq for p in parts) * model**2
    measured = np.concatenate([p.probe_noise for p in parts])
    if measured.size:
        n_used = sum(p.n_used for p in parts)
        noise_sq = max(noise_sq, n_used * float(np.median(measured)) ** 2)
    if denom > 0:
        return float(np.sqrt(noise_sq) / denom)
    return 0.0 if noise_sq == 0 else float("inf")


def autodiff_rounding_note(rel: float, th: Thresholds) -> str:
    """Why a difference within the analytical side's own rounding is no verdict."""
    return (
        f"relative error {rel:.1e}: autodiff runs custom rules kept as written in a lower "
        f"precision than the finite differences, whose rounding explains up to "
        f"{th.autodiff_floor:.1e}; a wrong rule is told apart above that (the precision "
        "audit checks that path on its own)"
    )


def judge_leaf(
    path: str,
    shape: tuple[int, ...],
    dtype: str,
    parts: list[PartResult],
    eps: float,
    th: Thresholds,
    scale: float = 1.0,
    order: int = 1,
) -> LeafReport:
    """The verdict on one leaf from its judged parts.

    Args:
        path: The leaf's pytree path.
        shape: Its shape.
        dtype: Its dtype as given.
        parts: :func:`judge_part` of each (real/imaginary part, cotangent).
        eps: The step the parts were evaluated at.
        th: The thresholds.
        scale: The size of the leaf's entries (``max(1, rms|θ|)``): retry steps scale with it.
        order: 1 for gradients, 2 for Hessian-vector products (wording of notes).

    Returns:
        The leaf's row: ``"verified"`` only when agreement was established for every entry.
    """
    num_sq, ana_sq, diff_sq = squares(parts)
    n_kinks = sum(p.n_kinks for p in parts)
    n_bad = sum(p.n_bad_kinks for p in parts)
    n_nonfinite = sum(p.n_nonfinite for p in parts)
    worst = sorted((w for p in parts for w in p.worst), key=lambda w: -w.abs_error)
    rel = relative_error(num_sq, ana_sq, diff_sq)
    denom = float(np.sqrt(num_sq) + np.sqrt(ana_sq))
    floor = _floor(parts, denom)  # the bound: c = noise_factor, or the probes
    typical = _floor(parts, denom, TYPICAL_ROUNDING / th.noise_factor)  # c = 1, or the probes

    status: LeafStatus
    retry_eps, note = None, ""
    if n_bad:
        status = "wrong"
        note = (
            f"{n_bad} entries sit at kinks where the analytical value lies outside the "
            "one-sided slopes (not a subgradient)"
        )
    elif rel > th.tolerance and rel > NOISE_MARGIN * floor and rel > th.autodiff_floor:
        status = "wrong"
        if ana_sq == 0.0 and order == 1:
            note = (
                f"relative error {rel:.2e}: the analytical gradient is exactly 0 here while f "
                "changes: a stop_gradient, a custom rule returning zeros, or an integer cast "
                "cuts it"
            )
    elif rel > th.tolerance and rel > NOISE_MARGIN * floor:  # within autodiff_floor
        status = "unresolved"
        note = autodiff_rounding_note(rel, th)
    elif rel > th.tolerance or typical > th.tolerance:
        # not within tolerance, or within it at a resolution that could not tell: an
        # agreement rounding could fake (0 = 0 when f's change is below its last bit) is no
        # agreement
        status = "unresolved"
        needed = eps * NOISE_MARGIN * typical / th.tolerance
        what, size = ("gradient", "|f|") if order == 1 else ("Hessian", "|∇f|")
        largest = MAX_RETRY_EPS if th.compute_dtype == "float64" else MAX_RETRY_EPS_FLOAT32
        if np.isfinite(needed) and needed <= largest * scale:
            retry_eps = float(needed)
            note = (
                f"rounding noise dominates at eps={eps:g} (noise floor {floor:.1e}); "
                f"eps={needed:.0e} would resolve it"
            )
        else:
            if np.isfinite(needed) and largest * scale > eps:
                # no admissible step resolves it to the tolerance, but the largest one can
                # still tell a gross error from rounding: retried there
                retry_eps = float(largest * scale)
            note = (
                (
                    f"f does not change measurably along this leaf's entries at eps={eps:g}: its "
                    f"{what} is zero on both sides only up to rounding, which establishes nothing"
                )
                if not np.isfinite(floor)
                else (
                    f"the {what} is too small next to {size}, or f too noisy, for finite "
                    f"differences in {th.compute_dtype} (noise floor {floor:.1e} at eps={eps:g}; "
                    f"a step of {needed:.0e} would be needed); check this leaf on a loss without "
                    f"the large terms, or where its {what} is larger"
                )
            )
    elif n_nonfinite:
        status = "unresolved"
        note = (
            f"{n_nonfinite} entries leave f's domain (f(θ ± h) not finite at eps={eps:g} "
            f"and eps={eps / SECOND_STEP:g}): their gradient was not verified"
        )
    else:
        status = "verified"
    return judged_row(
        path, shape, dtype, rel, status, th,
        n_kinks=n_kinks,
        n_nonfinite=n_nonfinite,
        floor=floor,
        ana_sq=ana_sq,
        worst=worst,
        eps=eps,
        n_restepped=sum(p.n_restepped for p in parts),
        kinks=[k for p in parts for k in p.kinks],
        note=note,
        resolving_eps=retry_eps,
        n_ties=sum(p.n_tied for p in parts),
    )  # fmt: skip


def judged_row(
    path: str,
    shape: tuple[int, ...],
    dtype: str,
    rel: float,
    status: LeafStatus,
    th: Thresholds,
    *,
    n_kinks: int,
    n_nonfinite: int,
    floor: float,
    ana_sq: float,
    worst: Sequence[EntryMismatch],
    eps: float,
    n_restepped: int,
    kinks: Sequence[EntryMismatch],
    note: str,
    **fields: Any,
) -> LeafReport:
    """A judged leaf's row: what every order fills in; ``fields``, what one order adds."""
    return LeafReport(
        path=path,
        shape=shape,
        dtype=dtype,
        relative_error=rel,
        verdict=verdict(rel),
        status=status,
        n_kinks=n_kinks,
        n_nonfinite=n_nonfinite,
        noise_floor=floor,
        grad_norm=float(np.sqrt(ana_sq)),
        worst=tuple(worst[: th.max_worst]),
        note=note,
        eps=eps,
        n_restepped=n_restepped,
        kinks=tuple(kinks)[: th.max_worst],
        **fields,
    )
