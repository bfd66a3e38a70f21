"""Scoped float64 and full-precision matmuls, and the caller's process left as it was.

JAX converts a NumPy array it meets while tracing (a mask, a projection, data loaded with
NumPy, closed over by ``f``) once, and keeps the converted array in a cache found by the
NumPy array alone — not by the ``jax_enable_x64`` setting it was converted under — for as
long as the converted array is alive (jaxlib's ``canonicalize_value``, JAX 0.10.2). A trace
in float64 therefore leaves the array float64 for the caller's later float32 code while
anything still holds that trace: ``jnp.asarray(proj).dtype`` is float64 and a later
``jax.jit(layer)(x32)`` can fail to lower. The checker holds no such conversion itself
(:func:`own_constants` gives the programs it keeps constants of their own), and
:func:`precise` checks, when it leaves float64, every NumPy array its traces met: one still
converted to float64 (held by JAX's caches of a function jitted inside ``f``) makes it clear
JAX's caches (``jax.clear_caches()``), the one way to drop them.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.extend import core as jex

from gradlab import _jax_compat

__all__ = ["forgets", "own_constants", "precise", "stale_conversions"]

#: What drops the programs each module of the checker keeps (registered by :func:`forgets`).
_FORGETTERS: list[Callable[[], None]] = []

#: The NumPy arrays met by the traces of the innermost float64 scope.
_MET: contextvars.ContextVar[list[np.ndarray] | None] = contextvars.ContextVar(
    "gradlab_met_arrays", default=None
)


@contextlib.contextmanager
def precise(x64: bool = True) -> Iterator[None]:
    """Enables float64 and ``"highest"`` matmul precision inside the block only.

    Both are JAX's own context managers, so the caller's settings come back when the block
    exits, normally or by an exception. TF32 and bfloat16 passes can therefore never leak
    into a gradient check. Leaving float64 for a caller without it, NumPy arrays that the
    block's traces converted to float64 are made to convert afresh (see the module).

    Args:
        x64: Enable float64 (the default); ``False`` disables it for the float32 fallback
            on backends without float64, still at full matmul precision.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> before = jax.config.jax_enable_x64
        >>> with precise():
        ...     print(jnp.ones(1).dtype)
        float64
        >>> jax.config.jax_enable_x64 == before
        True
    """
    met: list[np.ndarray] = []
    token = _MET.set(met)
    try:
        with jax.enable_x64(x64), jax.default_matmul_precision("highest"):
            yield
    finally:
        _MET.reset(token)
        if met and not _jax_compat.x64_enabled():
            _forget_conversions(met)


def note_constants(closed: Any) -> None:
    """Remembers the NumPy arrays behind ``closed``'s constants (checked on leaving)."""
    met = _MET.get()
    if met is not None:
        met.extend(_numpy_roots(closed))


def stale_conversions(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The arrays that JAX would now convert to another dtype than the current setting's.

    Example:
        >>> import jax, numpy as np
        >>> stale_conversions([np.ones(3)])
        []
    """
    stale = []
    for a in arrays:
        want = jax.dtypes.canonicalize_dtype(a.dtype)
        if np.dtype(_jax_compat.canonical_dtype_of(a)) != np.dtype(want):
            stale.append(a)
    return stale


def _forget_conversions(met: list[np.ndarray]) -> None:
    """Makes JAX convert the arrays ``met`` afresh, from the caller's settings.

    Most programs the checker keeps hold constants of their own (:func:`own_constants`);
    a custom rule's memoised traces, kept by JAX's caches of the checker's kernels, may
    hold the conversion: then JAX's caches are cleared (the caller's compiled functions
    compile again on their next call; what they compute is unchanged).
    """
    unique = list({id(a): a for a in met}.values())
    if not stale_conversions(unique):
        return
    gc.collect()  # a conversion held only by garbage goes with it
    if not stale_conversions(unique):
        return
    _forget_programs()
    gc.collect()
    if stale_conversions(unique):
        jax.clear_caches()  # the one way to drop JAX's caches holding the conversion
        gc.collect()


def forgets(clear: Callable[[], None]) -> Callable[[], None]:
    """Registers ``clear``, which drops the programs its module keeps; returns it.

    A decorator, or a call: :func:`precise` calls every registered ``clear`` when the
    programs kept hold a stale conversion.
    """
    _FORGETTERS.append(clear)
    return clear


def _forget_programs() -> None:
    """Drops every program the checker keeps in this process (they compile again)."""
    for clear in _FORGETTERS:
        clear()


def _numpy_roots(closed: Any) -> list[np.ndarray]:
    """The NumPy arrays that ``closed``'s constants and literals are views of."""
    found: list[np.ndarray] = []

    def root(x: Any) -> None:
        while isinstance(x, np.ndarray) and isinstance(x.base, np.ndarray):
            x = x.base
        if isinstance(x, np.ndarray) and x.dtype.kind in "fc" and x.dtype.itemsize >= 8:
            found.append(x)

    _walk_constants(closed, root)
    return found


def _walk_constants(closed: Any, visit: Any) -> None:
    for c in closed.consts:
        visit(c)
    _walk_jaxpr(closed.jaxpr, visit)


def _walk_jaxpr(jaxpr: Any, visit: Any) -> None:
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if isinstance(v, jex.Literal):
                visit(v.val)
        for p in eqn.params.values():
            for item in p if isinstance(p, tuple | list) else (p,):
                if isinstance(item, jex.ClosedJaxpr):
                    _walk_constants(item, visit)
                elif isinstance(item, jex.Jaxpr):
                    _walk_jaxpr(item, visit)


def own_constants(closed: Any) -> Any:
    """``closed`` with its NumPy constants (nested jaxprs' included) as arrays of its own.

    A program kept by the checker then holds no array JAX converted from the caller's
    NumPy arrays (see the module): those conversions die with the trace.
    """
    try:
        return _own_closed(closed)
    except Exception:  # a jaxpr that cannot be rebuilt: kept as traced (checked on leaving)
        return closed


def _own(x: Any) -> Any:
    if isinstance(x, np.ndarray) and x.ndim > 0:
        return jax.device_put(np.array(x, copy=True, subok=False))
    return x


def _own_closed(closed: Any) -> Any:
    consts = [_own(c) for c in closed.consts]
    return jex.ClosedJaxpr(_own_jaxpr(closed.jaxpr), consts)


def _own_jaxpr(jaxpr: Any) -> Any:
    eqns = []
    changed = False
    for eqn in jaxpr.eqns:
        params = {}
        for key, p in eqn.params.items():
            params[key] = _own_param(p)
            changed |= params[key] is not p
        if any(params[k] is not eqn.params[k] for k in params):
            eqn = eqn.replace(params=params)
        eqns.append(eqn)
    return jaxpr.replace(eqns=eqns) if changed else jaxpr


def _own_param(p: Any) -> Any:
    if isinstance(p, jex.ClosedJaxpr):
        owned = _own_closed(p)
        same = owned.jaxpr is p.jaxpr and all(
            a is b for a, b in zip(owned.consts, p.consts, strict=True)
        )
        return p if same else owned
    if isinstance(p, jex.Jaxpr):
        return _own_jaxpr(p)
    if isinstance(p, tuple) and any(isinstance(i, jex.ClosedJaxpr | jex.Jaxpr) for i in p):
        items = tuple(_own_param(i) for i in p)
        if all(a is b for a, b in zip(items, p, strict=True)):
            return p
        return type(p)(*items) if hasattr(p, "_fields") else items  # named tuples keep their type
    return p
