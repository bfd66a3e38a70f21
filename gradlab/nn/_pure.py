"""The pure form of an NNX module: ``(apply_fn, params)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flax import nnx
from flax.nnx import filterlib

from gradlab._errors import InputError


def _methods(module: nnx.Module) -> list[str]:
    """``__call__`` and the public methods the module's own classes define (not nnx's)."""
    base = set(dir(nnx.Module))
    names = [
        n
        for n in dir(type(module))
        if not n.startswith("_") and n not in base and callable(getattr(type(module), n))
    ]
    return ["__call__", *sorted(names)] if callable(module) else sorted(names)


def pure(
    module: nnx.Module, *, wrt: filterlib.Filter = nnx.Param, method: str = "__call__"
) -> tuple[Callable[..., Any], nnx.State]:
    """Splits a module into a pure function and its parameters.

    ``params`` is the :class:`flax.nnx.State` of the module's ``nnx.Param`` variables, a pytree of
    arrays that ``jax.grad``, ``jax.jit``, optax and :func:`gradlab.check` take as it is.
    ``apply_fn(params, *args, **kwargs)`` rebuilds the module from ``params`` and calls its
    method ``method`` (``__call__`` by default; e.g. ``"with_hiddens"`` or ``"with_gates"``).

    Every other variable (batch statistics, RNG state, ...) is held fixed in the closure as it
    was when ``pure`` was called; whatever the call changes in it is discarded, so ``apply_fn``
    is a pure function of its arguments and can be jitted, vmapped and differentiated.

    Args:
        module: any ``nnx.Module``.
        wrt: a Flax filter choosing which variables go into ``params`` (default ``nnx.Param``).
        method: the name of the method ``apply_fn`` calls.

    Returns:
        ``(apply_fn, params)``.

    Raises:
        InputError: if the module has no method called ``method``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from gradlab.nn import MLP, pure
        >>> model = MLP(3, 1, width=8, depth=2, rngs=nnx.Rngs(0))
        >>> apply_fn, params = pure(model)
        >>> x = jnp.ones((4, 3))
        >>> loss = lambda p, x: jnp.mean(apply_fn(p, x) ** 2)
        >>> grads = jax.jit(jax.grad(loss))(params, x)
        >>> grads["w_hidden"].shape
        (2, 8, 8)
        >>> with_hiddens, _ = pure(model, method="with_hiddens")
        >>> with_hiddens(params, x)[1].shape
        (3, 4, 8)
    """
    methods = _methods(module)
    if not isinstance(method, str) or method not in methods:
        raise InputError(
            f"pure: {type(module).__name__} has no method {method!r}. Pass method= one of "
            f"{methods}."
        )
    graphdef, params, *rest = nnx.split(module, wrt, ...)

    def apply_fn(params: nnx.State, *args: Any, **kwargs: Any) -> Any:
        # copy=True: fresh Variables every call, so a call that writes to its state (batch
        # statistics, RNG counters) writes to the copy, also under jit, never to `rest`.
        model = nnx.merge(graphdef, params, *rest, copy=True)
        return getattr(model, method)(*args, **kwargs)

    return apply_fn, params
