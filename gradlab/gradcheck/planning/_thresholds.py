"""The numbers a check is judged by."""

from __future__ import annotations

import dataclasses
import math

__all__ = ["Thresholds"]


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """The numbers a check is judged by.

    ``unit_roundoff`` is the machine epsilon of the lowest precision the finite differences
    compute in (their noise floors, their steps); ``autodiff_unit_roundoff`` that of the
    analytical side where it is lower (a custom rule kept as written in float32 inside a
    promoted ``f``; None: the same).
    """

    tolerance: float
    kink_tolerance: float
    noise_factor: float
    unit_roundoff: float
    max_worst: int
    compute_dtype: str = "float64"
    autodiff_unit_roundoff: float | None = None

    @property
    def autodiff_floor(self) -> float:
        """The relative error the analytical side's own rounding may explain (0: none).

        Where autodiff computes in a lower precision than the finite differences:
        ``sqrt(u)`` of that precision (2.4e-4 for float32), as the precision audit allows.

        Example:
            >>> Thresholds(1e-6, 1e-4, 8.0, 2.2e-16, 5).autodiff_floor
            0.0
            >>> th = Thresholds(1e-6, 1e-4, 8.0, 2.2e-16, 5, autodiff_unit_roundoff=2**-23)
            >>> f"{th.autodiff_floor:.1e}"
            '2.4e-04'
        """
        ad = self.autodiff_unit_roundoff
        if ad is None or ad <= self.unit_roundoff:
            return 0.0
        return math.sqrt(ad / 2)
