"""Second-order and ``check_rule`` judging: differences, kink flags, the rounding noise floor.

The first-order check judges in :mod:`~gradlab.gradcheck._judge` (kinks confirmed at a second
step and checked as subgradients). In second-order checks kink-like entries are flagged but
never left out of a leaf's relative error: a leaf with them is ``"unresolved"`` unless it
verifies with them in. ``check_rule`` leaves them out of its finite-difference columns only;
its verdict on the rule compares it with autodiff over every entry.

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
  ``kink_tolerance`` is meant for the lecture's step 1e-7; for larger steps (order 2,
  ``eps="auto"``, float32) it grows like ``h / 1e-7``, up to 0.5 (``|fwd − bwd|`` never
  exceeds ``|fwd| + |bwd|``, so a kink must be told apart from curvature below that).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradlab.gradcheck._bands import relative_error, verdict
from gradlab.gradcheck._judge import Thresholds
from gradlab.gradcheck._report import EntryMismatch, LeafReport, LeafStatus

__all__ = [
    "Differences",
    "LeafSums",
    "Thresholds",
    "analyse_part",
    "combine",
    "differences",
    "squares",
]

#: A wrong leaf must disagree by more than this many noise floors.
NOISE_MARGIN = 3.0
#: The step ``kink_tolerance`` is stated for; it scales with ``h`` beyond it, up to
#: ``MAX_KINK_TOLERANCE``.
KINK_REFERENCE_STEP = 1e-7
MAX_KINK_TOLERANCE = 0.5
#: Largest step worth suggesting: beyond it the truncation error O(h²) of centered
#: differences is no longer negligible for parameters of order one.
MAX_SUGGESTED_EPS = 1e-3


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


@dataclasses.dataclass(frozen=True)
class Differences:
    """Per entry: the centered difference, its rounding noise, and where it can be trusted."""

    num: np.ndarray
    noise: np.ndarray
    kink: np.ndarray
    finite: np.ndarray


def differences(
    f0: float | np.ndarray,
    f_plus: np.ndarray,
    f_minus: np.ndarray,
    h_plus: np.ndarray,
    h_minus: np.ndarray,
    th: Thresholds,
    scale: float | np.ndarray | None = None,
) -> Differences:
    """Centered differences, their rounding noise and the kinks among them.

    Args:
        f0: ``f(θ)`` (broadcast against the other arrays).
        f_plus: ``f(θ + h+·e_i)`` per entry.
        f_minus: ``f(θ + h−·e_i)`` per entry.
        h_plus: Steps actually taken upwards (positive).
        h_minus: Steps actually taken downwards (negative).
        th: The thresholds.
        scale: The size rounding in ``f`` scales with; default ``max(|f0|, |f+|, |f−|)``.
            For a projection ``<v, f>`` it is ``Σ|v|·|f|``.

    Returns:
        The differences, noise, kink flags and finiteness flags per entry.

    Example:
        >>> th = Thresholds(1e-6, 1e-4, 8.0, 2.2e-16, 5)
        >>> x, h = np.array([0.0, 1.0]), np.full(2, 1e-7)
        >>> d = differences(np.abs(x), np.abs(x + h), np.abs(x - h), h, -h, th)
        >>> d.num.round(6).tolist(), d.kink.tolist()
        ([0.0, 1.0], [True, False])
    """
    span = h_plus - h_minus
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        num = (f_plus - f_minus) / span
        fwd = (f_plus - f0) / h_plus
        bwd = (f0 - f_minus) / (-h_minus)
        finite = np.isfinite(f_plus) & np.isfinite(f_minus) & np.isfinite(num)
        if scale is None:
            scale = np.maximum(np.maximum(np.abs(f0), np.abs(f_plus)), np.abs(f_minus))
        err_f = th.noise_factor * th.unit_roundoff * np.where(finite, scale, 0.0)
        noise = 2.0 * err_f / span
        noise_one_sided = 2.0 * err_f / np.minimum(h_plus, -h_minus)
        rms = np.sqrt(np.mean(np.where(finite, num, 0.0) ** 2)) if num.size else 0.0
        jump = np.abs(fwd - bwd)
        slope = np.maximum(np.abs(fwd) + np.abs(bwd), rms)
        h = np.minimum(h_plus, -h_minus)
        tol = np.minimum(
            th.kink_tolerance * np.maximum(1.0, h / KINK_REFERENCE_STEP), MAX_KINK_TOLERANCE
        )
        kink = finite & (jump > tol * slope) & (jump > 4.0 * noise_one_sided)
    return Differences(num=num, noise=noise, kink=kink, finite=finite)


def analyse_part(
    shape: tuple[int, ...],
    f0: float | np.ndarray,
    f_plus: np.ndarray,
    f_minus: np.ndarray,
    h_plus: np.ndarray,
    h_minus: np.ndarray,
    analytical: np.ndarray,
    th: Thresholds,
    indices: np.ndarray | None = None,
    part: str = "",
    scale: float | np.ndarray | None = None,
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
        part: ``"real"``/``"imag"`` for complex leaves, a cotangent or direction label.
        scale: As in :func:`differences`.

    Returns:
        The leaf's sums, counts and worst entries.
    """
    d = differences(f0, f_plus, f_minus, h_plus, h_minus, th, scale)
    num, noise, kink, finite = d.num, d.noise, d.kink, d.finite
    used = finite  # kinks are flagged, never left out: nothing passes by its absence
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


def squares(parts: list[LeafSums]) -> np.ndarray:
    """``(||num||², ||ana||², ||num − ana||²)`` summed over parts (for overall errors)."""
    return np.array(
        [sum(p.num_sq for p in parts), sum(p.ana_sq for p in parts), sum(p.diff_sq for p in parts)]
    )


def combine(
    path: str,
    shape: tuple[int, ...],
    dtype: str,
    parts: list[LeafSums],
    eps: float,
    th: Thresholds,
    order: int = 1,
) -> LeafReport:
    """Judges one leaf from the sums of its parts (real and imaginary, cotangents, chunks)."""
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
    if n_used == 0 and n_nonfinite:
        status = "unresolved"
        note = "every entry leaves f's domain"
    elif rel <= th.tolerance and n_nonfinite:
        status = "unresolved"
        note = f"{n_nonfinite} entries leave f's domain (not finite): they were not verified"
    elif rel <= th.tolerance and floor <= th.tolerance:
        status = "verified"
    elif rel <= th.tolerance:
        status = "unresolved"
        note = (
            f"agreement within rounding only: the noise floor {floor:.1e} exceeds the "
            f"tolerance at eps={eps:g}, so the match establishes nothing"
        )
    elif n_kinks:
        status = "unresolved"
        note = (
            f"{n_kinks} entries look like kinks (one-sided differences disagree); this mode "
            "does not classify kinks: check the first-order gradient in full or sample mode"
        )
    elif rel <= NOISE_MARGIN * floor:
        status = "unresolved"
        needed = eps * NOISE_MARGIN * floor / th.tolerance
        if np.isfinite(needed) and needed <= MAX_SUGGESTED_EPS:
            resolving_eps = float(needed)
            note = f"rounding noise dominates at eps={eps:g}; eps={needed:.0e} would resolve it"
        else:
            what, size = ("gradient", "|f|") if order == 1 else ("Hessian", "|∇f|")
            note = (
                f"the {what} is too small next to {size} for finite differences in "
                f"{th.compute_dtype} (a step of {needed:.0e} would be needed); check this "
                f"leaf on a loss without the large terms, or where its {what} is larger"
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
