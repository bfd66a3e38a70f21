"""A plan per checked leaf: the entries or directions to perturb, their parts, chunk and step."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import numpy as np

from gradlab.gradcheck.planning import _directional as directional
from gradlab.gradcheck.planning._memory import Cost, default_budget, plan_chunk
from gradlab.gradcheck.planning._options import CheckOptions
from gradlab.gradcheck.planning._problem import Leaf, Problem
from gradlab.gradcheck.programs._runner import (
    Runner,
)

__all__ = ["Base", "LeafPlan", "leaf_scale", "make_plans", "planning_base", "shares_kernel"]


@dataclasses.dataclass(frozen=True)
class Base:
    """``f`` at θ: projections ``F`` ``(K,)``, their rounding scale, gradients, memory.

    ``values`` is the primal of the autodiff program (through custom rules' forward passes);
    ``plain`` the same ``F(θ)`` from a separately traced evaluation of ``f`` alone.
    """

    values: np.ndarray
    scales: np.ndarray
    grads: list[np.ndarray]  # per checked leaf, (K, *leaf.shape)
    out_dtype: str
    bytes_per_eval: int  # one forward evaluation of f (estimated from f's jaxpr)
    bytes_per_grad: int  # one evaluation of f and its gradients (XLA's memory analysis)
    plain: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    flops_per_eval: float = 0.0  # one dense forward evaluation of f (estimated from its jaxpr)
    eqns_per_eval: int = 0  # equations of f's jaxpr: what a kernel's compile time grows with
    grad_seconds: float = 0.0  # one run of f and its gradients at θ, measured (0: not run)

    @property
    def n_cotangents(self) -> int:
        """``K``: the number of projections of ``f`` checked."""
        return len(self.values)


def planning_base(problem: Problem, cots: Any, cost: Cost) -> Base:
    """What planning needs of :class:`Base` before ``f`` has run: shapes and costs only."""
    k = 1 if cots is None else int(jax.tree_util.tree_leaves(cots)[0].shape[0])
    shapes = [np.broadcast_to(np.zeros((), x.dtype), (k, *x.shape)) for x in problem.checked_leaves]
    return Base(np.zeros(k), np.zeros(k), shapes, "float64", cost.bytes, 0, np.zeros(k),
                cost.flops, cost.eqns)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class LeafPlan:
    """The perturbations of one checked leaf and how to run them.

    Attributes:
        k: The leaf's position among the checked leaves.
        leaf: The leaf.
        kind: ``"entry"`` or ``"direction"``.
        batch: Flat indices ``(m,)`` of the entries, or unit directions ``(m, n_k)``.
        parts: ``("",)``, ``("real", "imag")`` for complex entries, ``("direction",)``.
        chunk: Perturbations per kernel call (a multiple of the number of devices; for
            directions: rows of all leaves per call; for a group: rows of the group).
        eps: The step ``h``.
        group: Small real leaves share a kernel: the positions of the leaves in this one's
            group (``None``: a kernel of its own).
        flops_per_row: Estimated FLOPs of one perturbation (its ``+h`` and ``−h``
            evaluations); 0 when unknown.
    """

    k: int
    leaf: Leaf
    kind: Literal["entry", "direction"]
    batch: np.ndarray
    parts: tuple[str, ...]
    chunk: int
    eps: float
    group: tuple[int, ...] | None = None
    flops_per_row: float = 0.0

    @property
    def m(self) -> int:
        """Number of perturbations per part."""
        return len(self.batch)


#: Along an axis of at most this many indices, a sample includes an entry at every index.
SMALL_AXIS = 16


def structural_entries(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Flat indices a sample always includes: one entry in each structurally distinct slice.

    For every axis, an entry at its first and at its last index (the rest of the entry drawn
    at random), and along an axis of at most :data:`SMALL_AXIS` indices an entry at each
    index: the last row of an embedding, the first channel, each head of a small axis.

    Example:
        >>> idx = structural_entries((500, 10), np.random.default_rng(0))
        >>> rows, cols = np.unravel_index(idx, (500, 10))
        >>> every_col = sorted(set(cols.tolist())) == list(range(10))
        >>> bool(rows.min() == 0 and rows.max() == 499), every_col
        (True, True)
    """
    picked = set()
    for axis, size in enumerate(shape):
        along = range(size) if size <= SMALL_AXIS else (0, size - 1)
        for i in along:
            where = [int(rng.integers(n)) for n in shape]
            where[axis] = i
            picked.add(int(np.ravel_multi_index(tuple(where), shape)))
    return np.array(sorted(picked), dtype=np.int64)


def _select_entries(
    shape: tuple[int, ...], mode: str, samples: int, rng: np.random.Generator
) -> np.ndarray:
    """Flat indices of a leaf to check: all of them, or a sample of ``samples``.

    A sample holds the leaf's :func:`structural_entries` (all of them, even beyond
    ``samples``), the rest drawn uniformly without replacement.
    """
    n = math.prod(shape)
    if mode == "full" or n <= samples:
        return np.arange(n)
    must = structural_entries(shape, rng)
    rest = np.setdiff1d(np.arange(n), must)
    fill = rng.choice(rest, size=max(0, min(samples - len(must), len(rest))), replace=False)
    return np.sort(np.concatenate([must, fill]))


def make_plans(
    problem: Problem,
    base: Base,
    runner: Runner,
    steps: Sequence[float],
    *,
    options: CheckOptions,
) -> list[LeafPlan]:
    """Per checked leaf: the perturbations to run, their parts, chunk size and step.

    ``options`` says what to perturb (``mode``, ``samples``, ``directions``, ``seed``), at
    which ``order``, and how to batch it (``chunk_size``, ``memory_budget``, ``sparse``).
    Directional plans share one chunk size: their rows run together (see :func:`calls`).
    """
    mode, samples, directions, seed = (
        options.mode, options.samples, options.directions, options.seed,
    )  # fmt: skip
    order, chunk_size, memory_budget, sparse = (
        options.order, options.chunk_size, options.memory_budget, options.sparse,
    )  # fmt: skip
    budget = (memory_budget or default_budget(runner.devices[0])) * runner.n_devices
    n_dev = runner.n_devices
    rng = np.random.default_rng(seed)
    n_rows = sum(g[0].size * (2 if np.iscomplexobj(g) else 1) for g in base.grads)
    n_total = sum(np.asarray(x).nbytes for x in problem.checked_leaves)

    def chunk_for(m: int, per: int) -> int:
        if order == 2:  # two gradients and an HVP per perturbation, each K·n rows (≤ 8 B)
            per = 3 * (per + base.bytes_per_grad) + 3 * base.n_cotangents * n_rows * 8
        chunk = chunk_size or plan_chunk(m, per, budget, MAX_CHUNK, multiple_of=n_dev)
        return max(n_dev, min(chunk, -(-m // n_dev) * n_dev))

    # a perturbation: f at +h and at -h (at order 2: the gradient, twice)
    per_row = 2 * base.flops_per_eval * (GRADIENT_FLOPS if order == 2 else 1.0)
    plans = []
    for k, leaf in enumerate(problem.checked):
        n = math.prod(leaf.shape)
        dtype = np.dtype(problem.checked_leaves[k].dtype)
        if mode == "directional":
            batch = directional.make_directions(n, dtype, directions, seed, k)
            rows = directions * len(problem.checked)
            chunk = chunk_for(rows, base.bytes_per_eval + 3 * n_total)
            plans.append(
                LeafPlan(
                    k, leaf, "direction", batch, ("direction",), chunk, steps[k], None, per_row
                )
            )
        else:
            batch = _select_entries(tuple(leaf.shape), mode, samples, rng)
            parts = ("real", "imag") if np.issubdtype(dtype, np.complexfloating) else ("",)
            # a moved copy of the leaf per perturbation, unless the move travels as a slice
            copy = 0 if sparse and order == 1 else n * dtype.itemsize
            chunk = chunk_for(len(batch), base.bytes_per_eval + copy)
            plans.append(
                LeafPlan(k, leaf, "entry", batch, parts, chunk, float(steps[k]), None, per_row)
            )
    if order == 1 and mode != "directional":
        platform = runner.devices[0].platform
        share = lambda p: (
            shares_kernel(p.m, p.flops_per_row, platform, base.eqns_per_eval)
            if sparse and p.flops_per_row
            else math.prod(p.leaf.shape) <= SMALL_LEAF
        )
        plans = _grouped(plans, problem, base, chunk_for, share)
    return plans


def _grouped(
    plans: list[LeafPlan],
    problem: Problem,
    base: Base,
    chunk_for: Callable[[int, int], int],
    share: Callable[[LeafPlan], bool],
) -> list[LeafPlan]:
    """Puts the real leaves that ``share`` a kernel into groups (see :func:`shares_kernel`)."""
    small = [p for p in plans if p.parts == ("",) and share(p)]
    groups: list[list[LeafPlan]] = []
    for plan in small:
        if not groups or sum(p.m for p in groups[-1]) + plan.m > GROUP_ROWS:
            groups.append([])
        groups[-1].append(plan)
    grouped: dict[int, LeafPlan] = {}
    for members in groups:
        if len(members) < 2:
            continue
        ks = tuple(p.k for p in members)
        leaf_bytes = sum(np.asarray(problem.checked_leaves[k]).nbytes for k in ks)
        chunk = chunk_for(sum(p.m for p in members), base.bytes_per_eval + leaf_bytes)
        grouped |= {p.k: dataclasses.replace(p, group=ks, chunk=chunk) for p in members}
    return [grouped.get(p.k, p) for p in plans]


def part_label(part: str, j: int, scalar: bool) -> str:
    """The label of worst entries: the part and, for a vector ``f``, the cotangent."""
    return " ".join(filter(None, [part, "" if scalar else f"v{j}"]))


def leaf_scale(x: np.ndarray) -> float:
    """``max(1, rms|x|)``: the size of a leaf's entries, for steps relative to it.

    Example:
        >>> leaf_scale(np.array([3.0, -4.0])), leaf_scale(np.zeros(2))
        (3.5355339059327378, 1.0)
    """
    x = np.asarray(x)
    return max(1.0, float(np.sqrt(np.mean(np.abs(x) ** 2)))) if x.size else 1.0


#: FLOPs of f and its gradient (or of a perturbed gradient, an HVP) per FLOP of f alone:
#: reverse mode costs about two more evaluations.
GRADIENT_FLOPS = 3.0


#: Upper bound on the perturbations per chunk: larger vmaps stop paying off.
MAX_CHUNK = 4096


#: Without slices (``sparse=False``) a leaf's own kernel saves no work, only memory: real
#: leaves with at most this many entries share a kernel then.
SMALL_LEAF = 1024


#: Rows of one group kernel at most.
GROUP_ROWS = 4096


#: What the plan weighs, per platform: the compile time of one more kernel, seconds
#: ``a + b·eqns`` for an ``f`` of ``eqns`` equations, and the FLOP rate kernels run at.
#: Measured on XLA:CPU (2 shared cores, load 5–9): kernels of the small layers (7–40
#: equations) compile in 0.5–1.7 s, the transformer block's (105) in 3–4.5 s; kernels run at
#: 1–5 GFLOP/s. (The CNN's kernels compile slower than their 23 equations say, 2.5–5 s, but
#: giving its first convolution and its dense layer kernels of their own still halves the
#: warm check's CPU time at the same cold CPU time.) Other platforms: not measured; assumed
#: 1 s + 0.05 s per equation and 1e11 FLOP/s.
KERNEL_COST = {"cpu": (0.3, 0.05, 1e9)}


_OTHER_PLATFORM = (1.0, 0.05, 1e11)


def shares_kernel(rows: int, flops_per_row: float, platform: str, eqns: int = 0) -> bool:
    """Whether a leaf's perturbations run in a kernel shared with other leaves.

    A leaf gets its own kernel, which carries its moves as slices
    (:mod:`~gradlab.gradcheck.evaluation._slices`), when evaluating its ``rows`` perturbations
    densely (``flops_per_row``: ``f`` at ``+h`` and ``−h``) would take longer than compiling another
    kernel for an ``f`` of ``eqns`` equations (:data:`KERNEL_COST`); otherwise compiling
    costs more than it could save, and the leaf shares a group kernel that evaluates ``f``
    densely.

    Example:
        >>> shares_kernel(10, 2e4, "cpu", eqns=10), shares_kernel(1024, 2e7, "cpu", eqns=10)
        (True, False)
    """
    base, per_eqn, rate = KERNEL_COST.get(platform, _OTHER_PLATFORM)
    return rows * flops_per_row / rate <= base + per_eqn * eqns
