"""Scoped float64 and full-precision matmuls, restored on exit (also on error)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

__all__ = ["precise"]


@contextlib.contextmanager
def precise(x64: bool = True) -> Iterator[None]:
    """Enables float64 and ``"highest"`` matmul precision inside the block only.

    Both are JAX's own context managers, so the caller's settings come back when the block
    exits, normally or by an exception. TF32 and bfloat16 passes can therefore never leak
    into a gradient check.

    Args:
        x64: Enable float64 (the default); ``False`` disables it for the float32 fallback
            on backends without float64, still at full matmul precision.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> before = jax.config.jax_enable_x64
        >>> with precise():
        ...     print(jnp.ones(1).dtype)
        float64
        >>> jax.config.jax_enable_x64 == before
        True
    """
    with jax.enable_x64(x64), jax.default_matmul_precision("highest"):
        yield
