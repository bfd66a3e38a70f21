"""``eps="auto"`` at second order: each leaf's step from the gradient's measured truncation.

Differences of the gradient at ``h`` and ``2h`` on a few sampled columns give Richardson's
truncation estimate against the gradient's rounding; the step is refined until it stops
moving, over a few rounds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gradlab.gradcheck.evaluation._hessian_sweep import (
    _sweep,
)
from gradlab.gradcheck.evaluation._sweep import Context
from gradlab.gradcheck.planning._plan import LeafPlan
from gradlab.gradcheck.planning._step import magnitude
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.report._progress import Progress

#: Columns per leaf that ``eps="auto"`` probes, and its rounds at most.
AUTO_SAMPLES = 16


AUTO_ROUNDS = 4


def _auto_steps(
    ctx: Context,
    plans: Sequence[LeafPlan],
    g0: np.ndarray,
    th: Thresholds,
    seed: int,
    bar: Progress | None,
) -> tuple[list[LeafPlan], dict[int, float], int]:
    """``eps="auto"``: each leaf's step from Richardson's truncation estimate.

    A few columns per leaf are differenced at ``h`` and ``2h``: ``a = (|D(2h) − D(h)| −
    rounding) / 3h²`` estimates the truncation coefficient, ``e = u·G`` the gradient's
    rounding, and the next step is ``h* = (e / 2a)^(1/3)`` (within ``[1e3·u, 0.1]`` times
    the leaf's magnitude), until it moves by less than 4× (at most :data:`AUTO_ROUNDS`).
    Returns the plans at their chosen steps and each leaf's estimated relative error there.
    """
    rng = np.random.default_rng((seed, 11))
    compiled = False
    steps = {p.k: p.eps for p in plans}
    done = {p.k: False for p in plans}
    est: dict[int, float] = {}
    n_evals = 0
    sampled = {}
    for plan in plans:
        pick = np.sort(rng.choice(plan.m, size=min(plan.m, AUTO_SAMPLES), replace=False))
        sampled[plan.k] = dataclasses.replace(plan, batch=plan.batch[pick])
    for _ in range(AUTO_ROUNDS):
        todo = [p for p in plans if not done[p.k]]
        if not todo:
            break
        at_h = [dataclasses.replace(sampled[p.k], eps=steps[p.k]) for p in todo]
        at_2h = [dataclasses.replace(sampled[p.k], eps=2 * steps[p.k]) for p in todo]
        if not compiled and bar is not None:
            _, d1, n = _sweep(ctx, at_h, (), bar)
            compiled = True
        else:
            _, d1, n = _sweep(ctx, at_h, (), None)
        _, d2, n2 = _sweep(ctx, at_2h, (), None)
        n_evals += n + n2
        for plan in todo:
            h = steps[plan.k]
            mag = magnitude(ctx.problem.checked_leaves[plan.k])
            a_sq, e_sq, d_sq, finite = 0.0, 0.0, 0.0, True
            for part in plan.parts:
                m1, m2 = d1[(plan.k, part)], d2[(plan.k, part)]
                for j in range(g0.shape[0]):
                    c1, c2 = m1.columns(g0, j), m2.columns(g0, j)
                    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                        D1 = (c1.gp - c1.gm) / (c1.hp - c1.hm)[:, None]
                        D2 = (c2.gp - c2.gm) / (c2.hp - c2.hm)[:, None]
                    if not (np.all(np.isfinite(D1)) and np.all(np.isfinite(D2))):
                        finite = False
                        continue
                    g = max(float(np.max(np.abs(c1.g0))), float(np.max(np.abs(c1.gp))))
                    e = th.unit_roundoff * max(g, 1e-300)
                    a = np.maximum(np.abs(D2 - D1) - 1.5 * e / h, 0.0) / (3 * h * h)
                    a_sq += float(np.sum(a**2))
                    e_sq += e**2 * D1.size
                    d_sq += float(np.sum(D1**2))
            lo, hi = 1e3 * th.unit_roundoff * mag, 0.1 * mag
            if not finite:
                steps[plan.k], done[plan.k] = max(h / 10, lo), h / 10 < lo
                continue
            big_a, e_rms = np.sqrt(a_sq), np.sqrt(e_sq)
            if big_a == 0.0:
                new = min(10 * h, hi)
                done[plan.k] = new == h
            else:
                new = float(np.clip(np.cbrt(e_rms / (2 * big_a)), lo, hi))
                done[plan.k] = h / 4 <= new <= 4 * h
            steps[plan.k] = new
            if d_sq > 0:
                est[plan.k] = float((big_a * new**2 + e_rms / new) / (2 * np.sqrt(d_sq)))
    return [dataclasses.replace(p, eps=steps[p.k]) for p in plans], est, n_evals
