"""The lecture's relative-error bands for gradient checks.

With ``eps = 1e-7`` (slide 12 of the lecture):

======================  ==================  =========================================
relative error          band                meaning
======================  ==================  =========================================
``< 1e-7``              ``"happy"``         the gradient is right
``[1e-7, 1e-4)``        ``"ok"``            fine for objectives with kinks; too high
                                            for smooth ones (tanh, softmax)
``[1e-4, 1e-2)``        ``"uncomfortable"`` probably a bug
``>= 1e-2``             ``"wrong"``         the gradient is wrong
======================  ==================  =========================================
"""

from __future__ import annotations

import math
from typing import Final, Literal

__all__ = ["BANDS", "Verdict", "relative_error", "verdict"]

Verdict = Literal["happy", "ok", "uncomfortable", "wrong"]

#: Upper edges of the bands, in increasing order.
BANDS: Final[tuple[tuple[Verdict, float], ...]] = (
    ("happy", 1e-7),
    ("ok", 1e-4),
    ("uncomfortable", 1e-2),
    ("wrong", math.inf),
)


def verdict(rel_error: float) -> Verdict:
    """Returns the lecture's band for a relative error.

    Args:
        rel_error: A relative error ``||num - ana|| / (||num|| + ||ana||)``.

    Returns:
        One of ``"happy"``, ``"ok"``, ``"uncomfortable"``, ``"wrong"``; NaN is ``"wrong"``.

    Example:
        >>> verdict(3e-9), verdict(2e-5), verdict(1e-3), verdict(0.5)
        ('happy', 'ok', 'uncomfortable', 'wrong')
    """
    if not rel_error == rel_error:  # NaN
        return "wrong"
    for name, upper in BANDS:
        if rel_error < upper:
            return name
    return "wrong"


def relative_error(num_norm_sq: float, ana_norm_sq: float, diff_norm_sq: float) -> float:
    """The lecture's relative error from squared norms, with 0/0 defined as 0.

    Args:
        num_norm_sq: ``||num||²``, the numerical gradient's squared norm.
        ana_norm_sq: ``||ana||²``, the analytical gradient's squared norm.
        diff_norm_sq: ``||num - ana||²``.

    Returns:
        ``||num - ana|| / (||num|| + ||ana||)``; ``0.0`` when both gradients are zero.

    Example:
        >>> relative_error(4.0, 4.0, 0.0), relative_error(0.0, 0.0, 0.0)
        (0.0, 0.0)
        >>> relative_error(1.0, 0.0, 1.0)
        1.0
    """
    denom = math.sqrt(num_norm_sq) + math.sqrt(ana_norm_sq)
    if denom == 0.0:
        return 0.0
    return math.sqrt(diff_norm_sq) / denom
