"""The checker's pipeline: prepare (f at θ, the plan) → sweep and judge → audit → report."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab._errors import CheckInputError
from gradlab.gradcheck import _directional as directional
from gradlab.gradcheck import _kernels, _stored
from gradlab.gradcheck import _step as step
from gradlab.gradcheck._audit import AuditRow, audit
from gradlab.gradcheck._bands import relative_error, verdict
from gradlab.gradcheck._cache import compilation_cache
from gradlab.gradcheck._consistency import Consistency, consistency, retraced_value
from gradlab.gradcheck._forward import resolve_ad
from gradlab.gradcheck._inputs import require_finite
from gradlab.gradcheck._judge import Thresholds
from gradlab.gradcheck._memory import Cost, default_budget
from gradlab.gradcheck._options import CheckOptions
from gradlab.gradcheck._problem import Problem, build_problem, traced_once
from gradlab.gradcheck._progress import Progress
from gradlab.gradcheck._promote import Promotion, promotion_of
from gradlab.gradcheck._report import CheckReport, LeafReport, Outcome
from gradlab.gradcheck._runner import Runner
from gradlab.gradcheck._scope import precise
from gradlab.gradcheck._second_order import (
    nondiff_tracer_errors,
    order2_steps,
    verify_second_order,
)
from gradlab.gradcheck._sweep import (
    TRACING_ERRORS,
    Base,
    Context,
    Items,
    LeafPlan,
    evaluate,
    evaluation_cost,
    first_jobs,
    make_plans,
    n_calls,
    planning_base,
    trace_error_hint,
)
from gradlab.gradcheck._verify import Verified, verify_first_order
from gradlab.gradcheck._vjp import (
    Output,
    describe_projection,
    inspect_output,
    make_cotangents,
    split_cotangents,
)

__all__ = ["run_check"]

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


def _output(problem: Problem, dyn: tuple[Any, ...]) -> Output:
    try:
        out = _kernels.value.eval_shape(problem.spec, *dyn)
    except CheckInputError:
        raise
    except TRACING_ERRORS as e:
        raise trace_error_hint(e) from e
    return inspect_output(out, problem.spec.has_aux)


def _steps(
    eps: float | str | None,
    ctx: Context,
    base: Any,
    th: Thresholds | None,
    seed: int,
    order: int,
    compute: str,
) -> tuple[list[float], list[step.AutoStep]]:
    """Each checked leaf's step, and what ``eps="auto"`` found (empty otherwise)."""
    leaves = ctx.problem.checked_leaves
    if order == 2:  # per leaf, scaled to its magnitude; "auto" is refined in the sweep
        return order2_steps(eps, leaves, compute), []
    if eps == "auto":
        assert th is not None, "eps='auto' needs f at θ and the thresholds"
        auto = step.auto_steps(ctx, base, th, seed)
        return [a.eps for a in auto], auto
    if eps is not None:
        return [float(eps)] * len(leaves), []
    if compute == "float32":
        return step.float32_steps([np.asarray(x) for x in leaves], order), []
    return [step.default_eps(order, compute)] * len(leaves), []


def _plan_text(plans: Sequence[LeafPlan], order: int, ads: Sequence[str], n_dev: int) -> str:
    total = sum(p.m * len(p.parts) for p in plans)
    what = "f" if order == 1 else "the gradient"
    text = f"gradlab.check plan: {2 * total:,} evaluations of {what} over {len(plans)} leaves"
    if order == 2:
        text += f", {total * len(ads):,} Hessian-vector products"
    elif "forward" in ads:
        text += f", {total:,} jvps"
    largest = max(p.chunk for p in plans)
    return text + f", in chunks of up to {largest:,} perturbations on {n_dev} device(s)"


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """Everything known about a check before its sweep: f at θ and the plan."""

    problem: Problem
    dyn: tuple[Any, ...]
    output: Output
    cots: Any
    base: Base
    promotion: Promotion
    th: Thresholds
    ctx: Context
    steps: list[float]
    auto: list[step.AutoStep]
    plans: list[LeafPlan]


