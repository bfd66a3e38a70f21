"""Helpers shared by the modules of :mod:`gradlab.nn`: activations, dtypes, shape checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

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
"""Activations known by name. ``"gelu"`` is the exact (erf) GELU."""


def get_activation(activation: str | Activation) -> Activation:
    """Returns the activation function for a name in :data:`ACTIVATIONS` or a callable.

    Args:
        activation: ``"tanh"``, ``"relu"``, ``"linear"``, ``"sigmoid"``, ``"gelu"`` or a
            callable ``Array -> Array``.

    Returns:
        The function.

    Raises:
        ValueError: for an unknown name or a non-callable.

    Example:
        >>> import jax.numpy as jnp
        >>> get_activation("relu")(jnp.array([-1.0, 2.0]))
        Array([0., 2.], dtype=float32)
    """
    if isinstance(activation, str):
        try:
            return ACTIVATIONS[activation]
        except KeyError:
            raise ValueError(
                f"Unknown activation {activation!r}. Use one of {sorted(ACTIVATIONS)} "
                "or pass a callable such as jax.nn.silu."
            ) from None
    if not callable(activation):
        raise ValueError(
            f"activation must be a name in {sorted(ACTIVATIONS)} or a callable, "
            f"got {type(activation).__name__}."
        )
    return activation


def promote(arrays: Sequence[Array | None], dtype: DTypeLike | None) -> list[Array | None]:
    """Casts arrays to ``dtype``, or to their common result type when ``dtype`` is None."""
    if dtype is None:
        dtype = jnp.result_type(*[a for a in arrays if a is not None])
    return [None if a is None else jnp.asarray(a, dtype) for a in arrays]


def check_features(x: Array, features: int, name: str, what: str = "x") -> None:
    """Raises a ValueError unless ``x`` has rank >= 1 and ``features`` entries on its last axis."""
    if x.ndim < 1 or x.shape[-1] != features:
        raise ValueError(
            f"{name}: {what} must have shape (..., {features}) (last axis = in_features), "
            f"got {x.shape}."
        )


def check_probes(probes: Array | None, expected: tuple[int, ...], name: str) -> None:
    """Raises a ValueError unless ``probes`` is None or has the expected shape."""
    if probes is not None and tuple(probes.shape) != tuple(expected):
        raise ValueError(
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
    """Raises a ValueError unless ``xs`` is ``(batch, T, features)``."""
    if xs.ndim != 3 or xs.shape[-1] != features:
        raise ValueError(
            f"{name}: xs must have shape (batch, T, {features}) (batch-major sequences), "
            f"got {xs.shape}."
        )


def check_state(state: Array, shape: tuple[int, ...], name: str, what: str) -> None:
    """Raises a ValueError unless ``state`` has the given shape."""
    if tuple(state.shape) != shape:
        raise ValueError(f"{name}: {what} must have shape {shape}, got {tuple(state.shape)}.")
