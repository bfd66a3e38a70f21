"""The statistics every experiment's claims are judged with.

* :func:`wilson` — the Wilson score interval of a success fraction ``k / n`` (Wilson 1927),
  which stays inside ``[0, 1]`` and keeps its coverage at small ``n`` and at ``k = 0`` or
  ``k = n``, where the normal approximation collapses to a point.
* :func:`fraction` — a success fraction with its Wilson interval, as JSON-ready evidence.
* :func:`log_median` — a positive ratio (a gradient ratio, a gain) summarised as the median of
  its ``log10`` over seeds, with a percentile-bootstrap interval drawn with a fixed RNG seed,
  so the same values always give the same interval. Ratios spread over decades between seeds;
  their median in log space is the robust centre, their mean is not.
* :class:`SeedSplit` / :func:`split_seeds` — the development seeds (the ones a threshold may be
  fixed from) and the evaluation seeds (the ones the claims are judged on), disjoint and
  declared before anything runs.
* :func:`log_midpoint` — a threshold fixed from development values: the geometric midpoint of
  the gap between two groups that must fall on either side of it.

How a new experiment uses it (with :mod:`gradlab.experiments._result`)::

    split = seeds                                    # the SeedSplit run() hands the module
    ok = final_loss[he, eval_idx] < threshold.value  # per evaluation seed
    frac = fraction(ok)                              # {"k", "n", "fraction", "interval"}
    holds = frac["interval"][0] > 0.5                # Wilson lower bound above one half
    ratio = log_median(glorot_norm / he_norm)        # {"log10_median", "interval", ...}

Example:
    >>> lo, hi = wilson(8, 8)
    >>> round(lo, 3), hi
    (0.676, 1.0)
    >>> fraction([True, True, False, True])["fraction"]
    0.75
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from gradlab._errors import InputError

__all__ = [
    "CONFIDENCE",
    "SeedSplit",
    "fraction",
    "log_median",
    "log_midpoint",
    "per_seed",
    "split_seeds",
    "wilson",
]

CONFIDENCE: float = 0.95
"""The two-sided confidence level of every interval the experiments report."""

#: Evaluation seeds start here unless the caller picks another first seed, so they never
#: overlap the development seeds ``0 .. n_dev - 1`` of any experiment.
EVAL_FIRST_SEED: int = 1000


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must lie in (0, 1), got {confidence!r}; pass e.g. 0.95.")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of the success probability after ``k`` successes in ``n``.

    ``(p̂ + z²/2n ± z √(p̂(1-p̂)/n + z²/4n²)) / (1 + z²/n)`` with ``p̂ = k/n`` and ``z`` the
    two-sided normal quantile of ``confidence``.

    Args:
        k: successes, ``0 <= k <= n``.
        n: trials, ``n >= 1``.
        confidence: the interval's two-sided level.

    Returns:
        ``(low, high)``, both within ``[0, 1]``.

    Raises:
        InputError: for ``n < 1`` or ``k`` outside ``0..n``.

    Example:
        >>> [round(v, 4) for v in wilson(0, 10)]  # the normal approximation gives (0, 0)
        [0.0, 0.2775]
        >>> [round(v, 4) for v in wilson(5, 10)]
        [0.2366, 0.7634]
    """
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise InputError(f"wilson: {name} must be an integer, got {v!r}.")
    if n < 1 or not 0 <= k <= n:
        raise InputError(f"wilson: need 0 <= k <= n and n >= 1, got k={k}, n={n}.")
    z = _z(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at k = 0 or k = n the bound is exactly 0 or 1; round-off must not move it off
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def fraction(passed: ArrayLike, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """The fraction of seeds that passed, with its Wilson interval, as claim evidence.

    Args:
        passed: one bool per seed.
        confidence: the interval's level.

    Returns:
        ``{"k", "n", "fraction", "interval": [low, high], "confidence"}``.

    Raises:
        InputError: when ``passed`` is empty.

    Example:
        >>> f = fraction([True] * 7 + [False])
        >>> f["k"], f["n"], [round(v, 3) for v in f["interval"]]
        (7, 8, [0.529, 0.978])
    """
    ok = np.ravel(np.asarray(passed, dtype=bool))
    if ok.size == 0:
        raise InputError("fraction: no seeds; pass one bool per evaluation seed.")
    k, n = int(ok.sum()), int(ok.size)
    return {
        "k": k,
        "n": n,
        "fraction": k / n,
        "interval": list(wilson(k, n, confidence)),
        "confidence": confidence,
    }


def log_median(
    values: ArrayLike,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = 4000,
    seed: int = 0,
) -> dict[str, Any]:
    """The median of ``log10(values)`` over seeds with a percentile-bootstrap interval.

    The bootstrap resamples the seeds with replacement ``resamples`` times from
    ``numpy.random.default_rng(seed)`` and takes the ``(1 ± confidence)/2`` quantiles of the
    resampled medians, so equal inputs give equal intervals. ``+inf`` (a diverged run's ratio)
    and ``0`` (``-inf`` in log) are ordered like any value: a median stays finite while fewer
    than half the seeds are infinite.

    Args:
        values: positive ratios, one per seed (``inf`` allowed, ``nan`` and negatives not).
        confidence: the interval's level.
        resamples: bootstrap resamples.
        seed: the bootstrap's RNG seed.

    Returns:
        ``{"log10_median", "interval" (log10 low, high), "median", "per_seed_log10", "n",
        "confidence", "resamples", "bootstrap_seed"}``.

    Raises:
        InputError: for no values, a NaN or a negative value.

    Example:
        >>> r = log_median([1e-5, 1e-4, 1e-3])
        >>> r["log10_median"], r["median"]
        (-4.0, 0.0001)
        >>> r["interval"]
        [-5.0, -3.0]
    """
    v = np.ravel(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        raise InputError("log_median: no values; pass one positive ratio per seed.")
    if np.isnan(v).any() or (v < 0).any():
        raise InputError(
            f"log_median: values must be positive ratios (inf allowed), got {v.tolist()}; "
            "take the absolute value, or drop the undefined seeds and say so in the evidence."
        )
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise InputError(f"log_median: resamples must be an integer >= 100, got {resamples!r}.")
    with np.errstate(divide="ignore"):
        logs = np.log10(v)
    med = float(_median(logs[None, :])[0])
    rng = np.random.default_rng(seed)
    boot = _median(logs[rng.integers(0, v.size, size=(resamples, v.size))])
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha], method="inverted_cdf")
    return {
        "log10_median": med,
        "interval": [float(lo), float(hi)],
        "median": float(10.0**med),
        "per_seed_log10": logs.tolist(),
        "n": int(v.size),
        "confidence": confidence,
        "resamples": resamples,
        "bootstrap_seed": seed,
    }


def _median(rows: np.ndarray) -> np.ndarray:
    """Row medians (the mean of the two middle order statistics), defined with ±inf.

    ``x`` and ``+inf`` give ``+inf``; ``-inf`` and ``+inf`` give the lower, ``-inf``.
    """
    s = np.sort(rows, axis=-1)
    n = s.shape[-1]
    lo, hi = s[..., (n - 1) // 2], s[..., n // 2]
    with np.errstate(invalid="ignore"):
        mid = (lo + hi) / 2.0
    return np.where(np.isnan(mid), lo, mid)


def log_midpoint(below: ArrayLike, above: ArrayLike) -> float:
    """A threshold between two development groups: the geometric midpoint of their gap.

    ``below`` holds the values that must fall under the threshold (e.g. a trained run's loss),
    ``above`` those that must fall over it. The threshold is ``√(max(below) · min(above))``.

    Raises:
        InputError: when the groups overlap (no threshold separates the development runs:
            the claim cannot be made with these settings), or a value is not positive.

    Example:
        >>> log_midpoint([0.01, 0.04], [0.64, 1.0])
        0.16
    """
    b = np.ravel(np.asarray(below, dtype=np.float64))
    a = np.ravel(np.asarray(above, dtype=np.float64))
    if b.size == 0 or a.size == 0:
        raise InputError("log_midpoint: both groups need development values.")
    if (b <= 0).any() or (a <= 0).any() or np.isnan(b).any() or np.isnan(a).any():
        raise InputError("log_midpoint: values must be positive (a loss, a norm, a ratio).")
    lo, hi = float(b.max()), float(a.min())
    if not lo < hi:
        raise InputError(
            f"log_midpoint: the development groups overlap (max below {lo:.3g} >= min above "
            f"{hi:.3g}); no threshold separates them, so the claim cannot be stated."
        )
    if math.isinf(hi):
        return math.inf
    return float(round(math.sqrt(lo * hi), 12))


@dataclasses.dataclass(frozen=True)
class SeedSplit:
    """Development and evaluation seeds, disjoint, declared before a run.

    Thresholds may be fixed from the development seeds (or from theory, or a published number);
    claims are judged only on the evaluation seeds. ``result.json`` records both as
    ``"seeds": {"development": [...], "evaluation": [...]}``.

    Example:
        >>> s = SeedSplit(development=(0, 1), evaluation=(1000, 1001))
        >>> s.to_dict()
        {'development': [0, 1], 'evaluation': [1000, 1001]}
        >>> SeedSplit(development=(0, 1), evaluation=(1, 2))
        Traceback (most recent call last):
        ...
        gradlab.InputError: SeedSplit: seeds [1] are both development and evaluation seeds; ...
    """

    development: tuple[int, ...]
    evaluation: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in ("development", "evaluation"):
            seeds = getattr(self, name)
            if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
                raise InputError(f"SeedSplit: {name} seeds must be integers >= 0, got {seeds}.")
            if len(set(seeds)) != len(seeds):
                raise InputError(f"SeedSplit: {name} seeds repeat: {seeds}.")
        if not self.evaluation:
            raise InputError("SeedSplit: at least one evaluation seed is needed.")
        both = sorted(set(self.development) & set(self.evaluation))
        if both:
            raise InputError(
                f"SeedSplit: seeds {both} are both development and evaluation seeds; a claim "
                "must be judged on seeds that did not set its threshold (pick another first "
                "evaluation seed)."
            )

    def to_dict(self) -> dict[str, list[int]]:
        """``{"development": [...], "evaluation": [...]}``, as written to ``result.json``."""
        return {"development": list(self.development), "evaluation": list(self.evaluation)}


def split_seeds(
    development: int, evaluation: int, first_evaluation: int = EVAL_FIRST_SEED
) -> SeedSplit:
    """Development seeds ``0 .. development-1``, evaluation seeds from ``first_evaluation``.

    Args:
        development: how many development seeds (0 when every threshold comes from theory or
            a published number).
        evaluation: how many evaluation seeds (>= 1).
        first_evaluation: the first evaluation seed (another value gives an independent
            evaluation set; it must not reach into the development seeds).

    Raises:
        InputError: for negative counts or overlapping sets.

    Example:
        >>> split_seeds(2, 3).to_dict()
        {'development': [0, 1], 'evaluation': [1000, 1001, 1002]}
        >>> split_seeds(2, 2, first_evaluation=50).evaluation
        (50, 51)
    """
    for name, v in (("development", development), ("evaluation", evaluation)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InputError(f"split_seeds: {name} must be an integer >= 0, got {v!r}.")
    if isinstance(first_evaluation, bool) or not isinstance(first_evaluation, int):
        raise InputError(
            f"split_seeds: first_evaluation must be an integer, got {first_evaluation!r}."
        )
    return SeedSplit(
        development=tuple(range(development)),
        evaluation=tuple(range(first_evaluation, first_evaluation + evaluation)),
    )


def per_seed(values: Iterable[float] | Sequence[float] | np.ndarray) -> list[float | None]:
    """Plain floats for JSON (non-finite as ``None``), one per seed.

    >>> per_seed(np.array([0.5, np.inf]))
    [0.5, None]
    """
    return [float(x) if math.isfinite(float(x)) else None for x in np.ravel(np.asarray(values))]
