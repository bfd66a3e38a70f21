"""Second order: Hessian-vector products against finite differences of the gradient.

As torch's ``gradgradcheck`` does, but per leaf and in parallel. For each perturbation of a
leaf ``θ_k`` (an entry ``e_i``, or a random direction), the numerical column

    (∇F(θ + h·e_i) − ∇F(θ − h·e_i)) / 2h

(the gradient over EVERY checked leaf, ``n`` real rows) is compared with ``H·e_i`` from
``jax.jvp(jax.grad(F))`` (forward-over-reverse, ``autodiff="forward"``, the default) or from
``jax.grad(<jax.grad(F), e_i>)`` (reverse-over-reverse, ``autodiff="reverse"``). A leaf's row in
the report judges its block of ``H`` (its columns, every row).

Reverse-over-reverse computes ``Hᵀe_i`` (the gradient of ``∂F/∂θ_i``), which equals ``H·e_i``
only when autodiff's Hessian is symmetric — a broken rule can break that. So a lost
``∂(∂f/∂b)/∂a`` shows in leaf ``a`` with ``autodiff="forward"`` and in leaf ``b`` with
``autodiff="reverse"``; ``autodiff="both"`` reports both.

Verified in stages, as first order is (:mod:`~gradlab.gradcheck._second_judge` judges):

1. every column at the leaf's step ``h`` (:func:`order2_steps`: ``1e-5`` times the leaf's
   magnitude ``rms|θ_k|``, so a σ ≈ 1e-4 is moved by 1e-9, not by a tenth of itself);
2. leaves not verified there, at ``h/10`` and ``2h`` too: jumps and kinks of the gradient
   (no second derivative: inconclusive with that reason), truncation (Richardson
   extrapolation), crossed kinks and rounding told apart;
3. leaves left unresolved, again at another step: larger where rounding left them open (as
   their noise floor asks), ``h/100`` where truncation or ``f``'s domain did;
4. leaves whose analytical block is zero to rounding, verified as flat when the gradient
   does not move along any of their entries over a wide step, relative to the gradient's
   own scale (a leaf ``f`` is linear in: a critic's output bias, an energy's linear weights,
   ``concatenate`` or ``roll`` along their inputs).

``eps="auto"`` chooses each leaf's step from a Richardson estimate (differences at ``h`` and
``2h`` of a few columns) of truncation against the gradient's rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from gradlab._errors import CheckInputError
from gradlab.gradcheck import _kernels
from gradlab.gradcheck._judge import SECOND_STEP, Thresholds
from gradlab.gradcheck._problem import Problem
from gradlab.gradcheck._progress import Progress
from gradlab.gradcheck._report import LeafReport
from gradlab.gradcheck._second_judge import (
    Columns,
    Part,
    judge_first,
    judge_steps,
    leaf_row,
    sums,
)
from gradlab.gradcheck._step import ORDER2_EPS, cube_root_step
from gradlab.gradcheck._sweep import (
    Base,
    Call,
    Context,
    Job,
    LeafPlan,
    Segment,
    calls,
    part_label,
)

__all__ = [
    "gradient_rows",
    "magnitude",
    "nondiff_tracer_errors",
    "order2_steps",
    "row_label",
    "verify_second_order",
]

#: The wide steps (times the leaf's magnitude) over which a flat leaf's gradient must not move,
#: tried largest first: a piecewise-linear ``f`` is flat only up to its nearest kink.
FLAT_STEPS = (4.0, 0.4, 0.04, 0.004)
#: ``∇F(θ ± H·e_i)`` may differ from ``∇F(θ)`` by this many ``u·G`` and still be flat.
FLAT_ROUNDING = 64.0
#: A leaf's analytical block is zero to rounding when no entry exceeds this fraction of the
#: Hessian's scale (the largest HVP entry of the check, or ``G / magnitude``).
ZERO_HESSIAN = 1e-12
#: Largest retry step, times the leaf's magnitude (Richardson keeps truncation in check).
MAX_RETRY_EPS = 1e-2
#: Columns per leaf that ``eps="auto"`` probes, and its rounds at most.
AUTO_SAMPLES = 16
AUTO_ROUNDS = 4


@contextlib.contextmanager
def nondiff_tracer_errors() -> Iterator[None]:
    """JAX's error for a traced value in a ``custom_vjp``'s ``nondiff_argnums``, made clear.

    JAX refuses to differentiate such a function at all (``jax.grad`` raises too), so no
    check can run: the error says which construct and what to do.
    """
    try:
        yield
    except jax.errors.UnexpectedTracerError as e:
        if "nondiff_argnums" not in str(e):
            raise
        raise CheckInputError(
            "f passes a traced value (a parameter, or something computed from one) to a "
            "jax.custom_vjp function in a position listed in its nondiff_argnums; JAX cannot "
            "differentiate that (jax.grad raises too). Fix: make that argument a regular "
            "(differentiable) argument of the custom_vjp and return its cotangent from bwd "
            "(None for a non-float), or close over a constant instead."
        ) from e


def gradient_rows(grads: Sequence[np.ndarray]) -> np.ndarray:
    """Per-leaf gradients ``(K, *shape)`` as real rows ``(K, n)`` (complex: re, then im).

    Example:
        >>> gradient_rows([np.ones((1, 2)), np.array([[1 - 2j]])]).tolist()
        [[1.0, 1.0, 1.0, 2.0]]
    """
    parts = []
    for g in grads:
        g = g.reshape(g.shape[0], -1)
        parts += [g.real, -g.imag] if np.iscomplexobj(g) else [g]
    return np.concatenate(parts, axis=1)


def row_label(problem: Problem, r: int) -> str:
    """The gradient component of real row ``r``: a leaf path and index (``re``/``im``)."""
    for leaf in problem.checked:
        n = int(np.prod(leaf.shape))
        blocks = 2 if np.issubdtype(leaf.dtype, np.complexfloating) else 1
        if r < n * blocks:
            index = tuple(int(i) for i in np.unravel_index(r % n, leaf.shape))
            part = "" if blocks == 1 else (" re" if r < n else " im")
            path = "θ" if leaf.path == "." else leaf.path
            return f"{path}{list(index) if index else ''}{part}"
        r -= n * blocks
    raise IndexError(r)


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


@dataclasses.dataclass
class _Measured:
    """What one sweep measured for one (leaf, part): per cotangent ``(m, K, n)``."""

    gp: np.ndarray
    gm: np.ndarray
    hp: np.ndarray
    hm: np.ndarray
    hvp: dict[str, np.ndarray]

    def columns(self, g0: np.ndarray, j: int) -> Columns:
        return Columns(g0[j], self.gp[:, j], self.gm[:, j], self.hp, self.hm)


def _sweep(
    ctx: Context,
    plans: Sequence[LeafPlan],
    outers: Sequence[str],
    bar: Progress | None,
) -> tuple[list[LeafPlan], dict[tuple[int, str], _Measured], int]:
    """The gradient at ``θ ± h·p`` (and, with ``outers``, ``H·p``) for every plan."""

    def jobs(call: Call) -> list[Job]:
        static = (call.k, call.kind)
        hvps = [(_kernels.hvp_chunk, (*static, o), (call.batch, call.units)) for o in outers]
        return [(_kernels.grad_fd_chunk, static, (call.batch, call.steps)), *hvps]

    if bar is not None:
        plans = ctx.compile_plans(plans, jobs, bar)
    acc: dict[tuple[int, str], dict[str, list[np.ndarray]]] = {}
    n_evals = 0
    for call in calls(ctx.problem, plans):
        static = (call.k, call.kind)
        grads, taken = ctx.run(_kernels.grad_fd_chunk, static, call.batch, call.steps)
        n_evals += 2 * len(call.steps)
        hvps = {
            o: ctx.run(_kernels.hvp_chunk, (*static, o), call.tangents(taken), call.units)
            for o in outers
        }
        for seg in call.segments:
            plan = seg.plan
            if plan.kind == "entry":
                hp, hm = call.moves(taken, seg)
            else:
                hp, hm = np.full(seg.m, plan.eps), np.full(seg.m, -plan.eps)
            a = acc.setdefault((plan.k, seg.part), {})
            for name, value in (
                ("gp", grads[0, seg.rows]),
                ("gm", grads[1, seg.rows]),
                ("hp", hp),
                ("hm", hm),
                *((o, h[seg.rows]) for o, h in hvps.items()),
            ):
                a.setdefault(name, []).append(np.asarray(value))
        if bar is not None:
            bar.advance(sum(seg.m for seg in call.segments))
    out = {}
    for key, a in acc.items():
        cat = {name: np.concatenate(v) for name, v in a.items()}
        hvp = {o: cat[o] for o in outers}
        out[key] = _Measured(cat["gp"], cat["gm"], np.real(cat["hp"]), np.real(cat["hm"]), hvp)
    return list(plans), out, n_evals


def _chunks(
    ctx: Context,
    plans: Sequence[LeafPlan],
    outers: Sequence[str],
    scales: Sequence[float],
    bar: Progress | None,
) -> Iterator[tuple[Segment, list[tuple[np.ndarray, ...]], dict[str, np.ndarray], int]]:
    """The kernel calls of ``plans`` at each step ``scale·h``, one chunk at a time.

    Yields, per segment of a call: the gradient at ``θ ± scale·h·p`` with the steps taken,
    ``(gp, gm, hp, hm)`` per scale (``(c, K, n)``, ``(c,)``), the Hessian-vector products at
    the first scale per outer mode, and the evaluations the call took (on its first
    segment). Nothing of a leaf is kept beyond a chunk: memory stays that of the kernels.
    """
    scaled = [[dataclasses.replace(p, eps=p.eps * s) for p in plans] for s in scales]
    for group in zip(*(calls(ctx.problem, ps) for ps in scaled), strict=True):
        got = []
        for call in group:
            static = (call.k, call.kind)
            got.append(ctx.run(_kernels.grad_fd_chunk, static, call.batch, call.steps))
        first = group[0]
        static = (first.k, first.kind)
        hvps = {
            o: np.asarray(
                ctx.run(_kernels.hvp_chunk, (*static, o), first.tangents(got[0][1]), first.units)
            )
            for o in outers
        }
        n_evals = 2 * sum(len(call.steps) for call in group)
        for i, seg in enumerate(first.segments):
            meas: list[tuple[np.ndarray, ...]] = []
            for call, (grads, taken) in zip(group, got, strict=True):
                cseg = call.segments[i]
                if cseg.plan.kind == "entry":
                    hp, hm = np.real(call.moves(taken, cseg))
                else:
                    hp, hm = np.full(cseg.m, cseg.plan.eps), np.full(cseg.m, -cseg.plan.eps)
                rows = cseg.rows
                meas.append((np.asarray(grads[0, rows]), np.asarray(grads[1, rows]), hp, hm))
            at = {o: h[seg.rows] for o, h in hvps.items()}
            yield seg, meas, at, (n_evals if i == 0 else 0)
        if bar is not None:
            bar.advance(sum(seg.m for seg in first.segments))


def _labeller(problem: Problem, plan: LeafPlan, n: int, part: str, lo: int = 0) -> Any:
    """``flat element of a chunk from column lo → (entry index, "part row <component>")``."""

    def label(flat: int) -> tuple[tuple[int, ...], str]:
        p, r = divmod(flat, n)
        p += lo
        if plan.kind == "entry":
            index = tuple(int(i) for i in np.unravel_index(int(plan.batch[p]), plan.leaf.shape))
        else:
            index = (p,)
        return index, " ".join(filter(None, [part, f"row {row_label(problem, r)}"]))

    return label


@dataclasses.dataclass
class _Leaf:
    """A leaf's rows (one per outer mode), their squares, and its largest HVP entry."""

    plan: LeafPlan
    rows: dict[str, LeafReport] = dataclasses.field(default_factory=dict)
    squares: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    hvp_max: float = 0.0


