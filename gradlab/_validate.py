"""The small argument checks gradlab shares: integers, numbers, flags and choices.

Each takes the argument's name and value, returns the value in its canonical type, and raises
``error`` (default :class:`~gradlab.InputError`) with a message naming the argument, the value
given and what to pass instead. :func:`for_argparse` turns one into an ``argparse`` ``type=``
for the command line, where the same rule then reads a string.

Example:
    >>> from gradlab import _validate as v
    >>> v.integer("depth", 8.0, minimum=0)
    8
    >>> v.positive_number("tolerance", 1e-3)
    0.001
    >>> v.choice("loss", "bce", ("readout", "bce"))
    'bce'
    >>> v.integer("width", 0)
    Traceback (most recent call last):
    ...
    gradlab.InputError: width must be an integer >= 1, got 0; pass e.g. 8.
"""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from gradlab._errors import InputError

__all__ = [
    "boolean",
    "choice",
    "for_argparse",
    "integer",
    "nonnegative_number",
    "positive_number",
]

T = TypeVar("T")


def integer(
    name: str,
    value: Any,
    minimum: int = 1,
    *,
    exact: bool = False,
    error: type[Exception] = InputError,
) -> int:
    """An integer ``>= minimum``; never a bool.

    Args:
        name: the argument's name, for the message.
        value: what was passed: an ``int`` or NumPy integer, or (unless ``exact``) anything
            equal to its ``int()``, such as ``8.0``.
        minimum: the smallest value allowed.
        exact: accept only ``int`` and NumPy integers, no floats.
        error: the exception raised.

    Returns:
        ``value`` as an ``int``.

    Raises:
        error: when ``value`` is not such an integer.

    Example:
        >>> integer("seeds", 2, minimum=2)
        2
    """
    ok = not isinstance(value, bool) and (isinstance(value, numbers.Integral) or not exact)
    try:
        ok = ok and int(value) == value and value >= minimum
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise error(
            f"{name} must be an integer >= {minimum}, got {value!r}; pass e.g. {max(minimum, 8)}."
        )
    return int(value)


def _real(name: str, value: Any, error: type[Exception], what: str) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (ok and math.isfinite(float(value))):
        raise error(f"{name} must be {what}, got {value!r}; pass e.g. 1.0.")
    return float(value)


def positive_number(name: str, value: Any, *, error: type[Exception] = InputError) -> float:
    """A finite number ``> 0`` (not a bool), as a float.

    Example:
        >>> positive_number("eps", 1e-7)
        1e-07
    """
    what = "a finite number > 0"
    x = _real(name, value, error, what)
    if not x > 0:
        raise error(f"{name} must be {what}, got {value!r}; pass e.g. 1.0.")
    return x


def nonnegative_number(name: str, value: Any, *, error: type[Exception] = InputError) -> float:
    """A finite number ``>= 0`` (not a bool), as a float.

    Example:
        >>> nonnegative_number("gain", 0)
        0.0
    """
    what = "a finite number >= 0"
    x = _real(name, value, error, what)
    if not x >= 0:
        raise error(f"{name} must be {what}, got {value!r}; pass e.g. 1.0.")
    return x


def boolean(name: str, value: Any, *, error: type[Exception] = InputError) -> bool:
    """``True`` or ``False`` exactly (not 0, 1 or a string).

    Example:
        >>> boolean("verbose", True)
        True
    """
    if not isinstance(value, bool):
        raise error(f"{name} must be True or False, got {value!r}.")
    return value


def choice(
    name: str, value: Any, choices: Sequence[T], *, error: type[Exception] = InputError
) -> T:
    """One of ``choices``.

    Example:
        >>> choice("arch", "mlp", ("mlp", "residual"))
        'mlp'
    """
    if isinstance(value, str | int | float | None):  # not an array, whose == is elementwise
        for c in choices:
            if c == value:
                return c
    raise error(
        f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}; pass one of those."
    )


def for_argparse(
    check: Callable[..., T], parse: Callable[[str], Any] = int, **options: Any
) -> Callable[[str], T]:
    """An ``argparse`` ``type=``: parses the string with ``parse``, then applies ``check``.

    A failure becomes an :class:`argparse.ArgumentTypeError`, which argparse prints after the
    option's name (``argument --width: value must be an integer >= 1, got 0; ...``) on stderr
    with exit status 2.

    Args:
        check: one of the checks above.
        parse: turns the string into the value to check (``int``, ``float``, ...).
        **options: passed on to ``check`` (``minimum=2``).

    Returns:
        The ``type=`` function.

    Example:
        >>> import argparse
        >>> p = argparse.ArgumentParser()
        >>> _ = p.add_argument("--seeds", type=for_argparse(integer, minimum=2))
        >>> p.parse_args(["--seeds", "4"]).seeds
        4
    """

    def convert(text: str) -> T:
        try:
            value = parse(text)
        except ValueError:
            kind = {int: "an integer", float: "a number"}.get(parse, "valid")  # type: ignore[call-overload]
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        try:
            return check("value", value, **options)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = check.__name__
    return convert
