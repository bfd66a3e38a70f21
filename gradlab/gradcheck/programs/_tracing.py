"""JAX's errors about tracing ``f``, as :class:`~gradlab.CheckInputError` that says what to do."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

from gradlab._errors import CheckInputError

TRACING_ERRORS: tuple[type[Exception], ...] = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
)


def trace_error_hint(e: Exception) -> CheckInputError:
    """The error for a function JAX cannot trace."""
    return CheckInputError(
        "f cannot be traced by JAX, so it cannot be jitted or vmapped: "
        f"{type(e).__name__}: {str(e).splitlines()[0]}\n"
        "Fix: use jax.numpy and jax.lax inside f (jnp.where or lax.cond instead of Python "
        "`if` on array values, no NumPy or .item() on traced arrays). Non-array settings "
        "(flags, strings) may be passed as extra positional args: they are kept static."
    )


def no_jvp_hint(e: Exception) -> CheckInputError:
    """The error for forward mode through a ``jax.custom_vjp`` function."""
    return CheckInputError(
        "forward mode (jax.jvp) is not defined for f: it calls a jax.custom_vjp function, "
        f"which has a reverse-mode rule only ({e}). Fix: check it with autodiff='reverse', or "
        "give it a forward rule with jax.custom_jvp (its reverse mode then comes for free)."
    )


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """JAX's errors about ``f`` as :class:`CheckInputError`s that say what to do."""
    try:
        yield
    except TRACING_ERRORS as e:
        raise trace_error_hint(e) from e
    except NotImplementedError as e:
        raise CheckInputError(
            "f cannot be evaluated under jax.vmap, which the checker uses to run "
            f"perturbations in parallel: {e}\nFix: give custom primitives a batching "
            "rule, or use jax.pure_callback(..., vmap_method='sequential')."
        ) from e
    except TypeError as e:
        if "custom_vjp" in str(e) and "jvp" in str(e):
            raise no_jvp_hint(e) from e
        raise
