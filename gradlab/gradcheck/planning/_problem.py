"""Turning ``f(params, *args)`` into a static spec plus flat, float64 leaves.

Every check traces ``f`` afresh (:class:`Program`): the check judges ``f`` as it is at the
call, whatever was compiled for it before. The spec is hashable by what ``f`` traces to —
the fingerprint of that jaxpr, custom rules' bodies included
(:func:`~gradlab.gradcheck.programs._fingerprint.fingerprint`) — never by the identity of ``f``: a
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

from gradlab._errors import CheckInputError
from gradlab._treepath import path_str
from gradlab.gradcheck.planning._spec import (
    Spec,
    _Static,
    _WithKwargs,
    trace_program,
)
from gradlab.gradcheck.programs._tracing import translated_errors

__all__ = ["Leaf", "Problem", "build_problem"]


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

    Must be called inside :func:`gradlab.gradcheck.programs._scope.precise` so leaves become float64
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
