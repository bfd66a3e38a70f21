"""Second order: Hessian-vector products against finite differences of the gradient.

As torch's ``gradgradcheck`` does, but per leaf and in parallel. For each perturbation of a
leaf ``θ_k`` (an entry ``e_i``, or a random direction), the numerical column

    (∇F(θ + h·e_i) − ∇F(θ − h·e_i)) / 2h

(the gradient over EVERY checked leaf, ``n`` real rows) is compared with ``H·e_i`` from
``jax.jvp(jax.grad(F))`` (forward-over-reverse, ``autodiff="forward"``, the default) or from
``jax.grad(<jax.grad(F), e_i>)`` (reverse-over-reverse, ``autodiff="reverse"``). A leaf's row in the
report judges its block of ``H`` (its columns, every row) by the same relative error, bands,
kink detection and rounding noise floor as the first-order check, with the gradient in the
role of ``f``.

Reverse-over-reverse computes ``Hᵀe_i`` (the gradient of ``∂F/∂θ_i``), which equals ``H·e_i``
only when autodiff's Hessian is symmetric — a broken rule can break that. So a lost
``∂(∂f/∂b)/∂a`` shows in leaf ``a`` with ``autodiff="forward"`` and in leaf ``b`` with
``autodiff="reverse"``; ``autodiff="both"`` reports both.

This catches custom rules whose backward pass is right but not itself differentiable
correctly (a ``stop_gradient`` in a ``custom_vjp``'s ``bwd``, a wrong second derivative), which
first-order checks cannot see. Cost: per perturbation, two gradient evaluations and one
Hessian-vector product; the default step is ``1e-5`` (see :mod:`gradlab.gradcheck._step`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gradlab.gradcheck import _kernels
from gradlab.gradcheck._analysis import LeafSums, Thresholds, analyse_part, combine, squares
from gradlab.gradcheck._problem import Problem
from gradlab.gradcheck._progress import Progress
from gradlab.gradcheck._report import LeafReport
from gradlab.gradcheck._sweep import Base, Call, Context, Job, LeafPlan, calls, part_label

__all__ = ["gradient_rows", "row_label", "sweep_second_order"]


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


def _relabel(problem: Problem, plan: LeafPlan, sums: LeafSums, part: str) -> LeafSums:
    """Worst entries indexed ``(column p, row r)`` → the leaf's entry and a row label."""
    worst = []
    for w in sums.worst:
        p, r = w.index
        index = (
            tuple(int(i) for i in np.unravel_index(int(plan.batch[p]), plan.leaf.shape))
            if plan.kind == "entry"
            else (p,)
        )
        label = " ".join(filter(None, [part, f"row {row_label(problem, r)}"]))
        worst.append(dataclasses.replace(w, index=index, part=label))
    return dataclasses.replace(sums, worst=tuple(worst))


def sweep_second_order(
    ctx: Context,
    plans: Sequence[LeafPlan],
    base: Base,
    th: Thresholds,
    outers: Sequence[str],
    bar: Progress,
) -> tuple[list[LeafReport], np.ndarray, int]:
    """Checks every leaf's columns of the Hessian against differences of the gradient.

    Returns:
        The rows (one per leaf and outer mode), the summed squares for the overall relative
        error, and the number of gradient evaluations.
    """
    g0 = gradient_rows(base.grads)  # (K, n)
    n = g0.shape[1]
    sums: dict[tuple[int, str], list[LeafSums]] = {(p.k, o): [] for p in plans for o in outers}
    n_evals = 0

    def jobs(call: Call) -> list[Job]:
        static = (call.k, call.kind)
        hvps = [(_kernels.hvp_chunk, (*static, o), (call.batch, call.units)) for o in outers]
        return [(_kernels.grad_fd_chunk, static, (call.batch, call.steps)), *hvps]

    plans = ctx.compile_plans(plans, jobs, bar)
    for call in calls(ctx.problem, plans):
        static = (call.k, call.kind)
        grads, taken = ctx.run(_kernels.grad_fd_chunk, static, call.batch, call.steps)
        n_evals += 2 * len(call.steps)
        tangents = call.tangents(taken)
        for o in outers:
            hvp = ctx.run(_kernels.hvp_chunk, (*static, o), tangents, call.units)
            for seg in call.segments:
                plan, m = seg.plan, seg.m
                if plan.kind == "entry":
                    hp, hm = call.moves(taken, seg)
                else:
                    hp, hm = np.full(m, plan.eps), np.full(m, -plan.eps)
                cols = (seg.lo + np.arange(m))[:, None] * n + np.arange(n)[None, :]
                for j in range(base.n_cotangents):
                    s = analyse_part(
                        (plan.m, n),
                        np.tile(g0[j], m),
                        grads[0, seg.rows, j].reshape(-1),
                        grads[1, seg.rows, j].reshape(-1),
                        np.repeat(hp, n),
                        np.repeat(hm, n),
                        hvp[seg.rows, j].reshape(-1),
                        th,
                        indices=cols.reshape(-1),
                    )
                    label = part_label(seg.part, j, ctx.scalar)
                    sums[(plan.k, o)].append(_relabel(ctx.problem, plan, s, label))
        bar.advance(sum(seg.m for seg in call.segments))
    rows: list[LeafReport] = []
    totals = np.zeros(3)
    for plan in plans:
        for o in outers:
            leaf = plan.leaf
            parts = sums[(plan.k, o)]
            row = combine(leaf.path, leaf.shape, str(leaf.dtype), parts, plan.eps, th, order=2)
            rows.append(dataclasses.replace(row, autodiff=o, eps=plan.eps))
            totals += squares(parts)
    return rows, totals, n_evals
