"""The identity of a custom derivative rule: the functions and closures it was made of."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.extend import core as jex

#: JAX's wrappers that a call re-bound from a jaxpr adds around its backward rule (zero
#: cotangents for the call's constants): no part of the rule ("_prepend_input_cts" and its
#: accumulating form since JAX 0.12.1, "_handle_consts_in_bwd" before).
_REBIND_TRANSFORMS = frozenset({"_handle_consts_in_bwd", "_prepend_input_cts"})
_REBIND_WRAPPERS = frozenset({"_PrependCtsBwdWithAccums"})


def _closure(fn: Any, name: str) -> Any:
    """The value ``fn`` closes over under ``name`` (JAX's memoised rule thunks)."""
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    if code is None:
        raise KeyError(name)
    return dict(zip(code.co_freevars, (c.cell_contents for c in cells), strict=True))[name]


def _wrapped_identity(wf: Any) -> Any:
    """A hashable identity of a ``lu.WrappedFun``: its function and its transforms' data.

    Only compared within one fingerprint computation (the same objects at the same instant
    trace to the same program); callables among the transforms' arguments (JAX's result
    stores) are placeholders, anything else whose text does not show it in full is refused.
    """
    f = wf.f
    while type(f).__name__ in _REBIND_WRAPPERS:  # a re-bound call's, around the rule
        f = f.bwd
    parts: list[Any] = [id(f)]
    for gen, args in wf.transforms:
        if getattr(gen, "__name__", "") in _REBIND_TRANSFORMS:  # a re-bound call's
            continue
        items = args if isinstance(args, tuple) else (args,)
        shown = []
        for a in items:
            if callable(a):
                shown.append("callable")
                continue
            if type(a).__name__ == "DebugInfo":  # names only: no part of the program
                a = (a.traced_for, a.func_src_info, a.arg_names)
            text = repr(a)
            if " at 0x" in text:
                raise KeyError("opaque")
            shown.append(text)
        parts.append((id(gen), tuple(shown)))
    parts.append(repr(wf.params))
    return tuple(parts)


def _user_rule(thunk: Any, inner: str, lifted: str) -> Any:
    """The user's rule behind JAX's memoised thunk ``thunk`` (``inner``: its name there).

    A call re-bound from a jaxpr (as :func:`_trace_rule` does) wraps the thunk of the call
    it came from in ``lift_jvp``/``lift_fwd``: unwrapped, so that it is found as that call.
    """
    rule = _closure(_closure(thunk.f, "fn"), inner)
    while getattr(rule.f, "__name__", "") == inner and not rule.transforms:
        rule = _closure(_closure(_closure(rule.f, lifted).f, "fn"), inner)
    return rule


def _rule_identity(eqn: Any) -> Any:
    """What identifies a custom rule's code within one computation, or None if unknown."""
    p = eqn.params
    try:
        if eqn.primitive.name == "custom_jvp_call":
            rules = [_user_rule(p["jvp_jaxpr_fun"], "jvp", "jvp_jaxpr_fun")]
        else:
            fwd = _user_rule(p["fwd_jaxpr_thunk"], "fwd", "fwd_jaxpr_thunk")
            rules = [fwd, p["bwd"]]
        ids = tuple(_wrapped_identity(r) for r in rules)
    except (KeyError, AttributeError, TypeError, ValueError):
        return None
    avals = tuple(repr(getattr(v, "aval", None)) for v in eqn.invars)
    return (eqn.primitive.name, ids, str(p["call_jaxpr"]), avals, p.get("num_consts"))


def _trace_rule(eqn: Any, fixed: tuple[bool, ...]) -> Any:
    """The jaxpr of ``jax.jvp`` (custom_jvp) or ``jax.vjp`` (custom_vjp) of one call.

    Along every floating-point operand but the call's own constants and ``fixed`` ones.
    """
    literal = [isinstance(v, jex.Literal) for v in eqn.invars]
    avals = [v.aval for v, lit in zip(eqn.invars, literal, strict=True) if not lit]
    consts = int(eqn.params.get("num_consts", 0))

    def run(*args: Any) -> Any:
        it = iter(args)
        full = [v.val if lit else next(it) for v, lit in zip(eqn.invars, literal, strict=True)]
        return eqn.primitive.bind(*full, **eqn.primitive.get_bind_params(eqn.params))

    position = [i for i, lit in enumerate(literal) if not lit]
    diff = [
        j
        for j, i in enumerate(position)
        if i >= consts and not fixed[i] and jax.numpy.issubdtype(avals[j].dtype, jax.numpy.inexact)
    ]
    if not diff:
        raise ValueError("nothing to differentiate")

    def split(args: Any) -> tuple[list[Any], Callable[..., Any]]:
        def along(*moved: Any) -> Any:
            full = list(args)
            for j, x in zip(diff, moved, strict=True):
                full[j] = x
            return run(*full)

        return [args[j] for j in diff], along

    shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in avals]
    if eqn.primitive.name == "custom_jvp_call":

        def jvp(args: Any, tangents: Any) -> Any:
            primals, along = split(args)
            return jax.jvp(along, primals, tangents)

        return jax.make_jaxpr(jvp)(shapes, [shapes[j] for j in diff])
    outs = [v.aval for v in eqn.outvars]
    if not all(jax.numpy.issubdtype(a.dtype, jax.numpy.inexact) for a in outs):
        raise ValueError("a non-float output")

    def vjp(args: Any, cts: Any) -> Any:
        primals, along = split(args)
        out, pull = jax.vjp(along, *primals)
        return out, pull(type(out)(cts) if isinstance(out, list | tuple) else cts[0])

    cts = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in outs]
    return jax.make_jaxpr(vjp)(shapes, cts)
