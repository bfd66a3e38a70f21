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
import io
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from gradlab._errors import CheckInputError
from gradlab.gradcheck import _kernels
from gradlab.gradcheck._bands import relative_error
from gradlab.gradcheck._cache import compilation_cache
from gradlab.gradcheck._judge import (
    NOISE_MARGIN,
    SECOND_STEP,
    Measured,
    Slopes,
    Thresholds,
    slopes,
    suspects,
)
from gradlab.gradcheck._options import build_options
from gradlab.gradcheck._problem import _arg_name, build_problem
from gradlab.gradcheck._progress import Progress
from gradlab.gradcheck._runner import Runner
from gradlab.gradcheck._scope import precise
from gradlab.gradcheck._second_judge import confirmed_kinks
from gradlab.gradcheck._settings import Criteria, Execution, Full
from gradlab.gradcheck._step import LECTURE_EPS
from gradlab.gradcheck._sweep import (
    Base,
    Context,
    LeafPlan,
    Raw,
    evaluate,
    make_plans,
    sweep_first_order,
)
from gradlab.gradcheck._vjp import (
    describe_projection,
    inspect_output,
    make_cotangents,
    split_cotangents,
)

__all__ = ["Culprit", "RuleEntry", "RuleReport", "RuleRow", "check_rule"]

Culprit = Literal["none", "rule", "autodiff", "finite_differences", "all", "unresolved"]

#: Culprits under which the rule itself is not in doubt.
_RULE_OK: tuple[Culprit, ...] = ("none", "autodiff")
#: Order in which a report's overall culprit is chosen from its rows' culprits.
_SEVERITY: tuple[Culprit, ...] = (
    "rule",
    "all",
    "finite_differences",
    "unresolved",
    "autodiff",
    "none",
)


@dataclasses.dataclass(frozen=True)
class RuleEntry:
    """One entry of an argument where the three derivatives differ most.

    Attributes:
        index: The entry's index in the argument.
        part: ``"real"``/``"imag"`` for complex arguments, a cotangent label, or ``""``.
        rule: The rule's derivative.
        autodiff: Autodiff through the primal (None when it failed).
        numerical: The centered difference.
        kink: The entry sits at a confirmed kink (checked against its one-sided slopes).
    """

    index: tuple[int, ...]
    part: str
    rule: float
    autodiff: float | None
    numerical: float
    kink: bool