def _rows_of(plan: LeafPlan, parts: dict[str, list[Part]], th: Thresholds, leaf: _Leaf) -> None:
    """The leaf's rows from its judged chunks."""
    lf = plan.leaf
    for o, ps in parts.items():
        leaf.rows[o] = leaf_row(lf.path, lf.shape, str(lf.dtype), ps, plan.eps, th, o)
        leaf.squares[o] = np.array(
            [sum(p.num_sq for p in ps), sum(p.ana_sq for p in ps), sum(p.diff_sq for p in ps)]
        )


def _judged(
    ctx: Context,
    plans: Sequence[LeafPlan],
    g0: np.ndarray,
    th: Thresholds,
    outers: Sequence[str],
    three: bool,
    bar: Progress | None,
) -> tuple[dict[int, dict[str, list[Part]]], dict[int, bool], dict[int, float], int]:
    """Every chunk judged at ``h`` alone, or at ``h``, ``h/10`` and ``2h`` (``three``)."""
    parts: dict[int, dict[str, list[Part]]] = {p.k: {o: [] for o in outers} for p in plans}
    odd = {p.k: False for p in plans}
    top = {p.k: 0.0 for p in plans}
    n_evals, n = 0, g0.shape[1]
    scales = (1.0, 1.0 / SECOND_STEP, 2.0) if three else (1.0,)
    for seg, meas, hvps, used in _chunks(ctx, plans, outers, scales, bar):
        n_evals += used
        k = seg.plan.k
        for j in range(g0.shape[0]):
            cols = [Columns(g0[j], gp[:, j], gm[:, j], hp, hm) for gp, gm, hp, hm in meas]
            e = judge_steps(cols[0], cols[1], cols[2], th) if three else judge_first(cols[0], th)
            odd[k] |= bool(e.suspect.any())
            label = _labeller(ctx.problem, seg.plan, n, part_label(seg.part, j, ctx.scalar), seg.lo)
            for o in outers:
                ana = hvps[o][:, j].reshape(-1)
                parts[k][o].append(sums(e, ana, label, th))
        for h in hvps.values():
            top[k] = max(top[k], float(np.max(np.abs(h))) if h.size else 0.0)
    return parts, odd, top, n_evals


