"""What the theory returns: :class:`LogNormRatio` (a log norm ratio's law) and :class:`CellPath`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np

_LN10 = math.log(10.0)


@dataclasses.dataclass(frozen=True)
class LogNormRatio:
    """Distribution summary of ``R = ln(‖out‖² / ‖in‖²)`` for a random network.

    Attributes:
        mean: ``E[R]`` (broadcasts with the ``depth`` it was computed for).
        variance: ``Var[R]``.
        exact: True when ``mean`` and ``variance`` are exact at finite width; False for
            large-width or mean-field approximations.
        p_zero: probability that the ratio is exactly 0 (``R = -inf``), e.g. a ReLU layer
            with no active unit. ``mean`` and ``variance`` are then conditional on ``R``
            being finite.
        note: one line saying what the numbers are.

    Example:
        >>> from gradlab import theory
        >>> r = theory.gaussian_linear(150, width=64)  # LeCun weights, 150 linear layers
        >>> r.exact, round(float(r.mean), 3), round(float(r.variance), 3)
        (True, -2.356, 4.762)
        >>> round(float(r.typical_norm_ratio), 2)  # the typical ‖out‖/‖in‖: 0.31, not 1
        0.31
        >>> round(float(r.log10_norm_mean), 2), round(float(r.log10_norm_std), 2)  # decades
        (-0.51, 0.47)
    """

    mean: np.ndarray
    variance: np.ndarray
    exact: bool
    p_zero: np.ndarray | float = 0.0
    note: str = ""

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of ``R``."""
        return np.sqrt(self.variance)

    @property
    def log10_norm_mean(self) -> np.ndarray:
        """``E[log10(‖out‖/‖in‖)] = E[R] / (2 ln 10)`` — the units gradlab's plots use."""
        return np.asarray(self.mean) / (2.0 * _LN10)

    @property
    def log10_norm_std(self) -> np.ndarray:
        """Standard deviation of ``log10(‖out‖/‖in‖)``."""
        return self.std / (2.0 * _LN10)

    @property
    def typical_norm_ratio(self) -> np.ndarray:
        """``exp(E[R]/2)``: the geometric-mean (typical) norm ratio ``‖out‖/‖in‖``."""
        return np.exp(np.asarray(self.mean) / 2.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (lists for arrays)."""

        def conv(x: Any) -> Any:
            a = np.asarray(x, dtype=np.float64)
            return a.tolist() if a.ndim else float(a)

        return {
            "mean": conv(self.mean),
            "variance": conv(self.variance),
            "exact": self.exact,
            "p_zero": conv(self.p_zero),
            "note": self.note,
        }


class CellPath(NamedTuple):
    """The LSTM cell path ``∂c_T/∂c_0 = Π_t f_t`` (one unit, direct path only).

    Attributes:
        typical: ``exp(T · E[ln σ(z)])`` — the geometric-mean (typical) product.
        mean: ``(E[σ(z)])^T`` — the expected product (independent steps).
        per_step_log: ``E[ln σ(z)]``, the decay rate per step (natural log).

    Example:
        >>> from gradlab import theory
        >>> p = theory.lstm_cell_path(100, forget_bias=1.0)  # gates fixed at σ(1) = 0.731
        >>> round(p.per_step_log, 4), p.typical  # ln σ(1) per step; σ(1)**100
        (-0.3133, 2.5e-14)
        >>> q = theory.lstm_cell_path(100, forget_bias=1.0, preactivation_std=1.0)
        >>> q.typical < q.mean  # noisy gates: the typical product is below the mean one
        True
    """

    typical: float
    mean: float
    per_step_log: float