@dataclasses.dataclass(frozen=True)
class RuleRow:
    """The three-way comparison for one differentiated argument (one leaf of it).

    Attributes:
        path: The leaf's path: the argument's parameter name (``arg{i}`` where it cannot be
            read) plus the path inside the argument.
        shape: Its shape.
        rule_vs_autodiff: Relative error between the rule and autodiff through the primal
            (None when autodiff through the primal failed).
        rule_vs_fd: Relative error between the rule and the finite differences.
        autodiff_vs_fd: Relative error between autodiff and the finite differences.
        noise_floor: The relative error rounding alone can put into the finite differences.
        n_kinks: Entries at kinks confirmed at a second step ``eps/10``: each derivative there
            is compared with the interval of its one-sided slopes, not with one difference.
        culprit: Which of the three disagrees (``"none"`` when all agree).
        message: The verdict in words.
        worst: The entries with the largest disagreement, largest first.
    """

    path: str
    shape: tuple[int, ...]
    rule_vs_autodiff: float | None
    rule_vs_fd: float
    autodiff_vs_fd: float | None
    noise_floor: float
    n_kinks: int
    culprit: Culprit
    message: str
    worst: tuple[RuleEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this row."""
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["worst"] = [{**dataclasses.asdict(w), "index": list(w.index)} for w in self.worst]
        return d


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return "0" if x == 0 else f"{x:.2e}"


@dataclasses.dataclass(frozen=True)
class RuleReport:
    """The result of :func:`gradlab.check_rule`; ``str(report)`` is a table.

    Attributes:
        ok: True when the rule is not in doubt: all three agree, or only autodiff through
            the primal disagrees (or fails) while the rule matches finite differences.
        culprit: The most serious row culprit: ``"rule"``, ``"all"``,
            ``"finite_differences"``, ``"unresolved"``, ``"autodiff"`` or ``"none"``.
        message: The overall verdict in words.
        kind: ``"custom_vjp"``, ``"custom_jvp"`` or ``"function"`` (an explicit primal).
        rows: One :class:`RuleRow` per differentiated leaf.
        eps: The finite-difference step.
        tolerance: The relative error below which two derivatives agree.
        output: ``"scalar"``, or the output's shape and the cotangents it was projected on.
        projections: The random cotangents (NumPy pytrees) for a non-scalar output.
        autodiff_error: Why autodiff through the primal failed, when it did.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab
        >>> @jax.custom_vjp
        ... def softplus(x):
        ...     return jnp.logaddexp(x, 0.0)
        >>> softplus.defvjp(lambda x: (softplus(x), x), lambda x, g: (g * jax.nn.sigmoid(x),))
        >>> report = gradlab.check_rule(softplus, jnp.array([-1.0, 0.5, 2.0]))
        >>> report.ok, report.culprit, report["x"].culprit
        (True, 'none', 'none')
    """

    ok: bool
    culprit: Culprit
    message: str
    kind: str
    rows: tuple[RuleRow, ...]
    eps: float
    tolerance: float
    output: str
    projections: tuple[Any, ...] = ()
    autodiff_error: str = ""

    def __getitem__(self, path: str) -> RuleRow:
        """The row of the leaf at ``path``."""
        for row in self.rows:
            if row.path == path:
                return row
        raise KeyError(f"no row {path!r}; the rows are: {', '.join(r.path for r in self.rows)}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the whole report."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["rows"] = [row.to_dict() for row in self.rows]
        d["projections"] = [
            jax.tree_util.tree_map(lambda v: np.asarray(v).tolist(), c) for c in self.projections
        ]
        return d

    def table(self) -> Table:
        """The per-argument table as a :class:`rich.table.Table`."""
        table = Table(
            box=box.SIMPLE_HEAD,
            caption=f"{self.kind}  eps={self.eps:g}  tolerance={self.tolerance:g}  "
            f"output={self.output}",
            caption_justify="left",
        )
        for name in ("argument", "shape", "rule~autodiff", "rule~FD", "autodiff~FD", "noise"):
            table.add_column(name, justify="left" if name in ("argument", "shape") else "right")
        table.add_column("culprit")
        for row in self.rows:
            table.add_row(
                row.path,
                str(row.shape),
                _fmt(row.rule_vs_autodiff),
                _fmt(row.rule_vs_fd),
                _fmt(row.autodiff_vs_fd),
                _fmt(row.noise_floor),
                row.culprit,
            )
        return table

    def __str__(self) -> str:
        buf = io.StringIO()
        console = Console(file=buf, width=120, color_system=None, force_terminal=False)
        head = "OK" if self.ok else "FAILED"
        console.print(f"gradlab.check_rule {head}: {self.message}", markup=False, soft_wrap=True)
        console.print(self.table())
        for row in self.rows:
            if row.culprit == "none":
                continue
            console.print(f"{row.path}: {row.message}", markup=False, soft_wrap=True)
            for w in row.worst:
                part = f" {w.part}" if w.part else ""
                console.print(
                    f"  {w.index}{part}: rule {w.rule:+.10e}  autodiff "
                    f"{'failed' if w.autodiff is None else f'{w.autodiff:+.10e}'}  "
                    f"FD {w.numerical:+.10e}{'  [kink]' if w.kink else ''}",
                    markup=False,
                    soft_wrap=True,
                )
        if self.autodiff_error:
            console.print(
                f"autodiff through the primal failed: {self.autodiff_error}", markup=False
            )
        return buf.getvalue().rstrip()


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return relative_error(float(np.sum(a**2)), float(np.sum(b**2)), float(np.sum((a - b) ** 2)))


def _judge(
    ra: float | None, rf: float, af: float | None, floor: float, tol: float, ad_error: str
) -> tuple[Culprit, str]:
    """Which of rule (r), autodiff (a), finite differences (f) disagrees, and why."""

    def fd_agrees(rel: float | None) -> bool | None:  # None: rounding could explain it
        if rel is None:
            return None
        return True if rel <= tol else (None if rel <= NOISE_MARGIN * floor else False)

    r_f, a_f = fd_agrees(rf), fd_agrees(af)
    if ra is None:
        if r_f is None:
            return "unresolved", (
                f"autodiff through the primal failed and finite differences cannot resolve "
                f"the rule at this eps (noise floor {floor:.1e})"
            )
        if r_f:
            return "autodiff", (
                "the rule agrees with finite differences; autodiff through the primal failed "
                f"({ad_error.splitlines()[0][:120] if ad_error else 'error'})"
            )
        return (
            "rule",
            "the rule disagrees with finite differences (autodiff failed): the rule is wrong",
        )
    if ra <= tol:
        if r_f is False:
            return "finite_differences", (
                "finite differences disagree with both rule and autodiff: f is not smooth "
                "here or eps is off"
            )
        if r_f is None:
            return "none", (
                "rule and autodiff agree; finite differences cannot resolve this argument at "
                f"this eps (noise floor {floor:.1e})"
            )
        return "none", "rule, autodiff and finite differences agree"
    if r_f and a_f:  # both within tolerance of FD: they differ only where FD allows it
        return "none", (
            "rule and autodiff differ only at kinks, each within the one-sided slopes there; "
            "both agree with finite differences"
        )
    if r_f:
        return "autodiff", (
            "autodiff through the primal disagrees: the primal is not differentiable as "
            "written (e.g. stop_gradient, callbacks, integer casts); rule and finite "
            "differences agree"
        )
    if a_f:
        return "rule", "the rule disagrees with autodiff and finite differences: the rule is wrong"
    if r_f is None or a_f is None:
        return "unresolved", (
            "rule and autodiff disagree and finite differences cannot tell which is right at "
            f"this eps (noise floor {floor:.1e})"
        )
    return "all", "rule, autodiff and finite differences all disagree"


@dataclasses.dataclass(frozen=True)
class _Columns:
    """One argument's three derivatives, entry by entry (all parts and cotangents).

    ``lo``/``hi``: at a confirmed kink, the interval the derivative may take (between the
    one-sided slopes, or 0 and their sum); elsewhere ``±inf``.
    """

    num: np.ndarray
    noise: np.ndarray
    finite: np.ndarray
    kink: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    rule: np.ndarray
    ad: np.ndarray | None
    labels: list[tuple[tuple[int, ...], str]]

    def against(self, value: np.ndarray) -> np.ndarray:
        """The finite differences as ``value`` is compared with them.

        At a confirmed kink, ``value`` itself when it lies within the one-sided slopes,
        else the nearest end: only a value outside them disagrees.
        """
        return np.where(self.kink, np.clip(value, self.lo, self.hi), self.num)


def _measured(
    plan: LeafPlan, raw: dict[tuple[int, str], Raw], part: str, j: int, scale: Any
) -> Measured:
    r = raw[(plan.k, part)]
    values, (hp, hm), f0 = r.cat("values"), r.cat("taken"), r.cat("f0")
    # f(θ) from the sweep's own program, never from autodiff's primal
    return Measured(f0[:, j], values[0, :, j], values[1, :, j], hp, hm, scale)


def _suspect_positions(
    plan: LeafPlan, raw: dict[tuple[int, str], Raw], base: Base, th: Thresholds, scalar: bool
) -> np.ndarray:
    """Entries whose one-sided slopes disagree (or ``f`` is not finite), in any part."""
    odd = np.zeros(plan.m, bool)
    for part in plan.parts:
        for j in range(base.n_cotangents):
            m = _measured(plan, raw, part, j, None if scalar else base.scales[j])
            odd |= suspects(slopes(m, th), th)
    return np.flatnonzero(odd)


def _interval(s1: Slopes, s2: Slopes, th: Thresholds) -> tuple[np.ndarray, np.ndarray]:
    """A kink's admissible derivatives, as the first-order check's subgradient test has it.

    Between the one-sided slopes at the second step, or between 0 and their sum (autodiff's
    conventions when several kinks coincide), widened by tolerance, rounding and how far the
    slopes still moved between the steps.
    """
    ends = np.stack([s2.fwd, s2.bwd, np.zeros_like(s2.fwd), s2.fwd + s2.bwd])
    moved = np.maximum(np.abs(s1.fwd - s2.fwd), np.abs(s1.bwd - s2.bwd))
    slack = th.tolerance * (np.abs(s2.fwd) + np.abs(s2.bwd)) + 2 * s2.noise_one_sided + moved
    return ends.min(axis=0) - slack, ends.max(axis=0) + slack


def _columns(
    plan: LeafPlan,
    raw: dict[tuple[int, str], Raw],
    second: tuple[np.ndarray, dict[tuple[int, str], Raw]] | None,
    base: Base,
    ad_base: Base | None,
    th: Thresholds,
    scalar: bool,
) -> _Columns:
    """Every entry's difference, judged with kinks confirmed at a second step ``h/10``.

    Suspects (one-sided slopes that disagree) measured again: a confirmed kink keeps its
    one-sided slopes as the interval a derivative must lie in; a kink crossed between
    ``h/10`` and ``h``, or ``f`` not finite at ``h``, is judged by the second step's
    difference; other suspects (curvature, rounding) keep the first step's.
    """
    names = ("num", "noise", "finite", "kink", "lo", "hi", "rule", "ad")
    cols: dict[str, list[np.ndarray]] = {n: [] for n in names}
    labels: list[tuple[tuple[int, ...], str]] = []
    index = [tuple(int(i) for i in np.unravel_index(int(e), plan.leaf.shape)) for e in plan.batch]
    for part in plan.parts:
        for j in range(base.n_cotangents):
            scale = None if scalar else base.scales[j]
            s1 = slopes(_measured(plan, raw, part, j, scale), th)
            num, noise, finite = s1.num.copy(), s1.noise.copy(), s1.finite.copy()
            kink = np.zeros(num.shape, bool)
            lo, hi = np.full(num.shape, -np.inf), np.full(num.shape, np.inf)
            if second is not None and second[0].size:
                at, raw2 = second
                s2 = slopes(
                    _measured(
                        dataclasses.replace(plan, batch=plan.batch[at]), raw2, part, j, scale
                    ),
                    th,
                )
                a1 = dataclasses.replace(
                    s1, **{f.name: getattr(s1, f.name)[at] for f in dataclasses.fields(s1)}
                )
                with np.errstate(invalid="ignore"):
                    k = a1.finite & s2.finite & confirmed_kinks(a1, s2)
                    apart = np.abs(a1.num - s2.num) > NOISE_MARGIN * (a1.noise + s2.noise)
                    left = np.abs(s2.jump) < 2 * np.abs(a1.jump) / SECOND_STEP
                use2 = s2.finite & ~k & (~a1.finite | (apart & left))
                kink[at] = k
                lo_k, hi_k = _interval(a1, s2, th)
                lo[at] = np.where(k, lo_k, -np.inf)
                hi[at] = np.where(k, hi_k, np.inf)
                num[at] = np.where(use2, s2.num, num[at])
                noise[at] = np.where(use2, s2.noise, noise[at])
                finite[at] |= use2
            cols["num"].append(np.where(finite, num, 0.0))
            cols["noise"].append(np.where(finite, noise, 0.0))
            cols["finite"].append(finite)
            cols["kink"].append(kink & finite)
            cols["lo"].append(lo)
            cols["hi"].append(hi)
            for name, b in (("rule", base), ("ad", ad_base)):
                if b is not None:
                    g = b.grads[plan.k].reshape(base.n_cotangents, -1)
                    cols[name].append((-g.imag if part == "imag" else g.real)[j, plan.batch])
            label = " ".join(filter(None, [part, "" if scalar else f"v{j}"]))
            labels += [(i, label) for i in index]
    cat = {n: np.concatenate(v) if v else None for n, v in cols.items()}
    return _Columns(**{n: cat[n] for n in names}, labels=labels)  # type: ignore[arg-type]


def _row(
    path: str, shape: tuple[int, ...], c: _Columns, tol: float, ad_error: str, max_worst: int
) -> RuleRow:
    rule, ad, used = c.rule, c.ad, c.finite
    num_r = c.against(rule)
    denom = np.linalg.norm(num_r[used]) + np.linalg.norm(rule[used])
    floor = float(np.linalg.norm(c.noise[used]) / denom) if denom > 0 else 0.0
    ra = None if ad is None else _rel(rule, ad)
    rf = _rel(num_r[used], rule[used])
    af = None if ad is None else _rel(c.against(ad)[used], ad[used])
    culprit, message = _judge(ra, rf, af, floor, tol, ad_error)
    n_kinks = int(np.sum(c.kink))
    n_left = int(np.sum(~used))
    if n_kinks:
        message += (
            f"; {n_kinks} entries at kinks (confirmed at a second step) were checked against "
            "their one-sided slopes"
        )
    if n_left:
        message += f"; {n_left} entries where f is not finite were left out of FD"
    spread = np.where(used, np.abs(rule - num_r), 0.0)
    if ad is not None:
        spread = np.maximum(spread, np.abs(rule - ad))
    worst = tuple(
        RuleEntry(
            index=c.labels[i][0],
            part=c.labels[i][1],
            rule=float(rule[i]),
            autodiff=None if ad is None else float(ad[i]),
            numerical=float(c.num[i]),
            kink=bool(c.kink[i]),
        )
        for i in np.argsort(-spread, kind="stable")[:max_worst]
        if spread[i] > 0
    )
    return RuleRow(path, shape, ra, rf, af, floor, n_kinks, culprit, message, worst)


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
