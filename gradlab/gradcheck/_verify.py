"""Verifying every leaf at first order: the sweep's measurements judged in stages.

1. Every entry at the leaf's step; leaves verified there are done.
2. In the others, the suspects (one-sided slopes that disagree, ``f`` not finite) and a few
   random probes are evaluated again at ``h / 10`` by the same compiled kernels (the step is
   an argument: nothing recompiles), and judged with kinks confirmed, curvature and
   rounding told apart and rounding measured (:mod:`~gradlab.gradcheck._judge`).
3. Leaves still unresolved by rounding are retried at the step their noise floor asks for.
4. Leaves whose gradient is zero to rounding are verified as flat if ``f`` does not move
   along any of their entries over a large step.
5. Kinks whose analytical value lies outside their one-sided slopes are re-checked at a
   nearby ``θ + δ`` where the ties that can cause this are broken (:func:`_break_ties`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import numpy as np

from gradlab.gradcheck import _richardson
from gradlab.gradcheck._bands import relative_error, verdict
from gradlab.gradcheck._judge import (
    MAX_RETRY_EPS,
    MAX_RETRY_EPS_FLOAT32,
    NOISE_MARGIN,
    SECOND_STEP,
    TYPICAL_ROUNDING,
    Measured,
    Second,
    Thresholds,
    judge_leaf,
    judge_part,
    probes,
    slopes,
    squares,
    suspects,
)
from gradlab.gradcheck._problem import Problem
from gradlab.gradcheck._progress import Progress
from gradlab.gradcheck._report import EntryMismatch, LeafReport, LeafStatus
from gradlab.gradcheck._sweep import (
    Base,
    Context,
    LeafPlan,
    Raw,
    evaluate,
    leaf_scale,
    part_label,
    sweep_first_order,
)

__all__ = ["Verified", "verify_first_order"]

#: A leaf whose gradient is this small next to the largest gradient entry of the check is
#: zero to autodiff's rounding; it may be verified as flat (see ``_flat_leaves``).
ZERO_GRADIENT = 1e-12
#: The step, relative to the leaf's scale, over which f must not move to be called flat.
FLAT_STEP = 4.0
#: ``f(θ ± H·e_i)`` may differ from ``f(θ)`` by this many ``u·|f|`` and still be flat.
FLAT_ROUNDING = 64.0
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


@dataclasses.dataclass(frozen=True)
class _Part:
    """What one (part, cotangent) of a leaf measured at the first step."""

    part: str
    j: int
    measured: Measured
    ana: dict[str, np.ndarray]  # per autodiff: analytical values (m,)


def _parts(
    ctx: Context, plan: LeafPlan, raw: dict[tuple[int, str], Raw], base: Base, ads: Sequence[str]
) -> list[_Part]:
    """The first step's measurements of a leaf, per (part, cotangent)."""
    out = []
    for part in plan.parts:
        r = raw[(plan.k, part)]
        values, taken, f0 = r.cat("values"), r.cat("taken"), r.cat("f0")
        grads = base.grads[plan.k].reshape(base.n_cotangents, -1)
        if plan.kind == "entry":
            hp, hm = taken
            # JAX's gradient of a real f in a complex leaf is ∂f/∂re − i·∂f/∂im.
            ana_rev = (-grads.imag if part == "imag" else grads.real)[:, plan.batch]
        else:
            hp, hm = np.full(plan.m, plan.eps), np.full(plan.m, -plan.eps)
            delta = (taken[0] - taken[1]) / (2 * plan.eps)
            ana_rev = np.real(grads @ delta.T)  # <∇F_j, δ>, (K, m)
        anas = {"reverse": ana_rev}
        if "forward" in ads:
            anas["forward"] = r.cat("jvp").T
        for j in range(base.n_cotangents):
            scale = None if ctx.scalar else base.scales[j]
            m = Measured(f0[:, j], values[0, :, j], values[1, :, j], hp, hm, scale)
            out.append(_Part(part, j, m, {ad: a[j] for ad, a in anas.items()}))
    return out


def _indices(plan: LeafPlan) -> tuple[np.ndarray, tuple[int, ...]]:
    if plan.kind == "entry":
        return plan.batch, plan.leaf.shape
    return np.arange(plan.m), (plan.m,)


