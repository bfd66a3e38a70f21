"""``eps="auto"``: each leaf's step measured, not assumed.

Per leaf, differences at ``h`` and ``2h`` on a few sampled entries give Richardson's
truncation estimate ``|D(2h) − D(h)| / 3 ≈ a·h²``, net of rounding; the leaf's step is the
``h*`` of the measured ``a`` and the typical rounding ``e = u·|f|``, refined until it stops
moving (the error model: :mod:`~gradlab.gradcheck.planning._step`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from gradlab.gradcheck.evaluation import _kernels
from gradlab.gradcheck.evaluation._sweep import Context
from gradlab.gradcheck.planning._calls import calls
from gradlab.gradcheck.planning._memory import default_budget, plan_chunk
from gradlab.gradcheck.planning._plan import Base, LeafPlan, leaf_scale
from gradlab.gradcheck.planning._thresholds import Thresholds

__all__ = ["AutoStep", "auto_steps"]


#: Entries per leaf that ``eps="auto"`` probes.
AUTO_SAMPLES = 16


#: Stream of ``np.random.default_rng((seed, stream))`` that picks the probed entries.
AUTO_STREAM = 3


@dataclasses.dataclass(frozen=True)
class AutoStep:
    """The step ``eps="auto"`` chose for one leaf.

    Attributes:
        eps: The chosen step.
        estimated_error: The estimated relative error of centered differences at ``eps``
            (truncation plus rounding, normalised like the lecture's relative error).
        tried: The probe steps ``h`` (each probed together with ``2h``).
        n_evaluations: Evaluations of ``f`` the probes took.
    """

    eps: float
    estimated_error: float
    tried: tuple[float, ...]
    n_evaluations: int


@dataclasses.dataclass
class _Search:
    """The step search of one leaf."""

    h: float
    lo: float
    hi: float
    entries: np.ndarray
    tried: list[float] = dataclasses.field(default_factory=list)
    measured: tuple[np.ndarray, ...] | None = None  # (a, e, D) where truncation was seen
    last: tuple[np.ndarray, ...] | None = None  # the last finite probe
    done: bool = False

    def update(self, got: tuple[np.ndarray, ...] | None) -> None:
        """One probe's result → the next step to probe, or done."""
        self.tried.append(self.h)
        if got is None:  # f left its domain: smaller steps
            self.done = self.h / 10 < self.lo
            self.h = max(self.h / 10, self.lo)
            return
        self.last = got
        big_a = float(np.sqrt(np.mean(got[0] ** 2)))
        if big_a == 0.0:  # truncation hidden under rounding
            if self.measured is None and self.h < self.hi:  # none seen yet: larger is safe
                self.h = min(10 * self.h, self.hi)
            else:
                self.done = True
            return
        self.measured = got
        e_rms = float(np.sqrt(np.mean(got[1] ** 2)))
        h_new = min(max(float(np.cbrt(e_rms / (2 * big_a))), self.lo), self.hi)
        self.done = self.h / 4 <= h_new <= 4 * self.h
        self.h = h_new

    def result(self, n_evaluations: int) -> AutoStep:
        """The chosen step and its estimated relative error."""
        est, chosen = 0.0, self.measured if self.measured is not None else self.last
        if chosen is not None:
            a, e, d = chosen
            err = a * self.h**2 + e / self.h
            denom = 2 * float(np.sqrt(np.sum(d**2)))
            est = float(np.sqrt(np.sum(err**2)) / denom) if denom > 0 else 0.0
        return AutoStep(float(self.h), est, tuple(self.tried), n_evaluations)


def _probe_rows(n: int, entries: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rows ``e_i`` then ``2·e_i`` for the probed entries: differences at ``h`` and ``2h``."""
    s = len(entries)
    rows = np.zeros((2 * s, n), dtype)
    rows[np.arange(s), entries] = 1.0
    rows[s + np.arange(s), entries] = 2.0
    return rows


def auto_steps(
    ctx: Context, base: Base, th: Thresholds, seed: int, samples: int = AUTO_SAMPLES
) -> list[AutoStep]:
    """Chooses each checked leaf's step from a Richardson estimate of its error.

    Every leaf is probed at once, as ``"tree"`` rows of one kernel (one compilation): the
    differences ``D(h)`` and ``D(2h)`` of a few sampled entries per leaf give the truncation
    coefficient ``a = (|D(2h) − D(h)| − rounding) / 3h²``; the typical rounding ``e = u·|f|``
    comes from the model. Each leaf's next probe is at ``h* = (e / 2a)^(1/3)``, until it moves
    by less than 4x (at most 6 rounds).

    Args:
        ctx: The check's context.
        base: ``f`` at θ.
        th: The thresholds (the unit roundoff).
        seed: Seed of the probed entries.
        samples: Entries probed per leaf.

    Returns:
        One :class:`AutoStep` per checked leaf.
    """
    u = th.unit_roundoff
    rng = np.random.default_rng((seed, AUTO_STREAM))
    problem, runner = ctx.problem, ctx.runner
    searches = []
    for k, leaf in enumerate(problem.checked):
        scale = leaf_scale(np.asarray(problem.checked_leaves[k]))
        n = math.prod(leaf.shape)
        entries = np.sort(rng.choice(n, size=min(n, samples), replace=False))
        h0 = max(1e-3, 10 * float(np.cbrt(u))) * scale
        searches.append(_Search(h0, 1e3 * u * scale, 0.1 * scale, entries))
    n_rows = sum(2 * len(s.entries) for s in searches)
    per_row = base.bytes_per_eval + 3 * sum(np.asarray(x).nbytes for x in problem.checked_leaves)
    budget = default_budget(runner.devices[0]) * runner.n_devices
    chunk = plan_chunk(n_rows, per_row, budget, n_rows, multiple_of=runner.n_devices)
    n_evals = 0
    for _ in range(6):
        if all(s.done for s in searches):
            break
        plans = [
            LeafPlan(
                k,
                leaf,
                "direction",
                _probe_rows(math.prod(leaf.shape), s.entries, np.dtype(x.dtype)),
                ("direction",),
                chunk,
                s.h,
            )
            for k, (leaf, s, x) in enumerate(
                zip(problem.checked, searches, problem.checked_leaves, strict=True)
            )
        ]
        values: dict[int, list[np.ndarray]] = {k: [] for k in range(len(plans))}
        spans: dict[int, list[np.ndarray]] = {k: [] for k in range(len(plans))}
        for call in calls(problem, plans):
            static = (call.k, call.kind, ctx.sparse)
            v, taken, _ = ctx.run(_kernels.fd_chunk, static, call.batch, call.steps)
            n_evals += 2 * len(call.steps)
            for seg in call.segments:
                moves = call.moves(taken, seg).real  # (2, m, n_k)
                entries = searches[seg.plan.k].entries
                cols = entries[(seg.lo + np.arange(seg.m)) % len(entries)]
                rows = np.arange(seg.m)
                values[seg.plan.k].append(v[:, seg.rows])
                spans[seg.plan.k].append(moves[0, rows, cols] - moves[1, rows, cols])
        for k, search in enumerate(searches):
            if not search.done:
                v = np.concatenate(values[k], axis=1)
                search.update(_richardson(ctx, base, th, v, np.concatenate(spans[k]), search.h))
    return [s.result(n_evals // len(searches)) for s in searches]


def _richardson(
    ctx: Context, base: Base, th: Thresholds, values: np.ndarray, span: np.ndarray, h: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per probed entry and cotangent: Richardson's ``a``, the rounding ``e`` and ``D(h)``.

    ``values`` ``(2, 2s, K)`` holds ``F(θ ± h·e_i)`` then ``F(θ ± 2h·e_i)``; ``span`` the
    actual ``(θ+) − (θ−)`` of each row.
    """
    s = values.shape[1] // 2
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        d = (values[0] - values[1]) / span[:, None]
    if not np.all(np.isfinite(d)):
        return None
    if ctx.scalar:
        scale = np.maximum(np.maximum(np.abs(values[0]), np.abs(values[1])), abs(base.values))
    else:
        scale = np.broadcast_to(base.scales, values[0].shape)
    e = TYPICAL_ROUNDING * th.unit_roundoff * scale[:s]
    a = np.maximum(np.abs(d[s:] - d[:s]) - 1.5 * e / h, 0.0) / (3 * h * h)
    return a, e, d[:s]


#: ``c`` of the TYPICAL rounding error ``c·u·|f|`` of one evaluation, which ``eps="auto"``
#: balances against truncation (the noise floor keeps the conservative ``noise_factor``).
#: Measured on the functions of docs/check_modes.md, ``c = 1`` chooses better steps than the
#: bound ``c = 8`` on 5 of 6 and its estimated errors track the observed ones within ~3x.
TYPICAL_ROUNDING = 1.0
