"""The sweep over perturbations: f at θ, a plan per leaf, chunked runs of the kernels.

A check evaluates ``f`` and its derivatives once at ``θ`` (:func:`evaluate`), then runs
compiled kernels over chunks of perturbations (:class:`LeafPlan` per leaf, :func:`calls`):
entries ``θ ± h·e_i`` leaf by leaf, or random directions ``θ ± h·d`` of all leaves together.
:func:`sweep_first_order` gathers the finite differences (and, for ``autodiff="forward"``, the
``jax.jvp`` values) that :func:`first_order_rows` turns into per-leaf verdicts.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, NamedTuple

import jax
import numpy as np

from gradlab._errors import CheckInputError
from gradlab._treepath import path_parts
from gradlab.gradcheck import _directional as directional
from gradlab.gradcheck import _kernels, _stored
from gradlab.gradcheck._fingerprint import fingerprint
from gradlab.gradcheck._kernels import Kind
from gradlab.gradcheck._memory import Cost, default_budget, plan_chunk, program_cost
from gradlab.gradcheck._options import CheckOptions
from gradlab.gradcheck._problem import Leaf, Problem
from gradlab.gradcheck._progress import Progress
from gradlab.gradcheck._runner import (
    Runner,
    Tier,
    compile_tier,
    compile_tiered,
    executable_key,
    lookup,
)

__all__ = [
    "FORWARD_ONLY",
    "Base",
    "Call",
    "Context",
    "Items",
    "LeafPlan",
    "Raw",
    "Segment",
    "calls",
    "evaluate",
    "evaluation_cost",
    "first_calls",
    "first_jobs",
    "leaf_scale",
    "make_plans",
    "n_calls",
    "planning_base",
    "shares_kernel",
    "sweep_first_order",
]

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
    (:mod:`~gradlab.gradcheck._slices`), when evaluating its ``rows`` perturbations densely
    (``flops_per_row``: ``f`` at ``+h`` and ``−h``) would take longer than compiling another
    kernel for an ``f`` of ``eqns`` equations (:data:`KERNEL_COST`); otherwise compiling
    costs more than it could save, and the leaf shares a group kernel that evaluates ``f``
    densely.

    Example:
        >>> shares_kernel(10, 2e4, "cpu", eqns=10), shares_kernel(1024, 2e7, "cpu", eqns=10)
        (True, False)
    """
    base, per_eqn, rate = KERNEL_COST.get(platform, _OTHER_PLATFORM)
    return rows * flops_per_row / rate <= base + per_eqn * eqns


TRACING_ERRORS: tuple[type[Exception], ...] = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
)


def trace_error_hint(e: Exception) -> CheckInputError:
    """The error for a function JAX cannot trace."""
    return CheckInputError(
        "f cannot be traced by JAX, so it cannot be jitted or vmapped: "
        f"{type(e).__name__}: {str(e).splitlines()[0]}\n"
        "Fix: use jax.numpy and jax.lax inside f (jnp.where or lax.cond instead of Python "
        "`if` on array values, no NumPy or .item() on traced arrays). Non-array settings "
        "(flags, strings) may be passed as extra positional args: they are kept static."
    )


def no_jvp_hint(e: Exception) -> CheckInputError:
    """The error for forward mode through a ``jax.custom_vjp`` function."""
    return CheckInputError(
        "forward mode (jax.jvp) is not defined for f: it calls a jax.custom_vjp function, "
        f"which has a reverse-mode rule only ({e}). Fix: check it with autodiff='reverse', or "
        "give it a forward rule with jax.custom_jvp (its reverse mode then comes for free)."
    )


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

    @property
    def n_cotangents(self) -> int:
        """``K``: the number of projections of ``f`` checked."""
        return len(self.values)


Job = tuple[Callable[..., Any], tuple[Any, ...], Any]  # (kernel, static args, batch)


class Items(NamedTuple):
    """Programs to compile together: in-process keys, lowerers, tiers and disk keys."""

    keys: list[Any]
    lowerers: list[Callable[[], Any]]
    tiers: list[Tier]
    stored: list[str | None]

    def __add__(self, other: Any) -> Items:
        """Both lists of programs, to compile side by side."""
        return Items(*(a + b for a, b in zip(self, other, strict=True)))