@dataclasses.dataclass
class Verified:
    """The first-order verdicts of a check, with what they cost."""

    rows: list[LeafReport]
    totals: np.ndarray  # (||num||², ||ana||², ||num − ana||²) over all rows
    n_evaluations: int
    n_unstable: int
    f0: dict[int, np.ndarray]  # per leaf: F(θ) as its sweep's program computed it
    stages: dict[str, int]  # evaluations per stage: first step, second step, retries


def verify_first_order(
    ctx: Context,
    plans: Sequence[LeafPlan],
    base: Base,
    th: Thresholds,
    ads: Sequence[str],
    repeat: bool,
    bar: Progress | None,
    seed: int,
    retry: int = 2,
) -> Verified:
    """Sweeps every plan and judges each leaf (see :mod:`~gradlab.gradcheck._judge`).

    1. Every entry at the leaf's step; leaves verified there are done.
    2. In the others, the suspects (one-sided slopes that disagree, ``f`` not finite) and a
       few random probes are evaluated again at ``h / 10`` by the same compiled kernels:
       kinks are confirmed and checked against their one-sided slopes, curvature and
       rounding told apart, rounding measured.
    3. Leaves still unresolved by rounding are retried at the step their noise floor asks
       for (``retry`` times at most), and the report says which step verified them.
    """
    forward = "forward" in ads
    raw, n_evals, n_unstable = sweep_first_order(ctx, plans, forward, repeat, bar)
    stages = {"first step": n_evals}
    measured = {plan.k: _parts(ctx, plan, raw, base, ads) for plan in plans}
    f0 = {p.k: raw[(p.k, p.parts[0])].cat("f0")[0] for p in plans}
    rows = {
        (plan.k, ad): _row(plan, measured[plan.k], ad, None, th, ctx.problem) for plan in plans
        for ad in ads
    }  # fmt: skip
    seconds: dict[int, dict[tuple[str, int], Second]] = {}
    pending = [p for p in plans if any(rows[p.k, ad][0].status != "verified" for ad in ads)]
    if pending:
        rng = np.random.default_rng((seed, 7))
        picks = {p.k: _second_positions(p, measured[p.k], th, rng) for p in pending}
        second = [
            dataclasses.replace(p, batch=p.batch[picks[p.k][0]], eps=p.eps / SECOND_STEP)
            for p in pending
        ]
        raw2, n2, _ = sweep_first_order(ctx, second, False, False, None)
        n_evals += n2
        stages["second step"] = n2
        for plan, plan2 in zip(pending, second, strict=True):
            at, probe_at = picks[plan.k]
            again = {(pt.part, pt.j): pt for pt in _parts(ctx, plan2, raw2, base, ["reverse"])}
            extra = {
                key: Second(at, pt.measured, probe_at) for key, pt in again.items()
            }  # fmt: skip
            seconds[plan.k] = extra
            for ad in ads:
                rows[plan.k, ad] = _row(plan, measured[plan.k], ad, extra, th, ctx.problem)
    totals = sum((rows[plan.k, ad][1] for plan in plans for ad in ads), np.zeros(3))
    out = [rows[plan.k, ad][0] for plan in plans for ad in ads]
    tied = {
        p.k: np.unique(np.concatenate([rows[p.k, ad][2] for ad in ads]))
        for p in plans
        if any(rows[p.k, ad][2].size for ad in ads)
    }
    if retry == 2 and tied:  # once, at the top level
        out, n_ties = _break_ties(ctx, plans, out, tied, measured, seconds, base, th, ads, seed)
        n_evals += n_ties
        stages["ties broken nearby"] = n_ties
    retried = [p for p in plans if any(rows[p.k, ad][0].resolving_eps for ad in ads)]
    if retry and retried:  # a retry may itself ask for a larger step once more
        steps = {p.k: max(rows[p.k, ad][0].resolving_eps or 0.0 for ad in ads) for p in retried}
        again_plans = [dataclasses.replace(p, eps=steps[p.k]) for p in retried]
        redo = verify_first_order(ctx, again_plans, base, th, ads, False, None, seed, retry - 1)
        n_evals += redo.n_evaluations
        stages["retry at larger steps"] = redo.n_evaluations
        better = {(r.path, r.autodiff): r for r in redo.rows}
        out = [
            _retried(r, better[r.path, r.autodiff]) if (r.path, r.autodiff) in better else r
            for r in out
        ]
    if retry == 2:  # once, at the top level
        out, n_rich, sq = _extrapolated(ctx, plans, out, base, th, ads)
        by_path = {p.leaf.path: p.k for p in plans}
        for (path, ad), new in sq.items():  # the overall error with the extrapolated values
            totals = totals - rows[by_path[path], ad][1] + new
        if n_rich:
            n_evals += n_rich
            stages["Richardson extrapolation"] = n_rich
        out, n_flat = _flat_leaves(ctx, plans, out, base, th)
        if n_flat:
            n_evals += n_flat
            stages["flatness probe"] = n_flat
    return Verified(out, totals, n_evals, n_unstable, f0, stages)


