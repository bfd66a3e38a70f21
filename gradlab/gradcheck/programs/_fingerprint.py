"""Fingerprints of jaxprs: a digest that two programs share only if they compute the same.

A check's compiled programs are reused — in this process and, through
:mod:`~gradlab.gradcheck.programs._stored`, in later ones — under a key made from the fingerprint of
the jaxpr ``f`` traces to at the call. The key must therefore stand for everything the
program is made of, and a fingerprint (``strict=True``) covers:

* every equation: its primitive, its operands' types, every literal's bytes;
* every parameter, walked: nested jaxprs and closed jaxprs (their constants' bytes), tuples,
  dicts, dataclasses field by field (a Pallas kernel's grid mapping, with each block's
  index-map jaxpr, its block shape and array type), named tuples (dimension numbers), types
  and shardings; a parameter is hashed by its text only where that text is known to show
  all of it (numbers, strings, dtypes, enums, pytree structures, abstract values);
* custom derivative rules' bodies, by tracing them: a ``custom_jvp_call`` is traced through
  ``jax.jvp`` and a ``custom_vjp_call`` through ``jax.vjp``, as JAX would differentiate
  them now, and those jaxprs are fingerprinted in turn (rules calling rules, to any depth:
  a rule met again inside its own expansion is fingerprinted as a reference to it);
* the bytes of every constant.

Whatever it cannot see in full makes the fingerprint None, and None means the program is
not reused: a Python callable in a parameter (a host callback, an unknown kind of
parameter), an effect (its executable calls back into this process), a rule that cannot be
traced on its own. ``strict=False`` compares two traces of one function instead: callables
the printed jaxprs, constants and literals are compared, rules are not traced.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from typing import Any

import jax
import numpy as np
from jax.extend import core as jex

from gradlab import _jax_compat
from gradlab.gradcheck.programs._fingerprint_values import (
    _array,
    _is_aval,
    _is_data,
    _is_frozendict,
    _is_jax_dtype,
    _is_jax_policy,
    _local,
    _name,
)
from gradlab.gradcheck.programs._rule_identity import _rule_identity, _trace_rule

__all__ = ["RULE_PRIMITIVES", "fingerprint", "why_none"]

#: Primitives whose derivative rules are Python code, traced into the fingerprint.
RULE_PRIMITIVES = frozenset({"custom_jvp_call", "custom_vjp_call"})
#: Rules within rules traced at most this deep (a deeper one: no fingerprint, no reuse).
MAX_RULE_DEPTH = 8
#: Parameters of the rule primitives that the traced rule stands for.
_RULE_PARAMS = frozenset({"jvp_jaxpr_fun", "fwd_jaxpr_thunk", "bwd", "out_trees"})


class _Blocked(Exception):
    """Something the digest cannot see into in full."""


def why_none(closed: Any) -> str:
    """What keeps ``closed`` from a (strict) fingerprint; "" when it has one.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> hook = lambda x: jax.pure_callback(lambda y: y, x, x)
        >>> why_none(jax.make_jaxpr(hook)(jnp.ones(3)))
        'an effect or a host callback (pure_callback)'
    """
    try:
        _Digest(True).closed(closed)
    except _Blocked as e:
        return str(e) or "something it cannot see into"
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return ""


def fingerprint(closed: Any, *, strict: bool = True) -> str | None:
    """A hex digest of a closed jaxpr, or None when it holds what a digest cannot see.

    Args:
        closed: A ``ClosedJaxpr`` (``jax.make_jaxpr(f)(...)``, ``jit(f).trace(...).jaxpr``).
        strict: True (for keys): everything that shapes the program, custom rules traced;
            None when anything cannot be covered. False (to compare two traces of one
            function, cheaply): the printed jaxprs, constants and literals only.

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
        return _Digest(strict).closed(closed)
    except _Blocked:
        return None
    except Exception:  # anything unforeseen in a jaxpr: not covered, so never reused
        return None


