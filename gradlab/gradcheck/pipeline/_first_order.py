"""The checker's pipeline: prepare (f at θ, the plan) → sweep and judge → audit → report."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab._errors import CheckInputError
from gradlab.gradcheck.evaluation import _kernels
from gradlab.gradcheck.evaluation._auto_step import AutoStep, auto_steps
from gradlab.gradcheck.evaluation._base import evaluate, evaluation_cost
from gradlab.gradcheck.evaluation._forward import resolve_ad
from gradlab.gradcheck.evaluation._sweep import Context, first_jobs
from gradlab.gradcheck.judging._audit import AuditRow, audit
from gradlab.gradcheck.judging._consistency import consistency, retraced_value
from gradlab.gradcheck.judging._verify import Verified, verify_first_order
from gradlab.gradcheck.pipeline._assemble import _Prepared, _report
from gradlab.gradcheck.pipeline._budget import may_take_long, refuse_if_too_long
from gradlab.gradcheck.pipeline._precision import _precision, _promotion, _thresholds
from gradlab.gradcheck.pipeline._second_order import nondiff_tracer_errors, verify_second_order
from gradlab.gradcheck.planning import _step as step
from gradlab.gradcheck.planning._calls import n_calls
from gradlab.gradcheck.planning._inputs import require_finite
from gradlab.gradcheck.planning._memory import Cost, default_budget
from gradlab.gradcheck.planning._options import CheckOptions
from gradlab.gradcheck.planning._plan import Base, LeafPlan, make_plans, planning_base
from gradlab.gradcheck.planning._problem import Problem, build_problem
from gradlab.gradcheck.planning._step import order2_steps
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.planning._vjp import (
    Output,
    inspect_output,
    make_cotangents,
)
from gradlab.gradcheck.programs import _stored
from gradlab.gradcheck.programs._cache import compilation_cache
from gradlab.gradcheck.programs._runner import Items, Runner
from gradlab.gradcheck.programs._scope import precise
from gradlab.gradcheck.programs._stored import programs_in
from gradlab.gradcheck.programs._tracing import TRACING_ERRORS, trace_error_hint
from gradlab.gradcheck.report._progress import Progress
from gradlab.gradcheck.report._report import CheckReport

__all__ = ["run_check"]


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
) -> tuple[list[float], list[AutoStep]]:
    """Each checked leaf's step, and what ``eps="auto"`` found (empty otherwise)."""
    leaves = ctx.problem.checked_leaves
    if order == 2:  # per leaf, scaled to its magnitude; "auto" is refined in the sweep
        return order2_steps(eps, leaves, compute), []
    if eps == "auto":
        assert th is not None, "eps='auto' needs f at θ and the thresholds"
        auto = auto_steps(ctx, base, th, seed)
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
            autodiff_unit_roundoff=prep.th.autodiff_unit_roundoff,
        )  # fmt: skip
        folder = _stored.directory()  # where this check keeps programs (None: nowhere)
    with programs_in(folder):  # the audit runs in the caller's settings, its program kept there
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
    again = lambda: evaluate(problem, cots, dyn, cost=cost)  # compiled: a second timed run
    if opts.eps == "auto":  # its probes compile and run: the estimate comes first
        sizes = make_plans(problem, base, ctx.runner, [1.0] * len(problem.checked_leaves),
                           options=opts)  # fmt: skip
        refuse_if_too_long(ctx, sizes, base, opts, again)
    steps, auto = _steps(opts.eps, ctx, base, th, opts.seed, opts.order, compute)
    plans = make_plans(problem, base, ctx.runner, steps, options=opts)
    if opts.eps != "auto":
        refuse_if_too_long(ctx, plans, base, opts, again)
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
    None for a check that may be over ``max_seconds`` (:func:`may_take_long`): its gradient
    program compiles alone, so that the check can stop before compiling its sweep.
    """
    if opts.order != 1 or opts.eps == "auto" or opts.ad not in (None, "reverse"):
        return None
    steps = _steps(opts.eps, ctx, None, None, opts.seed, 1, compute)[0]
    base = planning_base(ctx.problem, cots, cost)
    plans = make_plans(ctx.problem, base, ctx.runner, steps, options=opts)
    items = first_jobs(ctx, plans)
    return None if may_take_long(ctx, plans, opts, items) else items


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
