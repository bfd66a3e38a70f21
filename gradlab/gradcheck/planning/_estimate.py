"""How long a sweep will take, estimated before any of its kernels is compiled or run.

The check runs ``f`` and its gradient at θ once anyway, in one program whose run is timed
(:attr:`~gradlab.gradcheck.planning._plan.Base.grad_seconds`). That run and the program's
FLOPs (from ``f``'s jaxpr) give the rate ``f`` runs at on this device; the sweep's time is
its FLOPs at that rate, shared among the devices:

* :func:`dense_seconds` counts every perturbation as two full evaluations of ``f`` — nothing
  to trace, but an overestimate where the sweep carries an entry's move as a slice of the
  values it changes (up to hundreds of times less work);
* the sweep's own FLOPs, from its kernels' traced jaxprs (tracing compiles nothing), are
  within a few times of the measured sweep (:func:`seconds_at_measured_rate`).

A batch of perturbations uses the processor better than one evaluation at θ does, so the
estimate errs long: a check stops before its sweep only when it is over
:data:`BEFORE_SWEEP_MARGIN` times the limit. The first batch of the sweep, timed, is the
closer estimate, and stops a check that is over the limit there.
"""

from __future__ import annotations

from collections.abc import Sequence

from gradlab.gradcheck.planning._plan import (
    _OTHER_PLATFORM,
    GRADIENT_FLOPS,
    KERNEL_COST,
    Base,
    LeafPlan,
)

__all__ = [
    "BEFORE_SWEEP_MARGIN",
    "assumed_rate",
    "dense_flops",
    "dense_seconds",
    "seconds_at_measured_rate",
]

#: A check stops before its sweep only when the estimate is over this many times the limit:
#: measured on tanh MLPs (10k–525k parameters, a batch of 1 to 1,024 inputs), the estimate
#: from the kernels' FLOPs was 0.9–2.8× the time the warm check took.
BEFORE_SWEEP_MARGIN = 4.0


def assumed_rate(platform: str) -> float:
    """The FLOP rate kernels are assumed to run at before anything has run (:data:`KERNEL_COST`).

    Example:
        >>> assumed_rate("cpu")
        1000000000.0
    """
    return KERNEL_COST.get(platform, _OTHER_PLATFORM)[2]


def dense_flops(plans: Sequence[LeafPlan]) -> float:
    """The FLOPs of every perturbation of ``plans`` evaluated as two full evaluations of ``f``."""
    return float(sum(p.m * len(p.parts) * p.flops_per_row for p in plans))


def _measured_rate(base: Base) -> float | None:
    """FLOPs per second of the timed run of ``f`` and its gradient at θ (None: not known)."""
    flops = GRADIENT_FLOPS * max(base.n_cotangents, 1) * base.flops_per_eval
    if flops <= 0 or base.grad_seconds <= 0:
        return None
    return flops / base.grad_seconds


def seconds_at_measured_rate(flops: float, base: Base, n_devices: int, repeat: bool) -> float:
    """``flops`` of sweep at the rate ``f`` and its gradient ran at θ, shared among devices.

    Args:
        flops: The sweep's FLOPs (all its kernel calls).
        base: ``f`` at θ, with :attr:`Base.grad_seconds` measured.
        n_devices: Devices the perturbations are shared among.
        repeat: The sweep runs twice (``repeat=True``).

    Example:
        >>> import numpy as np
        >>> base = Base(np.zeros(1), np.zeros(1), [], "float64", 0, 0, flops_per_eval=1e6,
        ...             grad_seconds=0.003)  # 3e6 FLOPs in 3 ms: 1 GFLOP/s
        >>> at = seconds_at_measured_rate
        >>> at(2e9, base, 1, False), at(2e9, base, 2, True)
        (2.0, 2.0)
    """
    rate = _measured_rate(base)
    if rate is None:
        return 0.0
    return flops / rate * (2 if repeat else 1) / max(n_devices, 1)


def dense_seconds(plans: Sequence[LeafPlan], base: Base, n_devices: int, repeat: bool) -> float:
    """:func:`dense_flops` at the measured rate: an upper estimate (slices do less).

    Where ``f``'s FLOPs are not known, each perturbation costs two evaluations of ``f``,
    each a third of the timed gradient program.

    Example:
        >>> import numpy as np
        >>> plan = LeafPlan(0, None, "entry", np.arange(1000), ("",), 100, 1e-6, None, 0.0)
        >>> base = Base(np.zeros(1), np.zeros(1), [], "float64", 0, 0, grad_seconds=0.003)
        >>> round(dense_seconds([plan], base, 1, False), 6)  # 1000 rows of 2 ms
        2.0
    """
    if _measured_rate(base) is not None and all(p.flops_per_row for p in plans):
        return seconds_at_measured_rate(dense_flops(plans), base, n_devices, repeat)
    rows = sum(p.m * len(p.parts) for p in plans)
    per_row = 2 * base.grad_seconds / (GRADIENT_FLOPS * max(base.n_cotangents, 1))
    return per_row * rows * (2 if repeat else 1) / max(n_devices, 1)
