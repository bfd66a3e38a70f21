"""``gradlab.check_rule``: a custom derivative rule against autodiff AND finite differences.

A ``jax.custom_vjp``/``jax.custom_jvp`` function has three derivatives worth comparing:

1. the rule (``jax.vjp`` of the decorated function; for a ``custom_jvp`` the transposed
   ``jvp`` rule),
2. autodiff through the primal implementation (``fn.fun``, the undecorated function),
3. centered differences of the primal.

Two against one says which is wrong: the rule (a bug in ``bwd``/``jvp``), the finite
differences (``f`` not smooth at this point, or ``eps`` badly chosen), or autodiff through the
primal (the primal is not differentiable as written: ``stop_gradient``, callbacks, integer
casts, ``where`` tricks — often the very reason the rule exists).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab._errors import CheckInputError
from gradlab.gradcheck.evaluation import _kernels
from gradlab.gradcheck.evaluation._base import evaluate
from gradlab.gradcheck.evaluation._sweep import Context, sweep_first_order
from gradlab.gradcheck.judging._judge import SECOND_STEP
from gradlab.gradcheck.judging._rule import _columns, _row, _suspect_positions
from gradlab.gradcheck.planning._options import build_options
from gradlab.gradcheck.planning._plan import Base, make_plans
from gradlab.gradcheck.planning._problem import _arg_name, build_problem
from gradlab.gradcheck.planning._settings import Criteria, Execution, Full
from gradlab.gradcheck.planning._step import LECTURE_EPS
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.planning._vjp import (
    describe_projection,
    inspect_output,
    make_cotangents,
    split_cotangents,
)
from gradlab.gradcheck.programs._cache import compilation_cache
from gradlab.gradcheck.programs._runner import Runner
from gradlab.gradcheck.programs._scope import precise
from gradlab.gradcheck.report._progress import Progress
from gradlab.gradcheck.report._rule_report import (
    _RULE_OK,
    _SEVERITY,
    RuleReport,
)

__all__ = ["check_rule"]


def _primal(fn: Callable[..., Any], primal: Callable[..., Any] | None) -> tuple[Any, str]:
    if isinstance(fn, jax.custom_vjp):
        kind = "custom_vjp"
    elif isinstance(fn, jax.custom_jvp):
        kind = "custom_jvp"
    else:
        kind = "function"
    if primal is not None:
        return primal, kind
    if kind == "function":
        raise CheckInputError(
            f"fn is not a jax.custom_vjp or jax.custom_jvp function (got "
            f"{type(fn).__name__}): pass the decorated function itself, or give its plain "
            "implementation as primal=..."
        )
    return fn.fun, kind  # type: ignore[attr-defined]


def check_rule(
    fn: Callable[..., Any],
    *args: Any,
    argnums: int | Sequence[int] | None = None,
    primal: Callable[..., Any] | None = None,
    eps: float | None = None,
    tolerance: float | None = None,
    projections: int = 3,
    seed: int = 0,
    criteria: Criteria = Criteria(),
    execution: Execution = Execution(),
) -> RuleReport:
    """Compares a custom derivative rule with autodiff through its primal and with differences.

    Says which of the three disagrees: the rule, autodiff through the primal, or the finite
    differences. Takes the same option names and defaults as :func:`gradlab.check`.

    Args:
        fn: A ``jax.custom_vjp`` or ``jax.custom_jvp`` function (or any function, with
            ``primal``), called as ``fn(*args)``; any float output (non-scalar outputs are
            projected on ``projections`` random unit cotangents).
        *args: Its arguments.
        argnums: The arguments to differentiate; default: every argument with float leaves
            that is not one of ``fn.nondiff_argnums``.
        primal: The implementation to autodiff through; default ``fn.fun`` (the undecorated
            function).
        eps: The finite-difference step; default the lecture's 1e-7, as in
            :func:`gradlab.check`.
        tolerance: Two derivatives agree when their relative error is at most this; default
            1e-6, as in :func:`gradlab.check`.
        projections: Random unit cotangents a non-scalar output is projected on.
        seed: Seed of the projections.
        criteria: As in :func:`gradlab.check` (``worst_entries`` per failing argument).
        execution: As in :func:`gradlab.check`.

    Returns:
        A :class:`RuleReport`.

    Raises:
        CheckInputError: ``fn`` has no primal to compare with, or cannot be checked.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab
        >>> @jax.custom_vjp
        ... def cube(x):
        ...     return x**3
        >>> cube.defvjp(lambda x: (x**3, x), lambda x, g: (2 * x**2 * g,))  # should be 3x²
        >>> report = gradlab.check_rule(cube, jnp.array([0.5, -1.0, 2.0]))
        >>> report.ok, report.culprit
        (False, 'rule')
    """
    primal_fn, kind = _primal(fn, primal)
    # the checker's own settings validate check_rule's options, with the same rules
    eps = LECTURE_EPS if eps is None else eps
    tolerance = 1e-6 if tolerance is None else tolerance
    opts = build_options(
        order=1, argnums=0, has_aux=False, entries=Full(), eps=eps, tolerance=tolerance,
        autodiff="reverse", dtype="float64", projections=projections, seed=seed,
        check_determinism=False, criteria=criteria, execution=execution,
    )  # fmt: skip
    max_worst = criteria.worst_entries
    if argnums is None:
        skip = set(getattr(fn, "nondiff_argnums", ()))
        argnums = tuple(
            i
            for i, a in enumerate(args)
            if i not in skip
            and any(
                jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
                for x in jax.tree_util.tree_leaves(a)
                if isinstance(x, jax.Array | np.ndarray | np.generic | float | complex)
            )
        )
        if not argnums:
            raise CheckInputError("fn has no float arguments to differentiate; pass argnums.")
    with compilation_cache(opts.compilation_cache), precise():
        problem = build_problem(fn, args, argnums, False)
        primal_problem = build_problem(primal_fn, args, argnums, False)
        dyn = (problem.checked_leaves, problem.fixed_leaves, problem.rest_dyn)
        output = inspect_output(_kernels.value.eval_shape(problem.spec, *dyn), False)
        cots = None
        if not output.scalar:
            cots = jax.tree_util.tree_map(jnp.asarray, make_cotangents(output, projections, seed))
        base = evaluate(problem, cots, dyn)
        ad_error = ""
        ad_base: Base | None = None
        try:
            ad_base = evaluate(primal_problem, cots, dyn)
        except Exception as e:  # any failure of autodiff through the primal is a finding
            ad_error = f"{type(e).__name__}: {e}"
        u = float(np.finfo(base.out_dtype).eps)
        th = Thresholds(tolerance, criteria.kink_tolerance, criteria.noise_factor, u, max_worst)
        runner = Runner(opts.devices)
        ctx = Context(problem, runner, runner.replicate((*dyn, cots)), output.scalar, opts.sparse)
        steps = [float(eps)] * len(problem.checked)
        plans = make_plans(problem, base, runner, steps, options=opts)
        raw, _, _ = sweep_first_order(ctx, plans, False, False, Progress(False, False, 1, ""))
        # suspects measured again at eps / 10 by the same kernels: kinks confirmed
        picks = {p.k: _suspect_positions(p, raw, base, th, output.scalar) for p in plans}
        again = [
            dataclasses.replace(p, batch=p.batch[picks[p.k]], eps=p.eps / SECOND_STEP)
            for p in plans
            if picks[p.k].size
        ]
        raw2 = sweep_first_order(ctx, again, False, False, None)[0] if again else {}

    rows = []
    for plan in plans:
        second = (picks[plan.k], raw2) if picks[plan.k].size else None
        c = _columns(plan, raw, second, base, ad_base, th, output.scalar)
        path = plan.leaf.path
        if tuple(problem.spec.argnums) == (0,):  # name the argument, as with several
            name = _arg_name(fn, 0)
            path = name if path == "." else f"{name}/{path}"
        rows.append(_row(path, plan.leaf.shape, c, tolerance, ad_error, max_worst))
    overall = min((r.culprit for r in rows), key=_SEVERITY.index)
    first = next(r for r in rows if r.culprit == overall)
    message = first.message if overall != "none" else "rule, autodiff and finite differences agree"
    if overall != "none" and len(rows) > 1:
        message = f"{first.path}: {message}"
    return RuleReport(
        ok=all(r.culprit in _RULE_OK for r in rows),
        culprit=overall,
        message=message,
        kind=kind,
        rows=tuple(rows),
        eps=float(eps),
        tolerance=float(tolerance),
        output="scalar" if output.scalar else describe_projection(output, projections, seed),
        projections=() if cots is None else split_cotangents(cots, projections),
        autodiff_error=ad_error,
    )
