"""``gradlab.check`` and ``gradlab.assert_check``: the parallel centered-difference checker."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.gradcheck import _kernels
from gradlab.gradcheck._analysis import LeafSums, Thresholds, analyse_part, combine
from gradlab.gradcheck._memory import default_budget, plan_chunk
from gradlab.gradcheck._problem import Problem, build_problem
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


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("gradlab.check"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("entries", total=total)
        yield lambda n: bar.advance(task, n)


def check(
    f: Callable[..., Any],
    params: Any,
    *args: Any,
    argnums: int | Sequence[int] = 0,
    eps: float = 1e-7,
    tolerance: float = 1e-6,
    has_aux: bool = False,
    require_resolved: bool = False,
    kink_tolerance: float = 1e-4,
    noise_factor: float = 8.0,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    max_worst: int = 5,
    progress: bool | None = None,
) -> CheckReport:
    """Checks ``jax.grad(f)`` against centered differences over every parameter entry.

    For every floating-point entry ``θ_i`` of the differentiated arguments, computes
    ``(f(θ + h·e_i) − f(θ − h·e_i)) / 2h`` with ``h = eps`` — all entries of a leaf in
    parallel (jit + vmap, chunked to a memory budget) — and compares it with ``jax.grad(f)``
    by the lecture's relative error ``||num − ana|| / (||num|| + ||ana||)``, per leaf and
    overall. Runs in float64 whatever the parameters' dtype, with matmul precision
    ``"highest"``; the caller's JAX settings are restored afterwards, also on error.

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
        require_resolved: Count unresolved leaves as failures in ``report.ok``.
        kink_tolerance: Relative disagreement of one-sided differences that marks a kink.
        noise_factor: ``c`` in the rounding model ``|error of f| ≈ c·u·|f|``.
        chunk_size: Entries per compiled batch (each costs two evaluations of ``f``);
            default: from ``memory_budget`` and XLA's memory analysis of ``f``.
        memory_budget: Bytes one batch may use; default: from the device's memory.
        max_worst: How many worst entries to keep per leaf.
        progress: Show a progress bar; default: only on a terminal and for long checks.

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
    start = time.perf_counter()
    with precise():
        problem = build_problem(f, (params, *args), argnums, has_aux)
        spec = problem.spec
        value, out_dtype, grads, per_eval = _evaluate(problem)
        th = Thresholds(
            tolerance=float(tolerance),
            kink_tolerance=float(kink_tolerance),
            noise_factor=float(noise_factor),
            unit_roundoff=float(np.finfo(out_dtype).eps),
            max_worst=max_worst,
        )
        budget = memory_budget or default_budget()
        dyn = (problem.checked_leaves, problem.fixed_leaves, problem.rest_dyn)
        checked = problem.checked
        # Work plan: (leaf k, real/imag part, chunk size) per checked leaf.
        plans = []
        for k, leaf in enumerate(checked):
            n = math.prod(leaf.shape)
            leaf_bytes = n * problem.checked_leaves[k].dtype.itemsize
            chunk = chunk_size or plan_chunk(n, per_eval + leaf_bytes, budget, _MAX_CHUNK)
            parts = ["real", "imag"] if jnp.issubdtype(leaf.dtype, jnp.complexfloating) else [""]
            plans.append((k, leaf, n, min(chunk, max(n, 1)), parts))
        total = sum(n * len(parts) for _, _, n, _, parts in plans)

        n_evals = 0
        raw: dict[tuple[int, str], list[tuple[np.ndarray, ...]]] = {}
        show = progress
        done = 0
        t_fd = time.perf_counter()
        bar_cm: contextlib.AbstractContextManager[Callable[[int], None]] | None = None
        advance: Callable[[int], None] = lambda n: None
        try:
            for k, _leaf, n, chunk, parts in plans:
                for part in parts:
                    unit = 1j if part == "imag" else 1.0
                    dtype = problem.checked_leaves[k].dtype
                    for lo in range(0, n, chunk):
                        hi = min(lo + chunk, n)
                        idx = np.arange(lo, lo + chunk) % max(n, 1)  # pad the last chunk
                        steps = np.full(chunk, eps * unit, dtype=dtype)
                        try:
                            out = _kernels.fd_chunk(spec, k, *dyn, jnp.asarray(idx), steps)
                        except _TRACING_ERRORS as e:
                            raise _trace_errors_hint(e) from e
                        except NotImplementedError as e:
                            raise CheckInputError(
                                "f cannot be evaluated under jax.vmap, which the checker "
                                f"uses to run perturbations in parallel: {e}\nFix: give "
                                "custom primitives a batching rule, or use "
                                "jax.pure_callback(..., vmap_method='sequential')."
                            ) from e
                        raw.setdefault((k, part), []).append(
                            tuple(np.asarray(o)[: hi - lo] for o in out)
                        )
                        n_evals += 2 * chunk
                        done += hi - lo
                        if show is None and done < total:
                            elapsed = time.perf_counter() - t_fd
                            expected = elapsed * total / max(done, 1)
                            show = expected > _PROGRESS_AFTER_SECONDS and sys.stderr.isatty()
                        if show and bar_cm is None:
                            bar_cm = _progress(True, total)
                            advance = bar_cm.__enter__()
                            advance(done)
                        else:
                            advance(hi - lo)
        finally:
            if bar_cm is not None:
                bar_cm.__exit__(None, None, None)

        leaves = []
        totals = np.zeros(3)
        for k, leaf, _, _, parts in plans:
            sums: list[LeafSums] = []
            for part in parts:
                fp, fm, hp, hm = (np.concatenate(a) for a in zip(*raw[(k, part)], strict=True))
                ana = grads[k].reshape(-1)
                if part == "real":
                    hp, hm, ana = hp.real, hm.real, ana.real
                elif part == "imag":
                    hp, hm, ana = hp.imag, hm.imag, -ana.imag  # JAX: grad = ∂f/∂x − i·∂f/∂y
                sums.append(analyse_part(leaf.shape, value, fp, fm, hp, hm, ana, th, part=part))
            row = combine(leaf.path, leaf.shape, str(leaf.dtype), sums, eps, th)
            leaves.append(row)
            totals += [
                sum(s.num_sq for s in sums),
                sum(s.ana_sq for s in sums),
                sum(s.diff_sq for s in sums),
            ]

    rel = relative_error(*totals)
    notes = []
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
        notes=tuple(notes),
    )


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
