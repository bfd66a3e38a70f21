"""``gradlab.check`` and ``gradlab.assert_check``: the parallel centered-difference checker."""

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

from gradlab.gradcheck import _kernels, directional, step
from gradlab.gradcheck._audit import AuditRow, audit
from gradlab.gradcheck._cache import compilation_cache
from gradlab.gradcheck._consistency import Consistency, consistency
from gradlab.gradcheck._judge import Thresholds
from gradlab.gradcheck._memory import default_budget
from gradlab.gradcheck._problem import Problem, build_problem
from gradlab.gradcheck._progress import Progress
from gradlab.gradcheck._promote import Promotion, promotion_of
from gradlab.gradcheck._runner import Runner
from gradlab.gradcheck._scope import precise
from gradlab.gradcheck._sweep import (
    TRACING_ERRORS,
    Base,
    Context,
    LeafPlan,
    evaluate,
    make_plans,
    n_calls,
    trace_error_hint,
)
from gradlab.gradcheck._verify import Verified, verify_first_order
from gradlab.gradcheck.bands import relative_error, verdict
from gradlab.gradcheck.errors import CheckInputError, GradCheckError
from gradlab.gradcheck.forward import resolve_ad
from gradlab.gradcheck.options import CheckOptions
from gradlab.gradcheck.report import CheckReport, LeafReport, Outcome
from gradlab.gradcheck.second_order import sweep_second_order
from gradlab.gradcheck.vjp import (
    Output,
    describe_projection,
    inspect_output,
    make_cotangents,
    split_cotangents,
)

__all__ = ["assert_check", "check", "run_check"]

#: Platforms without float64: the check falls back to float32 there (or host=True).
_NO_FLOAT64 = ("tpu",)
#: Default tolerance of the float32 fallback: centered differences in float32 resolve a
#: relative error of about u^(2/3) ≈ 2e-5 at best, times the rounding constant.
FLOAT32_TOLERANCE = 1e-3


def _precision(
    dtype: str | None, host: bool, devices: Sequence[jax.Device] | None
) -> tuple[str, jax.Device | None, str]:
    """The dtype to check in, the host device for ``host=True``, and a note saying why."""
    if dtype not in (None, "float64", "float32"):
        raise CheckInputError(f"dtype must be None, 'float64' or 'float32', got {dtype!r}.")
    platform = (next(iter(devices)) if devices else jax.devices()[0]).platform
    if host:
        if dtype == "float32":
            raise CheckInputError(
                "host=True evaluates in float64 on the CPU host; drop dtype='float32' (or "
                "host=True to run in float32 on the accelerator)."
            )
        if devices and any(d.platform != "cpu" for d in devices):
            raise CheckInputError("host=True runs on the CPU: pass CPU devices or none.")
        note = "host=True: evaluated in float64 on the CPU host" + (
            f" (the default device is {platform})" if jax.devices()[0].platform != "cpu" else ""
        )
        return "float64", jax.devices("cpu")[0], note
    if dtype is None:
        dtype = "float32" if platform in _NO_FLOAT64 else "float64"
        if dtype == "float64":
            return dtype, None, ""
        why = f"float64 is not available on {platform}"
    elif dtype == "float32":
        why = "dtype='float32' was asked for"
    else:
        return dtype, None, ""
    return (
        "float32",
        None,
        f"{why}: the check ran in float32 with per-leaf steps (24·u)^(1/3)·max(1, rms|θ|) "
        "(unless eps is given), float32 noise floors and tolerance 1e-3 (unless given); pass "
        "host=True to check in float64 on the CPU host instead.",
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
    th: Thresholds,
    seed: int,
    order: int,
    compute: str,
) -> tuple[list[float], list[step.AutoStep]]:
    """Each checked leaf's step, and what ``eps="auto"`` found (empty otherwise)."""
    leaves = ctx.problem.checked_leaves
    if eps == "auto":
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