def _stage(
    ctx: Context,
    plans: Sequence[LeafPlan],
    g0: np.ndarray,
    th: Thresholds,
    outers: Sequence[str],
    bar: Progress | None,
) -> tuple[list[_Leaf], list[LeafPlan], int, int]:
    """Steps 1 and 2 for ``plans``: returns the leaves, the plans as compiled, evaluations."""

    def jobs(call: Call) -> list[Job]:
        static = (call.k, call.kind)
        hvps = [(_kernels.hvp_chunk, (*static, o), (call.batch, call.units)) for o in outers]
        return [(_kernels.grad_fd_chunk, static, (call.batch, call.steps)), *hvps]

    if bar is not None:
        plans = ctx.compile_plans(plans, jobs, bar)
    parts, odd, top, n1 = _judged(ctx, plans, g0, th, outers, False, bar)
    leaves, pending = [], []
    for plan in plans:
        leaf = _Leaf(plan, hvp_max=top[plan.k])
        _rows_of(plan, parts[plan.k], th, leaf)
        if odd[plan.k] or any(r.status != "verified" for r in leaf.rows.values()):
            pending.append(leaf)
        leaves.append(leaf)
    n2 = 0
    if pending:
        # the first step again, beside h/10 and 2h: nothing of the first pass was kept
        parts, _, _, n2 = _judged(ctx, [lf.plan for lf in pending], g0, th, outers, True, None)
        for leaf in pending:
            _rows_of(leaf.plan, parts[leaf.plan.k], th, leaf)
    return leaves, list(plans), n1, n2