def _flat_leaves(
    ctx: Context, plans: Sequence[LeafPlan], rows: list[LeafReport], base: Base, th: Thresholds
) -> tuple[list[LeafReport], int]:
    """Unresolved leaves on which ``f`` does not depend (see :data:`FLAT_STEP`).

    A gradient that is zero by symmetry (the key bias of softmax attention, anything before
    a normalisation it is invariant to) is computed as rounding, ~1e-17, and its centered
    differences are rounding too: no relative error can be established between two noises.
    What can be established is that ``f`` does not change along each entry over a large
    interval: ``f(θ ± H·e_i) = f(θ)`` to rounding at ``H = FLAT_STEP·max(1, rms|θ|)``, which
    a gradient larger than ``64·u·|f|/H`` (3.5e-15·|f| in float64) could not hide; with
    ``jax.grad`` zero to rounding there too, the leaf is verified as flat. Anything else
    stays unresolved.
    """
    scale_g = max((float(np.max(np.abs(g))) for g in base.grads if g.size), default=0.0)
    todo = []
    for plan in plans:
        mine = [r for r in rows if r.path == plan.leaf.path]
        if not mine or any(r.status != "unresolved" or r.n_nonfinite for r in mine):
            continue
        if float(np.max(np.abs(base.grads[plan.k]))) > ZERO_GRADIENT * max(scale_g, 1e-300):
            continue
        h = FLAT_STEP * leaf_scale(np.asarray(ctx.problem.checked_leaves[plan.k]))
        todo.append(dataclasses.replace(plan, eps=h))
    if not todo:
        return rows, 0
    raw, n_evals, _ = sweep_first_order(ctx, todo, False, False, None)
    flat = {}
    for plan in todo:
        parts = _parts(ctx, plan, raw, base, ["reverse"])
        ok = True
        for pt in parts:
            m = pt.measured
            size = np.maximum(np.abs(m.f0), np.maximum(np.abs(m.fp), np.abs(m.fm)))
            if m.scale is not None:
                size = np.maximum(size, m.scale)
            moved = np.maximum(np.abs(m.fp - m.f0), np.abs(m.fm - m.f0))
            ok &= bool(
                np.all(np.isfinite(moved) & (moved <= FLAT_ROUNDING * th.unit_roundoff * size))
            )
        if ok:
            flat[plan.leaf.path] = plan.eps
    out = []
    for r in rows:
        if r.path in flat:
            note = (
                f"f does not depend on this leaf at θ: f(θ ± {flat[r.path]:g}·e_i) equals f(θ) "
                f"to rounding for every entry, and jax.grad is zero to rounding (max "
                f"{r.grad_norm:.0e}); verified as flat"
            )
            r = dataclasses.replace(r, status="verified", flat=True, note=note)
        out.append(r)
    return out, n_evals


