"""Leaves whose gradient is zero to rounding, verified as flat.

Such a leaf is verified when ``f`` does not move along any of its entries over a large step
(relative to the leaf's scale), beyond what rounding of ``f`` explains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gradlab.gradcheck.evaluation._sweep import Context, sweep_first_order
from gradlab.gradcheck.judging._leaf_parts import _parts
from gradlab.gradcheck.planning._plan import Base, LeafPlan, leaf_scale
from gradlab.gradcheck.planning._thresholds import Thresholds
from gradlab.gradcheck.report._leaf_report import LeafReport

#: A leaf whose gradient is this small next to the largest gradient entry of the check is
#: zero to autodiff's rounding; it may be verified as flat (see ``_flat_leaves``).
ZERO_GRADIENT = 1e-12


#: The step, relative to the leaf's scale, over which f must not move to be called flat.
FLAT_STEP = 4.0


#: ``f(θ ± H·e_i)`` may differ from ``f(θ)`` by this many ``u·|f|`` and still be flat.
FLAT_ROUNDING = 64.0


def _flat_leaves(
    ctx: Context, plans: Sequence[LeafPlan], rows: list[LeafReport], base: Base, th: Thresholds
) -> tuple[list[LeafReport], int]:
    """Unresolved leaves on which ``f`` does not depend (see :data:`FLAT_STEP`).

    A gradient that is zero by symmetry (the key bias of softmax attention, anything before
    a normalisation it is invariant to) is computed as rounding, ~1e-17, and its centered
    differences are rounding too: no relative error can be established between two noises.
    What can be established is that ``f`` does not change along each entry over a large
    interval: ``f(θ ± H·e_i) = f(θ)`` to rounding at ``H = FLAT_STEP·max(1, rms|θ|)``, which
    a gradient larger than ``64·u·|f|/H`` (3.5e-15·|f| in float64) could not hide; with
    ``jax.grad`` zero to rounding there too, the leaf is verified as flat. Anything else
    stays unresolved.
    """
    scale_g = max((float(np.max(np.abs(g))) for g in base.grads if g.size), default=0.0)
    todo = []
    for plan in plans:
        mine = [r for r in rows if r.path == plan.leaf.path]
        if not mine or any(r.status != "unresolved" or r.n_nonfinite for r in mine):
            continue
        if float(np.max(np.abs(base.grads[plan.k]))) > ZERO_GRADIENT * max(scale_g, 1e-300):
            continue
        h = FLAT_STEP * leaf_scale(np.asarray(ctx.problem.checked_leaves[plan.k]))
        todo.append(dataclasses.replace(plan, eps=h))
    if not todo:
        return rows, 0
    raw, n_evals, _ = sweep_first_order(ctx, todo, False, False, None)
    flat = {}
    for plan in todo:
        parts = _parts(ctx, plan, raw, base, ["reverse"])
        ok = True
        for pt in parts:
            m = pt.measured
            size = np.maximum(np.abs(m.f0), np.maximum(np.abs(m.fp), np.abs(m.fm)))
            if m.scale is not None:
                size = np.maximum(size, m.scale)
            moved = np.maximum(np.abs(m.fp - m.f0), np.abs(m.fm - m.f0))
            ok &= bool(
                np.all(np.isfinite(moved) & (moved <= FLAT_ROUNDING * th.unit_roundoff * size))
            )
        if ok:
            flat[plan.leaf.path] = plan.eps
    out = []
    for r in rows:
        if r.path in flat:
            note = (
                f"f does not depend on this leaf at θ: f(θ ± {flat[r.path]:g}·e_i) equals f(θ) "
                f"to rounding for every entry, and jax.grad is zero to rounding (max "
                f"{r.grad_norm:.0e}); verified as flat"
            )
            r = dataclasses.replace(r, status="verified", flat=True, note=note)
        out.append(r)
    return out, n_evals