def _retry_step(row: LeafReport, eps: float, th: Thresholds, largest: float) -> float | None:
    """Another step for a leaf left unresolved (None: none would help).

    Smaller when truncation was seen (entries judged by Richardson extrapolation) or entries
    left ``f``'s domain at ``h`` and ``h/10`` (an entry far smaller than the leaf's others,
    near a log's 0), else larger, as its rounding noise floor asks.
    """
    if row.status != "unresolved" or row.n_kinks:
        return None
    if row.n_nonfinite or (row.n_restepped and np.isfinite(row.noise_floor)):
        return eps / SECOND_STEP**2
    floor = row.noise_floor
    needed = eps * NOISE_MARGIN_RETRY * floor / th.tolerance if np.isfinite(floor) else np.inf
    step = min(needed, largest)
    return float(step) if step > eps * 1.5 else None


#: Retries aim at a noise floor this many times under the tolerance.
NOISE_MARGIN_RETRY = 3.0


def _zero_block(leaf: _Leaf, scale: float) -> bool:
    """Whether the leaf's analytical Hessian columns are zero to rounding (next to ``scale``)."""
    return leaf.hvp_max == 0.0 or leaf.hvp_max <= ZERO_HESSIAN * scale


def _flat(
    ctx: Context,
    leaves: Sequence[_Leaf],
    g0: np.ndarray,
    th: Thresholds,
) -> tuple[dict[int, float], int]:
    """Leaves whose gradient does not move along any entry over a wide step: ``{k: step}``.

    Each entry is tried at the steps :data:`FLAT_STEPS` (times the leaf's magnitude), largest
    first, until the gradient at ``θ ± H·e_i`` equals ``∇F(θ)`` to ``FLAT_ROUNDING·u·G``
    (``G``: the gradient's largest entry, at θ and at the moved points).
    """
    found, n_evals = {}, 0
    for leaf in leaves:
        plan = leaf.plan
        mag = magnitude(ctx.problem.checked_leaves[plan.k])
        flat = {part: np.zeros(plan.m, bool) for part in plan.parts}
        for factor in FLAT_STEPS:
            wide = dataclasses.replace(plan, eps=factor * mag)
            for seg, meas, _, used in _chunks(ctx, [wide], (), (1.0,), None):
                n_evals += used
                gp, gm, _, _ = meas[0]
                still = np.ones(seg.m, bool)
                for j in range(g0.shape[0]):
                    with np.errstate(invalid="ignore"):
                        g = max(
                            float(np.max(np.abs(g0[j]))),
                            float(np.nanmax(np.abs(gp[:, j]))),
                            float(np.nanmax(np.abs(gm[:, j]))),
                        )
                        moved = np.maximum(np.abs(gp[:, j] - g0[j]), np.abs(gm[:, j] - g0[j]))
                        still &= np.all(np.isfinite(moved), axis=1) & np.all(
                            moved <= FLAT_ROUNDING * th.unit_roundoff * g, axis=1
                        )
                flat[seg.part][seg.lo : seg.lo + seg.m] |= still
            if all(f.all() for f in flat.values()):
                found[plan.k] = factor * mag
                break
    return found, n_evals