#: Kernels that evaluate ``f`` without differentiating it: a function of ``f``'s jaxpr (its
#: custom derivative rules unused), so kept on disk under ``f``'s fingerprint (:mod:`._stored`).
FORWARD_ONLY = frozenset({_kernels.fd_chunk})
#: FLOPs of f and its gradient (or of a perturbed gradient, an HVP) per FLOP of f alone:
#: reverse mode costs about two more evaluations.
GRADIENT_FLOPS = 3.0
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
        env = _stored.environment(self.runner.devices[0], tier)
        which = (getattr(kernel, "__name__", ""), self.problem.spec.promote, static)
        return _stored.program_key("fd", self.fingerprint, which, (self.dyn, batch), env)

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
        :data:`~gradlab.gradcheck._runner.UPGRADE` is set).
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
        """What :func:`~gradlab.gradcheck._runner.compile_tiered` takes to compile ``jobs``.

        ``flops``: each job's estimated run cost over the whole check, which sets its
        compile tier (:func:`~gradlab.gradcheck._runner.compile_tier`; None: the tier of an
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


def served(plans: Sequence[LeafPlan], call: Call) -> list[LeafPlan]:
    """The plans whose perturbations run in the kernel ``call`` runs."""
    if call.kind == "tree":
        return [p for p in plans if p.kind == "direction"]
    if call.kind == "group":
        return [p for p in plans if p.group == call.k]
    return [p for p in plans if p.k == call.k and p.group is None and p.kind == "entry"]


def kernel_flops(plans: Sequence[LeafPlan], call: Call) -> float:
    """The estimated FLOPs of every run of the kernel ``call`` runs, over the whole check."""
    return sum(p.m * len(p.parts) * p.flops_per_row for p in served(plans, call))


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """JAX's errors about ``f`` as :class:`CheckInputError`s that say what to do."""
    try:
        yield
    except TRACING_ERRORS as e:
        raise trace_error_hint(e) from e
    except NotImplementedError as e:
        raise CheckInputError(
            "f cannot be evaluated under jax.vmap, which the checker uses to run "
            f"perturbations in parallel: {e}\nFix: give custom primitives a batching "
            "rule, or use jax.pure_callback(..., vmap_method='sequential')."
        ) from e
    except TypeError as e:
        if "custom_vjp" in str(e) and "jvp" in str(e):
            raise no_jvp_hint(e) from e
        raise


def _bytes(compiled: Any) -> int:
    """Temporary plus output bytes of a compiled computation, from XLA's memory analysis."""
    mem = compiled.memory_analysis()
    if mem is None:
        return 0
    return int(mem.temp_size_in_bytes + mem.output_size_in_bytes)


def _device(tree: Any) -> jax.Device | None:
    """The one device the arrays of ``tree`` live on (None: several, or not known)."""
    found = set()
    for leaf in jax.tree_util.tree_leaves(tree):
        devices = getattr(leaf, "devices", None)
        found |= set(devices()) if devices else set()
    return found.pop() if len(found) == 1 else None


def _platform(tree: Any) -> str:
    """The platform the arrays of ``tree`` live on."""
    leaf = jax.tree_util.tree_leaves(tree)[0]
    devices = getattr(leaf, "devices", None)
    return next(iter(devices())).platform if devices else jax.devices()[0].platform


def evaluation_cost(problem: Problem, dyn: tuple[Any, ...]) -> Cost:
    """FLOPs, memory and equations of one evaluation of ``f``, from its jaxpr."""
    with translated_errors():
        return program_cost(_kernels.value.trace(problem.spec, *dyn[:3]).jaxpr)


def planning_base(problem: Problem, cots: Any, cost: Cost) -> Base:
    """What planning needs of :class:`Base` before ``f`` has run: shapes and costs only."""
    k = 1 if cots is None else int(jax.tree_util.tree_leaves(cots)[0].shape[0])
    shapes = [np.broadcast_to(np.zeros((), x.dtype), (k, *x.shape)) for x in problem.checked_leaves]
    return Base(np.zeros(k), np.zeros(k), shapes, "float64", cost.bytes, 0, np.zeros(k),
                cost.flops, cost.eqns)  # fmt: skip