def _extrapolated(
    ctx: Context,
    plans: Sequence[LeafPlan],
    rows: list[LeafReport],
    base: Base,
    th: Thresholds,
    ads: Sequence[str],
) -> tuple[list[LeafReport], int, dict[tuple[str, str], np.ndarray]]:
    """Leaves no single step settled, judged by Richardson extrapolation (:mod:`._richardson`).

    Candidates: leaves unresolved after the retries, or found wrong only at a retry's larger
    step (where truncation enters), with no kinks and every entry finite, whose gradient is
    not zero to rounding (those go to the flatness probe). The ladder starts at 4× the
    largest retry step.

    Returns:
        The rows, the evaluations of ``f`` this took, and the new rows' squared norms
        ``(||num||², ||ana||², ||num − ana||²)`` per ``(path, autodiff)``.
    """
    scale_g = max((float(np.max(np.abs(g))) for g in base.grads if g.size), default=0.0)
    todo = []
    for plan in plans:
        mine = [r for r in rows if r.path == plan.leaf.path]
        open_ = [r for r in mine if r.status == "unresolved" or (
            r.status == "wrong" and r.eps is not None and r.eps != plan.eps)]  # fmt: skip
        if not open_ or any(r.n_kinks or r.n_nonfinite or r.n_ties for r in mine):
            continue
        if float(np.max(np.abs(base.grads[plan.k]))) <= ZERO_GRADIENT * max(scale_g, 1e-300):
            continue
        todo.append(plan)
    if not todo:
        return rows, 0, {}
    largest = MAX_RETRY_EPS if th.compute_dtype == "float64" else MAX_RETRY_EPS_FLOAT32
    starts = {
        p.k: 4 * largest * leaf_scale(np.asarray(ctx.problem.checked_leaves[p.k])) for p in todo
    }
    d: dict[tuple[int, str, int], list[np.ndarray]] = {}
    noise: dict[tuple[int, str, int], list[np.ndarray]] = {}
    ana: dict[tuple[int, str, int], dict[str, np.ndarray]] = {}
    n_evals = 0
    for level in range(_richardson.LADDER):
        at = [dataclasses.replace(p, eps=_richardson.ladder(starts[p.k])[level]) for p in todo]
        raw, n, _ = sweep_first_order(ctx, at, "forward" in ads, False, None)
        n_evals += n
        for plan in at:
            for pt in _parts(ctx, plan, raw, base, ads):
                s = slopes(pt.measured, th)
                key = (plan.k, pt.part, pt.j)
                d.setdefault(key, []).append(s.num)
                noise.setdefault(key, []).append(s.noise * TYPICAL_ROUNDING / th.noise_factor)
                ana[key] = pt.ana
    out, squares_of = [], {}
    for r in rows:
        found = next((p for p in todo if p.leaf.path == r.path), None)
        if found is None:
            out.append(r)
            continue
        plan = found
        sq, worst = np.zeros(4), []
        indices, shape = _indices(plan)
        for (k, part, j), ds in d.items():
            if k != plan.k:
                continue
            value, err = _richardson.extrapolate(np.stack(ds), np.stack(noise[k, part, j]))
            a = ana[k, part, j][r.autodiff]
            sq += [np.sum(value**2), np.sum(a**2), np.sum((value - a) ** 2), np.sum(err**2)]
            label = part_label(part, j, ctx.scalar)
            for i in np.argsort(-np.abs(value - a))[: th.max_worst]:
                index = tuple(int(x) for x in np.unravel_index(int(indices[i]), shape))
                worst.append(
                    EntryMismatch(index, float(value[i]), float(a[i]), float(abs(value[i] - a[i])),
                                  part=label)
                )  # fmt: skip
        rel = relative_error(sq[0], sq[1], sq[2])
        denom = float(np.sqrt(sq[0]) + np.sqrt(sq[1]))
        res = float(np.sqrt(sq[3]) / denom) if denom > 0 else float("inf")
        steps = _richardson.ladder(starts[plan.k])
        how = (
            f"Richardson extrapolation over steps {steps[0]:.0e} … {steps[-1]:.0e} gives "
            f"relative error {rel:.1e} with an estimated error of {res:.1e}"
        )
        tried = f"eps={plan.eps:g}" + (f" and {r.eps:.0e}" if r.eps != plan.eps else "")
        was = (
            f"single steps ({tried}) left it unresolved"
            if r.status == "unresolved"
            else f"at eps={r.eps:.0e} it differed by {r.relative_error:.1e}"
        )
        status: LeafStatus
        if rel <= th.tolerance and res <= th.tolerance:
            status, note = "verified", f"verified by {how}; {was}"
        elif rel > th.tolerance and rel > NOISE_MARGIN * res:
            status, note = "wrong", f"{how}; {was}"
        else:
            status = "unresolved"
            note = (
                f"the gradient is too small next to |f|, or f too noisy, for finite "
                f"differences in {th.compute_dtype}: neither a single step nor extrapolation "
                f"resolves it ({how}, above the tolerance {th.tolerance:g}; {was}); check this "
                "leaf on a loss without the large terms, or where its gradient is larger"
            )
        worst.sort(key=lambda w: -w.abs_error)
        squares_of[r.path, r.autodiff] = sq[:3]
        out.append(
            dataclasses.replace(
                r, status=status, relative_error=rel, verdict=verdict(rel), noise_floor=res,
                note=note, resolving_eps=None, worst=tuple(worst[: th.max_worst]),
            )
        )  # fmt: skip
    return out, n_evals, squares_of