def verify_second_order(
    ctx: Context,
    plans: Sequence[LeafPlan],
    base: Base,
    th: Thresholds,
    outers: Sequence[str],
    bar: Progress,
    auto: bool = False,
    seed: int = 0,
) -> tuple[list[LeafReport], np.ndarray, int, dict[str, int]]:
    """Checks every leaf's columns of the Hessian against differences of the gradient.

    Returns:
        The rows (one per leaf and outer mode), the summed squares for the overall relative
        error, the number of gradient evaluations, and the evaluations per stage.
    """
    try:
        return _verify(ctx, plans, base, th, outers, bar, auto, seed)
    except CheckInputError as e:
        cause = e.__cause__
        if tuple(outers) != ("forward",) or not (
            isinstance(cause, TypeError) and "custom_vjp" in str(cause)
        ):
            raise
    # forward mode through a custom_vjp is undefined (f differentiates one inside): the
    # gradient's own derivative by reverse-over-reverse, as jax.grad(jax.grad(...)) does
    try:
        rows, totals, n_evals, stages = _verify(
            ctx, plans, base, th, ("reverse",), None, auto, seed
        )
    except (ValueError, TypeError, NotImplementedError) as e:
        raise CheckInputError(
            "f's second derivative cannot be computed by JAX either way. Forward-over-reverse "
            "(jax.jvp of jax.grad, as jax.hessian does) needs forward mode through a "
            f"jax.custom_vjp function, which has none ({cause}); reverse-over-reverse "
            f"(jax.grad of jax.grad) fails too: {type(e).__name__}: "
            f"{str(e).splitlines()[0]}\nFix: in the custom_vjp's fwd, compute the primal "
            "with plain code rather than by calling the custom_vjp function itself (then "
            "forward-over-reverse works), or write the rule as a jax.custom_jvp; for "
            "reverse-over-reverse, replace a lax.while_loop by lax.scan or a fori_loop with "
            "fixed bounds."
        ) from e
    why = (
        "checked reverse-over-reverse: f differentiates a jax.custom_vjp, which has no forward mode"
    )
    rows = [dataclasses.replace(r, note=f"{r.note}; {why}" if r.note else why) for r in rows]
    return rows, totals, n_evals, stages