def _gradient_items(problem: Problem, cots: Any, dyn: tuple[Any, ...], cost: Cost) -> Items:
    """The gradient program, traced (unless compiled in this process) and keyed for disk."""
    spec = problem.spec
    k = 1 if cots is None else int(jax.tree_util.tree_leaves(cots)[0].shape[0])
    flops = GRADIENT_FLOPS * k * cost.flops
    tier = compile_tier(_platform(dyn), flops, convolutions=cost.convolutions, loops=cost.loops)
    key = executable_key(_kernels.value_and_vjp, (spec,), (*dyn, cots), ())
    if lookup(key) is not None:
        return Items([key], [lambda: None], [tier], [None])
    with translated_errors():
        traced = _kernels.value_and_vjp.trace(spec, *dyn, cots)
    device = _device(dyn)
    # keyed by its own jaxpr: f's custom derivative rules are traced into it
    found = fingerprint(traced.jaxpr) if _stored.directory() and device else None
    stored = None
    if found is not None and device is not None:
        env = _stored.environment(device, tier)
        stored = _stored.program_key("value_and_vjp", found, (), (*dyn, cots), env)
    return Items([key], [traced.lower], [tier], [stored])


def evaluate(
    problem: Problem,
    cots: Any,
    dyn: tuple[Any, ...],
    *,
    cost: Cost | None = None,
    alongside: Items | None = None,
) -> Base:
    """``f(θ)``, its projections and gradients, with the input validated.

    One program computes them all, ``f``'s own evaluation included (no compile of ``f``
    alone): its cost and the memory of a perturbed evaluation (a forward pass) are estimated
    from ``f``'s jaxpr (:func:`~gradlab.gradcheck._memory.program_cost`), which also sets the
    program's compile tier (:func:`~gradlab.gradcheck._runner.compile_tier`).
    ``alongside``: other programs (the sweep's first kernels) compiled side by side with it,
    so that the cores compile them at once.
    """
    cost = evaluation_cost(problem, dyn) if cost is None else cost
    items = _gradient_items(problem, cots, dyn, cost)
    if alongside is not None:
        items = items + alongside
    with translated_errors():
        exe = compile_tiered(*items, device=_device(dyn))[0]
    out, values, scales, grads, plain = exe.compiled(*dyn, cots)
    plain = np.asarray(plain)
    per_grad, per_eval = _bytes(exe.compiled), cost.bytes
    for path, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
        leaf = np.asarray(leaf)
        if not np.all(np.isfinite(leaf)):
            where = "/".join(path_parts(path))
            first = np.unravel_index(int(np.argmax(~np.isfinite(leaf))), leaf.shape)
            at = f" in output {where or 'array'} at index {tuple(map(int, first))}"
            value = leaf.reshape(-1)[np.ravel_multi_index(first, leaf.shape)]
            raise CheckInputError(
                f"f(θ) = {value}{at if leaf.shape else ''}: a gradient check needs a finite "
                "value at θ. Look for log(0), 0/0 or overflow in f, or NaN in the parameters "
                "or data."
            )
    grads_np = [np.asarray(g) for g in grads]
    for leaf, g in zip(problem.checked, grads_np, strict=True):
        bad = ~np.isfinite(g)
        if bad.any():
            first = np.unravel_index(int(np.argmax(bad)), g.shape)[1:]
            raise CheckInputError(
                f"jax.grad(f) is not finite in leaf {leaf.path!r} ({int(bad.sum())} entries, "
                f"first at index {tuple(int(i) for i in first)}): the analytical gradient has "
                "NaN/Inf (e.g. sqrt or log at 0, a 0/0 in a custom rule), so there is nothing "
                "finite to compare."
            )
    out_dtype = np.result_type(*[np.asarray(x).dtype for x in jax.tree_util.tree_leaves(out)])
    return Base(
        values=np.asarray(values),
        scales=np.asarray(scales),
        grads=grads_np,
        out_dtype=str(out_dtype),
        bytes_per_eval=per_eval,
        bytes_per_grad=per_grad,
        plain=plain,
        flops_per_eval=cost.flops,
        eqns_per_eval=cost.eqns,
    )


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


def first_jobs(ctx: Context, plans: Sequence[LeafPlan]) -> Items:
    """The difference kernels the first calls of ``plans`` run (reverse mode, order 1)."""
    todo = first_calls(ctx.problem, plans)
    jobs: list[Job] = [
        (_kernels.fd_chunk, (c.k, c.kind, ctx.sparse), (c.batch, c.steps)) for c in todo
    ]
    return ctx.compile_items(jobs, [kernel_flops(plans, c) for c in todo])


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
