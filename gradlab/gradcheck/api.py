"""``gradlab.check`` and ``gradlab.assert_check``: the parallel centered-difference checker."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.gradcheck import _kernels
from gradlab.gradcheck._analysis import LeafSums, Thresholds, analyse_part, combine
from gradlab.gradcheck._memory import default_budget, plan_chunk
from gradlab.gradcheck._problem import Problem, build_problem
from gradlab.gradcheck._runner import Runner
from gradlab.gradcheck._scope import precise
from gradlab.gradcheck.bands import relative_error, verdict
from gradlab.gradcheck.errors import CheckInputError, GradCheckError
from gradlab.gradcheck.report import CheckReport

__all__ = ["assert_check", "check"]

_TRACING_ERRORS: tuple[type[Exception], ...] = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
)

#: Show a progress bar when the finite differences are expected to take longer than this.
_PROGRESS_AFTER_SECONDS = 2.0
#: Upper bound on the entries per chunk: larger vmaps stop paying off.
_MAX_CHUNK = 4096


def _validate_options(
    eps: float,
    tolerance: float,
    kink_tolerance: float,
    noise_factor: float,
    max_worst: int,
    chunk_size: int | None,
) -> None:
    if not (isinstance(eps, int | float) and math.isfinite(eps) and eps > 0):
        raise CheckInputError(f"eps must be a positive finite number, got {eps!r}.")
    if eps >= 1.0:
        raise CheckInputError(
            f"eps={eps!r} is not a small step; centered differences need eps << 1 "
            "(the lecture uses 1e-7)."
        )
    for name, value in [
        ("tolerance", tolerance),
        ("kink_tolerance", kink_tolerance),
        ("noise_factor", noise_factor),
    ]:
        if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
            raise CheckInputError(f"{name} must be a positive finite number, got {value!r}.")
    if not isinstance(max_worst, int) or max_worst < 0:
        raise CheckInputError(f"max_worst must be a non-negative int, got {max_worst!r}.")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise CheckInputError(f"chunk_size must be a positive int or None, got {chunk_size!r}.")


def _trace_errors_hint(e: Exception) -> CheckInputError:
    return CheckInputError(
        "f cannot be traced by JAX, so it cannot be jitted or vmapped: "
        f"{type(e).__name__}: {str(e).splitlines()[0]}\n"
        "Fix: use jax.numpy and jax.lax inside f (jnp.where or lax.cond instead of Python "
        "`if` on array values, no NumPy or .item() on traced arrays). Non-array settings "
        "(flags, strings) may be passed as extra positional args: they are kept static."
    )


def _evaluate(problem: Problem) -> tuple[float, str, list[np.ndarray], int]:
    """f(θ) and its gradient, with the input validated; also the evaluation's memory need."""
    spec = problem.spec
    dyn = (problem.checked_leaves, problem.fixed_leaves, problem.rest_dyn)
    try:
        out = _kernels.value.eval_shape(spec, *dyn)
    except CheckInputError:
        raise
    except _TRACING_ERRORS as e:
        raise _trace_errors_hint(e) from e
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise CheckInputError(
            f"f must return a scalar array, got {type(out).__name__}. If f returns "
            "(loss, aux), pass has_aux=True."
        )
    if out.shape != ():
        raise CheckInputError(
            f"f must return a scalar, got an array of shape {out.shape}. Reduce it "
            "(e.g. .sum() or .mean()), or check a vector-valued function through a scalar "
            "projection such as lambda p: jnp.vdot(v, f(p)) for a fixed random v."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise CheckInputError(
            f"f must return a real floating-point scalar, got dtype {out.dtype}. "
            "Return a float loss (for complex outputs, check jnp.real(...) and jnp.imag(...))."
        )
    compiled = _kernels.value_and_grad.lower(spec, *dyn).compile()
    value, grads = compiled(*dyn)
    mem = compiled.memory_analysis()
    per_eval = 0
    if mem is not None:
        per_eval = int(mem.temp_size_in_bytes + mem.output_size_in_bytes)
    value = float(value)
    if not math.isfinite(value):
        raise CheckInputError(
            f"f(θ) = {value}: a gradient check needs a finite value at θ. Look for log(0), "
            "0/0 or overflow in f, or NaN in the parameters or data."
        )
    grads_np = [np.asarray(g) for g in grads]
    for leaf, g in zip(problem.checked, grads_np, strict=True):
        bad = ~np.isfinite(g)
        if bad.any():
            first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), g.shape))
            raise CheckInputError(
                f"jax.grad(f) is not finite in leaf {leaf.path!r} ({int(bad.sum())} entries, "
                f"first at index {first}): the analytical gradient has NaN/Inf (e.g. sqrt or "
                "log at 0, a 0/0 in a custom rule), so there is nothing finite to compare."
            )
    return value, str(out.dtype), grads_np, per_eval


