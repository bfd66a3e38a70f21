"""The calls of a sweep: which kernel runs which chunk of a leaf's (or a group's) perturbations."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

from gradlab.gradcheck.planning._plan import LeafPlan
from gradlab.gradcheck.planning._problem import Problem

__all__ = ["Call", "Kind", "Segment", "calls", "first_calls", "n_calls", "n_calls_of"]


Kind = Literal["entry", "group", "tree"]


def served(plans: Sequence[LeafPlan], call: Call) -> list[LeafPlan]:
    """The plans whose perturbations run in the kernel ``call`` runs."""
    if call.kind == "tree":
        return [p for p in plans if p.kind == "direction"]
    if call.kind == "group":
        return [p for p in plans if p.group == call.k]
    return [p for p in plans if p.k == call.k and p.group is None and p.kind == "entry"]


def n_calls_of(plans: Sequence[LeafPlan], call: Call) -> int:
    """How many calls the kernel ``call`` runs make (as :func:`n_calls` counts them)."""
    served_by = served(plans, call)
    if call.kind == "entry":
        return sum(len(p.parts) * -(-p.m // p.chunk) for p in served_by)
    return -(-sum(p.m for p in served_by) // served_by[0].chunk)


def kernel_flops(plans: Sequence[LeafPlan], call: Call) -> float:
    """The estimated FLOPs of every run of the kernel ``call`` runs, over the whole check."""
    return sum(p.m * len(p.parts) * p.flops_per_row for p in served(plans, call))


@dataclasses.dataclass(frozen=True)
class Segment:
    """Perturbations ``lo … lo+m`` of one (plan, part), found at rows ``start …`` of a call."""

    plan: LeafPlan
    part: str
    lo: int
    m: int
    start: int

    @property
    def rows(self) -> slice:
        """Where the segment's results sit in the call's outputs."""
        return slice(self.start, self.start + self.m)


@dataclasses.dataclass(frozen=True)
class Call:
    """One kernel call: a padded batch of perturbations and the segments it serves."""

    kind: Kind
    k: int | tuple[int, ...]
    batch: Any
    steps: np.ndarray
    units: np.ndarray
    segments: tuple[Segment, ...]

    def tangents(self, taken: Any) -> Any:
        """What forward mode differentiates along.

        The entries, or each row's actual move ``(δ+ − δ−) / 2h`` (tree rows).
        """
        if self.kind != "tree":
            return self.batch
        h = self.steps
        return tuple(
            ((t[0] - t[1]) / (2 * h.reshape(-1, *[1] * (t.ndim - 2)))).astype(b.dtype)
            for t, b in zip(taken, self.batch, strict=True)
        )

    def moves(self, taken: Any, seg: Segment) -> np.ndarray:
        """The moves actually made for ``seg``: ``(2, m)`` entries, ``(2, m, n_k)`` rows."""
        if self.kind != "tree":
            t = taken.imag if seg.part == "imag" else taken.real
            return t[:, seg.rows]
        t = taken[seg.plan.k]
        return t.reshape(2, t.shape[1], -1)[:, seg.rows]


def calls(problem: Problem, plans: Sequence[LeafPlan]) -> Iterator[Call]:
    """The kernel calls that run every plan, in order.

    Entry plans run leaf by leaf, part by part, a chunk at a time (the last chunk padded by
    wrapping around). Directional plans run together as ``"tree"`` rows, one per (leaf,
    direction), so directional mode compiles one kernel for all leaves.
    """
    leaves = problem.checked_leaves
    for plan in plans:
        if plan.kind != "entry" or plan.group is not None:
            continue
        dtype = np.dtype(leaves[plan.k].dtype)
        for part in plan.parts:
            unit = 1j if part == "imag" else 1.0
            for lo in range(0, plan.m, plan.chunk):
                idx = np.arange(lo, lo + plan.chunk) % plan.m
                steps = np.full(plan.chunk, plan.eps * unit, dtype=dtype)
                units = np.full(plan.chunk, unit, dtype=dtype)
                seg = Segment(plan, part, lo, min(plan.chunk, plan.m - lo), 0)
                yield Call("entry", plan.k, plan.batch[idx], steps, units, (seg,))
    groups = {p.group: [q for q in plans if q.group == p.group] for p in plans if p.group}
    for ks, members in groups.items():
        yield from _group_calls(problem, ks, members)
    rows = [(plan, p) for plan in plans if plan.kind == "direction" for p in range(plan.m)]
    if not rows:
        return
    chunk = next(plan.chunk for plan in plans if plan.kind == "direction")
    real = np.real(np.zeros((), np.asarray(leaves[0]).dtype)).dtype
    for lo in range(0, len(rows), chunk):
        batch = tuple(np.zeros((chunk, *x.shape), np.dtype(x.dtype)) for x in leaves)
        steps = np.zeros(chunk, real)
        for i, j in enumerate(np.arange(lo, lo + chunk) % len(rows)):
            plan, p = rows[j]
            batch[plan.k][i] = plan.batch[p].reshape(plan.leaf.shape)
            steps[i] = plan.eps
        segments, i = [], 0
        while i < min(chunk, len(rows) - lo):
            plan, p = rows[lo + i]
            m = min(plan.m - p, chunk - i, len(rows) - lo - i)
            segments.append(Segment(plan, "direction", p, m, i))
            i += m
        yield Call("tree", -1, batch, steps, np.ones(chunk, real), tuple(segments))


def _group_calls(problem: Problem, ks: tuple[int, ...], members: list[LeafPlan]) -> Iterator[Call]:
    """The calls of a group of small leaves: rows ``(owner, index)``.

    Each row moves one entry of one member (``owner``: its position in ``ks``).
    """
    dtype = np.result_type(*[np.asarray(problem.checked_leaves[k]).dtype for k in ks])
    rows = [(plan, p) for plan in members for p in range(plan.m)]
    chunk = members[0].chunk
    for lo in range(0, len(rows), chunk):
        picked = [rows[j] for j in np.arange(lo, lo + chunk) % len(rows)]
        owner = np.array([ks.index(plan.k) for plan, _ in picked], np.int32)
        index = np.array([plan.batch[p] for plan, p in picked], np.int32)
        steps = np.array([plan.eps for plan, _ in picked], dtype)
        segments, i = [], 0
        while i < min(chunk, len(rows) - lo):
            plan, p = rows[lo + i]
            m = min(plan.m - p, chunk - i, len(rows) - lo - i)
            segments.append(Segment(plan, "", p, m, i))
            i += m
        yield Call("group", ks, (owner, index), steps, np.ones(chunk, dtype), tuple(segments))


def first_calls(problem: Problem, plans: Sequence[LeafPlan]) -> list[Call]:
    """The first of :func:`calls` for each kernel it compiles: what compiling ahead needs.

    One per leaf or group, one for all directions.
    """
    firsts: dict[Any, Call] = {}
    for plan in plans:
        key: Any
        if plan.group is not None:
            key, members = plan.group, [q for q in plans if q.group == plan.group]
        elif plan.kind == "direction":
            key, members = "direction", [q for q in plans if q.kind == "direction"]
        else:
            key, members = plan.k, [plan]
        if key not in firsts:
            firsts[key] = next(calls(problem, members))
    return list(firsts.values())


def n_calls(plans: Sequence[LeafPlan]) -> int:
    """How many kernel calls :func:`calls` makes for ``plans`` (per kernel)."""
    alone = [p for p in plans if p.kind == "entry" and p.group is None]
    count = sum(len(p.parts) * -(-p.m // p.chunk) for p in alone)
    groups = {p.group: p.chunk for p in plans if p.group}
    for ks, chunk in groups.items():
        count += -(-sum(p.m for p in plans if p.group == ks) // chunk)
    rows = sum(p.m for p in plans if p.kind == "direction")
    if rows:
        count += -(-rows // next(p.chunk for p in plans if p.kind == "direction"))
    return count
