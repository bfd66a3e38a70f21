"""The sweep over perturbations: chunked runs of the compiled kernels, in a check's context.

After ``f`` and its derivatives are evaluated once at ``θ``
(:func:`~gradlab.gradcheck.evaluation._base.evaluate`), compiled kernels run over chunks of
perturbations (a :class:`~gradlab.gradcheck.planning._plan.LeafPlan` per leaf, its
:func:`~gradlab.gradcheck.planning._calls.calls`): entries ``θ ± h·e_i`` leaf by leaf, or
random directions ``θ ± h·d`` of all leaves together. :func:`sweep_first_order` gathers the
finite differences (and, for ``autodiff="forward"``, the ``jax.jvp`` values) that the judging
stage turns into per-leaf verdicts.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gradlab import _jax_compat
from gradlab.gradcheck.evaluation import _kernels
from gradlab.gradcheck.evaluation._base import _bytes
from gradlab.gradcheck.planning._calls import (
    Call,
    calls,
    first_calls,
    kernel_flops,
    n_calls_of,
)
from gradlab.gradcheck.planning._memory import program_cost
from gradlab.gradcheck.planning._plan import LeafPlan
from gradlab.gradcheck.planning._problem import Problem
from gradlab.gradcheck.programs import _program_key
from gradlab.gradcheck.programs._runner import (
    Items,
    Runner,
    compile_tier,
    compile_tiered,
    executable_key,
    lookup,
)
from gradlab.gradcheck.programs._scope import forgets
from gradlab.gradcheck.programs._tier import Tier
from gradlab.gradcheck.programs._tracing import translated_errors
from gradlab.gradcheck.report._progress import Progress

__all__ = [
    "FORWARD_ONLY",
    "Context",
    "Raw",
    "first_jobs",
    "sweep_first_order",
    "traced_sweep_flops",
]


Job = tuple[Callable[..., Any], tuple[Any, ...], Any]  # (kernel, static args, batch)


#: Kernels that evaluate ``f`` without differentiating it: a function of ``f``'s jaxpr (its
#: custom derivative rules unused), so kept on disk under ``f``'s fingerprint
#: (:mod:`~gradlab.gradcheck.programs._stored`).
FORWARD_ONLY = frozenset({_kernels.fd_chunk})
#: A compiled kernel may use this much more than the memory budget before its chunk shrinks
#: (the budget is a target, not a limit: chunks are planned from f's forward memory).
OVER_BUDGET = 1.5


@dataclasses.dataclass(frozen=True)
class Context:
    """What every kernel call of a check needs."""

    problem: Problem
    runner: Runner
    dyn: tuple[Any, ...]  # (checked, fixed, rest, cots), replicated over the devices
    scalar: bool
    sparse: bool = True  # carry an entry's move through f as a slice (see _slices)
    budget: int | None = None  # bytes per device a kernel call may use; None: chunks as given
    fingerprint: str | None = None  # of f's jaxpr: keys its kernels on disk (None: not kept)
    convolutions: int = 0  # in f: its kernels never compile at the cheap tier
    loops: int = 0  # in f: its kernels compile at XLA's defaults (see compile_tier)

    def _tier(self, flops: float) -> Tier:
        """The compile tier of a kernel of this check estimated at ``flops`` (all its runs)."""
        platform = self.runner.devices[0].platform
        return compile_tier(platform, flops, convolutions=self.convolutions, loops=self.loops)

    def _stored_key(self, job: Job, tier: Tier) -> str | None:
        """The disk key of a kernel that evaluates ``f`` without differentiating it."""
        kernel, static, batch = job
        if self.fingerprint is None or kernel not in FORWARD_ONLY or self.runner.mesh is not None:
            return None
        env = _program_key.environment(self.runner.devices[0], tier)
        which = (getattr(kernel, "__name__", ""), self.problem.spec.promote, static)
        return _program_key.program_key("fd", self.fingerprint, which, (self.dyn, batch), env)

    def _key(self, kernel: Callable[..., Any], static: tuple[Any, ...], batch: Any) -> Any:
        return executable_key(kernel, (self.problem.spec, *static), self.dyn, batch)

    def run(
        self,
        kernel: Callable[..., Any],
        static: tuple[Any, ...],
        *batch: Any,
        calls_left: int = 0,
    ) -> Any:
        """Runs ``kernel`` on one chunk, translating JAX's errors into clear ones.

        A kernel compiled ahead (:meth:`precompile`) or loaded from disk runs its
        executable (one not compiled ahead runs through ``jax.jit``). At the cheap tier its
        first run is timed and, if ``calls_left`` more runs would pay for it, the kernel
        is compiled again optimised (:meth:`Executable.upgrade_if_it_pays`; off unless
        :data:`~gradlab.gradcheck.programs._runner.UPGRADE` is set).
        """
        with translated_errors():
            hit = lookup(self._key(kernel, static, batch))
            if hit is None:
                return self.runner.run(kernel, (self.problem.spec, *static), self.dyn, batch)
            if hit.timed:
                return self.runner.run_compiled(hit.compiled, self.dyn, batch)
            start = time.perf_counter()
            out = self.runner.run_compiled(hit.compiled, self.dyn, batch)
            hit.upgrade_if_it_pays(time.perf_counter() - start, calls_left, to=self._tier(math.inf))
            return out

    def compile_items(self, jobs: Sequence[Job], flops: Sequence[float] | None = None) -> Items:
        """What :func:`~gradlab.gradcheck.programs._runner.compile_tiered` compiles ``jobs`` from.

        ``flops``: each job's estimated run cost over the whole check, which sets its
        compile tier (:func:`~gradlab.gradcheck.programs._runner.compile_tier`; None: the tier of an
        expensive job).
        """
        spec = self.problem.spec
        tiers = [self._tier(f) for f in flops] if flops else [self._tier(math.inf)] * len(jobs)
        keys = [self._key(k, static, b) for k, static, b in jobs]

        def lowerer(job: Job) -> Callable[[], Any]:
            k, static, b = job
            return lambda: self.runner.lower(k, (spec, *static), self.dyn, b)

        stored = [self._stored_key(job, t) for job, t in zip(jobs, tiers, strict=True)]
        return Items(keys, [lowerer(job) for job in jobs], tiers, stored)

    def precompile(self, jobs: Sequence[Job], flops: Sequence[float] | None = None) -> list[Any]:
        """Compiles ``(kernel, static, batch)`` jobs side by side before they run."""
        items = self.compile_items(jobs, flops)
        with translated_errors():
            done = compile_tiered(*items, device=self.runner.devices[0])
        return [e.compiled for e in done]

    def compile_plans(
        self, plans: Sequence[LeafPlan], jobs: Callable[[Call], list[Job]], bar: Progress
    ) -> list[LeafPlan]:
        """Compiles every kernel the plans call, then checks each against the memory budget.

        ``jobs`` gives the kernels of a call; the budget is checked with XLA's memory analysis
        of the compiled kernel.

        Chunks are planned from ``f``'s forward memory before anything is compiled; a kernel
        found to need more than :data:`OVER_BUDGET` times the budget gets a chunk scaled down
        to fit and compiles again. Returns the plans with their final chunks.
        """
        start = time.perf_counter()
        plans, n_kernels, notes = list(plans), 0, []
        key = lambda c: -1 if c.kind == "tree" else c.k  # the kernel a call runs
        todo = first_calls(self.problem, plans)
        for _ in range(2):  # compile; then once more for the kernels over the budget
            per_call = [jobs(call) for call in todo]
            flops = [
                kernel_flops(plans, call)
                for call, js in zip(todo, per_call, strict=True)
                for _ in js
            ]
            compiled = iter(self.precompile([job for js in per_call for job in js], flops))
            n_kernels += sum(map(len, per_call))
            over = {}
            for call, js in zip(todo, per_call, strict=True):
                used = max(_bytes(next(compiled)) for _ in js)
                if self.budget and used > OVER_BUDGET * self.budget:
                    over[key(call)] = self.budget / used
                    notes.append(f"{used / 2**20:.1f} MiB per call")
            if not over:
                break
            n = self.runner.n_devices
            for i, plan in enumerate(plans):
                k = plan.group or (-1 if plan.kind == "direction" else plan.k)
                if k in over:
                    chunk = max(n, int(plan.chunk * over[k]) // n * n)
                    notes.append(f"{plan.leaf.path}: chunk {plan.chunk} -> {chunk}")
                    plans[i] = dataclasses.replace(plan, chunk=chunk)
            todo = [c for c in first_calls(self.problem, plans) if key(c) in over]
        note = ""
        if notes:
            budget = f"{self.budget / 2**20:.1f} MiB" if self.budget else ""
            note = f"over the memory budget of {budget} ({', '.join(notes)})"
        bar.compiled(n_kernels, time.perf_counter() - start, note)
        return plans


#: FLOPs of one call of a difference kernel, by its executable key (traced once per process;
#: bounded like the executables, emptied with them by ``jax.clear_caches()``).
_CALL_FLOPS: collections.OrderedDict[Any, float] = collections.OrderedDict()
_MAX_CALL_FLOPS = 256


class _FlopsClearer:
    """What ``jax.clear_caches()`` calls to empty :data:`_CALL_FLOPS`."""

    def cache_clear(self) -> None:
        """Forgets every kernel's FLOPs."""
        _CALL_FLOPS.clear()


