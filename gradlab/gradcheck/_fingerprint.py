"""Fingerprints of jaxprs: a digest that two programs share only if they compute the same.

A check's compiled programs are kept on disk keyed BEFORE they are traced and lowered
(:mod:`~gradlab.gradcheck._stored`), so the key must stand for everything the program is
made of. A jaxpr's fingerprint covers its printed form (the operations, their order, the
types, every printed parameter), the ``repr`` of every parameter (also those the printer
leaves out), and the bytes of every constant and literal (the printer may abbreviate them).

Some programs cannot be fingerprinted: a parameter that is a Python callable runs code that
no digest can see. Two are let through, because no program built from the jaxpr without
differentiating it runs them: the derivative rules of ``custom_jvp_call`` and
``custom_vjp_call`` (lowering and ``vmap`` use only their primal ``call_jaxpr``). A program
that differentiates ``f`` must therefore be fingerprinted from ITS OWN jaxpr, where the rules
have been traced in. Host callbacks (and any other effect) block a fingerprint too: their
executables call back into this process.
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from jax.extend import core as jex

__all__ = ["RULE_PRIMITIVES", "fingerprint"]

#: Primitives whose callable parameters (derivative rules) are not run by a program that
#: does not differentiate through them.
RULE_PRIMITIVES = frozenset({"custom_jvp_call", "custom_vjp_call"})


class _Blocked(Exception):
    """A parameter the digest cannot see into (a callable outside a custom rule)."""


def fingerprint(closed: Any, *, strict: bool = True) -> str | None:
    """A hex digest of a closed jaxpr, or None when it holds code a digest cannot see.

    Args:
        closed: A ``ClosedJaxpr`` (``jax.make_jaxpr(f)(...)``, ``jit(f).trace(...).jaxpr``).
        strict: True (for keys): None when a parameter is a callable outside a custom
            derivative rule, or when the jaxpr has effects (callbacks). False (to compare two
            traces of one function): callables count by their qualified name.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> trace = lambda c: jax.make_jaxpr(lambda x: jnp.tanh(x * c).sum())(jnp.ones(3))
        >>> fingerprint(trace(2.0)) == fingerprint(trace(2.0))
        True
        >>> fingerprint(trace(2.0)) == fingerprint(trace(3.0))
        False
        >>> hook = lambda x: jax.pure_callback(lambda y: y, x, x)
        >>> print(fingerprint(jax.make_jaxpr(hook)(jnp.ones(3))))
        None
    """
    try:
        return _MEMO[closed][strict]
    except (KeyError, TypeError):
        pass
    digest = _digest(closed, strict)
    try:
        _MEMO.setdefault(closed, {})[strict] = digest
    except TypeError:  # not weakly referable: not remembered
        pass
    return digest


#: Fingerprints of jaxprs still alive (JAX hands out the same ClosedJaxpr for a cached trace).
_MEMO: weakref.WeakKeyDictionary[Any, dict[bool, str | None]] = weakref.WeakKeyDictionary()


def _digest(closed: Any, strict: bool) -> str | None:
    h = hashlib.sha256()
    try:
        if strict and closed.jaxpr.effects:
            raise _Blocked
        h.update(str(closed.jaxpr).encode())
        _consts(h, closed.consts)
        _walk(h, closed.jaxpr, strict)
    except _Blocked:
        return None
    return h.hexdigest()


def _array(h: Any, x: Any) -> None:
    a = np.asarray(x)
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())


def _consts(h: Any, consts: Any) -> None:
    for c in consts:
        try:
            _array(h, c)
        except (TypeError, ValueError) as e:  # a const that is not an array (a PRNG key, ...)
            h.update(repr(c).encode())
            if " at 0x" in repr(c):
                raise _Blocked from e


def _walk(h: Any, jaxpr: Any, strict: bool) -> None:
    for eqn in jaxpr.eqns:
        if strict and "callback" in eqn.primitive.name:
            raise _Blocked
        h.update(eqn.primitive.name.encode())
        for v in eqn.invars:
            if isinstance(v, jex.Literal):
                _array(h, v.val)
        for name in sorted(eqn.params):
            h.update(name.encode())
            _param(h, eqn.params[name], eqn.primitive.name, strict)


def _param(h: Any, value: Any, primitive: str, strict: bool) -> None:
    if isinstance(value, jex.ClosedJaxpr):
        h.update(str(value.jaxpr).encode())
        _consts(h, value.consts)
        _walk(h, value.jaxpr, strict)
    elif isinstance(value, jex.Jaxpr):
        h.update(str(value).encode())
        _walk(h, value, strict)
    elif isinstance(value, tuple | list):
        h.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _param(h, item, primitive, strict)
    elif isinstance(value, np.ndarray):
        _array(h, value)
    elif _is_code(value):
        if strict and primitive not in RULE_PRIMITIVES:
            raise _Blocked
        h.update(_name(value).encode())
    else:
        text = repr(value)
        if strict and " at 0x" in text:  # an object whose repr does not show its content
            raise _Blocked
        h.update(text.encode())


def _is_code(value: Any) -> bool:
    """Python code: a callable (a function, a callback object), or JAX's wrapper of a function.

    ``lu.WrappedFun`` is not itself callable; a ``Mesh`` is (as a context decorator) but is
    data, shown whole by its ``repr``.
    """
    if hasattr(value, "call_wrapped"):
        return True
    return callable(value) and not isinstance(value, type | contextlib.ContextDecorator)


def _name(fn: Callable[..., Any]) -> str:
    inner = getattr(fn, "f", fn)  # lu.WrappedFun wraps the function in .f
    return f"{getattr(inner, '__module__', '')}.{getattr(inner, '__qualname__', type(fn))}"