def _verify(
    ctx: Context,
    plans: Sequence[LeafPlan],
    base: Base,
    th: Thresholds,
    outers: Sequence[str],
    bar: Progress | None,
    auto: bool,
    seed: int,
) -> tuple[list[LeafReport], np.ndarray, int, dict[str, int]]:
    """:func:`verify_second_order` for one choice of outer modes."""
    g0 = gradient_rows(base.grads)  # (K, n)
    stages: dict[str, int] = {}
    estimated: dict[int, float] = {}
    if auto:
        plans, estimated, n_auto = _auto_steps(ctx, plans, g0, th, seed, bar)
        stages["step search"] = n_auto
        bar = None
    leaves, plans, n1, n2 = _stage(ctx, plans, g0, th, outers, bar)
    stages["first step"] = n1
    if n2:
        stages["steps h/10, h and 2h"] = n2
    final = {leaf.plan.k: leaf for leaf in leaves}
    notes: dict[int, str] = {}
    for _ in range(2):
        retry = []
        for leaf in final.values():
            mag = magnitude(ctx.problem.checked_leaves[leaf.plan.k])
            steps = [
                _retry_step(r, leaf.plan.eps, th, MAX_RETRY_EPS * mag) for r in leaf.rows.values()
            ]
            step = max((s for s in steps if s is not None), default=None)
            if step is not None:
                retry.append(dataclasses.replace(leaf.plan, eps=step))
        if not retry:
            break
        again, _, m1, m2 = _stage(ctx, retry, g0, th, outers, None)
        stages["retry at other steps"] = stages.get("retry at other steps", 0) + m1 + m2
        for leaf in again:
            old = final[leaf.plan.k]
            cause = (
                "rounding"
                if leaf.plan.eps > old.plan.eps
                else (
                    "f's domain" if any(r.n_nonfinite for r in old.rows.values()) else "truncation"
                )
            )
            why = f"at eps={old.plan.eps:.0e} {cause} left it open"
            notes[leaf.plan.k] = why
            final[leaf.plan.k] = leaf
    g_scale = float(np.max(np.abs(g0))) if g0.size else 0.0
    h_scale = max((leaf.hvp_max for leaf in final.values()), default=0.0)
    candidates = []
    for leaf in final.values():
        mag = magnitude(ctx.problem.checked_leaves[leaf.plan.k])
        open_ = [r for r in leaf.rows.values() if r.status == "unresolved"]
        if (
            open_
            and all(
                r.status != "wrong" and not r.n_nonfinite and not r.n_kinks
                for r in leaf.rows.values()
            )
            and _zero_block(leaf, max(h_scale, g_scale / mag))
        ):
            candidates.append(leaf)
    flat: dict[int, float] = {}
    if candidates:
        flat, n_flat = _flat(ctx, candidates, g0, th)
        stages["flatness probe"] = n_flat
    rows: list[LeafReport] = []
    totals = np.zeros(3)
    for plan in plans:
        leaf = final[plan.k]
        for o in outers:
            row = leaf.rows[o]
            if plan.k in flat and row.status == "unresolved":
                note = (
                    f"∇f does not move along this leaf's entries: ∇f(θ ± {flat[plan.k]:.0e}·e_i) "
                    f"equals ∇f(θ) to rounding (relative to |∇f|) for every entry, and the "
                    f"analytical block is zero to rounding (max {row.grad_norm:.0e}); "
                    "verified as flat"
                )
                row = dataclasses.replace(row, status="verified", flat=True, note=note)
            elif plan.k in notes:
                why = notes[plan.k]
                note = (
                    f"verified at eps={leaf.plan.eps:.0e}: {why}"
                    if row.status == "verified"
                    else f"{row.note} (retried at eps={leaf.plan.eps:.0e}: {why})"
                )
                row = dataclasses.replace(row, note=note)
            if plan.k in estimated:
                row = dataclasses.replace(row, estimated_error=estimated[plan.k])
            rows.append(row)
            totals += leaf.squares[o]
    n_evals = sum(stages.values())
    return rows, totals, n_evals, stages


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
