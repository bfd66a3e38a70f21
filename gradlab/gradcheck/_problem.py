"""Turning ``f(params, *args)`` into a static spec plus flat, float64 leaves.

Every check traces ``f`` afresh (:class:`Program`): the check judges ``f`` as it is at the
call, whatever was compiled for it before. The spec is hashable by what ``f`` traces to —
the fingerprint of that jaxpr, custom rules' bodies included
(:func:`~gradlab.gradcheck._fingerprint.fingerprint`) — never by the identity of ``f``: a
second check of a function that traces to the same program on arrays of the same shapes
compiles nothing, and a function changed since (a rule re-defined with ``defvjp``, a global
or closure value its backward pass reads, an attribute of the object behind a bound method)
gets programs of its own. A program whose fingerprint cannot be computed is never reused.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex

from gradlab._errors import CheckInputError
from gradlab._treepath import path_str
from gradlab.gradcheck._fingerprint import fingerprint
from gradlab.gradcheck._promote import promoted
from gradlab.gradcheck._scope import note_constants, own_constants

__all__ = ["Leaf", "Problem", "Program", "Spec", "build_problem", "trace_program", "traced_once"]


class _Static:
    """A hashable stand-in for a static (non-array) value of a non-differentiated argument."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def _key(self) -> Any:
        try:
            hash(self.value)
        except TypeError:
            return ("id", id(self.value))
        return ("value", type(self.value), self.value)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and self._key() == other._key()


@dataclasses.dataclass(frozen=True)
class _WithKwargs:
    """``f`` with keyword arguments bound, hashable so that compiled kernels are reused."""

    f: Callable[..., Any]
    kwargs: _Static

    def __call__(self, *args: Any) -> Any:
        return self.f(*args, **dict(self.kwargs.value))