_FLOPS_CLEARER = _FlopsClearer()
_jax_compat.register_cache(_FLOPS_CLEARER, "gradlab.gradcheck kernel FLOPs")
forgets(_FLOPS_CLEARER.cache_clear)


def _call_flops(ctx: Context, call: Call) -> float:
    """The FLOPs of one run of the difference kernel ``call`` runs (traced, not compiled)."""
    static = (call.k, call.kind, ctx.sparse)
    batch = (call.batch, call.steps)
    key = ctx._key(_kernels.fd_chunk, static, batch)
    try:
        flops = _CALL_FLOPS.get(key)
    except TypeError:  # an unhashable static argument: traced every time
        key, flops = None, None
    if flops is None:
        with translated_errors():
            traced = _kernels.fd_chunk.trace(ctx.problem.spec, *static, *ctx.dyn, *batch)
        try:
            flops = program_cost(traced.jaxpr).flops
        except Exception:  # a jaxpr the cost model cannot read: unknown, so never stops a check
            flops = 0.0
        if key is not None:
            _CALL_FLOPS[key] = flops
            while len(_CALL_FLOPS) > _MAX_CALL_FLOPS:
                _CALL_FLOPS.popitem(last=False)
    return flops


def traced_sweep_flops(ctx: Context, plans: Sequence[LeafPlan]) -> float:
    """The FLOPs of the first-order sweep's difference kernels, all their calls together.

    Each kernel is traced (``jit(...).trace``: nothing is lowered or compiled) for its first
    call, and its jaxpr's FLOPs (:func:`~gradlab.gradcheck.planning._memory.program_cost`)
    counted once per call it makes; slices and batching are in the jaxpr, so this is the
    work the sweep does, unlike the dense count of the plan. Kept per kernel key in this
    process.
    """
    total = 0.0
    for call in first_calls(ctx.problem, plans):
        total += _call_flops(ctx, call) * n_calls_of(plans, call)
    return total


