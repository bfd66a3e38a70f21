"""Running a traced program with zero probes added at its sites, and measuring it.

:class:`Interpreter` evaluates the jaxpr found by :func:`gradlab._diagnose._program.analyse`
equation by equation, adds a probe to every site right where it is computed (so every reader
sees ``h + p``; with ``p = 0`` the output is unchanged and ``∂L/∂p = ∂L/∂h``), and records the
norms of the sites, the saturation of the activations and the forget-gate pre-activations.
Scans are re-run with :func:`jax.lax.scan` with the probes of their sites as extra ``xs`` and
the records as extra ``ys``, so a scan over layers gives one probe per layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal, Var

from gradlab._diagnose._program import _CALLS, Program, _inner, shaped
from gradlab._jax_compat import scan_counts

Records = dict[str, dict[int, Any]]


def _log10_norm(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """``log10 ‖x‖`` over ``axes``, scaled by the max so the squares cannot overflow.

    The same as ``gradlab.flow._programs._log10_norm``, written with ``lax`` so that tracing it at
    every site of a deep model stays cheap: ``-inf`` for an exactly zero ``x``, ``+inf`` if it
    holds an ``inf`` or a ``nan`` (an overflow).
    """
    ax = lax.abs(lax.stop_gradient(x))
    m = lax.reduce_max(ax, axes) if axes else ax
    pos = m > 0
    safe = lax.select(pos, m, lax.full_like(m, 1))
    keep = [i for i in range(x.ndim) if i not in axes]
    scaled = ax / lax.broadcast_in_dim(safe, x.shape, tuple(keep))
    s = lax.reduce_sum(scaled * scaled, axes) if axes else scaled * scaled
    out = (lax.log(safe) + 0.5 * lax.log(s)) * (1.0 / 2.302585092994046)
    out = lax.select(pos, out, lax.full_like(out, -jnp.inf))
    bad = (m != m) | (m == jnp.inf)  # nan or inf entries
    return lax.select(bad, lax.full_like(out, jnp.inf), out)


def _stat(y: jax.Array, kind: str) -> jax.Array:
    """Saturated fraction (tanh, sigmoid) or fraction of units inactive on the whole batch."""
    if kind == "tanh":
        return jnp.mean(jnp.abs(y) > 0.96)  # |z| > 1.95: tanh' < 0.08
    if kind == "sigmoid":
        return jnp.mean((y < 0.047) | (y > 0.953))  # |z| > 3: σ' < 0.045
    if y.ndim == 0:
        return (y == 0).astype(jnp.float32)
    return jnp.mean(jnp.all(y == 0, axis=tuple(range(y.ndim - 1))))


def _norm(x: jax.Array) -> jax.Array:
    if x.ndim == 0:
        return _log10_norm(x[None], (0,))
    return _log10_norm(x, tuple(range(x.ndim)))


class Interpreter:
    """Evaluates a closed jaxpr with probes at the sites of a :class:`Program`."""

    def __init__(self, closed: ClosedJaxpr, program: Program) -> None:
        self.closed = closed
        self.program = program
        self.site_at = {s.key: i for i, s in enumerate(program.sites)}
        self.act_at = {k: i for i, k in enumerate(program.acts)}
        self.forget_at = {f.key: i for i, f in enumerate(program.forgets)}

    def probe_shapes(self) -> dict[int, tuple[tuple[int, ...], Any]]:
        """Shape (scan lengths first) and dtype of every site's probe."""
        out = {}
        for i, s in enumerate(self.program.sites):
            lead = tuple(n for n, _ in s.scans)
            out[i] = ((*lead, *s.shape), shaped(s.key[1]).dtype)
        return out

    def __call__(self, leaves: list[Any], probes: dict[int, jax.Array]) -> tuple[Any, Records]:
        j = self.closed
        outs, rec = self._run(j.jaxpr, list(j.consts), leaves, (), probes)
        return outs[0], rec

    def _inside(self, path: tuple[int, ...], probes: dict[int, Any]) -> dict[int, Any]:
        n = len(path)
        return {i: p for i, p in probes.items() if self.program.sites[i].key[0][:n] == path}

    def _run(
        self,
        jaxpr: Jaxpr,
        consts: list[Any],
        args: list[Any],
        path: tuple[int, ...],
        probes: dict[int, Any],
    ) -> tuple[list[Any], Records]:
        env: dict[Var, Any] = {}
        rec: Records = {"h": {}, "act": {}, "forget": {}}

        def read(v: Any) -> Any:
            return v.val if isinstance(v, Literal) else env[v]

        def write(v: Any, x: Any) -> None:
            if not isinstance(v, Var) or type(v).__name__ == "DropVar":
                return
            sid = self.site_at.get((path, v))
            if sid is not None and sid in probes:
                x = x + probes[sid].astype(x.dtype)
                rec["h"][sid] = _norm(x)
            env[v] = x

        for v, x in zip(jaxpr.constvars, consts, strict=True):
            env[v] = x
        for v, x in zip(jaxpr.invars, args, strict=True):
            write(v, x)
        for i, eqn in enumerate(jaxpr.eqns):
            invals = [read(v) for v in eqn.invars]
            name = eqn.primitive.name
            sub = (*path, i)
            if name in _CALLS:
                inner, c = _inner(eqn)
                outs, r = self._run(inner, c, invals, sub, probes)
                _merge(rec, r)
            elif name == "scan" and (self._inside(sub, probes) or _has(self, sub)):
                outs, r = self._scan(eqn, invals, sub, probes)
                _merge(rec, r)
            else:
                with eqn.ctx.manager:
                    outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
                if not eqn.primitive.multiple_results:
                    outs = [outs]
            for v, x in zip(eqn.outvars, outs, strict=True):
                write(v, x)
            if (path, i) in self.act_at:
                rec["act"][self.act_at[(path, i)]] = _stat(outs[0], self.program.acts[(path, i)])
            if (path, i) in self.forget_at:
                z = invals[0]
                rec["forget"][self.forget_at[(path, i)]] = jnp.stack(
                    [jnp.mean(z), jnp.std(z), jnp.sum(z)]
                )
        return [read(v) for v in jaxpr.outvars], rec

    def _scan(
        self, eqn: Any, invals: list[Any], path: tuple[int, ...], probes: dict[int, Any]
    ) -> tuple[list[Any], Records]:
        p = eqn.params
        body: ClosedJaxpr = p["jaxpr"]
        nc, ncar = scan_counts(p)
        consts, init, xs = invals[:nc], invals[nc : nc + ncar], invals[nc + ncar :]
        inside = self._inside(path, probes)

        def step(carry: list[Any], x: tuple[list[Any], dict[int, Any]]) -> tuple[Any, Any]:
            xs_t, probes_t = x
            outs, r = self._run(
                body.jaxpr, list(body.consts), [*consts, *carry, *xs_t], path, probes_t
            )
            return outs[:ncar], (outs[ncar:], r)

        carry, (ys, rec) = jax.lax.scan(
            step,
            init,
            (xs, inside),
            length=p["length"],
            reverse=p["reverse"],
            unroll=p["unroll"],
        )
        return [*carry, *ys], rec