class Program:
    """``f`` as it traced at the call: its closed jaxpr, found again by its fingerprint.

    Two programs are equal when their fingerprints are (they compute the same: every
    equation, parameter, constant and custom rule's body); a program without a fingerprint
    (:func:`~gradlab.gradcheck._fingerprint.fingerprint` returned None) equals only itself,
    so nothing compiled for it is ever reused.
    """

    __slots__ = ("__weakref__", "_function", "closed", "key", "out_tree")

    def __init__(self, closed: Any, out_tree: Any, key: str | None) -> None:
        self.closed = closed
        self.out_tree = out_tree
        self.key = key
        self._function: Callable[..., Any] | None = None

    def __hash__(self) -> int:
        return hash(self.key) if self.key is not None else id(self)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        return isinstance(other, Program) and self.key is not None and self.key == other.key

    def __repr__(self) -> str:
        return f"Program({self.key or f'unique {id(self):#x}'})"

    @property
    def function(self) -> Callable[..., Any]:
        """``(checked, fixed, rest) -> f's value``, evaluating the jaxpr (jitted, inlined).

        Wrapped in ``jax.jit(..., inline=True)`` so that every program built around ``f``
        (the gradient, the difference kernels, the promotion analysis, the cost estimate)
        reuses the one jaxpr, transformed (``vmap``, ``jvp``, transpose) at the jaxpr level
        and inlined: the programs contain the same operations as ``f``'s own trace.
        """
        if self._function is None:
            run = jex.jaxpr_as_fun(self.closed)
            tree = self.out_tree

            def evaluate(*args: Any) -> Any:
                return jax.tree_util.tree_unflatten(tree, run(*jax.tree_util.tree_leaves(args)))

            self._function = jax.jit(evaluate, inline=True)
        return self._function


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything static about a check: the program ``f`` traced to and its arguments' shape.

    Equal specs compute the same: ``f`` itself (and the static values of the other
    arguments, traced into the program) is left out of the comparison, the
    :class:`Program` stands for it.
    """

    f: Callable[..., Any] = dataclasses.field(compare=False)
    has_aux: bool
    n_primals: int
    argnums: tuple[int, ...]
    diff_treedefs: tuple[Any, ...]  # one treedef per differentiated argument
    diff_sizes: tuple[int, ...]  # number of leaves per differentiated argument
    checked: tuple[bool, ...]  # per diff leaf: is it a checked (floating) leaf
    rest_treedefs: tuple[Any, ...]  # one per non-differentiated argument
    rest_static: tuple[tuple[_Static | None, ...], ...] = dataclasses.field(compare=False)
    promote: bool = False  # evaluate f with reduced precision inside widened to float64
    retrace: bool = False  # trace f in every program (second order: see traced_once)
    program: Program | None = None  # f as traced at the call (set by build_problem)

    def call(
        self,
        checked_leaves: Sequence[jax.Array],
        fixed_leaves: Sequence[jax.Array],
        rest_dyn: Sequence[Sequence[jax.Array]],
        rules: bool = True,
    ) -> jax.Array:
        """Calls ``f`` on the arguments rebuilt from flat leaves; returns its output.

        With :attr:`promote`, ``f`` runs in float64 throughout (:mod:`._promote`); ``rules``
        keeps custom derivative rules as written (autodiff), False runs their primals (an
        evaluation of ``f`` for finite differences).
        """
        args = (tuple(checked_leaves), tuple(fixed_leaves), tuple(map(tuple, rest_dyn)))
        f = traced_once(self)
        try:
            return promoted(f, rules=rules)(*args) if self.promote else f(*args)
        except Exception:  # JAX can refuse to differentiate a replayed jaxpr
            if f == self.flat_value:  # (a custom_jvp rule whose output structure differs
                raise  # from f's, which jax.grad of the Python f accepts): f's Python, as is
            f = self.flat_value
            return promoted(f, rules=rules)(*args) if self.promote else f(*args)

    def flat_value(
        self,
        checked_leaves: Sequence[jax.Array],
        fixed_leaves: Sequence[jax.Array],
        rest_dyn: Sequence[Sequence[jax.Array]],
    ) -> Any:
        """``f`` (without aux) on the arguments rebuilt from flat leaves, traced afresh."""
        return self.value(*self.rebuild(checked_leaves, fixed_leaves, rest_dyn))

    def value(self, *primals: Any) -> Any:
        """``f(*primals)`` without its aux output."""
        out = self.f(*primals)
        if self.has_aux:
            if not isinstance(out, tuple) or len(out) != 2:
                raise CheckInputError(
                    "has_aux=True but f did not return a pair (value, aux); return "
                    "(loss, aux) or drop has_aux."
                )
            out = out[0]
        return out

    def rebuild(
        self,
        checked_leaves: Sequence[jax.Array],
        fixed_leaves: Sequence[jax.Array],
        rest_dyn: Sequence[Sequence[jax.Array]],
    ) -> list[Any]:
        """Reassembles the full argument list of ``f``."""
        checked_it, fixed_it = iter(checked_leaves), iter(fixed_leaves)
        diff_leaves = [next(checked_it) if c else next(fixed_it) for c in self.checked]
        primals: list[Any] = [None] * self.n_primals
        start = 0
        for argnum, treedef, size in zip(
            self.argnums, self.diff_treedefs, self.diff_sizes, strict=True
        ):
            primals[argnum] = jax.tree_util.tree_unflatten(
                treedef, diff_leaves[start : start + size]
            )
            start += size
        rest_positions = [i for i in range(self.n_primals) if i not in self.argnums]
        for pos, treedef, static, dyn in zip(
            rest_positions, self.rest_treedefs, self.rest_static, rest_dyn, strict=True
        ):
            dyn_it = iter(dyn)
            leaves = [next(dyn_it) if s is None else s.value for s in static]
            primals[pos] = jax.tree_util.tree_unflatten(treedef, leaves)
        return primals


def traced_once(spec: Spec) -> Callable[..., Any]:
    """``f`` as the check traced it at the call (:attr:`Program.function`).

    Shared by every program of the check.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradlab.gradcheck._problem import build_problem
        >>> calls = []
        >>> def f(w):
        ...     calls.append(1)
        ...     return jnp.sum(w**2)
        >>> spec = build_problem(f, (jnp.ones(3),), 0, False, jnp.float32).spec
        >>> [float(traced_once(spec)((jnp.ones(3),), (), ())) for _ in range(2)], len(calls)
        ([3.0, 3.0], 1)
    """
    if spec.retrace:  # a custom_jvp holding a traced nondiff_argnums value breaks the jit
        return spec.flat_value  # when differentiated twice: f traced in each program
    if spec.program is None:
        raise ValueError("the spec has no program: make it with build_problem")
    return spec.program.function


def trace_program(spec: Spec, dyn: tuple[Any, ...]) -> Program:
    """Traces ``f`` afresh at ``dyn`` (``(checked, fixed, rest)``) and fingerprints it.

    A new function object each time: JAX's own caches of traces, found by the identity of
    the function traced, never hand back an earlier trace of ``f``. The program keeps
    constants of its own (:func:`~gradlab.gradcheck._scope.own_constants`).
    """
    fresh = lambda *args: spec.flat_value(*args)
    closed, shape = jax.make_jaxpr(fresh, return_shape=True)(*dyn)
    key = fingerprint(closed)
    program = Program(own_constants(closed), jax.tree_util.tree_structure(shape), key)
    note_constants(closed)  # NumPy arrays JAX converted in float64 (see _scope)
    return program


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One leaf of a differentiated argument."""

    path: str
    shape: tuple[int, ...]
    dtype: Any  # a NumPy dtype, or JAX's extended dtype of PRNG keys
    checked: bool


