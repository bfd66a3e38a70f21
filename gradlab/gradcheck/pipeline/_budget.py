"""``Execution(max_seconds=...)`` enforced before the sweep: a long check says so first.

Two moments decide whether a check is too long, before its sweep's kernels run:

1. Before anything is compiled (:func:`may_take_long`), at the FLOP rate kernels are assumed
   to run at: a check that could be over the limit compiles ``f``'s gradient program alone,
   without the sweep's first kernels beside it, so that stopping it compiles nothing of
   its sweep.
2. After the gradient program ran at θ, timed (:func:`refuse_if_too_long`): the sweep's
   FLOPs at the rate that run measured
   (:func:`~gradlab.gradcheck.planning._estimate.seconds_at_measured_rate`). Over
   :data:`~gradlab.gradcheck.planning._estimate.BEFORE_SWEEP_MARGIN` times the limit, the
   check stops with a :class:`~gradlab.CheckInputError` that gives the estimate in hours or
   days, the cheaper ``Sample(n)`` / ``Directional(k)`` checks and how to go on.

Checks well under the limit pay one multiplication: the dense count of the plan
(:func:`~gradlab.gradcheck.planning._estimate.dense_seconds`) already says they are short;
only a check that may be long traces its kernels (nothing compiled) for a closer count.
The first batch of the sweep, timed (:class:`~gradlab.gradcheck.report._progress.Progress`),
remains the second line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from gradlab._errors import CheckInputError
from gradlab.gradcheck.evaluation._sweep import Context, traced_sweep_flops
from gradlab.gradcheck.planning._calls import n_calls
from gradlab.gradcheck.planning._estimate import (
    BEFORE_SWEEP_MARGIN,
    assumed_rate,
    dense_flops,
    dense_seconds,
    seconds_at_measured_rate,
)
from gradlab.gradcheck.planning._options import CheckOptions
from gradlab.gradcheck.planning._plan import Base, LeafPlan
from gradlab.gradcheck.programs import _stored
from gradlab.gradcheck.programs._runner import Items, lookup
from gradlab.gradcheck.report._progress import human_duration, too_long

__all__ = ["may_take_long", "refuse_if_too_long"]


def may_take_long(
    ctx: Context, plans: Sequence[LeafPlan], opts: CheckOptions, items: Items
) -> bool:
    """Whether the sweep of ``plans`` could be over the limit, before anything has run.

    At the FLOP rate assumed for the platform: the plan's dense count first (nothing to
    trace); then, unless the sweep's first kernels ``items`` are all compiled already (in
    this process or on disk: compiling them beside the gradient costs nothing), the kernels'
    traced FLOPs (lowering them later reuses the trace).
    """
    if opts.max_seconds is None or opts.order != 1 or n_calls(plans) <= 1:
        return False
    limit = opts.max_seconds * BEFORE_SWEEP_MARGIN
    rate = assumed_rate(ctx.runner.devices[0].platform) * ctx.runner.n_devices
    repeat = 2 if opts.repeat else 1
    if dense_flops(plans) * repeat / rate <= limit:
        return False
    if all(
        lookup(key) is not None or (name is not None and _stored.kept(name))
        for key, name in zip(items.keys, items.stored, strict=True)
    ):
        return False
    return traced_sweep_flops(ctx, plans) * repeat / rate > limit


def refuse_if_too_long(
    ctx: Context,
    plans: Sequence[LeafPlan],
    base: Base,
    opts: CheckOptions,
    again: Callable[[], Base],
) -> None:
    """Stops a check whose sweep is estimated far over ``max_seconds``, before it compiles.

    Args:
        ctx: The check's context.
        plans: Its plans.
        base: ``f`` and its gradient at θ, their run timed.
        opts: The options (``max_seconds``, ``repeat``, ``order``).
        again: Runs the gradient program once more (compiled): before refusing, the estimate
            is taken from the faster of two runs, so that a first run's start-up cost never
            stops a check.

    Raises:
        CheckInputError: The estimate is over ``BEFORE_SWEEP_MARGIN`` times the limit.
    """
    if opts.max_seconds is None or n_calls(plans) <= 1:  # one call: nothing left to save
        return
    if ctx.runner.multiprocess:  # a timing differs between processes: they must not part
        return
    limit = opts.max_seconds * BEFORE_SWEEP_MARGIN
    n = ctx.runner.n_devices
    if dense_seconds(plans, base, n, opts.repeat) <= limit:
        return
    estimate = lambda b: (
        seconds_at_measured_rate(traced_sweep_flops(ctx, plans), b, n, opts.repeat)
        if opts.order == 1 and b.flops_per_eval > 0
        else dense_seconds(plans, b, n, opts.repeat)
    )
    if estimate(base) <= limit:
        return
    second = again()
    if second.grad_seconds < base.grad_seconds:
        base = second
    expected = estimate(base)
    if expected <= limit:
        return
    total = sum(p.m * len(p.parts) for p in plans) * (2 if opts.repeat else 1)
    what = "f and its gradient" if opts.order == 1 else "f's gradient and Hessian products"
    basis = (
        f"estimated before compiling its sweep: one run of {what} at θ took "
        f"{_short(base.grad_seconds)}, and the sweep's {total:,} perturbations do "
        f"{_times(expected, base.grad_seconds)} that work"
    )
    sizes = [int(np.size(x)) for x in ctx.problem.checked_leaves]
    raise CheckInputError(
        too_long(expected, opts.max_seconds, total, expected, sizes, opts.mode, basis=basis)
    )


def _short(seconds: float) -> str:
    """A short duration: ``"3.2 ms"``, ``"1.5 s"``, or :func:`human_duration` past a minute."""
    if seconds < 1:
        return f"{seconds * 1e3:.2g} ms"
    return f"{seconds:.2g} s" if seconds < 60 else human_duration(seconds)


def _times(expected: float, one: float) -> str:
    """``expected / one`` in words: ``"about 12,000 times"``."""
    ratio = expected / one if one > 0 else float("inf")
    return f"about {ratio:,.0f} times" if ratio < 1e9 else f"about {ratio:.1e} times"
