"""What promotion changes in ``f`` at given arguments (traced, not run): the precision notes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gradlab.gradcheck.programs._promote import (
    Promotion,
    _lowest_inside,
    _short,
    promoted,
)

__all__ = ["promotion_of"]


def promotion_of(f: Callable[..., Any], *args: Any) -> Promotion:
    """What :func:`promoted` changes in ``f`` at these arguments (traced, not run)."""
    log = Promotion()
    jax.eval_shape(promoted(f, rules=False, log=log), *args)
    rules = Promotion()
    with_rules = promoted(f, rules=True, log=rules)
    jax.eval_shape(with_rules, *args)
    if rules.rules and log.promoted:  # a rule re-bound from a jaxpr: JAX checks it under AD
        try:
            jax.eval_shape(_linearized(with_rules, args), *args)
        except Exception as e:  # refused again as written (f replayed from its jaxpr)
            if not any(what.startswith("f as a whole") for what in rules.kept):
                log._add(log.kept, f"f as a whole: not promotable ({_short(e)})")
            lowest = _lowest_inside(jax.make_jaxpr(f)(*args).jaxpr)
            if lowest is not None:
                log.keep_dtype(lowest)
    for what in rules.promoted:  # JAX's own rules, promoted for autodiff (traced twice)
        if what.startswith("JAX's rule"):
            log.promoted[what] = 1
    for what, n in rules.kept.items():
        log.kept[what] = max(n, log.kept.get(what, 0))
    log.autodiff_lowest = rules.lowest  # autodiff only: the rules kept as written
    return log


def _linearized(f: Callable[..., Any], args: Sequence[Any]) -> Callable[..., Any]:
    """``f`` differentiated (forward mode) in its floating-point arguments, for a trace."""
    floating = [jnp.issubdtype(a.dtype, jnp.inexact) for a in args]

    def run(*values: Any) -> Any:
        def along(*moved: Any) -> Any:
            it = iter(moved)
            return f(*(next(it) if fl else v for v, fl in zip(values, floating, strict=True)))

        primals = [v for v, fl in zip(values, floating, strict=True) if fl]
        return jax.jvp(along, primals, [jnp.zeros_like(v) for v in primals])

    return run
