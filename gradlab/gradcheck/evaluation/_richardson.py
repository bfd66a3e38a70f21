"""Richardson extrapolation: where no single step resolves a leaf.

A centered difference of a smooth ``f`` is ``D(h) = f' + a·h² + b·h⁴ + …`` plus rounding
``≈ e/h``. A small step drowns in rounding, a large one in truncation; when the gradient is
tiny next to ``|f|`` (a loss near convergence) no single step is good enough. Combining
three steps cancels the first two truncation terms (as numdifftools does):

    R(h) = (64·D(h/4) − 20·D(h/2) + D(h)) / 45 = f' + O(h⁶),

whose rounding is ``(64·n(h/4) + 20·n(h/2) + n(h)) / 45`` for ``n(s)`` the rounding of
``D(s)``, and whose truncation is estimated by its distance to the one-level extrapolation
``(4·D(h/4) − D(h/2)) / 3``. Over a ladder of steps halving from a large one, each entry
takes the ``R`` with the smallest estimated error, so the estimate carries its own error
bar; a leaf is then judged like any other: verified when agreement is within tolerance and
the error estimate is too, wrong when the disagreement stands clear of the estimate.

Example:
    >>> import numpy as np
    >>> h = 0.1 / 2.0 ** np.arange(6)
    >>> d = np.array([(np.exp(1 + s) - np.exp(1 - s)) / (2 * s) for s in h])[:, None]
    >>> value, err = extrapolate(d, np.zeros_like(d))
    >>> bool(abs(value[0] - np.e) < 1e-12), bool(err[0] < 1e-9)
    (True, True)
"""

from __future__ import annotations

import numpy as np

__all__ = ["LADDER", "extrapolate", "ladder"]

#: Steps in the ladder, each half the one before.
LADDER = 8


def ladder(start: float, n: int = LADDER) -> list[float]:
    """``start, start/2, …``: the steps whose differences are combined.

    Example:
        >>> ladder(0.04, 3)
        [0.04, 0.02, 0.01]
    """
    return [start / 2.0**k for k in range(n)]


def extrapolate(d: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per entry, the best extrapolated derivative over a ladder and its estimated error.

    Args:
        d: Centered differences ``(L, m)`` at steps halving along axis 0.
        noise: Their rounding ``(L, m)``.

    Returns:
        ``(value, error)``, each ``(m,)``: per entry the extrapolation ``R`` with the smallest
        estimated error (truncation plus rounding), and that error.
    """
    d0, d1, d2 = d[:-2], d[1:-1], d[2:]
    n0, n1, n2 = noise[:-2], noise[1:-1], noise[2:]
    with np.errstate(invalid="ignore", over="ignore"):
        r2 = (64 * d2 - 20 * d1 + d0) / 45
        r1 = (4 * d2 - d1) / 3
        err = np.abs(r2 - r1) + (64 * n2 + 20 * n1 + n0) / 45
    err = np.where(np.isfinite(err) & np.isfinite(r2), err, np.inf)
    best = np.argmin(err, axis=0)
    cols = np.arange(d.shape[1])
    return r2[best, cols], err[best, cols]