class _Progress:
    """A progress bar that appears only once a check turns out to be long, on a terminal."""

    def __init__(self, enabled: bool | None, total: int, plan: str) -> None:
        self.enabled, self.total, self.plan = enabled, total, plan
        self.done = 0
        self.start = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None

    def advance(self, n: int) -> None:
        self.done += n
        if self._bar is None and self.done < self.total:
            show = self.enabled
            if show is None:
                elapsed = time.perf_counter() - self.start
                expected = elapsed * self.total / max(self.done, 1)
                show = expected > _PROGRESS_AFTER_SECONDS and sys.stderr.isatty()
                self.plan += f"; about {expected:.0f} s"
            if show:
                self._open()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)

    def _open(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        console.print(self.plan, highlight=False)
        self._bar = Progress(
            TextColumn("gradlab.check"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task("entries", total=self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _select_entries(n: int, mode: str, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of a leaf to check: all of them, or a uniform sample of ``samples``."""
    if mode == "full" or n <= samples:
        return np.arange(n)
    return np.sort(rng.choice(n, size=samples, replace=False))


def check(
    f: Callable[..., Any],
    params: Any,
    *args: Any,
    argnums: int | Sequence[int] = 0,
    eps: float = 1e-7,
    tolerance: float = 1e-6,
    has_aux: bool = False,
    mode: str = "full",
    samples: int = 64,
    seed: int = 0,
    require_resolved: bool = False,
    kink_tolerance: float = 1e-4,
    noise_factor: float = 8.0,
    repeat: bool = False,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    max_worst: int = 5,
    progress: bool | None = None,
) -> CheckReport:
    """Checks ``jax.grad(f)`` against centered differences over every parameter entry.

    For every floating-point entry ``θ_i`` of the differentiated arguments, computes
    ``(f(θ + h·e_i) − f(θ − h·e_i)) / 2h`` with ``h = eps`` — all entries of a leaf in
    parallel (jit + vmap, chunked to a memory budget, sharded over ``devices``) — and
    compares it with ``jax.grad(f)`` by the lecture's relative error
    ``||num − ana|| / (||num|| + ||ana||)``, per leaf and overall. Runs in float64 whatever
    the parameters' dtype, with matmul precision ``"highest"``; the caller's JAX settings are
    restored afterwards, also on error.

    Entries whose two one-sided differences disagree sit at a kink (relu at 0, ties in a max):
    they are counted and kept out of the verdict. A leaf whose gradient is too small next to
    ``|f|`` for differences at this ``eps`` to resolve (rounding error ``≈ u·|f|/eps``) is
    reported as ``"unresolved"``, with the ``eps`` that would resolve it, rather than as wrong
    or verified.

    Args:
        f: A function ``f(params, *args)`` returning a real scalar (any JAX function).
        params: A pytree of arrays (dicts, lists, Flax params, an NNX state, ...).
        *args: Further arguments of ``f``; array leaves are passed as data (promoted to
            float64), other leaves (flags, strings) are kept static.
        argnums: Which positional arguments of ``f`` to check, as in ``jax.grad``
            (``0`` is ``params``). With several, leaf paths start with ``arg{i}/``.
        eps: The finite-difference step (the lecture's 1e-7).
        tolerance: The largest relative error a leaf may have and be verified.
        has_aux: ``f`` returns ``(value, aux)``; ``aux`` is ignored.
        mode: ``"full"`` checks every entry; ``"sample"`` checks ``samples`` entries per leaf
            (uniformly at random, every leaf included), for models too big for a full check.
        samples: Entries per leaf in ``"sample"`` mode.
        seed: Seed of the sample in ``"sample"`` mode.
        require_resolved: Count unresolved leaves as failures in ``report.ok``.
        kink_tolerance: Relative disagreement of one-sided differences that marks a kink.
        noise_factor: ``c`` in the rounding model ``|error of f| ≈ c·u·|f|``.
        repeat: Evaluate everything twice and report entries where ``f`` or its gradient is
            not reproducible (non-deterministic reductions, stray randomness) as such,
            instead of blaming the gradient.
        chunk_size: Entries per compiled batch (each costs two evaluations of ``f``);
            default: from ``memory_budget`` and XLA's memory analysis of ``f``.
        memory_budget: Bytes one batch may use per device; default: from the device's memory.
        devices: Devices to shard the perturbations over; default: the first local device,
            or every device of every process under ``jax.distributed``. Results do not
            depend on it.
        max_worst: How many worst entries to keep per leaf.
        progress: Show the plan and a progress bar; default: only on a terminal and for
            checks expected to take more than a few seconds.

    Returns:
        A :class:`~gradlab.CheckReport`; ``report.ok`` says whether it passed and
        ``print(report)`` shows the per-leaf table.

    Raises:
        CheckInputError: ``f`` or the parameters cannot be checked (non-scalar output, no
            floating-point leaves, NaN/Inf in ``f(θ)`` or its gradient, not traceable).

    Example:
        >>> import jax.numpy as jnp
        >>> import gradlab
        >>> def loss(params, x):
        ...     return jnp.mean(jnp.tanh(x @ params["w"] + params["b"]) ** 2)
        >>> params = {"w": jnp.ones((3, 2)) * 0.1, "b": jnp.zeros(2)}
        >>> report = gradlab.check(loss, params, jnp.arange(12.0).reshape(4, 3) / 10)
        >>> report.ok, report.verdict, [leaf.path for leaf in report.leaves]
        (True, 'happy', ['b', 'w'])
    """
    _validate_options(eps, tolerance, kink_tolerance, noise_factor, max_worst, chunk_size)
    if mode not in ("full", "sample"):
        raise CheckInputError(f"mode must be 'full' or 'sample', got {mode!r}.")
    if not isinstance(samples, int) or samples < 1:
        raise CheckInputError(f"samples must be a positive int, got {samples!r}.")
    start = time.perf_counter()
    with precise():
        problem = build_problem(f, (params, *args), argnums, has_aux)
        spec = problem.spec
        value, out_dtype, grads, per_eval = _evaluate(problem)
        notes: list[str] = []
        if repeat:
            value2, _, grads2, _ = _evaluate(problem)
            if value2 != value or any(
                not np.array_equal(a, b) for a, b in zip(grads, grads2, strict=True)
            ):
                notes.append(
                    "f or jax.grad(f) is not reproducible: two evaluations at the same θ "
                    "differ; differences at the level of that variation are not the "
                    "gradient's fault."
                )
        th = Thresholds(
            tolerance=float(tolerance),
            kink_tolerance=float(kink_tolerance),
            noise_factor=float(noise_factor),
            unit_roundoff=float(np.finfo(out_dtype).eps),
            max_worst=max_worst,
        )
        runner = Runner(devices)
        budget = memory_budget or default_budget(runner.devices[0])
        dyn = runner.replicate((problem.checked_leaves, problem.fixed_leaves, problem.rest_dyn))
        checked = problem.checked
        rng = np.random.default_rng(seed)

        # The plan: per checked leaf, the entries to check, the parts, and the chunk size.
        plans = []
        for k, leaf in enumerate(checked):
            n = math.prod(leaf.shape)
            entries = _select_entries(n, mode, samples, rng)
            leaf_bytes = n * problem.checked_leaves[k].dtype.itemsize
            chunk = chunk_size or plan_chunk(
                len(entries),
                per_eval + leaf_bytes,
                budget * runner.n_devices,
                _MAX_CHUNK,
                multiple_of=runner.n_devices,
            )
            chunk = max(
                runner.n_devices,
                min(chunk, -(-len(entries) // runner.n_devices) * runner.n_devices),
            )
            complex_leaf = jnp.issubdtype(leaf.dtype, jnp.complexfloating)
            parts = ["real", "imag"] if complex_leaf else [""]
            plans.append((k, leaf, entries, chunk, parts))
        total = sum(len(e) * len(p) for _, _, e, _, p in plans) * (2 if repeat else 1)
        largest = max(c for *_, c, _ in plans)
        bar = _Progress(
            progress,
            total,
            f"gradlab.check: {2 * total:,} evaluations of f over {len(plans)} leaves, "
            f"chunks of up to {largest:,} entries on {runner.n_devices} device(s)",
        )

        raw: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray]]] = {}
        n_evals = 0
        n_unstable = 0
        try:
            for k, _, entries, chunk, parts in plans:
                dtype = problem.checked_leaves[k].dtype
                for part in parts:
                    unit = 1j if part == "imag" else 1.0
                    for lo in range(0, len(entries), chunk):
                        idx = entries[np.arange(lo, lo + chunk) % len(entries)]  # pad
                        steps = np.full(chunk, eps * unit, dtype=dtype)
                        got = _run_chunk(runner, spec, k, dyn, idx, steps)
                        if repeat:
                            again = _run_chunk(runner, spec, k, dyn, idx, steps)
                            n_unstable += int(np.sum(np.any(again[0] != got[0], axis=0)))
                            n_evals += 2 * chunk
                            bar.advance(min(chunk, len(entries) - lo))
                        m = min(chunk, len(entries) - lo)
                        raw.setdefault((k, part), []).append((got[0][:, :m], got[1][:, :m]))
                        n_evals += 2 * chunk
                        bar.advance(m)
        finally:
            bar.close()
        if n_unstable:
            notes.append(
                f"{n_unstable} perturbed evaluations of f gave different values when repeated: "
                "f is not deterministic, so finite differences there are unreliable."
            )

        leaves = []
        totals = np.zeros(3)
        for k, leaf, entries, _, parts in plans:
            sums: list[LeafSums] = []
            for part in parts:
                values = np.concatenate([v for v, _ in raw[(k, part)]], axis=1)
                taken = np.concatenate([t for _, t in raw[(k, part)]], axis=1)
                ana = grads[k].reshape(-1)[entries]
                hp, hm = taken[0], taken[1]
                if part == "real":
                    hp, hm, ana = hp.real, hm.real, ana.real
                elif part == "imag":
                    hp, hm, ana = hp.imag, hm.imag, -ana.imag  # JAX: grad = ∂f/∂x − i·∂f/∂y
                sums.append(
                    analyse_part(
                        leaf.shape,
                        value,
                        values[0],
                        values[1],
                        hp,
                        hm,
                        ana,
                        th,
                        indices=entries,
                        part=part,
                    )
                )
            row = combine(leaf.path, leaf.shape, str(leaf.dtype), sums, eps, th)
            leaves.append(row)
            totals += [
                sum(s.num_sq for s in sums),
                sum(s.ana_sq for s in sums),
                sum(s.diff_sq for s in sums),
            ]

    rel = relative_error(*totals)
    if out_dtype != "float64":
        notes.append(
            f"f returns {out_dtype} even with float64 inputs: it casts internally, so the "
            "check only resolves gradients to that precision."
        )
    if any(jnp.issubdtype(leaf.dtype, jnp.complexfloating) for leaf in checked):
        notes.append(
            "complex leaves are checked as real and imaginary parts; JAX's convention for a "
            "real f is grad = ∂f/∂re − i·∂f/∂im."
        )
    mode_desc = "full"
    if mode == "sample":
        mode_desc = f"sample ({samples} entries per leaf, uniform without replacement, seed {seed})"
    ok = not any(r.status == "wrong" for r in leaves)
    if require_resolved:
        ok = ok and not any(r.status == "unresolved" for r in leaves)
    return CheckReport(
        ok=ok,
        relative_error=rel,
        verdict=verdict(rel),
        leaves=tuple(leaves),
        skipped=tuple(f"{leaf.path} ({leaf.dtype})" for leaf in problem.skipped),
        eps=float(eps),
        tolerance=float(tolerance),
        dtype="float64",
        value=value,
        n_evaluations=n_evals,
        seconds=time.perf_counter() - start,
        mode=mode_desc,
        notes=tuple(notes),
    )


def _run_chunk(
    runner: Runner, spec: Any, k: int, dyn: Any, idx: np.ndarray, steps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    try:
        return runner.run(spec, k, dyn, idx, steps)
    except _TRACING_ERRORS as e:
        raise _trace_errors_hint(e) from e
    except NotImplementedError as e:
        raise CheckInputError(
            "f cannot be evaluated under jax.vmap, which the checker uses to run "
            f"perturbations in parallel: {e}\nFix: give custom primitives a batching rule, "
            "or use jax.pure_callback(..., vmap_method='sequential')."
        ) from e


def assert_check(f: Callable[..., Any], params: Any, *args: Any, **options: Any) -> CheckReport:
    """Runs :func:`check` and raises :class:`~gradlab.GradCheckError` when it fails.

    The one-liner for a test of a custom layer: the error's message is the full report.

    Args:
        f: As in :func:`check`.
        params: As in :func:`check`.
        *args: As in :func:`check`.
        **options: Any keyword option of :func:`check`.

    Returns:
        The report, when the check passed.

    Raises:
        GradCheckError: The check failed (an ``AssertionError``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab
        >>> @jax.custom_vjp
        ... def square(x):
        ...     return x**2
        >>> square.defvjp(lambda x: (x**2, x), lambda x, g: (x * g,))  # bug: misses a 2
        >>> try:
        ...     gradlab.assert_check(lambda p: square(p).sum(), jnp.arange(1.0, 4.0))
        ... except gradlab.GradCheckError as e:
        ...     print(e.report.verdict, e.report.leaves[0].status)
        wrong wrong
    """
    report = check(f, params, *args, **options)
    if not report.ok:
        raise GradCheckError(report)
    return report
