"""gradlab's exceptions: one family, every message naming the problem and the fix.

``except gradlab.GradlabError`` catches everything gradlab raises on purpose. Bad arguments
raise :class:`InputError` (also a ``ValueError``); a failed gradient check raised by
:func:`gradlab.assert_check` is a :class:`GradCheckError` (also an ``AssertionError``, so
pytest reports it as a failed assertion).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradlab.gradcheck.report._report import CheckReport

__all__ = ["CheckInputError", "GradCheckError", "GradlabError", "InputError"]


class GradlabError(Exception):
    """The base of every exception gradlab raises on purpose.

    Example:
        >>> import gradlab
        >>> issubclass(gradlab.InputError, gradlab.GradlabError)
        True
    """


class InputError(GradlabError, ValueError):
    """An argument or option is invalid; the message names it and says what to pass instead.

    Example:
        >>> import gradlab
        >>> import jax.numpy as jnp
        >>> try:
        ...     gradlab.check(lambda p: jnp.sum(p**2), jnp.ones(3), eps=2.0)
        ... except gradlab.InputError as e:
        ...     print(str(e).split(";")[0])
        eps=2.0 is not a small step
    """


class CheckInputError(InputError):
    """The function or parameters given to the checker cannot be checked as they are.

    The message names the problem and how to fix it.

    Example:
        >>> import jax.numpy as jnp
        >>> import gradlab
        >>> try:
        ...     gradlab.check(lambda p: p.sum(), jnp.arange(3))  # integers: nothing to check
        ... except gradlab.CheckInputError as e:
        ...     print("float" in str(e))
        True
    """


class GradCheckError(GradlabError, AssertionError):
    """A gradient check did not pass; ``str(error)`` is the full report.

    Attributes:
        report: The :class:`~gradlab.CheckReport` of the check.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab
        >>> hidden = lambda p: jnp.sum(jax.lax.stop_gradient(p) ** 2)  # jax.grad says 0
        >>> try:
        ...     gradlab.assert_check(hidden, jnp.ones(3))
        ... except gradlab.GradCheckError as e:
        ...     print(e.report.outcome)
        failed
    """

    def __init__(self, report: CheckReport) -> None:
        """Keeps the report and makes it the message."""
        super().__init__(str(report))
        self.report = report


# Shown as ``gradlab.InputError`` (where users catch them), not as this private module's name.
for _cls in (GradlabError, InputError, CheckInputError, GradCheckError):
    _cls.__module__ = "gradlab"
