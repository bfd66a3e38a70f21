"""From raw evaluations to a verdict: differences, kinks, the rounding noise floor.

Conventions, per entry ``i`` of a leaf, with ``f0 = f(θ)``, ``f± = f(θ ± h·e_i)`` and the
steps actually taken ``h+ > 0 > h−``:

* numerical gradient (centered): ``num = (f+ − f−) / (h+ − h−)``
* one-sided differences: ``fwd = (f+ − f0) / h+``, ``bwd = (f0 − f−) / (−h−)``
* rounding in ``f``: each evaluation carries an error of about ``e = c·u·|f|`` with ``u`` the
  unit roundoff of ``f``'s output dtype and ``c = noise_factor``; the centered difference then
  carries up to ``2e / (h+ − h−)`` and each one-sided difference up to ``2e / h``.
* a kink: ``|fwd − bwd|`` larger than ``kink_tolerance`` times the size of the slopes (and than
  the leaf's typical slope) and than the rounding noise of a one-sided difference. On a smooth
  function ``fwd − bwd ≈ f''·h``, tiny at small ``h``; at a kink it is the jump in slope.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradlab.gradcheck.bands import relative_error, verdict
from gradlab.gradcheck.report import EntryMismatch, LeafReport, LeafStatus

__all__ = ["LeafSums", "Thresholds", "analyse_part", "combine"]

#: A wrong leaf must disagree by more than this many noise floors.
NOISE_MARGIN = 3.0
#: Largest step worth suggesting: beyond it the truncation error O(h²) of centered
#: differences is no longer negligible for parameters of order one.
MAX_SUGGESTED_EPS = 1e-3


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """The numbers a check is judged by."""

    tolerance: float
    kink_tolerance: float
    noise_factor: float
    unit_roundoff: float
    max_worst: int


@dataclasses.dataclass(frozen=True)
class LeafSums:
    """Squared norms of one leaf (or part of one) over its non-excluded entries."""

    num_sq: float
    ana_sq: float
    diff_sq: float
    noise_sq: float
    n_kinks: int
    n_nonfinite: int
    n_used: int
    worst: tuple[EntryMismatch, ...]


def analyse_part(
    shape: tuple[int, ...],
    f0: float,
    f_plus: np.ndarray,
    f_minus: np.ndarray,
    h_plus: np.ndarray,
    h_minus: np.ndarray,
    analytical: np.ndarray,
    th: Thresholds,
    indices: np.ndarray | None = None,
    part: str = "",
) -> LeafSums:
    """Differences, kinks and noise over the checked entries of one real part of a leaf.

    Args:
        shape: The leaf's shape (for reporting indices).
        f0: ``f(θ)``.
        f_plus: ``f(θ + h+·e_i)`` per checked entry.
        f_minus: ``f(θ + h−·e_i)`` per checked entry.
        h_plus: Steps actually taken upwards (positive).
        h_minus: Steps actually taken downwards (negative).
        analytical: ``jax.grad``'s value per checked entry.
        th: The thresholds.
        indices: Flat indices of the checked entries (all entries when None).
        part: ``"real"``/``"imag"`` for complex leaves.

    Returns:
        The leaf's sums, counts and worst entries.
    """
    span = h_plus - h_minus
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        num = (f_plus - f_minus) / span
        fwd = (f_plus - f0) / h_plus
        bwd = (f0 - f_minus) / (-h_minus)
        finite = np.isfinite(f_plus) & np.isfinite(f_minus) & np.isfinite(num)
        scale = np.maximum(np.maximum(abs(f0), np.abs(f_plus)), np.abs(f_minus))
        err_f = th.noise_factor * th.unit_roundoff * np.where(finite, scale, 0.0)
        noise = 2.0 * err_f / span
        noise_one_sided = 2.0 * err_f / np.minimum(h_plus, -h_minus)
        rms = np.sqrt(np.mean(np.where(finite, num, 0.0) ** 2)) if num.size else 0.0
        jump = np.abs(fwd - bwd)
        slope = np.maximum(np.abs(fwd) + np.abs(bwd), rms)
        kink = finite & (jump > th.kink_tolerance * slope) & (jump > 4.0 * noise_one_sided)
    used = finite & ~kink
    diff = np.where(used, num - analytical, 0.0)
    num_u = np.where(used, num, 0.0)
    ana_u = np.where(used, analytical, 0.0)

    order = np.argsort(-np.abs(np.where(finite, num - analytical, np.inf)), kind="stable")
    if indices is None:
        indices = np.arange(num.size)
    worst = []
    for j in order[: th.max_worst]:
        err = abs(num[j] - analytical[j])
        if err == 0.0:
            break
        worst.append(
            EntryMismatch(
                index=tuple(int(i) for i in np.unravel_index(int(indices[j]), shape)),
                numerical=float(num[j]),
                analytical=float(analytical[j]),
                abs_error=float(err),
                kink=bool(kink[j]),
                part=part,
            )
        )
    return LeafSums(
        num_sq=float(np.sum(num_u**2)),
        ana_sq=float(np.sum(ana_u**2)),
        diff_sq=float(np.sum(diff**2)),
        noise_sq=float(np.sum(np.where(used, noise, 0.0) ** 2)),
        n_kinks=int(np.sum(kink)),
        n_nonfinite=int(np.sum(~finite)),
        n_used=int(np.sum(used)),
        worst=tuple(worst),
    )


def combine(
    path: str,
    shape: tuple[int, ...],
    dtype: str,
    parts: list[LeafSums],
    eps: float,
    th: Thresholds,
) -> LeafReport:
    """Judges one leaf from the sums of its parts (one part, or real and imaginary)."""
    num_sq = sum(p.num_sq for p in parts)
    ana_sq = sum(p.ana_sq for p in parts)
    diff_sq = sum(p.diff_sq for p in parts)
    noise_sq = sum(p.noise_sq for p in parts)
    n_kinks = sum(p.n_kinks for p in parts)
    n_nonfinite = sum(p.n_nonfinite for p in parts)
    n_used = sum(p.n_used for p in parts)
    worst = sorted((w for p in parts for w in p.worst), key=lambda w: -w.abs_error)

    rel = relative_error(num_sq, ana_sq, diff_sq)
    denom = np.sqrt(num_sq) + np.sqrt(ana_sq)
    if denom > 0:
        floor = float(np.sqrt(noise_sq) / denom)
    else:
        floor = 0.0 if noise_sq == 0 else float("inf")

    status: LeafStatus
    resolving_eps = None
    note = ""
    if n_used == 0 and (n_kinks or n_nonfinite):
        status = "unresolved"
        note = "every entry sits at a kink or leaves f's domain"
    elif rel <= th.tolerance:
        status = "verified"
    elif rel <= NOISE_MARGIN * floor:
        status = "unresolved"
        needed = eps * NOISE_MARGIN * floor / th.tolerance
        if np.isfinite(needed) and needed <= MAX_SUGGESTED_EPS:
            resolving_eps = float(needed)
            note = f"rounding noise dominates at eps={eps:g}; eps={needed:.0e} would resolve it"
        else:
            note = (
                "the gradient is too small next to |f| for finite differences in float64 "
                f"(a step of {needed:.0e} would be needed); check this leaf on a loss "
                "without the large terms, or where its gradient is larger"
            )
    else:
        status = "wrong"
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
        resolving_eps=resolving_eps,
        note=note,
    )
