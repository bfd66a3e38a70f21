"""What is static about a check: the program ``f`` traces to, its arguments' layout."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax.extend import core as jex

from gradlab._errors import CheckInputError
from gradlab.gradcheck.programs._fingerprint import fingerprint
from gradlab.gradcheck.programs._promote import promoted
from gradlab.gradcheck.programs._scope import note_constants, own_constants

__all__ = ["Program", "Spec", "trace_program", "traced_once"]


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
    (:func:`~gradlab.gradcheck.programs._fingerprint.fingerprint` returned None) equals only itself,
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

        With :attr:`promote`, ``f`` runs in float64 throughout
        (:mod:`~gradlab.gradcheck.programs._promote`); ``rules`` keeps custom derivative rules as
        written (autodiff), False runs their primals (an evaluation of ``f`` for finite
        differences).
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
        >>> from gradlab.gradcheck.planning._problem import build_problem
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
    constants of its own (:func:`~gradlab.gradcheck.programs._scope.own_constants`).
    """
    fresh = lambda *args: spec.flat_value(*args)
    closed, shape = jax.make_jaxpr(fresh, return_shape=True)(*dyn)
    key = fingerprint(closed)
    program = Program(own_constants(closed), jax.tree_util.tree_structure(shape), key)
    note_constants(closed)  # NumPy arrays JAX converted in float64 (see _scope)
    return program