def check(
    f: Callable[..., Any],
    params: Any,
    *args: Any,
    argnums: int | Sequence[int] = 0,
    eps: float | str | None = None,
    tolerance: float | None = None,
    has_aux: bool = False,
    mode: str = "full",
    samples: int = 64,
    directions: int = 4,
    seed: int = 0,
    ad: str | None = None,
    order: int = 1,
    cotangents: int = 3,
    dtype: str | None = None,
    host: bool = False,
    kink_tolerance: float = 1e-4,
    noise_factor: float = 8.0,
    repeat: bool = False,
    sparse: bool = True,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    max_worst: int = 5,
    progress: bool | None = None,
    verbose: bool = False,
    compilation_cache: bool | None = None,
    **kwargs: Any,
) -> CheckReport:
    """Checks ``jax.grad(f)`` against centered differences over every parameter entry.

    For every floating-point entry ``θ_i`` of the differentiated arguments, computes
    ``(f(θ + h·e_i) − f(θ − h·e_i)) / 2h`` with ``h = eps`` — all entries of a leaf in
    parallel (jit + vmap, chunked to a memory budget, sharded over ``devices``) — and
    compares it with ``jax.grad(f)`` by the lecture's relative error
    ``||num − ana|| / (||num|| + ||ana||)``, per leaf and overall. Runs in float64 whatever
    the parameters' dtype, with matmul precision ``"highest"``; the caller's JAX settings are
    restored afterwards, also on error.

    Entries whose two one-sided differences disagree sit at a kink (relu at 0, ties in a max):
    they are counted and kept out of the verdict. A leaf whose gradient is too small next to
    ``|f|`` for differences at this ``eps`` to resolve (rounding error ``≈ u·|f|/eps``) is
    reported as ``"unresolved"``, with the ``eps`` that would resolve it, rather than as wrong
    or verified.

    Beyond that (see ``docs/check_modes.md``): ``mode="directional"`` screens each leaf along
    a few random directions; ``ad="forward"``/``"both"`` checks ``jax.jvp``; ``order=2``
    checks Hessian-vector products against differences of the gradient; a ``f`` with a
    non-scalar output is checked through random cotangents; ``eps="auto"`` picks each leaf's
    step; on backends without float64 the check runs in float32 (or on the host).

    Args:
        f: A function ``f(params, *args)`` returning a real scalar, or float arrays (any
            pytree; checked through ``cotangents`` random projections ``<v_j, f>``).
        params: A pytree of arrays (dicts, lists, Flax params, an NNX state, ...).
        *args: Further arguments of ``f``; array leaves are passed as data (promoted to
            float64), other leaves (flags, strings) are kept static.
        argnums: Which positional arguments of ``f`` to check, as in ``jax.grad``
            (``0`` is ``params``). With several, leaf paths start with ``arg{i}/``.
        eps: The finite-difference step. Default: the lecture's 1e-7 at order 1, 1e-5 at
            order 2, ``(24·u)^(1/3)·max(1, rms|θ_k|)`` per leaf in float32. ``"auto"``: per leaf,
            from a Richardson estimate of truncation and rounding (order 1 only).
        tolerance: The largest relative error a leaf may have and be verified; default
            1e-6 (1e-3 in float32).
        has_aux: ``f`` returns ``(value, aux)``; ``aux`` is ignored.
        mode: ``"full"`` checks every entry; ``"sample"`` checks ``samples`` entries per leaf
            (uniformly at random, every leaf included), for models too big for a full check;
            ``"directional"`` checks ``directions`` random unit directions per leaf.
        samples: Entries per leaf in ``"sample"`` mode.
        directions: Random unit directions per leaf in ``"directional"`` mode.
        seed: Seed of the sample, the directions and the cotangents.
        ad: ``"reverse"`` (``jax.vjp``; default at order 1), ``"forward"`` (``jax.jvp``;
            default at order 2: ``jax.jvp(jax.grad(f))``) or ``"both"`` (a row per leaf and
            mode; at order 2 ``"reverse"`` is ``jax.grad`` of ``<∇f, t>``).
        order: 1 checks the gradient; 2 checks Hessian-vector products against centered
            differences of the gradient (as torch's ``gradgradcheck``), per leaf.
        cotangents: Random unit cotangents a non-scalar ``f`` is projected on.
        dtype: ``"float64"``, or ``"float32"`` for the fallback of backends without float64
            (default: float64, float32 on TPUs).
        host: Evaluate in float64 on the CPU host (``jax.devices("cpu")``) instead.
        kink_tolerance: Relative disagreement of one-sided differences that marks a kink.
        noise_factor: ``c`` in the rounding model ``|error of f| ≈ c·u·|f|``.
        repeat: Evaluate everything twice and report entries where ``f`` or its gradient is
            not reproducible (non-deterministic reductions, stray randomness) as such,
            instead of blaming the gradient (order 1).
        sparse: Carry each entry's move through ``f`` as the slice of values it changes
            (a column of ``x @ W``, then a rank-one change of the next layer) instead of
            evaluating ``f`` on the whole moved ``θ``: the same differences, several times
            less work for dense layers. False turns it off (see ``docs/check.md``).
        chunk_size: Perturbations per compiled batch (each costs two evaluations of ``f``);
            default: from ``memory_budget`` and XLA's memory analysis of ``f``.
        memory_budget: Bytes one batch may use per device; default: from the device's memory.
        devices: Devices to shard the perturbations over; default: the first local device,
            or every device of every process under ``jax.distributed``. Results do not
            depend on it.
        max_worst: How many worst entries to keep per leaf.
        progress: Show the plan and a progress bar; default: only on a terminal and for
            checks expected to take more than a few seconds.
        verbose: Print the plan (evaluations, chunk size) before the check, the time
            estimate from its first chunk, and the summary, to standard error.
        compilation_cache: Keep the check's compiled programs on disk, so that the next
            process (the next pytest run) loads them instead of compiling again; default on
            (off with ``GRADLAB_COMPILATION_CACHE=0``), in the user's cache folder, or in the
            cache you configured for JAX. JAX's settings are restored afterwards.
        **kwargs: Any other keyword argument is passed to ``f`` (e.g. ``train=False``).

    Returns:
        A :class:`~gradlab.CheckReport`; ``report.ok`` says whether it passed and
        ``print(report)`` shows the per-leaf table.

    Raises:
        CheckInputError: ``f`` or the parameters cannot be checked (output not float, no
            floating-point leaves, NaN/Inf in ``f(θ)`` or its gradient, not traceable,
            ``ad="forward"`` through a ``custom_vjp``), or an option is invalid.

    Example:
        >>> import jax.numpy as jnp
        >>> import gradlab
        >>> def loss(params, x):
        ...     return jnp.mean(jnp.tanh(x @ params["w"] + params["b"]) ** 2)
        >>> params = {"w": jnp.ones((3, 2)) * 0.1, "b": jnp.zeros(2)}
        >>> report = gradlab.check(loss, params, jnp.arange(12.0).reshape(4, 3) / 10)
        >>> report.ok, report.verdict, [leaf.path for leaf in report.leaves]
        (True, 'happy', ['b', 'w'])
        >>> gradlab.check(loss, params, jnp.ones((4, 3)), mode="directional", order=2).ok
        True
    """
    __tracebackhide__ = True  # pytest shows the report, not this frame
    opts = CheckOptions(
        argnums=argnums if isinstance(argnums, int) else tuple(argnums),
        eps=eps,
        tolerance=tolerance,
        has_aux=has_aux,
        mode=mode,
        samples=samples,
        directions=directions,
        seed=seed,
        ad=ad,
        order=order,
        cotangents=cotangents,
        dtype=dtype,
        host=host,
        kink_tolerance=kink_tolerance,
        noise_factor=noise_factor,
        repeat=repeat,
        sparse=sparse,
        chunk_size=chunk_size,
        memory_budget=memory_budget,
        devices=devices,
        max_worst=max_worst,
        progress=progress,
        verbose=verbose,
        compilation_cache=compilation_cache,
    )
    return run_check(f, (params, *args), kwargs, opts)


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
    compute, device, precision_note = _precision(opts.dtype, opts.host, opts.devices)
    start = time.perf_counter()
    on_device = jax.default_device(device) if device is not None else contextlib.nullcontext()
    with compilation_cache(opts.compilation_cache), precise(x64=compute == "float64"), on_device:
        prep = _prepare(f, primals, kwargs, opts, compute, device)
        n_devices = prep.ctx.runner.n_devices
        total = sum(p.m * len(p.parts) for p in prep.plans) * (2 if opts.repeat else 1)
        text = _plan_text(prep.plans, opts.order, ads, n_devices)
        bar = Progress(opts.progress, opts.verbose, total, text, n_calls=n_calls(prep.plans))
        try:
            found = _sweep_and_judge(prep, opts, ads, bar)
        except BaseException:
            bar.close()
            raise
        same = consistency(
            prep.base.plain, list(found.f0.values()), prep.base.values, prep.base.scales,
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
    promotion = _promotion(
        problem, (problem.checked_leaves, problem.fixed_leaves, problem.rest_dyn)
    )
    if not (promotion.promoted or promotion.kept):  # nothing to widen: f as written
        problem = dataclasses.replace(
            problem, spec=dataclasses.replace(problem.spec, promote=False)
        )
    dyn = (problem.checked_leaves, problem.fixed_leaves, problem.rest_dyn)
    output = _output(problem, dyn)
    cots = None
    if not output.scalar:
        made = make_cotangents(output, opts.cotangents, opts.seed)
        cots = jax.tree_util.tree_map(jnp.asarray, made)
    base = evaluate(problem, cots, dyn)
    th = _thresholds(opts, compute, base, promotion)
    runner = Runner(opts.devices or ([device] if device is not None else None))
    budget = opts.memory_budget or default_budget(runner.devices[0])
    ctx = Context(problem, runner, runner.replicate((*dyn, cots)), output.scalar, opts.sparse,
                  budget=None if opts.chunk_size else budget)  # fmt: skip
    steps, auto = _steps(opts.eps, ctx, base, th, opts.seed, opts.order, compute)
    plans = make_plans(problem, base, runner, steps, options=opts)
    return _Prepared(problem, dyn, output, cots, base, promotion, th, ctx, steps, auto, plans)


def _sweep_and_judge(
    prep: _Prepared, opts: CheckOptions, ads: Sequence[str], bar: Progress
) -> Verified:
    """The finite differences of every plan, judged leaf by leaf."""
    if opts.order == 1:
        return verify_first_order(
            prep.ctx, prep.plans, prep.base, prep.th, ads, opts.repeat, bar, opts.seed
        )
    rows, totals, n_evals = sweep_second_order(prep.ctx, prep.plans, prep.base, prep.th, ads, bar)
    return Verified(rows, totals, n_evals, 0, {}, {"second order": n_evals})


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
        mode=_mode_text(opts),
        notes=tuple(notes),
        order=opts.order,
        ad=ad_name,
        output="scalar"
        if output.scalar
        else describe_projection(output, opts.cotangents, opts.seed),
        cotangents=() if cots is None else split_cotangents(cots, opts.cotangents),
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
    return promotion_of(lambda *leaves: spec.value(*spec.rebuild(*_regroup(spec, leaves))), *args)


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
    if opts.order != 1 or opts.mode == "directional":
        return []
    cot = None if cots is None else jax.tree_util.tree_map(lambda v: np.asarray(v[0]), cots)
    reference = [g[0] for g in base.grads]
    return audit(
        problem.spec.value,
        primals,
        problem.spec.argnums,
        cot,
        [leaf.path for leaf in problem.leaves],
        [leaf.checked for leaf in problem.leaves],
        reference,
    )


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
        ad = f" ({row.ad} mode)" if row.ad != "reverse" else ""
        if row.status == "wrong":
            why = row.note or f"relative error {row.relative_error:.2e} ({row.verdict})"
            failed.append(f"the gradient of {row.path}{ad} is wrong: {why}.")
        elif row.status == "unresolved":
            open_.append(f"{row.path}{ad} was not verified: {row.note}.")
    for a in audited:
        if not a.ok:
            failed.append(
                f"jax.grad at {a.path}'s own dtype ({a.dtype}) differs from the float64 gradient "
                f"by {a.relative_error:.1e} (relative), more than {a.dtype} rounding explains "
                f"({a.tolerance:.1e}): a rule that is wrong on the {a.dtype} path."
            )
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


def assert_check(f: Callable[..., Any], params: Any, *args: Any, **options: Any) -> CheckReport:
    """Runs :func:`check` and raises :class:`~gradlab.GradCheckError` when it fails.

    The one-liner for a test of a custom layer: the error's message is the full report.

    Args:
        f: As in :func:`check`.
        params: As in :func:`check`.
        *args: As in :func:`check`.
        **options: Any keyword option of :func:`check`.

    Returns:
        The report, when the check passed.

    Raises:
        GradCheckError: The check failed (an ``AssertionError``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab
        >>> @jax.custom_vjp
        ... def square(x):
        ...     return x**2
        >>> square.defvjp(lambda x: (x**2, x), lambda x, g: (x * g,))  # bug: misses a 2
        >>> try:
        ...     gradlab.assert_check(lambda p: square(p).sum(), jnp.arange(1.0, 4.0))
        ... except gradlab.GradCheckError as e:
        ...     print(e.report.verdict, e.report.leaves[0].status)
        wrong wrong
    """
    __tracebackhide__ = True  # pytest shows the report, not this helper's source
    report = check(f, params, *args, **options)
    if not report.ok:
        raise GradCheckError(report)
    return report