def first_jobs(ctx: Context, plans: Sequence[LeafPlan]) -> Items:
    """The difference kernels the first calls of ``plans`` run (reverse mode, order 1)."""
    todo = first_calls(ctx.problem, plans)
    jobs: list[Job] = [
        (_kernels.fd_chunk, (c.k, c.kind, ctx.sparse), (c.batch, c.steps)) for c in todo
    ]
    return ctx.compile_items(jobs, [kernel_flops(plans, c) for c in todo])


@dataclasses.dataclass
class Raw:
    """What the sweep measured for one part of one leaf (over its ``m`` perturbations)."""

    values: list[np.ndarray] = dataclasses.field(default_factory=list)  # (2, c, K) each
    taken: list[np.ndarray] = dataclasses.field(default_factory=list)
    jvp: list[np.ndarray] = dataclasses.field(default_factory=list)  # (c, K) each
    f0: list[np.ndarray] = dataclasses.field(default_factory=list)  # (c, K) each: F(θ)

    def cat(self, name: str) -> np.ndarray:
        """The chunks of ``values``/``taken`` (axis 1) or ``jvp``/``f0`` (axis 0), joined."""
        return np.concatenate(getattr(self, name), axis=0 if name in ("jvp", "f0") else 1)


def sweep_first_order(
    ctx: Context,
    plans: Sequence[LeafPlan],
    forward: bool,
    repeat: bool,
    bar: Progress | None,
) -> tuple[dict[tuple[int, str], Raw], int, int]:
    """Runs the finite differences (and ``jax.jvp`` when ``forward``) of every plan.

    With ``bar`` None the kernels are taken as compiled (a second pass over the same
    kernels at other steps or entries) and no progress is shown.

    Returns:
        ``(raw, n_evaluations, n_unstable)``: the measurements per (leaf, part), the number
        of evaluations of ``f``, and how many perturbed evaluations did not repeat exactly.
    """
    raw: dict[tuple[int, str], Raw] = {}
    n_evals = n_unstable = 0

    def jobs(call: Call) -> list[Job]:
        fd = (_kernels.fd_chunk, (call.k, call.kind, ctx.sparse), (call.batch, call.steps))
        jvp = (_kernels.jvp_chunk, (call.k, call.kind), (call.batch, call.units))
        return [fd, jvp] if forward else [fd]

    if bar is not None:
        plans = ctx.compile_plans(plans, jobs, bar)
    left = collections.Counter((c.kind, c.k) for c in calls(ctx.problem, plans))
    for call in calls(ctx.problem, plans):
        static = (call.k, call.kind)
        fd = (*static, ctx.sparse)
        left[static[::-1]] -= 1
        calls_left = left[static[::-1]] * (2 if repeat else 1)
        values, taken, f0 = ctx.run(
            _kernels.fd_chunk, fd, call.batch, call.steps, calls_left=calls_left
        )
        n_evals += 2 * len(call.steps)
        if repeat:
            again = ctx.run(_kernels.fd_chunk, fd, call.batch, call.steps)[0]
            valid = sum(seg.m for seg in call.segments)
            n_unstable += int(np.sum(np.any(again[:, :valid] != values[:, :valid], axis=(0, 2))))
            n_evals += 2 * len(call.steps)
        if forward:
            jvp = ctx.run(_kernels.jvp_chunk, static, call.tangents(taken), call.units)
        for seg in call.segments:
            r = raw.setdefault((seg.plan.k, seg.part), Raw())
            r.values.append(values[:, seg.rows])
            r.taken.append(call.moves(taken, seg))
            r.f0.append(np.broadcast_to(f0, (seg.m, *f0.shape)))
            if forward:
                r.jvp.append(jvp[seg.rows])
        if bar is not None:
            bar.advance(sum(seg.m for seg in call.segments) * (2 if repeat else 1))
    return raw, n_evals, n_unstable
