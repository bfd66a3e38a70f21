"""Finding the layers of a model in its traced program (jaxpr), without touching the model.

A *site* is a value that enters a parameterised linear map: the non-parameter operand of a
``dot_general`` or ``conv_general_dilated`` whose other operand comes from a params leaf
(directly, or through reshapes, casts, slices, ``jit`` calls and the ``xs`` of a ``lax.scan``).
Sites are found in data-flow order; a site inside a ``scan`` whose kernel is sliced per
iteration (a scan over layers) stands for one site per iteration, and a site inside a scan whose
kernel is shared by every iteration is a recurrence through time. A site is on a *branch* when
the previous main-path site reaches the outputs without going through it (the inner layer of a
residual block); the other sites form the main path, whose consecutive pairs are the layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal, Var

from gradlab._jax_compat import scan_counts

# Ops through which a params leaf stays "the same weights" (and a value stays on a linear path).
_PASS = frozenset(
    {
        "convert_element_type",
        "reshape",
        "transpose",
        "squeeze",
        "expand_dims",
        "broadcast_in_dim",
        "copy",
        "copy_p",
        "reduce_precision",
        "slice",
        "dynamic_slice",
        "rev",
    }
)
_LINEAR = _PASS | {"add", "sub", "neg", "add_any", "concatenate", "select_n", "reduce_sum"}
_CALLS = frozenset({"pjit", "jit", "closed_call", "core_call", "remat", "checkpoint"})
_LINEAR_MAPS = frozenset({"dot_general", "conv_general_dilated"})

Key = tuple[tuple[int, ...], Var]


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where a traced value comes from: params leaf ``leaf``, sliced per scan step or not."""

    leaf: int
    stacked: bool


@dataclasses.dataclass
class Kernel:
    """One parameterised linear map reading a site.

    Attributes:
        leaf: index of its params leaf.
        stacked: the leaf is sliced along axis 0, one slice per iteration of a layer scan.
        fan_in: number of inputs each output sums over.
        activation: what follows it (``"tanh"``, ``"relu"``, ``"sigmoid"``, ``"linear"`` or
            ``"other"``).
        bias: params leaf of the bias added to its output, if any.
        act_key: where the activation is computed (to measure its saturation), if found.
        name_stack: the module name stack of the op (Flax Linen), or ``""``.
    """

    leaf: int
    stacked: bool
    fan_in: int
    activation: str
    bias: int | None
    act_key: tuple[tuple[int, ...], int] | None
    name_stack: str


@dataclasses.dataclass
class Site:
    """A probed value (see the module docstring).

    Attributes:
        key: ``(path, var)``: the jaxpr it lives in (eqn indices from the top) and its variable.
        shape: its shape within one evaluation of its jaxpr.
        scans: ``(length, kind)`` of every enclosing scan, outermost first; kind is
            ``"layers"`` or ``"time"``.
        kernels: the linear maps that read it (empty for the output site).
        branch: True for a site off the main path (inside a residual branch).
        carry: True if it is a scan's carried state (the recurrent state of a time scan).
        output: True for the output of the last top-level linear map.
    """

    key: Key
    shape: tuple[int, ...]
    scans: tuple[tuple[int, str], ...]
    kernels: list[Kernel]
    branch: bool = False
    carry: bool = False
    output: bool = False

    @property
    def kind(self) -> str:
        """``"time"`` if inside a recurrence through time, else ``"depth"``."""
        return "time" if any(k == "time" for _, k in self.scans) else "depth"


@dataclasses.dataclass
class Forget:
    """An LSTM forget gate found in a time scan: ``mul(σ(z), c_prev)`` with ``c_prev`` carried."""

    key: tuple[tuple[int, ...], int]  # the logistic eqn
    scans: tuple[tuple[int, str], ...]
    units: int
    per_unit: int  # pre-activations per unit in one step (batch size)


@dataclasses.dataclass
class Program:
    """What :func:`analyse` finds: sites in data-flow order, forget gates, activation eqns."""

    sites: list[Site]
    forgets: list[Forget]
    acts: dict[tuple[tuple[int, ...], int], str]


def _is_float(v: Any) -> bool:
    return hasattr(v, "aval") and np.issubdtype(getattr(v.aval, "dtype", np.int32), np.floating)


def shaped(v: Var) -> jax.core.ShapedArray:
    """The abstract value of a traced variable: an array's shape and dtype."""
    aval = v.aval
    assert isinstance(aval, jax.core.ShapedArray), aval  # sites and gates are arrays
    return aval


def _inner(eqn: Any) -> tuple[Jaxpr, list[Any]]:
    j = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    if isinstance(j, ClosedJaxpr):
        return j.jaxpr, list(j.consts)
    return j, []


def _consumers(jaxpr: Jaxpr) -> dict[Var, list[int]]:
    out: dict[Var, list[int]] = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if isinstance(v, Var):
                out.setdefault(v, []).append(i)
    return out


