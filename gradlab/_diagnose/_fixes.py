"""Fixes as edits of the params: rescale a kernel, shift some bias entries.

A :class:`Fix` says what to change in the lecture's terms and carries the edits that make the
change on the params the diagnosis measured, so the diagnosis can be re-run with it applied.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab._diagnose._measure import Measured, split


@dataclasses.dataclass(frozen=True)
class Scale:
    """Multiply params leaf ``leaf`` (or its slice ``index`` along axis 0) by ``factor``."""

    leaf: int
    index: int | None
    factor: float

    def __call__(self, v: jax.Array) -> jax.Array:
        if self.index is None:
            return v * self.factor
        return v.at[self.index].multiply(self.factor)


@dataclasses.dataclass(frozen=True)
class Shift:
    """Add ``delta`` to the entries of params leaf ``leaf`` where ``mask`` is True."""

    leaf: int
    mask: np.ndarray = dataclasses.field(repr=False, compare=False)
    delta: float = 0.0

    def __call__(self, v: jax.Array) -> jax.Array:
        return v + jnp.asarray(self.mask, v.dtype) * self.delta


@dataclasses.dataclass(frozen=True)
class Fix:
    """A suggested change of the model's initialisation, and its edits of the params.

    Attributes:
        description: what to change, in the lecture's terms.
        edits: the edits (:class:`Scale`, :class:`Shift`) of the measured params.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradlab.flow import diagnose
        >>> f = lambda ws, x: jnp.sum(jnp.tanh(jnp.tanh(jnp.tanh(x @ ws[0]) @ ws[1]) @ ws[2]))
        >>> ws = [jnp.eye(4) * 0.01] * 3  # each layer shrinks the gradient 100x
        >>> fix = diagnose(f, ws, jnp.ones((2, 4))).fixes[0]
        >>> fixed = fix.apply(ws)  # the params with the suggested initialisation
        >>> diagnose(f, fixed, jnp.ones((2, 4))).ok
        True
    """

    description: str
    edits: tuple[Scale | Shift, ...]

    def apply(self, params: Any) -> Any:
        """Returns ``params`` with the edits applied (same structure).

        Example:
            >>> import jax.numpy as jnp
            >>> Fix("nothing to change", ()).apply({"w": jnp.ones(2)})["w"].tolist()
            [1.0, 1.0]
        """
        return apply_edits(params, self.edits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary.

        Example:
            >>> Fix("nothing to change", ()).to_dict()
            {'description': 'nothing to change', 'edits': 0}
        """
        return {"description": self.description, "edits": len(self.edits)}


def apply_edits(params: Any, edits: tuple[Scale | Shift, ...]) -> Any:
    """Applies edits to a params pytree (leaf numbers as in the diagnosis)."""
    s, values = split(params, floats_only=True)
    values = list(values)
    for e in edits:
        values[e.leaf] = e(values[e.leaf])
    return s.rebuild(values)


def apply_stacked(values: list[Any], edits: tuple[Scale | Shift, ...]) -> list[Any]:
    """Applies edits to params leaves stacked along a leading axis (one slice per init)."""
    out = [jnp.asarray(v) for v in values]
    for e in edits:
        out[e.leaf] = jax.vmap(e)(out[e.leaf])
    return out


def forget_bias_mask(m: Measured, forget: int) -> tuple[int, np.ndarray] | None:
    """The params entries that are the forget gate's bias: ``(leaf, mask)``, or None.

    At the first step the carried state does not depend on the params yet, so
    ``∂(Σ z_f,1)/∂θ`` equals the number of pre-activations per unit (the batch) exactly at the
    forget gate's bias entries, and is data-dependent at the weights.
    """
    f = m.program.forgets[forget]
    key = ("forget", forget)
    if key not in m.prepared.programs:  # compiled once per traced model
        interp = m.interp
        shapes = interp.probe_shapes()

        def zsum(params: list[Any], args: list[Any]) -> jax.Array:
            probes = {i: jnp.zeros(s, d) for i, (s, d) in shapes.items()}
            _, rec = interp([*params, *args], probes)
            return rec["forget"][forget][(0,) * len(f.scans)][2]

        m.prepared.programs[key] = jax.jit(jax.grad(zsum))
    params0 = [jnp.asarray(v[0]) for v in m.values]
    grads = m.prepared.programs[key](params0, m.first_args)
    for leaf, g in enumerate(grads):
        mask = np.isclose(np.asarray(g, dtype=np.float64), f.per_unit, rtol=1e-4, atol=0.0)
        if int(mask.sum()) == f.units:
            return leaf, mask
    return None