def run_check(
    f: Callable[..., Any], primals: tuple[Any, ...], kwargs: dict[str, Any], opts: CheckOptions
) -> CheckReport:
    """The pipeline of :func:`check`: prepare (f at θ, plan) → sweep and judge → report."""
    __tracebackhide__ = True
    ad_name, ads = resolve_ad(opts.ad, opts.order)
    compute, device, precision_note = _precision(opts.dtype, opts.devices)
    start = time.perf_counter()
    on_device = jax.default_device(device) if device is not None else contextlib.nullcontext()
    with (
        compilation_cache(opts.compilation_cache, device),
        precise(x64=compute == "float64"),
        on_device,
        nondiff_tracer_errors(),
    ):
        prep = _prepare(f, primals, kwargs, opts, compute, device)
        n_devices = prep.ctx.runner.n_devices
        total = sum(p.m * len(p.parts) for p in prep.plans) * (2 if opts.repeat else 1)
        text = _plan_text(prep.plans, opts.order, ads, n_devices)
        bar = Progress(
            opts.progress, opts.verbose, total, text, n_calls=n_calls(prep.plans),
            limit=opts.max_seconds, sizes=[int(np.size(x)) for x in prep.problem.checked_leaves],
            mode=opts.mode,
        )  # fmt: skip
        try:
            found = _sweep_and_judge(prep, opts, ads, bar)
            if opts.order == 2 and {r.autodiff for r in found.rows} == {"reverse"}:
                ad_name = "reverse"  # no forward mode through a custom_vjp: see the rows
        except BaseException:
            bar.close()
            raise
        again = retraced_value(prep.problem.spec, prep.dyn, prep.cots)
        sweeps = list(found.f0.values()) + ([] if again is None else [again])
        same = consistency(
            prep.base.plain, sweeps, prep.base.values, prep.base.scales,
            prep.th.unit_roundoff,
            lambda: jax.make_jaxpr(prep.problem.spec.value)(*prep.problem.spec.rebuild(*prep.dyn)),
        )  # fmt: skip
    audited = _audit(prep.problem, primals, opts, prep.cots, prep.base)
    report = _report(prep, found, same, audited, opts, ad_name, compute, precision_note, start)
    bar.close(report.summary())
    return report


def _prepare(
    f: Callable[..., Any],
    primals: tuple[Any, ...],
    kwargs: dict[str, Any],
    opts: CheckOptions,
    compute: str,
    device: jax.Device | None,
) -> _Prepared:
    """The problem, f and its gradient at θ, the thresholds, the steps and the plan."""
    problem = build_problem(f, primals, opts.argnums, opts.has_aux, compute, device, kwargs)
    require_finite(problem)
    if opts.order == 2:  # differentiated twice: f's own trace, not one shared jit of it
        problem = dataclasses.replace(problem, spec=dataclasses.replace(problem.spec, retrace=True))
    promotion = _promotion(
        problem, (problem.checked_leaves, problem.fixed_leaves, problem.rest_dyn)
    )
    if not promotion.promoted:  # nothing to widen: f as written (the same values)
        problem = dataclasses.replace(
            problem, spec=dataclasses.replace(problem.spec, promote=False)
        )
    dyn = (problem.checked_leaves, problem.fixed_leaves, problem.rest_dyn)
    output = _output(problem, dyn)
    cots = None
    if not output.scalar:
        made = make_cotangents(output, opts.cotangents, opts.seed)
        cots = jax.tree_util.tree_map(jnp.asarray, made)
    cost = evaluation_cost(problem, dyn)
    ctx = _context(problem, dyn, cots, output, cost, opts, device)
    alongside = _first_kernels(ctx, cots, cost, opts, compute)
    base = evaluate(problem, cots, dyn, cost=cost, alongside=alongside)
    th = _thresholds(opts, compute, base, promotion)
    steps, auto = _steps(opts.eps, ctx, base, th, opts.seed, opts.order, compute)
    plans = make_plans(problem, base, ctx.runner, steps, options=opts)
    return _Prepared(problem, dyn, output, cots, base, promotion, th, ctx, steps, auto, plans)


