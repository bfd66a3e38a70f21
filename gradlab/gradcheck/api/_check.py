"""``gradlab.check``, ``check_second_order`` and ``assert_check``: the public entry points."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from jax.typing import DTypeLike

from gradlab._errors import GradCheckError
from gradlab.gradcheck.api._keywords import split_keywords
from gradlab.gradcheck.pipeline._first_order import run_check
from gradlab.gradcheck.planning._options import build_options
from gradlab.gradcheck.planning._settings import Criteria, Entries, Execution, Full
from gradlab.gradcheck.report._report import CheckReport

__all__ = ["assert_check", "check", "check_second_order"]

Autodiff = Literal["reverse", "forward", "both"]


def _explicit(check_fn: Callable[..., CheckReport]) -> Callable[..., CheckReport]:
    """Checks the keywords of a call as given (which options were named, which go to f)."""
    options = set(inspect.signature(check_fn).parameters) - {"f", "params", "args", "kwargs"}

    @functools.wraps(check_fn)
    def wrapper(f: Callable[..., Any], params: Any, *args: Any, **kwargs: Any) -> CheckReport:
        __tracebackhide__ = True
        given = {k: v for k, v in kwargs.items() if k in options and k != "f_kwargs"}
        to_f = {k: v for k, v in kwargs.items() if k not in options}
        f_kwargs = kwargs.get("f_kwargs")
        if callable(f):
            f_kwargs = split_keywords(f, 1 + len(args), given, to_f, f_kwargs)
        elif to_f:
            f_kwargs = {**to_f, **(f_kwargs or {})}
        return check_fn(f, params, *args, **given, f_kwargs=f_kwargs)

    return wrapper


@_explicit
def check(
    f: Callable[..., Any],
    params: Any,
    *args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    entries: Entries = Full(),
    eps: float | Literal["auto"] | None = None,
    tolerance: float | None = None,
    autodiff: Autodiff = "reverse",
    dtype: DTypeLike | None = None,
    projections: int = 3,
    seed: int = 0,
    check_determinism: bool = False,
    criteria: Criteria = Criteria(),
    execution: Execution = Execution(),
    f_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> CheckReport:
    """Checks ``jax.grad(f)`` against centered differences over every parameter entry.

    For every floating-point entry ``θ_i`` of the differentiated arguments, computes
    ``(f(θ + h·e_i) − f(θ − h·e_i)) / 2h`` — all entries of a leaf in parallel (jit + vmap,
    chunked to a memory budget, sharded over devices) — and compares it with ``jax.grad(f)``
    by the lecture's relative error ``||num − ana|| / (||num|| + ||ana||)``, per leaf and
    overall. ``f`` is evaluated in float64 throughout (narrow floats inside it are widened),
    with matmul precision ``"highest"``; the caller's JAX settings are restored afterwards,
    also on error.

    The report's ``outcome`` is ``"passed"`` only when every entry was verified: within
    ``tolerance``, or at a confirmed kink within its one-sided slopes. A leaf whose gradient
    rounding leaves unresolved after retries at larger steps makes the check
    ``"inconclusive"``, never ``"passed"`` (see ``docs/check.md``).

    Args:
        f: A function ``f(params, *args, **kwargs)`` returning a real scalar, or float arrays
            (any pytree; checked through ``projections`` random projections ``<v_j, f>``).
        params: A pytree of arrays (dicts, lists, Flax params, an NNX state, ...).
        *args: Further arguments of ``f``; array leaves are passed as data (promoted to
            float64), other leaves (flags, strings) are kept static.
        argnums: Which positional arguments of ``f`` to check, as in ``jax.grad``
            (``0`` is ``params``). With several, leaf paths start with the argument's
            parameter name in ``f`` (``x/``), or ``arg{i}/`` where it cannot be read.
        has_aux: ``f`` returns ``(value, aux)``; ``aux`` is ignored.
        entries: Which entries are moved: :class:`~gradlab.Full` (every entry),
            :class:`~gradlab.Sample` (a random sample per leaf) or
            :class:`~gradlab.Directional` (random directions per leaf).
        eps: The finite-difference step ``h``. Default: the lecture's 1e-7 (float32:
            ``(24·u)^(1/3)·max(1, rms|θ_k|)`` per leaf). ``"auto"``: per leaf, from a Richardson
            estimate of truncation and rounding.
        tolerance: The largest relative error a leaf may have and be verified; default 1e-6
            (1e-3 in float32).
        autodiff: Which derivative is checked: ``"reverse"`` (``jax.vjp``/``jax.grad``),
            ``"forward"`` (``jax.jvp`` along each move) or ``"both"`` (a row per leaf and mode).
        dtype: float64, or float32 for backends without float64, as anything ``jnp.dtype``
            reads (``jnp.float32``, ``"float32"``, ``np.float64``); default: float64, float32
            where the device has none.
        projections: Random unit cotangents a non-scalar ``f`` is projected on.
        seed: Seed of the sample, the directions and the projections.
        check_determinism: Evaluate every perturbation twice and report entries where ``f``
            is not reproducible (non-deterministic reductions, stray randomness) as such,
            instead of blaming the gradient. (Whether ``f(θ)`` agrees across the check's own
            programs is always checked.)
        criteria: Kink and noise thresholds and how many worst entries to show
            (:class:`~gradlab.Criteria`).
        execution: Devices, memory, chunking, slices, progress, the compilation cache and the
            longest a check may take (:class:`~gradlab.Execution`); none of it changes the
            result.
        f_kwargs: Keywords for ``f`` given as a dict: the way to pass ``f`` a keyword that
            is also an option here (``f_kwargs={"seed": 3}``), or one that looks like an
            option and reaches ``f`` only through ``**kwargs``.
        **kwargs: Any other keyword is passed to ``f`` (e.g. ``train=False``) if ``f`` takes
            it. A keyword ``f`` does not take is an error naming it (``tol=``: did you mean
            ``tolerance=``?); a keyword that is both an option here and a parameter of ``f``
            is an error unless ``f_kwargs`` gives ``f``'s value — never taken silently.

    Returns:
        A :class:`~gradlab.CheckReport`; ``report.ok`` says whether it passed and
        ``print(report)`` shows the per-leaf table.

    Raises:
        CheckInputError: ``f`` or the parameters cannot be checked (output not float, no
            floating-point leaves, NaN/Inf in ``f(θ)`` or its gradient, not traceable,
            ``autodiff="forward"`` through a ``custom_vjp``), or a setting is invalid.

    Example:
        >>> import jax.numpy as jnp
        >>> import gradlab
        >>> def loss(params, x):
        ...     return jnp.mean(jnp.tanh(x @ params["w"] + params["b"]) ** 2)
        >>> params = {"w": jnp.ones((3, 2)) * 0.1, "b": jnp.zeros(2)}
        >>> x = jnp.arange(12.0).reshape(4, 3) / 10
        >>> report = gradlab.check(loss, params, x)
        >>> report.outcome, report.verdict, [leaf.path for leaf in report.leaves]
        ('passed', 'happy', ['b', 'w'])
        >>> gradlab.check(loss, params, x, entries=gradlab.Sample(2), autodiff="both").ok
        True
    """
    __tracebackhide__ = True  # pytest shows the report, not this frame
    opts = build_options(
        order=1, argnums=argnums, has_aux=has_aux, entries=entries, eps=eps,
        tolerance=tolerance, autodiff=autodiff, dtype=dtype, projections=projections, seed=seed,
        check_determinism=check_determinism, criteria=criteria, execution=execution,
    )  # fmt: skip
    return run_check(f, (params, *args), {**kwargs, **(f_kwargs or {})}, opts)


@_explicit
def check_second_order(
    f: Callable[..., Any],
    params: Any,
    *args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    entries: Entries = Full(),
    eps: float | Literal["auto"] | None = None,
    tolerance: float | None = None,
    autodiff: Autodiff = "forward",
    dtype: DTypeLike | None = None,
    projections: int = 3,
    seed: int = 0,
    criteria: Criteria = Criteria(),
    execution: Execution = Execution(),
    f_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> CheckReport:
    """Checks Hessian-vector products of ``f`` against centered differences of its gradient.

    The second-order twin of :func:`check` (as torch keeps ``gradgradcheck`` apart from
    ``gradcheck``): for each moved entry ``e_i``, ``(∇f(θ + h·e_i) − ∇f(θ − h·e_i)) / 2h``
    is compared with ``H·e_i`` from ``jax.jvp(jax.grad(f))`` (``autodiff="forward"``) or
    ``jax.grad(<jax.grad(f), e_i>)`` (``"reverse"``), per leaf. Needed by anyone whose layer
    is differentiated twice (meta-learning, gradient penalties, Newton steps).

    Args:
        f: As in :func:`check`.
        params: As in :func:`check`.
        *args: As in :func:`check`.
        argnums: As in :func:`check`.
        has_aux: As in :func:`check`.
        entries: As in :func:`check`.
        eps: The step; default 1e-5 times each leaf's magnitude ``rms|θ_k|`` (the cube-root
            rule for differences of the gradient). ``"auto"``: per leaf, from a Richardson
            estimate of truncation against the gradient's rounding.
        tolerance: As in :func:`check`.
        autodiff: ``"forward"`` (forward-over-reverse, default), ``"reverse"``
            (reverse-over-reverse) or ``"both"``.
        dtype: As in :func:`check`.
        projections: As in :func:`check`.
        seed: As in :func:`check`.
        criteria: As in :func:`check`.
        execution: As in :func:`check`.
        f_kwargs: As in :func:`check`.
        **kwargs: Passed to ``f``, as in :func:`check`.

    Returns:
        A :class:`~gradlab.CheckReport` with ``order == 2``.

    Raises:
        CheckInputError: As in :func:`check`.

    Example:
        >>> import jax.numpy as jnp
        >>> import gradlab
        >>> report = gradlab.check_second_order(lambda w: jnp.sum(jnp.sin(w) ** 2), jnp.ones(3))
        >>> report.ok, report.order
        (True, 2)
    """
    __tracebackhide__ = True
    opts = build_options(
        order=2, argnums=argnums, has_aux=has_aux, entries=entries, eps=eps,
        tolerance=tolerance, autodiff=autodiff, dtype=dtype, projections=projections, seed=seed,
        check_determinism=False, criteria=criteria, execution=execution,
    )  # fmt: skip
    return run_check(f, (params, *args), {**kwargs, **(f_kwargs or {})}, opts)


def assert_check(f: Callable[..., Any], params: Any, *args: Any, **options: Any) -> CheckReport:
    """Runs :func:`check` and raises :class:`~gradlab.GradCheckError` unless it passed.

    The one-liner for a test of a custom layer: the error's message is the full report, and
    an inconclusive check fails too (it verified nothing).

    Args:
        f: As in :func:`check`.
        params: As in :func:`check`.
        *args: As in :func:`check`.
        **options: Any keyword option of :func:`check` (and keywords of ``f``).

    Returns:
        The report, when the check passed.

    Raises:
        GradCheckError: The check failed or was inconclusive (an ``AssertionError``).

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
        ...     print(e.report.outcome, e.report.leaves[0].status)
        failed wrong
    """
    __tracebackhide__ = True  # pytest shows the report, not this helper's source
    report = check(f, params, *args, **options)
    if not report.ok:
        raise GradCheckError(report)
    return report
