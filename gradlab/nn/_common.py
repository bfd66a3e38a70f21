"""Helpers shared by the modules of :mod:`gradlab.nn`: activations, dtypes, shape checks."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from gradlab._errors import InputError

Array = jax.Array
Activation = Callable[[Array], Array]


def _linear(x: Array) -> Array:
    return x


ACTIVATIONS: dict[str, Activation] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "linear": _linear,
    "sigmoid": jax.nn.sigmoid,
    "gelu": partial(jax.nn.gelu, approximate=False),
}
"""Activations known by name. ``"gelu"`` is the exact (erf) GELU.

Example:
    >>> import jax.numpy as jnp
    >>> from gradlab.nn import ACTIVATIONS
    >>> sorted(ACTIVATIONS)
    ['gelu', 'linear', 'relu', 'sigmoid', 'tanh']
    >>> ACTIVATIONS["relu"](jnp.array([-1.0, 2.0]))
    Array([0., 2.], dtype=float32)
"""


def get_activation(activation: str | Activation) -> Activation:
    """Returns the activation function for a name in :data:`ACTIVATIONS` or a callable.

    Args:
        activation: ``"tanh"``, ``"relu"``, ``"linear"``, ``"sigmoid"``, ``"gelu"`` or a
            callable ``Array -> Array``.

    Returns:
        The function.

    Raises:
        InputError: for an unknown name or a non-callable.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.nn import get_activation
        >>> get_activation("relu")(jnp.array([-1.0, 2.0]))
        Array([0., 2.], dtype=float32)
        >>> get_activation(jax.nn.silu) is jax.nn.silu
        True
    """
    if isinstance(activation, str):
        try:
            return ACTIVATIONS[activation]
        except KeyError:
            raise InputError(
                f"Unknown activation {activation!r}. Use one of {sorted(ACTIVATIONS)} "
                "or pass a callable such as jax.nn.silu."
            ) from None
    if not callable(activation):
        raise InputError(
            f"activation must be a name in {sorted(ACTIVATIONS)} or a callable, "
            f"got {type(activation).__name__}. Pass a name or a function Array -> Array."
        )
    return activation


def compute_dtype(dtype: DTypeLike | None, *arrays: Array | None) -> Any:
    """``dtype`` if given, else the common result type of the arrays that are not None."""
    if dtype is not None:
        return jnp.dtype(dtype)
    return jnp.result_type(*[a for a in arrays if a is not None])


def cast(a: Array, dtype: DTypeLike) -> Array:
    """``a`` as an array of ``dtype``."""
    return jnp.asarray(a, dtype)


def cast_optional(a: Array | None, dtype: DTypeLike) -> Array | None:
    """``a`` as an array of ``dtype``, or None for None."""
    return None if a is None else jnp.asarray(a, dtype)


def check_features(x: Array, features: int, name: str, what: str = "x") -> None:
    """Raises InputError unless ``x`` has rank >= 1 and ``features`` entries on its last axis."""
    if x.ndim < 1 or x.shape[-1] != features:
        raise InputError(
            f"{name}: {what} must have shape (..., {features}) (last axis = in_features), "
            f"got {x.shape}. Reshape the input or build the model with in_features="
            f"{x.shape[-1] if x.ndim else 1}."
        )


def check_probes(probes: Array | None, expected: tuple[int, ...], name: str) -> None:
    """Raises InputError unless ``probes`` is None or has the expected shape."""
    if probes is not None and tuple(probes.shape) != tuple(expected):
        raise InputError(
            f"{name}: probes must have shape {tuple(expected)}, got {tuple(probes.shape)}. "
            "Pass zeros of that shape and differentiate with respect to them."
        )


def layer_norm(h: Array, scale: Array, bias: Array, eps: float = 1e-6) -> Array:
    """Layer normalisation over the last axis with a learnable scale and bias."""
    mean = jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
    return (h - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def value(variable: Any) -> Array | None:
    """The array held by an ``nnx.Variable`` (or None for an absent one)."""
    return None if variable is None else variable[...]


def resolve_hoist(hoist_input: bool | None) -> bool:
    """``hoist_input=None`` hoists the input matmul out of the scan except on CPU."""
    if hoist_input is None:
        return jax.default_backend() != "cpu"
    return bool(hoist_input)


def check_sequence(xs: Array, features: int, name: str) -> None:
    """Raises InputError unless ``xs`` is ``(batch, T, features)``."""
    if xs.ndim != 3 or xs.shape[-1] != features:
        raise InputError(
            f"{name}: xs must have shape (batch, T, {features}) (batch-major sequences), "
            f"got {xs.shape}. For one sequence use xs[None]; for time-major data "
            "jnp.swapaxes(xs, 0, 1)."
        )


def check_state(state: Array, shape: tuple[int, ...], name: str, what: str) -> None:
    """Raises InputError unless ``state`` has the given shape."""
    if tuple(state.shape) != shape:
        raise InputError(
            f"{name}: {what} must have shape {shape}, got {tuple(state.shape)}. "
            f"Pass an array of shape {shape} (or None for zeros)."
        )


def check_sizes(name: str, **sizes: int) -> None:
    """Raises InputError unless every size is an int >= 1."""
    bad = {k: v for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad:
        raise InputError(
            f"{name}: {', '.join(sizes)} must be integers >= 1, got "
            + ", ".join(f"{k}={v!r}" for k, v in bad.items())
            + ". Pass positive sizes."
        )
