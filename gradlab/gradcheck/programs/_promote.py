"""float64 all the way through ``f``: reduced precision inside ``f`` promoted for the check.

Casting the parameters to float64 is not enough: ``f`` may compute in float32 inside
(``x.astype(jnp.float32)``, a dot with ``preferred_element_type=float32``, the float32
softmax of ``jax.nn.dot_product_attention``). Its rounding is then ~1e9 times larger than
float64's, and centered differences at the lecture's ``eps = 1e-7`` measure noise.

:func:`promoted` returns ``f`` re-evaluated from its jaxpr with every floating-point value
narrower than float64 widened: inputs of each equation, literals and constants, and the
dtype parameters of ``convert_element_type``, ``dot_general`` (``preferred_element_type``),
``iota`` and friends; ``reduce_precision`` becomes the identity. Nested ``jit`` and remat are
interpreted in place; ``scan``, ``while`` and ``cond`` are rebuilt around promoted bodies.

Custom derivative rules are treated by purpose. The finite-difference evaluations
(``rules=False``) run the rule's *primal* promoted: they only evaluate ``f``. The autodiff
evaluations (``rules=True``) keep each ``custom_jvp``/``custom_vjp`` call as written, so the
user's rule is what gets checked; if its inputs were narrower than float64 they are cast back
to the dtype the rule was traced with. JAX's own ``custom_jvp`` rules (``jax.nn.softmax``,
``jax.nn.relu``, ``jax.scipy.special``: the rule's function lies in JAX's source) are no more
the user's than JAX's primitives, and are promoted as those are: the primal's jaxpr and each
jaxpr the rule is traced to. Primitives that cannot be promoted (custom calls,
Pallas kernels, bit casts, anything else holding a sub-program) run on their original dtypes;
:class:`Promotion` lists them, and the checker's noise floor then reflects the precision
``f`` really computes in.

Promotion never makes a check crash where ``jax.grad`` works. An equation whose promoted
form JAX refuses (a rebuilt loop, a parameter this module does not know) runs as written, on
its original dtypes, and is listed among the kept pieces with the reason; a ``while`` whose
predicate is batched (what ``vmap`` makes of a per-entry loop, e.g. in
``jax.scipy.special.expi``) is rebuilt as XLA runs it: until no entry's predicate holds,
finished entries held fixed. Where even that fails — at the level of ``f`` itself, e.g. when
JAX differentiates a custom rule re-bound from a jaxpr and refuses its output structure —
``f`` runs as written, as a whole, and is listed so.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex

from gradlab import _jax_compat
from gradlab._jax_compat import scan_counts

__all__ = ["Promotion", "narrow_dtype", "promoted"]

#: Call-like primitives interpreted in place (their sub-program parameter).
_CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
          "remat": "jaxpr", "checkpoint": "jaxpr"}  # fmt: skip
_RULES = {"custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
          "custom_vjp_call_jaxpr": "fun_jaxpr"}  # fmt: skip
#: Parameters that name an output dtype.
_DTYPE_PARAMS = ("new_dtype", "dtype", "preferred_element_type")
#: Primitives whose meaning depends on the exact input dtype.
_EXACT = {"bitcast_convert_type", "nextafter"}


@dataclasses.dataclass
class Promotion:
    """What :func:`promoted` changed while tracing ``f`` (filled in at trace time).

    Attributes:
        promoted: Where reduced precision was widened, e.g. ``"convert_element_type to
            float32 (attention.py:123)"``, counted per kind and place.
        kept: Pieces left in reduced precision (custom calls, custom rules' own inputs),
            with their dtype.
        lowest: The narrowest float dtype ``f`` still computes in after promotion (``None``:
            float64 throughout).
        rules: Custom derivative rules kept as written for autodiff.
        autodiff_lowest: The narrowest float dtype the autodiff evaluation still computes in
            (custom rules kept as written there; ``None``: float64 throughout). The
            finite differences run those rules' primals promoted, so this sets no noise floor.
    """

    promoted: dict[str, int] = dataclasses.field(default_factory=dict)
    kept: dict[str, int] = dataclasses.field(default_factory=dict)
    lowest: str | None = None
    rules: int = 0
    autodiff_lowest: str | None = None

    def _add(self, table: dict[str, int], what: str) -> None:
        table[what] = table.get(what, 0) + 1

    def keep(self, what: str, dtype: Any) -> None:
        """Records a piece that stays in ``dtype``."""
        self._add(self.kept, what)
        self.keep_dtype(dtype)

    def keep_dtype(self, dtype: Any) -> None:
        """Lowers :attr:`lowest` to ``dtype`` if it is narrower."""
        name = np.dtype(dtype).name
        if self.lowest is None or np.finfo(name).bits < np.finfo(self.lowest).bits:
            self.lowest = name

    def lines(self) -> list[str]:
        """The report's notes, one line per kind of change."""
        out = [f"{what}" + (f" (×{n})" if n > 1 else "") for what, n in self.promoted.items()]
        return out


def narrow_dtype(dtype: Any) -> bool:
    """True for real or complex floating dtypes narrower than float64 / complex128.

    Example:
        >>> narrow_dtype(jnp.float32), narrow_dtype(jnp.bfloat16), narrow_dtype(jnp.float64)
        (True, True, False)
    """
    try:
        dtype = np.dtype(dtype)
    except TypeError:  # extended dtypes (PRNG keys)
        return False
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return dtype.itemsize < 16
    return bool(jnp.issubdtype(dtype, jnp.floating)) and dtype.itemsize < 8


def _wide(dtype: Any) -> Any:
    if not narrow_dtype(dtype):
        return dtype
    return np.dtype(np.complex128 if jnp.issubdtype(dtype, jnp.complexfloating) else np.float64)


def _up(x: Any) -> Any:
    dtype = getattr(x, "dtype", None)
    if dtype is None or not narrow_dtype(dtype):
        return x
    return lax.convert_element_type(x, _wide(dtype))


def _as(x: Any, dtype: Any) -> Any:
    """``x`` converted back to ``dtype`` when its dtype differs (a kept piece's input)."""
    if getattr(x, "dtype", None) is None or np.dtype(x.dtype) == np.dtype(dtype):
        return x
    return lax.convert_element_type(x, dtype)


def _where(eqn: Any) -> str:
    """``file:line`` of the user frame that made ``eqn``, when JAX knows it."""
    try:
        frame = _jax_compat.user_frame(eqn.source_info.traceback)
    except Exception:  # private API: a missing location is not an error
        return ""
    if frame is None:
        return ""
    return f"{frame.file_name.rsplit('/', 1)[-1]}:{frame.start_line}"


@dataclasses.dataclass(frozen=True)
class _Interp:
    """Evaluates jaxprs with reduced precision widened (see the module docstring)."""

    rules: bool  # keep custom derivative rules as written (autodiff) or run their primals
    log: Promotion

    def run(self, jaxpr: Any, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
        env: dict[Any, Any] = {}

        def read(v: Any) -> Any:
            if isinstance(v, jex.Literal):
                val = v.val
                dtype = getattr(val, "dtype", None)
                return np.asarray(val, _wide(dtype)) if dtype is not None else val
            return env[v]

        env.update(zip(jaxpr.constvars, map(_up, consts), strict=True))
        env.update(zip(jaxpr.invars, map(_up, args), strict=True))
        for eqn in jaxpr.eqns:
            outs = self.apply(eqn, [read(v) for v in eqn.invars])
            env.update(zip(eqn.outvars, outs, strict=True))
        return [read(v) for v in jaxpr.outvars]

    def closed(self, closed: Any, args: Sequence[Any]) -> list[Any]:
        return self.run(closed.jaxpr, closed.consts, args)

    def apply(self, eqn: Any, ins: list[Any]) -> list[Any]:
        """``eqn`` promoted; as written (its original dtypes) where JAX refuses the promotion."""
        name = eqn.primitive.name
        if (name in _RULES and self.rules) or name in _EXACT or name == "reduce_precision":
            return self._promote(eqn, ins)  # kept as written, or nothing to refuse
        if name not in (*_CALLS, *_RULES, "scan", "while", "cond") and _has_program(eqn.params):
            return self._promote(eqn, ins)
        try:
            return self._promote(eqn, ins)
        except Exception as e:  # whatever JAX refuses promoted runs as written
            what = f"{name} ({_where(eqn) or '?'}): not promotable ({_short(e)})"
            return self._kept(eqn, ins, what, always=True)

    def _promote(self, eqn: Any, ins: list[Any]) -> list[Any]:
        name = eqn.primitive.name
        if name in _CALLS:
            inner = eqn.params[_CALLS[name]]
            if isinstance(inner, jex.ClosedJaxpr):
                return self.closed(inner, ins)
            return self.run(inner, (), ins)
        if name in _RULES:
            return self._rule(eqn, ins)
        if name == "scan":
            return self._scan(eqn, ins)
        if name == "while":
            return self._while(eqn, ins)
        if name == "cond":
            return self._cond(eqn, ins)
        if name == "reduce_precision":
            self.log._add(self.log.promoted, f"reduce_precision dropped ({_where(eqn)})")
            return [ins[0]]
        if name in _EXACT or _has_program(eqn.params):
            return self._kept(eqn, ins, f"{name} ({_where(eqn)})")
        params = dict(eqn.params)
        for key in _DTYPE_PARAMS:
            dtype = params.get(key)
            if dtype is not None and narrow_dtype(dtype):
                params[key] = _wide(dtype)
                where = _where(eqn)
                self.log._add(
                    self.log.promoted, f"{name} to {np.dtype(dtype).name} ({where or '?'})"
                )
        return _bind(eqn.primitive, params, ins)

    def _kept(self, eqn: Any, ins: list[Any], what: str, always: bool = False) -> list[Any]:
        """Runs ``eqn`` on its original dtypes, outputs widened; listed if any is narrow."""
        narrow = [v.aval.dtype for v in eqn.invars if narrow_dtype(v.aval.dtype)]
        narrow += [v.aval.dtype for v in eqn.outvars if narrow_dtype(v.aval.dtype)]
        for dtype in narrow[:1]:
            self.log.keep(what, dtype)
        if always and not narrow:
            self.log._add(self.log.kept, what)
        ins = [_as(x, v.aval.dtype) for x, v in zip(ins, eqn.invars, strict=True)]
        return [_up(x) for x in _bind(eqn.primitive, eqn.params, ins)]

    def _rule(self, eqn: Any, ins: list[Any]) -> list[Any]:
        inner = eqn.params[_RULES[eqn.primitive.name]]
        if not self.rules:  # an evaluation of f: the rule's primal, promoted
            return self.closed(inner, ins)
        self.log.rules += 1
        if eqn.primitive.name == "custom_jvp_call" and _from_jax(inner):
            try:
                return self._jax_rule(eqn, inner, ins)
            except Exception:  # JAX refused it re-bound: as written, as any other rule
                pass
        return self._kept(eqn, ins, f"custom rule {_rule_name(eqn)} ({_where(eqn)})")

    def _jax_rule(self, eqn: Any, inner: Any, ins: list[Any]) -> list[Any]:
        """One of JAX's own ``custom_jvp`` rules, its primal and its rule promoted.

        JAX's library rules (``jax.nn.softmax`` from JAX 0.12, ``jax.nn.relu``,
        ``jax.scipy.special``) are no more the user's code than JAX's primitives are, and are
        promoted as those are: the primal's jaxpr, and each jaxpr the rule is traced to.
        """
        wide = [_up(x) for x in ins]
        primal = jax.make_jaxpr(lambda *a: self.closed(inner, a))(*map(_shape_of, wide))

        def promote(jaxpr: Any, consts: list[Any]) -> tuple[Any, list[Any]]:
            avals = [jax.ShapeDtypeStruct(v.aval.shape, _wide(v.aval.dtype)) for v in jaxpr.invars]
            traced = jax.make_jaxpr(lambda *a: self.run(jaxpr, consts, a))(*avals)
            return traced.jaxpr, list(traced.consts)

        rule = _jax_compat.map_jvp_rule(eqn.params["jvp_jaxpr_fun"], promote)
        out = _bind(eqn.primitive, dict(eqn.params, call_jaxpr=primal, jvp_jaxpr_fun=rule), wide)
        where = _where(eqn)
        if where and any(narrow_dtype(v.aval.dtype) for v in eqn.invars):
            self.log._add(self.log.promoted, f"JAX's rule {_rule_name(eqn)} ({where})")
        return out

    def _scan(self, eqn: Any, ins: list[Any]) -> list[Any]:
        p = eqn.params
        n_c, n_carry = scan_counts(p)
        consts, init, xs = ins[:n_c], ins[n_c : n_c + n_carry], ins[n_c + n_carry :]

        def body(carry: Any, x: Any) -> tuple[Any, Any]:
            outs = self.closed(p["jaxpr"], [*consts, *carry, *x])
            return list(outs[:n_carry]), list(outs[n_carry:])

        carry, ys = lax.scan(
            body, list(init), list(xs), length=p["length"], reverse=p["reverse"],
            unroll=p["unroll"],
        )  # fmt: skip
        return [*carry, *ys]

    def _while(self, eqn: Any, ins: list[Any]) -> list[Any]:
        p = eqn.params
        n_cc, n_bc = p["cond_nconsts"], p["body_nconsts"]
        cc, bc, init = ins[:n_cc], ins[n_cc : n_cc + n_bc], ins[n_cc + n_bc :]
        cond = lambda c: self.closed(p["cond_jaxpr"], [*cc, *c])[0]
        body = lambda c: self.closed(p["body_jaxpr"], [*bc, *c])
        batched = p["cond_jaxpr"].out_avals[0].shape
        if not batched:
            return list(lax.while_loop(cond, body, list(init)))
        # A batched predicate (from vmap): the loop runs while any entry's predicate holds,
        # and an entry whose predicate is false keeps its carry (as XLA lowers it).
        dims = tuple(range(len(batched)))

        def step(c: Any) -> Any:
            go, new = cond(c), body(c)
            return [
                lax.select(lax.broadcast_in_dim(go, jnp.shape(x), dims), n, x)
                for n, x in zip(new, c, strict=True)
            ]

        return list(lax.while_loop(lambda c: jnp.any(cond(c)), step, list(init)))

    def _cond(self, eqn: Any, ins: list[Any]) -> list[Any]:
        branches = [
            (lambda *ops, b=b: self.closed(b, ops)) for b in eqn.params["branches"]
        ]  # fmt: skip
        return list(lax.switch(ins[0], branches, *ins[1:]))


def _has_program(params: dict[str, Any]) -> bool:
    def is_program(v: Any) -> bool:
        if isinstance(v, jex.ClosedJaxpr | jex.Jaxpr):
            return True
        return isinstance(v, tuple | list) and any(map(is_program, v))

    return any(is_program(v) for v in params.values()) or any(callable(v) for v in params.values())


def _programs(values: Sequence[Any]) -> list[Any]:
    """The jaxprs among parameter values (inside tuples and lists too)."""
    out: list[Any] = []
    for v in values:
        if isinstance(v, jex.ClosedJaxpr | jex.Jaxpr):
            out.append(v)
        elif isinstance(v, tuple | list):
            out += _programs(v)
    return out


def _short(e: BaseException) -> str:
    """The first line of an error, for a report note."""
    text = str(e).strip().splitlines()
    if not text:
        return type(e).__name__
    first = text[0] if len(text[0]) <= 100 else text[0][:100].rsplit(" ", 1)[0] + " …"
    return f"{type(e).__name__}: {first}"


def _shape_of(x: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))


def _source(inner: Any) -> tuple[str, str]:
    """``(function name, file)`` of the function a rule's primal jaxpr was traced from."""
    info = getattr(getattr(inner, "jaxpr", inner), "debug_info", None)
    text = getattr(info, "func_src_info", None) or ""
    name, _, where = text.partition(" at ")
    return name, where.rsplit(":", 1)[0]


#: Where JAX's own source lies (its library's custom rules are promoted as its primitives).
_JAX_SOURCE = os.path.dirname(os.path.abspath(jax.__file__)) + os.sep


def _from_jax(inner: Any) -> bool:
    """Whether a custom rule's primal is JAX's own (``jax.nn.softmax``), not the user's."""
    where = _source(inner)[1]
    return bool(where) and os.path.abspath(where).startswith(_JAX_SOURCE)


def _rule_name(eqn: Any) -> str:
    inner = eqn.params.get("call_jaxpr") or eqn.params.get("fun_jaxpr")
    name = _source(inner)[0]
    if name:
        return name
    jaxpr = getattr(inner, "jaxpr", inner)
    names = sorted({str(e.params.get("name") or "") for e in jaxpr.eqns})
    return next((n for n in names if n), eqn.primitive.name)


def _bind(primitive: Any, params: dict[str, Any], ins: Sequence[Any]) -> list[Any]:
    out = primitive.bind(*ins, **primitive.get_bind_params(params))
    return list(out) if primitive.multiple_results else [out]


def promoted(
    f: Callable[..., Any], *, rules: bool, log: Promotion | None = None
) -> Callable[..., Any]:
    """``f`` evaluated with every floating-point value inside widened to float64.

    Args:
        f: Any function of arrays (pytrees in and out).
        rules: Keep ``custom_jvp``/``custom_vjp`` calls as written (for autodiff of ``f``);
            False runs their primal, promoted (for evaluations of ``f`` only).
        log: Filled in with what was promoted or kept, each time the result is traced.

    Returns:
        A function with ``f``'s signature; call it with float64 inputs under
        ``jax.enable_x64``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda x: (x.astype(jnp.float32) * 3).sum()
        >>> with jax.enable_x64():
        ...     log = Promotion()
        ...     y = promoted(f, rules=False, log=log)(jnp.full(3, 1 / 3))
        ...     print(y.dtype, float(y) == 3.0, [w.split(" (")[0] for w in log.promoted])
        float64 True ['convert_element_type to float32']
    """
    log = Promotion() if log is None else log

    def wrapper(*args: Any) -> Any:
        flat, tree = jax.tree_util.tree_flatten(args)
        is_array = [isinstance(x, jax.Array | np.ndarray | np.generic) for x in flat]
        arrays = [x for x, a in zip(flat, is_array, strict=True) if a]

        def on_arrays(*values: Any) -> Any:  # other leaves (flags, strings) stay static
            it = iter(values)
            full = [next(it) if a else x for x, a in zip(flat, is_array, strict=True)]
            return f(*jax.tree_util.tree_unflatten(tree, full))

        closed, shape = jax.make_jaxpr(on_arrays, return_shape=True)(*arrays)
        try:
            outs = _Interp(rules, log).closed(closed, arrays)
        except Exception as e:  # f as written, as a whole
            log._add(log.kept, f"f as a whole: not promotable ({_short(e)})")
            for x in closed.jaxpr.invars:
                if narrow_dtype(x.aval.dtype):
                    log.keep_dtype(x.aval.dtype)
            lowest = _lowest_inside(closed.jaxpr)
            if lowest is not None:
                log.keep_dtype(lowest)
            return f(*args)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), outs)

    return wrapper


def _lowest_inside(jaxpr: Any) -> Any:
    """The narrowest float dtype of any value in ``jaxpr`` (sub-programs included), or None."""
    lowest = None
    for eqn in jaxpr.eqns:
        dtypes = [v.aval.dtype for v in (*eqn.invars, *eqn.outvars) if hasattr(v.aval, "dtype")]
        for sub in _programs(list(eqn.params.values())):
            inner = _lowest_inside(sub.jaxpr if isinstance(sub, jex.ClosedJaxpr) else sub)
            dtypes += [inner] if inner is not None else []
        for d in dtypes:
            if narrow_dtype(d) and (lowest is None or np.finfo(d).bits < np.finfo(lowest).bits):
                lowest = np.dtype(d)
    return lowest
