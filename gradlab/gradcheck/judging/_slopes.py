"""Slopes of each entry from what a sweep measured: suspects, probes and confirmed kinks.

The centered difference, the one-sided slopes and the rounding each carries, per entry; the
entries whose slopes disagree (suspects); and the kinks confirmed at two steps. How they are
used to judge a leaf: :mod:`~gradlab.gradcheck.judging._judge`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradlab.gradcheck.evaluation._measured import Measured
from gradlab.gradcheck.planning._thresholds import Thresholds

__all__ = ["KINK_STABILITY", "Slopes", "confirmed_kinks", "probes", "slopes", "suspects"]


#: At a kink each one-sided slope moves by less than this fraction of the jump between the
#: two steps (curvature moves each by ``(1 − 1/SECOND_STEP)/2 = 0.45`` of it).
KINK_STABILITY = 0.2


#: A jump must exceed this many one-sided rounding noises to count as a kink.
KINK_NOISE = 4.0


@dataclasses.dataclass(frozen=True)
class Slopes:
    """Per entry: the differences at one step and their rounding noise."""

    num: np.ndarray
    fwd: np.ndarray
    bwd: np.ndarray
    noise: np.ndarray  # of num
    noise_one_sided: np.ndarray  # of fwd and of bwd
    finite: np.ndarray
    h: np.ndarray

    @property
    def jump(self) -> np.ndarray:
        """``fwd − bwd``."""
        return self.fwd - self.bwd


def slopes(m: Measured, th: Thresholds) -> Slopes:
    """Centered and one-sided differences of ``m`` with their rounding noise.

    Example:
        >>> th = Thresholds(1e-6, 1e-4, 8.0, 2.2e-16, 5)
        >>> x, h = np.array([0.0, 1.0]), np.full(2, 1e-7)
        >>> s = slopes(Measured(np.abs(x), np.abs(x + h), np.abs(x - h), h, -h), th)
        >>> s.num.round(6).tolist(), s.jump.round(6).tolist()
        ([0.0, 1.0], [2.0, 0.0])
    """
    span = m.hp - m.hm
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        num = (m.fp - m.fm) / span
        fwd = (m.fp - m.f0) / m.hp
        bwd = (m.f0 - m.fm) / (-m.hm)
        finite = np.isfinite(m.fp) & np.isfinite(m.fm) & np.isfinite(num) & np.isfinite(m.f0)
        scale = m.scale
        if scale is None:
            scale = np.maximum(np.maximum(np.abs(m.f0), np.abs(m.fp)), np.abs(m.fm))
        err_f = th.noise_factor * th.unit_roundoff * np.where(finite, scale, 0.0)
        h = np.minimum(m.hp, -m.hm)
        return Slopes(
            num=num,
            fwd=fwd,
            bwd=bwd,
            noise=2.0 * err_f / span,
            noise_one_sided=2.0 * err_f / h,
            finite=finite,
            h=h,
        )


def suspects(s: Slopes, th: Thresholds) -> np.ndarray:
    """Entries to evaluate again at a second step.

    Those not finite, or whose one-sided slopes disagree beyond ``kink_tolerance`` of their
    size and beyond rounding.
    """
    with np.errstate(invalid="ignore"):
        rms = np.sqrt(np.mean(np.where(s.finite, s.num, 0.0) ** 2)) if s.num.size else 0.0
        jump = np.abs(s.jump)
        size = np.maximum(np.abs(s.fwd) + np.abs(s.bwd), rms)
        tol = np.minimum(
            th.kink_tolerance * np.maximum(1.0, s.h / KINK_REFERENCE_STEP), MAX_KINK_TOLERANCE
        )
        odd = (jump > tol * size) & (jump > KINK_NOISE * s.noise_one_sided)
    return ~s.finite | (s.finite & odd)


def probes(m: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of the random entries also evaluated at the second step."""
    return np.sort(rng.choice(m, size=min(m, N_PROBES), replace=False))


def confirmed_kinks(s1: Slopes, s2: Slopes) -> np.ndarray:
    """Both one-sided slopes stay put and their difference stands above rounding at both steps.

    ``s1`` and ``s2``: the same entries measured at two steps (see the module docstring).
    """
    jump1, jump2 = np.abs(s1.jump), np.abs(s2.jump)
    moved = np.maximum(np.abs(s1.fwd - s2.fwd), np.abs(s1.bwd - s2.bwd))
    return (
        (jump1 > KINK_NOISE * s1.noise_one_sided)
        & (jump2 > KINK_NOISE * s2.noise_one_sided)
        & (moved <= KINK_STABILITY * jump1)
    )


def finite_kinks(s1: Slopes, s2: Slopes) -> np.ndarray:
    """Confirmed kinks among entries measured, finite, at both steps."""
    with np.errstate(invalid="ignore"):
        return s1.finite & s2.finite & confirmed_kinks(s1, s2)


def _subgradient_ok(s1: Slopes, s2: Slopes, ana: np.ndarray, th: Thresholds) -> np.ndarray:
    """At a kink: whether ``ana`` lies within the one-sided slopes (or 0 and their sum).

    Between the one-sided slopes at the second step — or between ``0`` and their sum, where
    autodiff's conventions land when several kinks of a composition coincide (``relu'(0) = 0``
    or ``1`` applied to every example whose pre-activation is exactly 0) — allowing for
    tolerance, rounding and how far the slopes still moved between the steps.
    """
    ends = np.stack([s2.fwd, s2.bwd, np.zeros_like(s2.fwd), s2.fwd + s2.bwd])
    lo, hi = ends.min(axis=0), ends.max(axis=0)
    moved = np.maximum(np.abs(s1.fwd - s2.fwd), np.abs(s1.bwd - s2.bwd))
    slack = th.tolerance * (np.abs(s2.fwd) + np.abs(s2.bwd)) + 2 * s2.noise_one_sided + moved
    return (ana >= lo - slack) & (ana <= hi + slack)


#: Random entries per leaf (and part) also evaluated at the second step, to measure noise.
N_PROBES = 16


#: The step ``kink_tolerance`` is stated for; it scales with ``h`` beyond it, up to
#: ``MAX_KINK_TOLERANCE``.
KINK_REFERENCE_STEP = 1e-7


MAX_KINK_TOLERANCE = 0.5
