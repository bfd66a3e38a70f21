"""Finite-difference steps: the defaults, the float32 fallback, and ``eps="auto"``.

The error model. A centered difference ``D(h) = (f(θ+h) − f(θ−h)) / 2h`` of a smooth ``f``
carries a truncation error ``≈ a·h²`` (``a = f'''/6``) and a rounding error ``≈ e/h``, where
each evaluation of ``f`` is off by ``e ≈ c·u·|f|`` (``u`` the unit roundoff, ``c`` the
``noise_factor``). The total ``a·h² + e/h`` is smallest at

    h* = (e / 2a)^(1/3) = (3·c·u)^(1/3)·(scale of θ)   when |f| ≈ |f'''| (a = f'''/6),

where it is about ``1.9·(a·e²)^(1/3)``, a relative error of order ``(c·u)^(2/3)``: about
1e-10 in float64 and 1e-4 in float32 (``c = 8``).

* Order 1, float64: the lecture's ``eps = 1e-7`` (below ``h*``, so rounding dominates:
  ``e/h ≈ 2e-8·|f|``, still far under the default tolerance of 1e-6).
* Order 2, float64: the gradient plays the role of ``f`` and is itself computed with more
  rounding than ``u·|∇f|`` (sums over the backward pass), so the step sits at ``h*`` for
  ``c = 8``: ``(3·8·u)^(1/3) ≈ 1.7e-5`` rounds to ``eps = 1e-5``.
* float32 (no float64 on the backend, or ``dtype="float32"``): ``h = (3·8·u)^(1/3)·max(1,
  rms|θ|)`` per leaf, about ``1.4e-2`` for parameters of order one (``u^(1/3) = 4.9e-3``
  times ``24^(1/3)``); on the lecture's MLP it gives relative errors of 4e-5, against 1e-4
  at ``u^(1/3)``.
* ``eps="auto"``: per leaf, differences at ``h`` and ``2h`` on a few sampled entries give
  Richardson's truncation estimate ``|D(2h) − D(h)| / 3 ≈ a·h²``, net of rounding; the
  leaf's step is the ``h*`` of the measured ``a`` and the typical rounding ``e = u·|f|``,
  refined until it stops moving, and the estimated error there is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gradlab.gradcheck.planning._plan import leaf_scale

__all__ = ["cube_root_step", "default_eps", "leaf_scale", "magnitude", "order2_steps"]

#: The lecture's step for gradients in float64.
LECTURE_EPS = 1e-7
#: The step for Hessian-vector products (differences of the gradient) in float64.
ORDER2_EPS = 1e-5


def default_eps(order: int, dtype: str, scale: float = 1.0) -> float:
    """The default step for an order (1 or 2), the dtype the check runs in, and a leaf scale.

    Example:
        >>> default_eps(1, "float64"), default_eps(2, "float64")
        (1e-07, 1e-05)
        >>> round(default_eps(1, "float32"), 4)
        0.0142
    """
    if dtype == "float64":
        return LECTURE_EPS if order == 1 else ORDER2_EPS
    return cube_root_step(float(np.finfo(dtype).eps)) * scale


def cube_root_step(u: float, c: float = 8.0) -> float:
    """``(3·c·u)^(1/3)``: the step minimising ``a·h² + c·u·|f|/h`` when ``|f| ≈ 6|a|``.

    Example:
        >>> f"{cube_root_step(2.0**-52):.1e}", f"{cube_root_step(2.0**-23):.1e}"
        ('1.7e-05', '1.4e-02')
    """
    return float(np.cbrt(3 * c * u))


def float32_steps(leaves: Sequence[np.ndarray], order: int) -> list[float]:
    """Per-leaf steps of the float32 fallback: ``(3·8·u)^(1/3)·max(1, rms|θ_k|)``."""
    return [default_eps(order, "float32", leaf_scale(np.asarray(x))) for x in leaves]


def magnitude(x: Any) -> float:
    """``rms|x|`` (1 for an all-zero leaf), within ``[1e-6, 1e6]``: what steps scale with.

    Example:
        >>> magnitude(np.array([3e-4, -4e-4])), magnitude(np.zeros(2))
        (0.00035355339059327376, 1.0)
    """
    x = np.asarray(x)
    rms = float(np.sqrt(np.mean(np.abs(x) ** 2))) if x.size else 0.0
    return float(np.clip(rms, 1e-6, 1e6)) if rms > 0 else 1.0


def order2_steps(eps: float | str | None, leaves: Sequence[Any], compute: str) -> list[float]:
    """Each leaf's first step.

    ``eps`` as given, else ``1e-5`` (float32: the cube-root rule) times the leaf's
    :func:`magnitude` (``"auto"`` refines it in the sweep).

    Example:
        >>> order2_steps(None, [np.ones(2), np.full(3, 1e-4)], "float64")
        [1e-05, 1e-09]
    """
    if isinstance(eps, int | float):
        return [float(eps)] * len(leaves)
    if compute == "float64":
        return [ORDER2_EPS * magnitude(x) for x in leaves]
    return [cube_root_step(float(np.finfo(compute).eps)) * magnitude(x) for x in leaves]