@dataclasses.dataclass(frozen=True)
class Problem:
    """A check, flattened: the static spec plus its dynamic float64 leaves."""

    spec: Spec
    leaves: tuple[Leaf, ...]  # every leaf of the differentiated arguments, in order
    checked_leaves: tuple[jax.Array, ...]  # float64 (or complex128), in order
    fixed_leaves: tuple[jax.Array, ...]  # integer/bool leaves of differentiated arguments
    rest_dyn: tuple[tuple[jax.Array, ...], ...]
    rest_dtypes: tuple[tuple[Any, ...], ...] = ()  # the data's own dtypes (precision audit)

    @property
    def checked(self) -> tuple[Leaf, ...]:
        return tuple(leaf for leaf in self.leaves if leaf.checked)

    @property
    def skipped(self) -> tuple[Leaf, ...]:
        return tuple(leaf for leaf in self.leaves if not leaf.checked)


def _path_str(prefix: str, path: Sequence[Any]) -> str:
    return path_str(path, prefix)


def _arg_name(f: Callable[..., Any], a: int) -> str:
    """The name of ``f``'s positional parameter ``a`` (``x``), or ``arg{a}`` if unreadable."""
    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        return f"arg{a}"
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return positional[a].name if a < len(positional) else f"arg{a}"


def _to_array(x: Any, where: str) -> jax.Array:
    try:
        return jnp.asarray(x)
    except TypeError as e:
        raise CheckInputError(
            f"leaf {where!r} of a differentiated argument is a {type(x).__name__}, not an "
            "array; differentiated arguments must be pytrees of arrays. Pass it through a "
            "non-differentiated argument or close over it instead."
        ) from e


def _promote(x: jax.Array, real: np.dtype) -> jax.Array:
    """Float leaves → ``real``, complex leaves → its complex counterpart (inside ``precise()``).

    ``real`` is float64, or float32 for the fallback on backends without float64.
    """
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        return x.astype(jnp.result_type(real, jnp.complex64))
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(real)
    return x


def _leaf_array(
    x: Any, where: str, real: np.dtype, device: jax.Device | None
) -> tuple[Any, tuple[int, ...], jax.Array]:
    """``(dtype as given, shape, the array promoted to real and on its device)``.

    NumPy arrays are converted on the host and transferred once: converting them with
    ``jnp`` would compile a small XLA program per shape and dtype, ~50 ms each in a cold check.
    """
    if isinstance(x, np.ndarray | np.generic) and x.dtype.kind in "biufc":
        dtype = jax.dtypes.canonicalize_dtype(x.dtype)
        host = np.asarray(x, dtype)
        if np.issubdtype(dtype, np.complexfloating):
            host = host.astype(np.result_type(real, np.complex64))
        elif np.issubdtype(dtype, np.floating):
            host = host.astype(real)
        moved = jax.device_put(host, device) if device is not None else jax.device_put(host)
        return dtype, tuple(host.shape), moved
    arr = _to_array(x, where)
    if device is not None:
        arr = jax.device_put(arr, device)
    return arr.dtype, tuple(arr.shape), _promote(arr, real)


def _is_array(x: Any) -> bool:
    return isinstance(x, jax.Array | np.ndarray | np.generic)


