"""Kinks outside their one-sided slopes, re-checked at a nearby θ where ties are broken.

A sum of terms that tie at θ (overlapping max-pool windows over an exact-zero background,
identical ensemble members) has a conservative gradient that can lie outside the one-sided
slopes finite differences measure. Such a kink is re-checked at nearby points ``θ + δ``
(the first-order verification run again there), and the range of ``f``'s slopes sampled on
lines through them bounds what autodiff may return.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from gradlab.gradcheck.evaluation._base import evaluate
from gradlab.gradcheck.evaluation._sweep import Context, sweep_first_order
from gradlab.gradcheck.judging._judge import (
    Second,
)
from gradlab.gradcheck.judging._leaf_parts import _Part, _parts, _row
from gradlab.gradcheck.planning._plan import Base, LeafPlan, leaf_scale
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.report._leaf_report import LeafReport

#: Ties are broken at ``θ + δ``, ``δ = s·z`` with ``z`` standard normal per entry and ``s``
#: this fraction of each leaf's scale ``max(1, rms|θ_k|)`` ...
TIE_SHIFT = 1e-4


#: ... and at least this many of the leaf's steps, so that terms tied at θ sit many steps
#: apart at θ + δ; a second try moves ``TIE_GROWTH`` times farther.
TIE_STEPS = 100.0


TIE_GROWTH = 10.0


#: Stream of ``np.random.default_rng((seed, stream, try, leaf))`` that draws ``z``.
TIE_STREAM = 11


#: Samples of f on each side of θ + δ along an entry at a tie (see :func:`_slope_range`),
#: over ``±TIE_SPAN·s``.
LINE_POINTS = 16


TIE_SPAN = 6.0


#: Lines swept per entry, each through its own ``θ + δ``: terms whose kinks coincide on one
#: line (they share the runner-up of a tie) come apart on another.
N_LINES = 4


def _shift(plan: LeafPlan, x: np.ndarray, attempt: int) -> float:
    """The size ``s`` of a leaf's move to a nearby point (see :data:`TIE_SHIFT`)."""
    return max(TIE_SHIFT * leaf_scale(x), TIE_STEPS * plan.eps) * TIE_GROWTH**attempt


def _nearby(
    ctx: Context, plans: Sequence[LeafPlan], seed: int, attempt: int, line: int = 0
) -> Context:
    """The check's context at ``θ + δ`` (see :data:`TIE_SHIFT`): same shapes, same kernels."""
    problem = ctx.problem
    moved = []
    for plan, x in zip(plans, problem.checked_leaves, strict=True):
        xn = np.asarray(x)
        rng = np.random.default_rng((seed, TIE_STREAM, attempt, line, plan.k))
        z = rng.standard_normal(xn.shape)
        moved.append(jax.numpy.asarray(xn + _shift(plan, xn, attempt) * z, dtype=x.dtype))
    near = dataclasses.replace(problem, checked_leaves=tuple(moved))
    dyn = ctx.runner.replicate((near.checked_leaves, near.fixed_leaves, near.rest_dyn, ctx.dyn[3]))
    return dataclasses.replace(ctx, problem=near, dyn=dyn)


