"""``f`` at θ: its projections, their rounding scale and its gradients, in one program.

Also what a perturbed evaluation will cost (FLOPs, memory), estimated from ``f``'s jaxpr
and XLA's memory analysis, which the plan sizes its chunks by.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from gradlab._errors import CheckInputError
from gradlab._treepath import path_parts
from gradlab.gradcheck.evaluation import _kernels
from gradlab.gradcheck.planning._memory import Cost, program_cost
from gradlab.gradcheck.planning._plan import GRADIENT_FLOPS, Base
from gradlab.gradcheck.planning._problem import Problem
from gradlab.gradcheck.programs import _program_key, _stored
from gradlab.gradcheck.programs._fingerprint import fingerprint
from gradlab.gradcheck.programs._runner import (
    Items,
    compile_tier,
    compile_tiered,
    executable_key,
    lookup,
)
from gradlab.gradcheck.programs._tracing import translated_errors

__all__ = ["evaluate", "evaluation_cost"]


def _bytes(compiled: Any) -> int:
    """Temporary plus output bytes of a compiled computation, from XLA's memory analysis."""
    mem = compiled.memory_analysis()
    if mem is None:
        return 0
    return int(mem.temp_size_in_bytes + mem.output_size_in_bytes)


def _device(tree: Any) -> jax.Device | None:
    """The one device the arrays of ``tree`` live on (None: several, or not known)."""
    found = set()
    for leaf in jax.tree_util.tree_leaves(tree):
        devices = getattr(leaf, "devices", None)
        found |= set(devices()) if devices else set()
    return found.pop() if len(found) == 1 else None


def _platform(tree: Any) -> str:
    """The platform the arrays of ``tree`` live on."""
    leaf = jax.tree_util.tree_leaves(tree)[0]
    devices = getattr(leaf, "devices", None)
    return next(iter(devices())).platform if devices else jax.devices()[0].platform


def evaluation_cost(problem: Problem, dyn: tuple[Any, ...]) -> Cost:
    """FLOPs, memory and equations of one evaluation of ``f``, from its jaxpr."""
    with translated_errors():
        return program_cost(_kernels.value.trace(problem.spec, *dyn[:3]).jaxpr)


def _gradient_items(problem: Problem, cots: Any, dyn: tuple[Any, ...], cost: Cost) -> Items:
    """The gradient program, traced (unless compiled in this process) and keyed for disk."""
    spec = problem.spec
    k = 1 if cots is None else int(jax.tree_util.tree_leaves(cots)[0].shape[0])
    flops = GRADIENT_FLOPS * k * cost.flops
    tier = compile_tier(_platform(dyn), flops, convolutions=cost.convolutions, loops=cost.loops)
    key = executable_key(_kernels.value_and_vjp, (spec,), (*dyn, cots), ())
    if lookup(key) is not None:
        return Items([key], [lambda: None], [tier], [None])
    with translated_errors():
        traced = _kernels.value_and_vjp.trace(spec, *dyn, cots)
    device = _device(dyn)
    # keyed by its own jaxpr: f's custom derivative rules are traced into it
    found = fingerprint(traced.jaxpr) if _stored.directory() and device else None
    stored = None
    if found is not None and device is not None:
        env = _program_key.environment(device, tier)
        stored = _program_key.program_key("value_and_vjp", found, (), (*dyn, cots), env)
    return Items([key], [traced.lower], [tier], [stored])


def evaluate(
    problem: Problem,
    cots: Any,
    dyn: tuple[Any, ...],
    *,
    cost: Cost | None = None,
    alongside: Items | None = None,
) -> Base:
    """``f(θ)``, its projections and gradients, with the input validated.

    One program computes them all, ``f``'s own evaluation included (no compile of ``f``
    alone): its cost and the memory of a perturbed evaluation (a forward pass) are estimated
    from ``f``'s jaxpr (:func:`~gradlab.gradcheck.planning._memory.program_cost`), which also sets
    the program's compile tier (:func:`~gradlab.gradcheck.programs._runner.compile_tier`).
    ``alongside``: other programs (the sweep's first kernels) compiled side by side with it,
    so that the cores compile them at once.
    """
    cost = evaluation_cost(problem, dyn) if cost is None else cost
    items = _gradient_items(problem, cots, dyn, cost)
    if alongside is not None:
        items = items + alongside
    with translated_errors():
        exe = compile_tiered(*items, device=_device(dyn))[0]
    start = time.perf_counter()
    out, values, scales, grads, plain = jax.block_until_ready(exe.compiled(*dyn, cots))
    seconds = time.perf_counter() - start  # f and its gradient at θ: what the sweep repeats
    plain = np.asarray(plain)
    per_grad, per_eval = _bytes(exe.compiled), cost.bytes
    for path, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
        leaf = np.asarray(leaf)
        if not np.all(np.isfinite(leaf)):
            where = "/".join(path_parts(path))
            first = np.unravel_index(int(np.argmax(~np.isfinite(leaf))), leaf.shape)
            at = f" in output {where or 'array'} at index {tuple(map(int, first))}"
            value = leaf.reshape(-1)[np.ravel_multi_index(first, leaf.shape)]
            raise CheckInputError(
                f"f(θ) = {value}{at if leaf.shape else ''}: a gradient check needs a finite "
                "value at θ. Look for log(0), 0/0 or overflow in f, or NaN in the parameters "
                "or data."
            )
    grads_np = [np.asarray(g) for g in grads]
    for leaf, g in zip(problem.checked, grads_np, strict=True):
        bad = ~np.isfinite(g)
        if bad.any():
            first = np.unravel_index(int(np.argmax(bad)), g.shape)[1:]
            raise CheckInputError(
                f"jax.grad(f) is not finite in leaf {leaf.path!r} ({int(bad.sum())} entries, "
                f"first at index {tuple(int(i) for i in first)}): the analytical gradient has "
                "NaN/Inf (e.g. sqrt or log at 0, a 0/0 in a custom rule), so there is nothing "
                "finite to compare."
            )
    out_dtype = np.result_type(*[np.asarray(x).dtype for x in jax.tree_util.tree_leaves(out)])
    return Base(
        values=np.asarray(values),
        scales=np.asarray(scales),
        grads=grads_np,
        out_dtype=str(out_dtype),
        bytes_per_eval=per_eval,
        bytes_per_grad=per_grad,
        plain=plain,
        flops_per_eval=cost.flops,
        eqns_per_eval=cost.eqns,
        grad_seconds=seconds,
    )