def _activation_of(eqn: Any) -> str | None:
    name = eqn.primitive.name
    if name == "tanh":
        return "tanh"
    if name == "logistic":
        return "sigmoid"
    if name == "max" and any(
        isinstance(v, Literal) and np.all(np.asarray(v.val) == 0.0) for v in eqn.invars
    ):
        return "relu"
    if name in ("custom_jvp_call", "jit", "pjit") and len(eqn.outvars) == 1:
        inner, _ = _inner(eqn)
        if inner is not None and len(inner.eqns) <= 3:  # a wrapped activation, e.g. jax.nn.relu
            for e in inner.eqns:
                act = _activation_of(e)
                if act is not None:
                    return act
    return None


def _fan_in(eqn: Any, kernel_pos: int) -> int:
    shape = eqn.invars[kernel_pos].aval.shape
    if eqn.primitive.name == "dot_general":
        (lc, rc), _ = eqn.params["dimension_numbers"]
        dims = lc if kernel_pos == 0 else rc
        return int(np.prod([shape[d] for d in dims])) if dims else 1
    rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, spatial...)
    return int(np.prod([shape[d] for d in rhs_spec[1:]]))


class _Walker:
    def __init__(self) -> None:
        self.sites: dict[Key, Site] = {}
        self.forgets: list[Forget] = []
        self.acts: dict[tuple[tuple[int, ...], int], str] = {}
        self.order: list[Key] = []
        self.by_jaxpr: dict[tuple[int, ...], tuple[Jaxpr, list[Key]]] = {}
        self.origins: dict[Var, Origin] = {}
        self.last_linear: tuple[Var, Key] | None = None

    def walk(self, jaxpr: Jaxpr, path: tuple[int, ...], scans: tuple[tuple[int, str], ...]) -> None:
        origins = self.origins
        users = _consumers(jaxpr)
        self.by_jaxpr.setdefault(path, (jaxpr, []))
        for i, eqn in enumerate(jaxpr.eqns):
            name = eqn.primitive.name
            ins = [origins.get(v) if isinstance(v, Var) else None for v in eqn.invars]
            if name in _PASS and ins and ins[0] is not None:
                origins[eqn.outvars[0]] = ins[0]
            elif name in _CALLS:
                inner, _ = _inner(eqn)
                for iv, o in zip(inner.invars, ins, strict=False):
                    if o is not None:
                        origins[iv] = o
                self.walk(inner, (*path, i), scans)
            elif name == "scan":
                self._scan(eqn, ins, (*path, i), scans)
            elif name in _LINEAR_MAPS:
                self._linear(jaxpr, users, eqn, i, ins, path, scans)

    def _scan(self, eqn: Any, ins: list[Origin | None], path: tuple[int, ...], scans: Any) -> None:
        body: Jaxpr = eqn.params["jaxpr"].jaxpr
        nc, ncar = scan_counts(eqn.params)
        for j, (iv, o) in enumerate(zip(body.invars, ins, strict=True)):
            if o is not None:
                self.origins[iv] = Origin(o.leaf, True) if j >= nc + ncar else o
        before = set(self.sites)
        length = int(eqn.params["length"])
        self.walk(body, path, (*scans, (length, "pending")))
        new = [k for k in self.sites if k not in before]
        stacked = any(kn.stacked for k in new if k[0] == path for kn in self.sites[k].kernels)
        kind = "layers" if stacked else "time"
        depth = len(scans)
        for k in new:
            s = self.sites[k]
            s.scans = tuple((n, kind if d == depth else kk) for d, (n, kk) in enumerate(s.scans))
            if k[0] == path and k[1] in body.invars[nc : nc + ncar]:
                s.carry = True
        for f in self.forgets:
            if f.key[0][: len(path)] == path:
                f.scans = tuple(
                    (n, kind if d == depth else kk) for d, (n, kk) in enumerate(f.scans)
                )
        if kind == "time":
            self._find_forget(body, path, (*scans, (length, "time")), nc, ncar)

    def _find_forget(
        self, body: Jaxpr, path: tuple[int, ...], scans: Any, nc: int, ncar: int
    ) -> None:
        carried = set(body.invars[nc : nc + ncar])
        producer = {v: i for i, e in enumerate(body.eqns) for v in e.outvars}
        for eqn in body.eqns:
            if eqn.primitive.name != "mul" or len(eqn.invars) != 2:
                continue
            a, b = eqn.invars
            for gate, prev in ((a, b), (b, a)):
                if prev not in carried or not isinstance(gate, Var):
                    continue
                j = producer.get(gate)
                while j is not None and body.eqns[j].primitive.name in _PASS:
                    src = body.eqns[j].invars[0]
                    j = producer.get(src) if isinstance(src, Var) else None
                if j is not None and body.eqns[j].primitive.name == "logistic":
                    shape = shaped(body.eqns[j].outvars[0]).shape
                    units, per_unit = int(shape[-1]), int(np.prod(shape[:-1]))
                    self.forgets.append(Forget((path, j), scans, units, per_unit))
                    return

    def _linear(
        self,
        jaxpr: Jaxpr,
        users: dict[Var, list[int]],
        eqn: Any,
        i: int,
        ins: list[Origin | None],
        path: tuple[int, ...],
        scans: Any,
    ) -> None:
        lhs_o, rhs_o = ins[0], ins[1]
        if (lhs_o is None) == (rhs_o is None):
            return
        kpos = 1 if rhs_o is not None else 0
        x = eqn.invars[1 - kpos]
        if not isinstance(x, Var) or not _is_float(x):
            return
        origin = rhs_o if kpos == 1 else lhs_o
        assert origin is not None
        act, bias, act_i = self._follow(jaxpr, users, eqn.outvars[0])
        kernel = Kernel(
            leaf=origin.leaf,
            stacked=origin.stacked,
            fan_in=_fan_in(eqn, kpos),
            activation=act,
            bias=bias,
            act_key=None if act_i is None else (path, act_i),
            name_stack=str(eqn.source_info.name_stack),
        )
        if act_i is not None:
            self.acts[(path, act_i)] = act
        key: Key = (path, x)
        if key not in self.sites:
            self.sites[key] = Site(key, tuple(shaped(x).shape), tuple(scans), [])
            self.order.append(key)
            self.by_jaxpr[path][1].append(key)
        self.sites[key].kernels.append(kernel)
        if not scans:
            self.last_linear = (eqn.outvars[0], key)

    def _follow(
        self, jaxpr: Jaxpr, users: dict[Var, list[int]], var: Var
    ) -> tuple[str, int | None, int | None]:
        """The activation after ``var`` (through linear ops), the bias added, the act's eqn."""
        bias = None
        frontier, seen = [var], set()
        for _ in range(8):
            nxt = []
            for v in frontier:
                for j in users.get(v, []):
                    if j in seen:
                        continue
                    seen.add(j)
                    e = jaxpr.eqns[j]
                    act = _activation_of(e)
                    if act is not None:
                        return act, bias, j
                    if e.primitive.name in _LINEAR_MAPS:
                        return "linear", bias, None  # straight into the next linear map
                    if e.primitive.name in _LINEAR:
                        if e.primitive.name == "add" and bias is None:
                            bias = self._bias_origin(jaxpr, e, v)
                        nxt.extend(e.outvars)
                    else:
                        return "other", bias, None
            if not nxt:
                break
            frontier = nxt
        return "linear", bias, None

    def _bias_origin(self, jaxpr: Jaxpr, eqn: Any, v: Var) -> int | None:
        other = [w for w in eqn.invars if w is not v and isinstance(w, Var)]
        if not other:
            return None
        producer = {w: e for e in jaxpr.eqns for w in e.outvars}
        w = other[0]
        for _ in range(6):
            if w in self.origins:
                return self.origins[w].leaf
            e = producer.get(w)
            if e is None or e.primitive.name not in _PASS or not isinstance(e.invars[0], Var):
                return None
            w = e.invars[0]
        return None