def build_problem(
    f: Callable[..., Any],
    primals: Sequence[Any],
    argnums: int | Sequence[int],
    has_aux: bool,
    real_dtype: Any = np.float64,
    device: jax.Device | None = None,
    kwargs: dict[str, Any] | None = None,
) -> Problem:
    """Flattens ``f(*primals, **kwargs)`` for checking with respect to ``primals[argnums]``.

    Must be called inside :func:`gradlab.gradcheck._scope.precise` so leaves become float64
    (or ``real_dtype``). With ``device``, every array is moved there first (``host=True``).
    Keyword arguments are passed to ``f`` as they are (not differentiated).
    """
    real = np.dtype(real_dtype)
    if not callable(f):
        raise CheckInputError(f"f must be callable, got {type(f).__name__}.")
    n = len(primals)
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums or any(not isinstance(a, int) for a in nums):
        raise CheckInputError(f"argnums must be an int or a tuple of ints, got {argnums!r}.")
    norm = tuple(a % n if -n <= a < n else a for a in nums)
    if any(not 0 <= a < n for a in norm):
        raise CheckInputError(
            f"argnums={argnums!r} is out of range for f called with {n} positional "
            f"argument(s) (params plus {n - 1} arg(s))."
        )
    if len(set(norm)) != len(norm):
        raise CheckInputError(f"argnums={argnums!r} repeats an argument.")

    single = len(norm) == 1 and norm[0] == 0
    leaves: list[Leaf] = []
    checked_arrays: list[jax.Array] = []
    fixed_arrays: list[jax.Array] = []
    treedefs, sizes, checked_flags = [], [], []
    for a in norm:
        with_path, treedef = jax.tree_util.tree_flatten_with_path(primals[a])
        treedefs.append(treedef)
        sizes.append(len(with_path))
        prefix = "" if single else _arg_name(f, a)
        for path, x in with_path:
            where = _path_str(prefix, path)
            dtype, shape, arr = _leaf_array(x, where, real, device)
            is_checked = bool(jnp.issubdtype(dtype, jnp.inexact))
            leaves.append(Leaf(where, shape, dtype, is_checked))
            checked_flags.append(is_checked)
            (checked_arrays if is_checked else fixed_arrays).append(arr)

    rest_treedefs, rest_static, rest_dyn, rest_dtypes = [], [], [], []
    for i in range(n):
        if i in norm:
            continue
        flat, treedef = jax.tree_util.tree_flatten(primals[i])
        rest_treedefs.append(treedef)
        rest_static.append(tuple(None if _is_array(x) else _Static(x) for x in flat))
        arrays = [_leaf_array(x, "", real, device) for x in flat if _is_array(x)]
        rest_dyn.append(tuple(a for _, _, a in arrays))
        rest_dtypes.append(tuple(d for d, _, _ in arrays))

    spec = Spec(
        f=_WithKwargs(f, _Static(tuple(sorted(kwargs.items())))) if kwargs else f,
        has_aux=has_aux,
        n_primals=n,
        argnums=norm,
        diff_treedefs=tuple(treedefs),
        diff_sizes=tuple(sizes),
        checked=tuple(checked_flags),
        rest_treedefs=tuple(rest_treedefs),
        rest_static=tuple(rest_static),
        promote=real == np.float64,
    )
    if not checked_arrays:
        kinds = ", ".join(f"{leaf.path}: {leaf.dtype}" for leaf in leaves) or "no leaves at all"
        raise CheckInputError(
            "the differentiated argument(s) have no floating-point leaves to check "
            f"({kinds}). Pass the parameters as float arrays, or choose them with argnums."
        )
    from gradlab.gradcheck._sweep import translated_errors  # (it imports this module)

    with translated_errors():
        program = trace_program(spec, (tuple(checked_arrays), tuple(fixed_arrays),
                                       tuple(rest_dyn)))  # fmt: skip
    return Problem(
        spec=dataclasses.replace(spec, program=program),
        leaves=tuple(leaves),
        checked_leaves=tuple(checked_arrays),
        fixed_leaves=tuple(fixed_arrays),
        rest_dyn=tuple(rest_dyn),
        rest_dtypes=tuple(rest_dtypes),
    )