def _context(
    problem: Problem,
    dyn: tuple[Any, ...],
    cots: Any,
    output: Output,
    cost: Cost,
    opts: CheckOptions,
    device: jax.Device | None,
) -> Context:
    """Where and how the kernels run: devices, memory budget, f's fingerprint."""
    runner = Runner(opts.devices or ([device] if device is not None else None))
    budget = opts.memory_budget or default_budget(runner.devices[0])
    return Context(problem, runner, runner.replicate((*dyn, cots)), output.scalar, opts.sparse,
                   budget=None if opts.chunk_size else budget,
                   fingerprint=_fingerprint_of_f(problem, dyn),
                   convolutions=cost.convolutions, loops=cost.loops)  # fmt: skip


def _first_kernels(
    ctx: Context, cots: Any, cost: Cost, opts: CheckOptions, compute: str
) -> Items | None:
    """The sweep's first kernels, to compile beside the gradient program.

    The plan needs only shapes and costs (reverse mode at order 1, steps not ``"auto"``),
    so it is made before ``f`` runs; the plan made after is the same, and finds them compiled.
    """
    if opts.order != 1 or opts.eps == "auto" or opts.ad not in (None, "reverse"):
        return None
    steps = _steps(opts.eps, ctx, None, None, opts.seed, 1, compute)[0]
    base = planning_base(ctx.problem, cots, cost)
    return first_jobs(ctx, make_plans(ctx.problem, base, ctx.runner, steps, options=opts))


def _fingerprint_of_f(problem: Problem, dyn: tuple[Any, ...]) -> str | None:
    """The fingerprint of ``f`` as traced at this call, when programs are kept on disk."""
    program = problem.spec.program
    return None if _stored.directory() is None or program is None else program.key


def _sweep_and_judge(
    prep: _Prepared, opts: CheckOptions, ads: Sequence[str], bar: Progress
) -> Verified:
    """The finite differences of every plan, judged leaf by leaf."""
    if opts.order == 1:
        return verify_first_order(
            prep.ctx, prep.plans, prep.base, prep.th, ads, opts.repeat, bar, opts.seed
        )
    rows, totals, n_evals, stages = verify_second_order(
        prep.ctx, prep.plans, prep.base, prep.th, ads, bar, opts.eps == "auto", opts.seed
    )
    return Verified(rows, totals, n_evals, 0, {}, stages)


def _report(
    prep: _Prepared,
    found: Verified,
    same: Consistency,
    audited: Sequence[AuditRow],
    opts: CheckOptions,
    ad_name: str,
    compute: str,
    precision_note: str,
    start: float,
) -> CheckReport:
    """The report: rows, the outcome and why, and what the reader should know."""
    rows = found.rows
    if prep.auto:
        paths = [x.path for x in prep.problem.checked]
        est = {p: a.estimated_error for p, a in zip(paths, prep.auto, strict=True)}
        rows = [dataclasses.replace(r, estimated_error=est[r.path]) for r in rows]
    notes = [precision_note] if precision_note else []
    notes += _notes(found.n_unstable, compute, prep.base.out_dtype, prep.problem, opts.mode)
    if prep.promotion.lowest is not None:
        notes.append(
            f"f still computes in {prep.promotion.lowest} where it could not be promoted (see "
            "'kept as written'): that rounding, not float64's, sets the noise floors."
        )
    if same.primal_differs is not None and same.deterministic:
        notes.append(
            f"the autodiff program's f(θ) differs from f's own evaluation by "
            f"{same.primal_differs:.1e} (relative): a custom rule whose forward pass computes "
            "something other than f. The one-sided differences use f's own evaluation."
        )
    notes += [a.note() for a in audited if a.ok and a.lowest is not None]
    outcome, reasons = _outcome(rows, same, audited)
    output, cots = prep.output, prep.cots
    rel = relative_error(*found.totals)
    return CheckReport(
        outcome=outcome,
        relative_error=rel,
        verdict=verdict(rel),
        leaves=tuple(rows),
        skipped=tuple(f"{leaf.path} ({leaf.dtype})" for leaf in prep.problem.skipped),
        eps=_report_eps(opts.eps, prep.steps),
        tolerance=prep.th.tolerance,
        dtype=compute,
        value=float(prep.base.plain[0]),
        n_evaluations=found.n_evaluations + sum(a.n_evaluations for a in prep.auto),
        seconds=time.perf_counter() - start,
        entries=_mode_text(opts),
        notes=tuple(notes),
        order=opts.order,
        autodiff=ad_name,
        output="scalar"
        if output.scalar
        else describe_projection(output, opts.cotangents, opts.seed),
        projections=() if cots is None else split_cotangents(cots, opts.cotangents),
        reasons=tuple(reasons),
        stages=tuple(found.stages.items()),
        promoted=tuple(
            prep.promotion.lines() + [f"kept as written: {w}" for w in prep.promotion.kept]
        ),
    )


