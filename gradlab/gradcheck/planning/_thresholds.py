"""The numbers a check is judged by."""

from __future__ import annotations

import dataclasses

__all__ = ["Thresholds"]


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """The numbers a check is judged by."""

    tolerance: float
    kink_tolerance: float
    noise_factor: float
    unit_roundoff: float
    max_worst: int
    compute_dtype: str = "float64"