class _Digest:
    """One fingerprint computation (rules expanded in it are remembered for its duration)."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.active: list[Any] = []  # rules being expanded, outermost first
        self.done: dict[Any, str] = {}  # rules expanded in this computation, by identity

    def closed(self, closed: Any) -> str:
        h = hashlib.sha256()
        if self.strict and not _local(closed.jaxpr.effects):
            raise _Blocked("an effect")
        self._closed(h, closed)
        return h.hexdigest()

    def _closed(self, h: Any, closed: Any) -> None:
        h.update(b"closed")
        self._consts(h, closed.consts)
        self._jaxpr(h, closed.jaxpr)

    def _jaxpr(self, h: Any, jaxpr: Any) -> None:
        h.update(str(jaxpr).encode())  # operations, order, types and printed parameters
        h.update(f"c{len(jaxpr.constvars)}i{len(jaxpr.invars)}o{len(jaxpr.outvars)}".encode())
        for v in jaxpr.outvars:
            if isinstance(v, jex.Literal):
                _array(h, v.val)
        constants = {id(v) for v in jaxpr.constvars}
        for eqn in jaxpr.eqns:
            self._eqn(h, eqn, constants)

    def _eqn(self, h: Any, eqn: Any, constants: set[int]) -> None:
        name = eqn.primitive.name
        if self.strict and ("callback" in name or not _local(eqn.effects)):
            raise _Blocked(f"an effect or a host callback ({name})")
        # effects name the references they touch by variable: their kinds, not their ids
        h.update(f"eqn {name} {sorted(type(e).__name__ for e in eqn.effects)}".encode())
        for v in eqn.invars:  # (their types are in the printed jaxpr)
            if isinstance(v, jex.Literal):
                _array(h, v.val)
        if not self.strict:  # two traces of one function: the text, constants and literals
            for value in eqn.params.values():
                for item in value if isinstance(value, tuple | list) else (value,):
                    if isinstance(item, jex.ClosedJaxpr):
                        self._closed(h, item)
                    elif isinstance(item, jex.Jaxpr):
                        self._jaxpr(h, item)
            return
        rules = name in RULE_PRIMITIVES
        for key in sorted(eqn.params):
            if rules and key in _RULE_PARAMS:
                continue
            h.update(f"param {key}".encode())
            self._value(h, eqn.params[key], key)
        if rules:
            fixed = tuple(id(v) in constants for v in eqn.invars)
            self._rule(h, eqn, fixed)

    def _consts(self, h: Any, consts: Any) -> None:
        h.update(f"consts{len(consts)}".encode())
        for c in consts:
            self._value(h, c)

    # ------------------------------------------------------------------ parameters

    def _value(self, h: Any, value: Any, key: str = "") -> None:
        """Hashes one value in full, or raises _Blocked (strict) where it cannot."""
        if isinstance(value, jex.ClosedJaxpr):
            self._closed(h, value)
        elif isinstance(value, jex.Jaxpr):
            h.update(b"jaxpr")
            self._jaxpr(h, value)
        elif value is None or isinstance(value, bool | int | float | complex | str | bytes):
            h.update(f"{type(value).__name__}:{value!r}".encode())
        elif isinstance(value, enum.Enum):
            h.update(f"enum {type(value).__module__}.{type(value).__qualname__}.{value.name}"
                     .encode())  # fmt: skip
        elif isinstance(value, np.dtype) or _is_jax_dtype(value):
            h.update(f"dtype {value}".encode())
        elif isinstance(value, np.ndarray | np.generic | jax.Array):
            self._array_value(h, value)
        elif isinstance(value, jax.tree_util.PyTreeDef):
            self._text(h, "treedef", str(value))
        elif _jax_compat.is_flat_tree(value):  # scan's ft_in (JAX >= 0.11): structure, leaves
            self._text(h, "flattree", repr(value))
            for item in value.vals:
                self._value(h, item)
        elif _is_aval(value):
            self._aval(h, value)
        elif isinstance(value, tuple | list):  # named tuples (dimension numbers) by type too
            h.update(f"{type(value).__module__}.{type(value).__qualname__}{len(value)}".encode())
            for item in value:
                self._value(h, item)
        elif isinstance(value, dict) or _is_frozendict(value):
            h.update(f"dict{len(value)}".encode())
            for k in sorted(value, key=repr):
                self._value(h, k)
                self._value(h, value[k])
        elif isinstance(value, frozenset | set):
            parts = sorted(self._sub(item) for item in value)
            h.update(f"set{parts}".encode())
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            h.update(f"dataclass {type(value).__module__}.{type(value).__qualname__}".encode())
            for field in dataclasses.fields(value):
                h.update(f"field {field.name}".encode())
                self._value(h, getattr(value, field.name))
        elif isinstance(value, type):
            self._text(h, "type", f"{value.__module__}.{value.__qualname__}")
        elif key == "policy" and _is_jax_policy(value):
            h.update(f"policy {_name(value)}".encode())
        elif _is_data(value):
            self._text(h, type(value).__qualname__, repr(value))
        elif self.strict:
            raise _Blocked(f"a parameter {key or ''} of type {type(value).__qualname__}")
        else:
            shown = _name(value) if callable(value) else repr(value)
            h.update(f"{type(value).__qualname__}:{shown}".encode())

    def _sub(self, value: Any) -> str:
        h = hashlib.sha256()
        self._value(h, value)
        return h.hexdigest()

    def _text(self, h: Any, kind: str, text: str) -> None:
        if self.strict and " at 0x" in text:  # an object whose text does not show it
            raise _Blocked(f"a {kind} whose text does not show it")
        h.update(f"{kind}:{text}".encode())

    def _aval(self, h: Any, aval: Any) -> None:
        h.update(f"aval {type(aval).__qualname__} {aval!r}".encode())
        for attr in ("shape", "dtype", "weak_type", "sharding", "vma", "memory_space"):
            if hasattr(aval, attr):
                h.update(f"{attr}={getattr(aval, attr)!r}".encode())
        inner = getattr(aval, "inner_aval", None)
        if inner is not None:
            self._aval(h, inner)

    def _array_value(self, h: Any, value: Any) -> None:
        if _is_jax_dtype(getattr(value, "dtype", None)):  # PRNG keys: their data and impl
            h.update(f"key {value.dtype}".encode())
            _array(h, jax.random.key_data(value))
            return
        try:
            _array(h, value)
        except Exception as e:  # not readable on the host (an abstract or deleted array)
            if self.strict:
                raise _Blocked from e
            h.update(repr(value).encode())

    # ------------------------------------------------------------------ custom rules

    def _rule(self, h: Any, eqn: Any, fixed: tuple[bool, ...]) -> None:
        """The bodies of a custom rule, traced as JAX would differentiate the call now.

        ``fixed``: per operand, whether it is a constant of the enclosing jaxpr (never
        differentiated, as in JAX).
        """
        ident = _rule_identity(eqn)
        ident = None if ident is None else (ident, fixed)
        if ident is not None:
            if ident in self.active:  # a rule calling itself: a reference to its expansion
                h.update(f"rule cycle {self.active.index(ident)}".encode())
                return
            if ident in self.done:
                h.update(f"rule {self.done[ident]}".encode())
                return
        if len(self.active) >= MAX_RULE_DEPTH:
            raise _Blocked(f"custom rules nested deeper than {MAX_RULE_DEPTH}")
        try:
            traced = _trace_rule(eqn, fixed)
        except Exception as e:  # a rule that cannot be traced alone: not covered
            raise _Blocked(f"a custom rule that cannot be traced alone ({e})") from e
        self.active.append(ident)
        try:
            digest = self.closed(traced)
        finally:
            self.active.pop()
        if ident is not None:
            self.done[ident] = digest
        h.update(f"rule {digest}".encode())


# ---------------------------------------------------------------------- leaf types