def _retried(first: LeafReport, again: LeafReport) -> LeafReport:
    """The retry's verdict, saying which steps were tried (and never suggesting one of them)."""
    why = f"at eps={first.eps:g} rounding noise dominated (noise floor {first.noise_floor:.1e})"
    if again.status == "verified":
        return dataclasses.replace(again, note=f"verified at eps={again.eps:.0e}: {why}")
    note = again.note.split(" (retried at eps=")[0]
    if again.resolving_eps is not None and again.resolving_eps <= 2 * (again.eps or 0.0):
        # what the retry's floor asks for is the retry itself: nothing new to suggest
        again = dataclasses.replace(again, resolving_eps=None)
        note = (
            f"rounding noise dominates at eps={again.eps:.0e} too "
            f"(noise floor {again.noise_floor:.1e})"
        )
    return dataclasses.replace(again, note=f"{note} (retried at eps={again.eps:.0e}: {why})")


def _second_positions(
    plan: LeafPlan, parts: list[_Part], th: Thresholds, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Positions to evaluate at the second step: suspects of any part, and random probes."""
    odd = np.zeros(plan.m, bool)
    for pt in parts:
        odd |= suspects(slopes(pt.measured, th), th)
    probe_at = probes(plan.m, rng)
    return np.union1d(np.flatnonzero(odd), probe_at), probe_at


def _row(
    plan: LeafPlan,
    parts: list[_Part],
    ad: str,
    second: dict[tuple[str, int], Second] | None,
    th: Thresholds,
    problem: Problem,
    nearby: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[LeafReport, np.ndarray, np.ndarray]:
    """A leaf's row for one autodiff, its squared norms, and its kinks outside their slopes.

    The squared norms feed the overall error; the kinks are positions (those within the range
    of ``f``'s slopes at ``nearby`` points, per part, are ties: see :func:`_break_ties`).
    """
    indices, shape = _indices(plan)
    results = [
        judge_part(
            shape,
            indices,
            pt.ana[ad],
            pt.measured,
            th,
            None if second is None else second[pt.part, pt.j],
            part_label(pt.part, pt.j, pt.measured.scale is None),
            None if nearby is None else nearby[pt.part, pt.j],
        )
        for pt in parts
    ]
    scale = leaf_scale(np.asarray(problem.checked_leaves[plan.k]))
    row = judge_leaf(
        plan.leaf.path, plan.leaf.shape, str(plan.leaf.dtype), results, plan.eps, th, scale
    )
    bad = np.unique(np.concatenate([r.bad_at for r in results] + [np.zeros(0, np.int64)]))
    size = math.prod(plan.leaf.shape)
    n_checked = plan.m if plan.kind == "direction" or plan.m < size else None
    row = dataclasses.replace(row, autodiff=ad, n_checked=n_checked)
    return row, squares(results), bad


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
) -> tuple[list[LeafReport], int]:
    """Kinks outside their one-sided slopes, re-checked where the ties are broken.

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
        redo = verify_first_order(near, near_plans, near_base, th, ads, False, None, seed, 1)
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
