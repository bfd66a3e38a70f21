"""The precision a check computes in: float64 or the float32 fallback, and what it is judged by.

Where float64 is missing (or ``dtype="float32"`` is asked for), the check runs in float32
with its own tolerance; what promotion could not widen inside ``f`` lowers the precision
the noise floor is computed for (:mod:`~gradlab.gradcheck.programs._promotion`, kept per
program and argument shapes), and the thresholds follow.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from gradlab._errors import CheckInputError
from gradlab.gradcheck.planning._options import CheckOptions
from gradlab.gradcheck.planning._plan import Base
from gradlab.gradcheck.planning._problem import Problem
from gradlab.gradcheck.planning._spec import traced_once
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.programs._promote import Promotion
from gradlab.gradcheck.programs._promotion import promotion_of
from gradlab.gradcheck.programs._scope import forgets
from gradlab.gradcheck.programs._tracing import TRACING_ERRORS, trace_error_hint

#: Platforms without float64: the check falls back to float32 there (or runs on the host).
_NO_FLOAT64 = ("tpu",)


#: Default tolerance of the float32 fallback: centered differences in float32 resolve a
#: relative error of about u^(2/3) ≈ 2e-5 at best, times the rounding constant.
FLOAT32_TOLERANCE = 1e-3


def _precision(
    dtype: str | None, devices: Sequence[jax.Device] | None
) -> tuple[str, jax.Device | None, str]:
    """The dtype to check in, the device to evaluate ``f`` at θ on, and a note saying why."""
    default = jax.devices()[0]
    device = None
    if devices:
        local = [d for d in devices if d.process_index == jax.process_index()]
        device = (local or list(devices))[0]
    platform = (device or default).platform
    if dtype == "float64" and platform in _NO_FLOAT64:
        raise CheckInputError(
            f"dtype='float64': {platform} has no float64. Leave dtype out to check in float32, "
            "or pass execution=gradlab.Execution(devices=jax.devices('cpu')) to check in "
            "float64 on the CPU host."
        )
    if dtype == "float64" or (dtype is None and platform not in _NO_FLOAT64):
        note = ""
        if device is not None and platform != default.platform:
            note = f"evaluated in float64 on {platform} (the default device is {default.platform})"
        return "float64", device, note
    why = (
        "dtype='float32' was asked for"
        if dtype == "float32"
        else (f"float64 is not available on {platform}")
    )
    return (
        "float32",
        device,
        f"{why}: the check ran in float32 with per-leaf steps (24·u)^(1/3)·max(1, rms|θ|) "
        "(unless eps is given), float32 noise floors and tolerance 1e-3 (unless given); pass "
        "execution=gradlab.Execution(devices=jax.devices('cpu')) to check in float64 on the "
        "CPU host instead.",
    )


@functools.lru_cache(maxsize=64)
def _promotion_cached(spec: Any, avals: tuple[Any, ...]) -> Promotion:
    args = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in avals]
    flat = traced_once(spec)
    return promotion_of(lambda *leaves: flat(*_regroup(spec, leaves)), *args)


forgets(_promotion_cached.cache_clear)


def _promotion(problem: Problem, dyn: tuple[Any, ...]) -> Promotion:
    """What runs in reduced precision inside ``f`` (traced once per function and shapes)."""
    if not problem.spec.promote:
        return Promotion()
    flat = [*dyn[0], *dyn[1], *(x for group in dyn[2] for x in group)]
    avals = tuple((tuple(x.shape), x.dtype) for x in flat)
    try:
        try:
            return _promotion_cached(problem.spec, avals)
        except TypeError as e:  # an unhashable function: trace without the cache
            if "unhashable" not in str(e):
                raise
            return _promotion_cached.__wrapped__(problem.spec, avals)
    except TRACING_ERRORS as e:
        raise trace_error_hint(e) from e


def _regroup(spec: Any, leaves: Sequence[Any]) -> tuple[Any, Any, Any]:
    """Flat leaves back into ``(checked, fixed, rest)`` as the spec expects them."""
    n_checked = sum(spec.checked)
    n_fixed = len(spec.checked) - n_checked
    checked, fixed = leaves[:n_checked], leaves[n_checked : n_checked + n_fixed]
    rest, i = [], n_checked + n_fixed
    for static in spec.rest_static:
        n = sum(s is None for s in static)
        rest.append(tuple(leaves[i : i + n]))
        i += n
    return tuple(checked), tuple(fixed), tuple(rest)


def _thresholds(opts: CheckOptions, compute: str, base: Base, promotion: Promotion) -> Thresholds:
    """The numbers the check is judged by: ``u`` of the lowest precision f computes in."""
    dtypes = [base.out_dtype, compute] + ([promotion.lowest] if promotion.lowest else [])
    ad = [promotion.autodiff_lowest] if promotion.autodiff_lowest else []
    if opts.order == 2:  # the finite differences of the gradient run its rules as written
        dtypes += ad
    u = max(float(np.finfo(d).eps) for d in dtypes)
    u_ad = max([u] + [float(np.finfo(d).eps) for d in ad])
    tolerance = opts.tolerance
    if tolerance is None:
        tolerance = 1e-6 if compute == "float64" else FLOAT32_TOLERANCE
    return Thresholds(
        float(tolerance),
        float(opts.kink_tolerance),
        float(opts.noise_factor),
        u,
        opts.max_worst,
        compute,
        autodiff_unit_roundoff=u_ad,
    )