def _slope_range(
    near: Context,
    plans: Sequence[LeafPlan],
    spans: dict[int, float],
    base: Base,
    th: Thresholds,
) -> tuple[dict[int, dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]], int]:
    """Per plan and part: the range a conservative gradient at θ can take along each entry.

    At ``θ + δ`` the terms tied at θ are apart, so along the line ``θ + δ + t·e_i`` each of
    them has its own kink, at ``|t|`` of the order of ``δ``. ``f`` is sampled on that line at
    ``t = ±k·T/K`` (``k = 0 … K``, :data:`LINE_POINTS`, ``T = spans[k]``) by the same kernels
    (the step is an argument), and the slopes between neighbouring samples form a profile
    that starts at ``S(−T)`` and jumps at each term's kink. Each tied term may contribute
    either of its one-sided slopes, so the sums of the choices span ``[S(−T) + Σ negative
    jumps, S(−T) + Σ positive jumps]``: the range returned. (A kink outside ``±T`` is missed,
    which narrows the range: it never widens it.)
    """
    values: dict[tuple[int, str, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    n_evals = 0
    for step in range(1, LINE_POINTS + 1):
        at = [dataclasses.replace(p, eps=spans[p.k] * step / LINE_POINTS) for p in plans]
        raw, n, _ = sweep_first_order(near, at, False, False, None)
        n_evals += n
        for plan in at:
            for pt in _parts(near, plan, raw, base, ["reverse"]):
                m = pt.measured
                got = values.setdefault((plan.k, pt.part, pt.j), [(np.zeros_like(m.f0), m.f0)])
                got += [(m.hp, m.fp), (m.hm, m.fm)]
    out: dict[int, dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]] = {p.k: {} for p in plans}
    for (k, part, j), got in values.items():
        t = np.stack([g[0] for g in got], axis=1)  # (m, 2K + 1)
        f = np.stack([g[1] for g in got], axis=1)
        order = np.argsort(t, axis=1)
        t, f = np.take_along_axis(t, order, 1), np.take_along_axis(f, order, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            profile = np.diff(f, axis=1) / np.diff(t, axis=1)
        jumps = np.diff(profile, axis=1)
        start = profile[:, 0]
        lo = start + np.sum(np.minimum(jumps, 0.0), axis=1)
        hi = start + np.sum(np.maximum(jumps, 0.0), axis=1)
        out[k][part, j] = (lo, hi)
    return out, n_evals


def _break_ties(
    ctx: Context,
    plans: Sequence[LeafPlan],
    rows: list[LeafReport],
    tied: dict[int, np.ndarray],
    measured: dict[int, list[_Part]],
    seconds: dict[int, dict[tuple[str, int], Second]],
    base: Base,
    th: Thresholds,
    ads: Sequence[str],
    seed: int,
    verify: Callable[..., Any],
) -> tuple[list[LeafReport], int]:
    """Kinks outside their one-sided slopes, re-checked where the ties are broken.

    ``verify``: the first-order verification, run again at the nearby points.

    Along one entry, ``f`` may be a sum of many terms that tie at θ at once (every window of
    an overlapping max-pool over an exact-zero background, identical ensemble members):
    autodiff picks one element per tie, and the sum of those picks — an element of a
    conservative gradient (Bolte & Pauwels 2020) — can lie outside the one-sided slopes of
    the sum, which is all finite differences along the entry at θ can measure. A single kink
    cannot do that (a rule wrong at its kink fails), so such an entry is re-checked near θ:

    1. at ``θ + δ`` (every checked leaf moved by a small random ``δ``, :data:`TIE_SHIFT`), by
       the same kernels and the same judging: there the check must show ``f`` smooth along
       the entry (no confirmed kink) and the gradient right;
    2. along the entry through ``θ + δ``, where each tied term has its own kink: the
       analytical value at θ must lie within the sums of the one-sided slopes the tied terms
       allow (:func:`_slope_range`) — what picking one element per tie can give.

    Entries that pass both are **at a tie: verified nearby**; wrong at ``θ + δ``, or outside
    the range, they are wrong; still at kinks after a second, larger ``δ``, they stay wrong as
    found at θ.

    Returns:
        The rows, and the evaluations of ``f`` this took.
    """
    by_k = {p.k: p for p in plans}
    todo = dict(tied)
    settled: dict[int, tuple[str, LeafReport, float, int]] = {}
    nears: list[Context] = []
    n_evals = 0
    for attempt in range(2):
        if not todo:
            break
        near = _nearby(ctx, plans, seed, attempt)
        nears.append(near)
        near_base = evaluate(near.problem, ctx.dyn[3], near.dyn[:3])
        near_plans = [
            dataclasses.replace(by_k[k], batch=by_k[k].batch[at]) for k, at in todo.items()
        ]
        redo = verify(near, near_plans, near_base, th, ads, False, None, seed, 1)
        n_evals += redo.n_evaluations
        size = max(
            float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))
            for a, b in zip(near.problem.checked_leaves, ctx.problem.checked_leaves, strict=True)
        )
        for plan in near_plans:
            mine = [r for r in redo.rows if r.path == plan.leaf.path]
            if any(r.status == "wrong" for r in mine):
                settled[plan.k] = ("wrong", next(r for r in mine if r.status == "wrong"), size, 0)
            elif all(r.status == "verified" and r.n_kinks == 0 for r in mine):
                settled[plan.k] = ("verified", mine[0], size, attempt)
            else:
                continue
            del todo[plan.k]
    smooth = [k for k, (how, *_) in settled.items() if how == "verified"]
    ranges: dict[int, dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]] = {}
    for attempt in (0, 1):
        mine_k = [k for k in smooth if settled[k][3] == attempt]
        if not mine_k:
            continue
        sub = [dataclasses.replace(by_k[k], batch=by_k[k].batch[tied[k]]) for k in mine_k]
        spans = {
            k: TIE_SPAN * _shift(by_k[k], np.asarray(ctx.problem.checked_leaves[k]), attempt)
            for k in mine_k
        }
        got: dict[int, dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]] = {}
        for line in range(N_LINES):  # other δ: terms that cross together on one line part
            near = nears[attempt] if line == 0 else _nearby(ctx, plans, seed, attempt, line)
            one, n = _slope_range(near, sub, spans, base, th)
            n_evals += n
            for k, parts in one.items():
                for key, (lo, hi) in parts.items():
                    old = got.setdefault(k, {}).get(key, (lo, hi))
                    got[k][key] = (np.fmin(old[0], lo), np.fmax(old[1], hi))
        for k in mine_k:
            ranges[k] = {}
            for key, (lo, hi) in got[k].items():
                full_lo, full_hi = np.full(by_k[k].m, np.nan), np.full(by_k[k].m, np.nan)
                full_lo[tied[k]], full_hi[tied[k]] = lo, hi
                ranges[k][key] = (full_lo, full_hi)
    out = []
    for r in rows:
        k = next(p.k for p in plans if p.leaf.path == r.path)
        if k not in settled:
            if k in tied:
                r = dataclasses.replace(
                    r,
                    note=f"{r.note}; re-checked at two nearby points θ + δ, the ties did not "
                    "break (kinks remain there), so this stands",
                )
            out.append(r)
            continue
        how, near_row, size, _ = settled[k]
        if how == "wrong":
            note = (
                f"{r.note}, and at a nearby θ + δ (rms |δ| {size:.0e}) where the ties are "
                f"broken they are wrong too (relative error {near_row.relative_error:.2e})"
            )
            out.append(dataclasses.replace(r, note=note))
            continue
        again, _, still = _row(
            by_k[k], measured[k], r.autodiff, seconds[k], th, ctx.problem, ranges[k]
        )
        tie_note = ""
        if again.n_ties:
            tie_note = (
                f"{again.n_ties} entries at a tie: verified nearby (at θ + δ, rms |δ| "
                f"{size:.0e}, f is smooth along them and the gradient agrees to "
                f"{near_row.relative_error:.1e}; their value at θ lies within the sums of the "
                "one-sided slopes of the terms that tie there, measured apart along each entry "
                "at θ + δ). At θ many terms tie at once and autodiff returns one "
                "element of a conservative gradient, which finite differences at θ cannot pin "
                "down"
            )
        if still.size:
            why = (
                f"{still.size} entries sit at kinks where the analytical value lies outside "
                "the one-sided slopes (not a subgradient), and outside the sums of the "
                "one-sided slopes of the terms that tie there, measured apart at a nearby "
                "θ + δ where the ties are broken"
            )
            note = f"{why}; {tie_note}" if tie_note else why
        elif again.status == "verified":
            note = tie_note
        else:
            note = f"{again.note}; {tie_note}"
        out.append(dataclasses.replace(again, note=note))
    return out, n_evals
