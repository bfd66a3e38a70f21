"""The second-order sweep: the gradient at θ ± h per moved entry, and Hessian-vector products.

Per leaf and part, chunks of perturbations run through the gradient kernels; each moved
entry gives a numerical column ``(∇F(θ + h·e_i) − ∇F(θ − h·e_i)) / 2h`` of every checked
leaf's rows, next to autodiff's ``H·e_i`` (forward-over-reverse, reverse-over-reverse, or
both).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from gradlab.gradcheck.evaluation import _kernels
from gradlab.gradcheck.evaluation._measured import Columns
from gradlab.gradcheck.evaluation._sweep import Context, Job
from gradlab.gradcheck.planning._calls import Call, Segment, calls
from gradlab.gradcheck.planning._plan import LeafPlan
from gradlab.gradcheck.planning._problem import Problem
from gradlab.gradcheck.report._progress import Progress

__all__ = ["gradient_rows", "row_label"]


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
