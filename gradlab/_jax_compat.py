"""Reading JAX's internal program parameters the same way on every supported JAX version.

gradlab walks jaxprs (the checker's promotion, the diagnosis); the parameters of some
primitives changed between JAX releases. The helpers here hide those changes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["scan_counts"]


def scan_counts(params: dict[str, Any]) -> tuple[int, int]:
    """How many of a ``scan``'s inputs are constants and how many are carries.

    The inputs are the constants, then the carries, then the scanned arrays. JAX 0.11
    replaced the ``num_consts``/``num_carry`` parameters by ``ft_in``, a flat tree of those
    three groups whose lengths count their leaves.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda a, xs: jax.lax.scan(lambda h, x: (a * h + x, h), 0.0, xs)
        >>> eqn = jax.make_jaxpr(f)(1.0, jnp.ones(3)).jaxpr.eqns[-1]
        >>> scan_counts(eqn.params)
        (1, 1)
    """
    if "ft_in" in params:
        consts, carry, _ = params["ft_in"].unpack()
        return len(consts), len(carry)
    return int(params["num_consts"]), int(params["num_carry"])