def _has(interp: Interpreter, path: tuple[int, ...]) -> bool:
    n = len(path)
    keys = list(interp.act_at) + list(interp.forget_at)
    return any(k[0][:n] == path for k in keys)


def _merge(rec: Records, other: Records) -> None:
    for k, v in other.items():
        rec[k].update(v)


def measure_fn(
    interp: Interpreter, stacked_leaves: frozenset[int]
) -> Callable[[list[Any], list[Any]], dict[str, Any]]:
    """The measurement of one (params, batch): norms of ``∂L/∂h``, ``h``, ``∂L/∂θ``; activations.

    Args:
        interp: the interpreter.
        stacked_leaves: params leaves sliced per layer along axis 0 (norms per slice).

    Returns:
        ``measure(param_leaves, arg_leaves) -> dict`` of ``log10`` norms and statistics.
    """
    shapes = interp.probe_shapes()

    def measure(params: list[Any], args: list[Any]) -> dict[str, Any]:
        probes = {i: jnp.zeros(shape, dtype) for i, (shape, dtype) in shapes.items()}

        def total(probes: dict[int, Any], params: list[Any]) -> tuple[Any, Any]:
            loss, rec = interp([*params, *args], probes)
            return loss, (rec, loss)

        (g_probe, g_params), (rec, loss) = jax.grad(total, (0, 1), has_aux=True)(probes, params)
        g = {}
        for i, (shape, _) in shapes.items():
            lead = len(interp.program.sites[i].scans)
            axes = tuple(range(lead, len(shape)))
            x = g_probe[i]
            g[i] = _log10_norm(x, axes) if axes else _log10_norm(x[..., None], (-1,))
        w = {}
        for i, gl in enumerate(g_params):
            if not hasattr(gl, "ndim"):
                continue
            if i in stacked_leaves and gl.ndim > 1:
                w[i] = _log10_norm(gl, tuple(range(1, gl.ndim)))
            else:
                w[i] = _norm(gl)
        return {
            "g": g,
            "h": rec["h"],
            "act": rec["act"],
            "forget": rec["forget"],
            "w": w,
            "loss": loss,
        }

    return measure