def _reaches(jaxpr: Jaxpr, users: dict[Var, list[int]], start: Var, block: Var | None) -> set[Var]:
    seen, todo = {start}, [start]
    while todo:
        v = todo.pop()
        for j in users.get(v, []):
            for w in jaxpr.eqns[j].outvars:
                if w is not block and w not in seen:
                    seen.add(w)
                    todo.append(w)
    return seen


def _mark_branches(walker: _Walker) -> None:
    for jaxpr, keys in walker.by_jaxpr.values():
        if len(keys) < 2:
            continue
        users = _consumers(jaxpr)
        outs = {v for v in jaxpr.outvars if isinstance(v, Var)}
        main = keys[0][1]
        for key in keys[1:]:
            v = key[1]
            depends = v in _reaches(jaxpr, users, main, None)
            bypass = bool(_reaches(jaxpr, users, main, v) & outs)
            if depends and bypass:
                walker.sites[key].branch = True
            else:
                main = v


def analyse(
    fn: Callable[..., Any], n_params: int, leaves: list[Any]
) -> tuple[ClosedJaxpr, Program]:
    """Traces ``fn(*leaves)`` (the first ``n_params`` leaves are params) and finds its sites.

    Args:
        fn: a function of flat leaves returning a scalar.
        n_params: how many of ``leaves`` are params leaves.
        leaves: example arguments.

    Returns:
        The closed jaxpr and the :class:`Program`.
    """
    closed = jax.make_jaxpr(fn)(*leaves)
    jaxpr = closed.jaxpr
    walker = _Walker()
    walker.origins.update({v: Origin(i, False) for i, v in enumerate(jaxpr.invars[:n_params])})
    walker.walk(jaxpr, (), ())
    _mark_branches(walker)
    sites = [walker.sites[k] for k in walker.order]
    if walker.last_linear is not None:
        out_var, key = walker.last_linear
        if not walker.sites[key].branch:
            shape = tuple(shaped(out_var).shape)
            sites.append(Site((key[0], out_var), shape, (), [], output=True))
    return closed, Program(sites, walker.forgets, walker.acts)
