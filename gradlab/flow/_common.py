"""Argument checks shared by the depth and time profiles, and how initialisers are taken.

The checks are :mod:`gradlab._validate`'s, under the names the profiles use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab import _validate
from gradlab import init as _init
from gradlab._errors import InputError

Initializer = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class _Init:
    """An initialiser as flow uses it: the callable, its name, and its spec when gradlab made it."""

    fn: Initializer
    name: str
    spec: _init.InitSpec | None


def _as_init(value: str | Initializer, what: str = "init") -> _Init:
    """Takes a name (resolved by :func:`gradlab.init.get`), a gradlab initialiser or a callable.

    A callable that gradlab did not make has no :class:`gradlab.init.InitSpec`, so no theory line.
    """
    if isinstance(value, _init.InitSpec):
        return _Init(value, value.name, value)
    if isinstance(value, str):
        spec = _init.get(value)
        return _Init(spec, spec.name, spec)
    if callable(value):
        return _Init(value, getattr(value, "__name__", type(value).__name__), None)
    raise InputError(
        f"{what} must be an initialiser name (gradlab.init.NAMES, e.g. 'he_normal') or a "
        f"callable (key, shape, dtype) -> Array, got {type(value).__name__}; pass e.g. "
        "gradlab.init.he_normal."
    )


def _dtype(name: str) -> Any:
    _validate.choice("dtype", name, ("float32", "float64"))
    return jnp.float64 if name == "float64" else jnp.float32


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    return _validate.integer(name, value, minimum)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    _validate.choice(name, value, choices)


def _as_key(key: int | jax.Array) -> jax.Array:
    if isinstance(key, int | np.integer):
        return jax.random.key(int(key))
    return key


def _name(x: Any) -> Any:
    if isinstance(x, str | int | float | bool) or x is None:
        return x
    return getattr(x, "__name__", repr(x))
