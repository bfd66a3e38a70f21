"""The time scan shared by :class:`~gradlab.nn.LSTM` and :class:`~gradlab.nn.RNN`.

A recurrent module is a cell's step plus this scan. The step is split in two so that the
input part of every step can be computed before the loop ("hoisted"):

* ``project(x)``: the input part of the pre-activations, ``x W + b``, of one step's
  ``(batch, in)``; ``project_all`` does the same for the whole ``(T, batch, in)`` sequence at
  once, before the loop, when given (it may pack the products into fewer matmuls).
* ``step(carry, z, probe)``: one step from the projected input ``z``; ``probe`` (None or an
  array of the output's shape) is added to the output before it is carried to the next step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp

Array = jax.Array
Carry = TypeVar("Carry")
Projected = Any
StepFn = Callable[[Carry, Projected, Array | None], tuple[Carry, Any]]


def scan_over_time(
    step: StepFn[Carry],
    project: Callable[[Array], Projected],
    carry: Carry,
    xs: Array,
    probes: Array | None,
    *,
    project_all: Callable[[Array], Projected] | None = None,
) -> tuple[Carry, Any]:
    """Runs ``step`` over the time axis of batch-major sequences with one ``lax.scan``.

    Args:
        step: one step, ``(carry, z, probe) -> (carry, out)``; ``out`` is any pytree.
        project: the input part of one step, ``x -> z``.
        carry: the initial carry.
        xs: inputs ``(batch, T, in)``.
        probes: None or ``(batch, T, ...)``, the probe of every step.
        project_all: None to project each step inside the scan, or the input part of every
            step, ``(T, batch, in) -> z`` with a leading time axis, computed before the scan
            (the hoisted form).

    Returns:
        ``(carry_T, outs)`` with every leaf of ``outs`` batch-major, ``(batch, T, ...)``.
    """
    xs_t = jnp.swapaxes(xs, 0, 1)  # time-major (T, batch, in): the scan runs over axis 0
    hoist = project_all is not None
    seq = project_all(xs_t) if project_all is not None else xs_t
    probes_t = None if probes is None else jnp.swapaxes(probes, 0, 1)

    def body(carry: Carry, inputs: tuple[Any, Array | None]) -> tuple[Carry, Any]:
        x_or_z, probe = inputs
        return step(carry, x_or_z if hoist else project(x_or_z), probe)

    carry, outs = jax.lax.scan(body, carry, (seq, probes_t))
    return carry, jax.tree.map(lambda y: jnp.swapaxes(y, 0, 1), outs)