def _report_eps(eps: float | str | None, steps: Sequence[float]) -> float | str:
    if eps == "auto":
        return "auto"
    if len(set(steps)) > 1:
        return "per leaf"
    return steps[0]


def _mode_text(opts: CheckOptions) -> str:
    if opts.mode == "sample":
        return (
            f"sample ({opts.samples} entries per leaf, uniform without replacement, "
            f"seed {opts.seed})"
        )
    if opts.mode == "directional":
        return directional.describe(opts.directions, opts.seed)
    return opts.mode


@functools.lru_cache(maxsize=64)
def _promotion_cached(spec: Any, avals: tuple[Any, ...]) -> Promotion:
    args = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in avals]
    flat = traced_once(spec)
    return promotion_of(lambda *leaves: flat(*_regroup(spec, leaves)), *args)


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
    u = max(float(np.finfo(d).eps) for d in dtypes)
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
    )


def _audit(
    problem: Problem, primals: tuple[Any, ...], opts: CheckOptions, cots: Any, base: Base
) -> list[AuditRow]:
    """The precision audit of leaves given in reduced precision (caller's JAX settings)."""
    if opts.order != 1:
        return []
    cot = None if cots is None else jax.tree_util.tree_map(lambda v: np.asarray(v[0]), cots)
    reference = [g[0] for g in base.grads]
    paths = [leaf.path for leaf in problem.leaves]
    checked = [leaf.checked for leaf in problem.leaves]
    return audit(problem.spec.value, primals, problem.spec.argnums, cot, paths, checked, reference)


def _outcome(
    rows: Sequence[LeafReport], same: Consistency, audited: Sequence[AuditRow]
) -> tuple[Outcome, list[str]]:
    """passed, failed or inconclusive, and why, each reason with what to do."""
    failed, open_ = [], []
    if not same.deterministic:
        failed.append(
            f"f is not deterministic: f(θ) evaluated by different programs differs by "
            f"{same.spread:.1e} (relative), so its finite differences measure that noise. "
            f"{same.cause}."
        )
    for row in rows:
        ad = f" ({row.autodiff} mode)" if row.autodiff != "reverse" else ""
        if row.status == "wrong":
            why = row.note or f"relative error {row.relative_error:.2e} ({row.verdict})"
            failed.append(f"the gradient of {row.path}{ad} is wrong: {why}.")
        elif row.status == "unresolved":
            open_.append(f"{row.path}{ad} was not verified: {row.note}.")
    for a in audited:
        if not a.ok:
            failed.append(a.reason())
    if failed:
        return "failed", failed + open_
    if open_:
        return "inconclusive", open_
    return "passed", []


def _notes(n_unstable: int, compute: str, out_dtype: str, problem: Problem, mode: str) -> list[str]:
    """What the reader of a report should know beyond the table."""
    notes = []
    if n_unstable:
        notes.append(
            f"{n_unstable} perturbed evaluations of f gave different values when repeated: "
            "f is not deterministic, so finite differences there are unreliable."
        )
    if compute == "float64" and out_dtype != "float64":
        notes.append(
            f"f returns {out_dtype} even with float64 inputs: it casts internally, so the "
            "check only resolves gradients to that precision."
        )
    if any(np.issubdtype(leaf.dtype, np.complexfloating) for leaf in problem.checked):
        how = (
            "along complex directions (real and imaginary parts moved together)"
            if mode == "directional"
            else "as real and imaginary parts"
        )
        notes.append(
            f"complex leaves are checked {how}; JAX's convention for a real f is "
            "grad = ∂f/∂re − i·∂f/∂im, compared as (∂f/∂re, ∂f/∂im)."
        )
    return notes
