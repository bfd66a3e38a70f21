"""Judging a custom rule: rule, autodiff and finite differences, two against one.

Per argument of the rule, the three derivatives are compared pairwise (relative errors
against the finite differences' noise floor); the one that disagrees with the two others is
the culprit. Entries whose one-sided slopes disagree are measured again at a smaller step,
and confirmed kinks are judged by the interval of their one-sided slopes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from gradlab.gradcheck.evaluation._measured import Measured
from gradlab.gradcheck.evaluation._sweep import Raw
from gradlab.gradcheck.judging._judge import NOISE_MARGIN, SECOND_STEP
from gradlab.gradcheck.judging._slopes import Slopes, finite_kinks, slopes, suspects
from gradlab.gradcheck.planning._plan import Base, LeafPlan
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.report._bands import relative_error
from gradlab.gradcheck.report._rule_report import (
    Culprit,
    RuleEntry,
    RuleRow,
)


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
                    k = finite_kinks(a1, s2)
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
