"""Initialisers by name: :data:`NAMES` and :func:`get` (``"he_normal"``, ``"orthogonal:1.1"``).

This is how :mod:`gradlab.flow` and the command line take initialisers: one name per
distribution, with ``:value`` for the parametric ones.
"""

from __future__ import annotations

from collections.abc import Callable

from gradlab._errors import InputError
from gradlab.init._named import (
    glorot_normal,
    glorot_uniform,
    he_normal,
    he_uniform,
    lecture_glorot,
    lecun_normal,
    lecun_uniform,
)
from gradlab.init._scaling import RENAMED_NORMAL, fan_in_normal, gaussian
from gradlab.init._spec import InitSpec
from gradlab.init._structured import near_identity, orthogonal

# name -> (what it draws, the named spec or a factory of one value, default value or None)
_REGISTRY: dict[str, tuple[str, InitSpec | Callable[[float], InitSpec], float | None]] = {
    "lecun_normal": ("N(0, 1/fan_in)", lecun_normal, None),
    "lecun_uniform": ("uniform, variance 1/fan_in", lecun_uniform, None),
    "he_normal": ("N(0, 2/fan_in)", he_normal, None),
    "he_uniform": ("uniform, variance 2/fan_in", he_uniform, None),
    "glorot_normal": ("N(0, 2/(fan_in+fan_out))", glorot_normal, None),
    "glorot_uniform": ("uniform, variance 2/(fan_in+fan_out)", glorot_uniform, None),
    "lecture_glorot": (
        "N(0, 4/(fan_in+fan_out)), the lecture's 2/sqrt(n_prev+n_cur)",
        lecture_glorot,
        None,
    ),
    "fan_in_normal": (
        "N(0, K^2/fan_in), the lecture's K/sqrt(n_prev); 'fan_in_normal:K'",
        fan_in_normal,
        1.0,
    ),
    "orthogonal": ("gain x random orthogonal; 'orthogonal:gain'", orthogonal, 1.0),
    "near_identity": ("identity + N(0, std^2); 'near_identity:std'", near_identity, 0.01),
    "gaussian": ("N(0, std^2), fixed std; 'gaussian:std'", gaussian, None),
}

NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""The names :func:`get` accepts, one per distribution.

``fan_in_normal``, ``orthogonal``, ``near_identity`` and ``gaussian`` take a value after a
colon (``"fan_in_normal:2"``, ``"orthogonal:1.1"``); ``gaussian`` needs one, the others default
to ``fan_in_normal:1``, ``orthogonal:1`` and ``near_identity:0.01``.

Example:
    >>> from gradlab import init
    >>> init.NAMES[:3]
    ('lecun_normal', 'lecun_uniform', 'he_normal')
"""

# Names of earlier gradlab versions, for the error message only (one name per distribution).
_RENAMED = {
    "lecture_1_over_sqrt_n": "lecun_normal",
    "lecture_tanh": "lecun_normal",
    "lecture_2_over_sqrt_n": "fan_in_normal:2",
    "lecture_2_over_sqrt_n_plus_m": "lecture_glorot",
    "lecture_k_over_sqrt_n": "fan_in_normal:K",
    "scaled": "fan_in_normal:K",
}


def _names_help() -> str:
    return ", ".join(f"{k} ({v[0]})" for k, v in _REGISTRY.items())


def get(name: str) -> InitSpec:
    """The initialiser of a name in :data:`NAMES`, with ``:value`` for the parametric ones.

    Args:
        name: ``"he_normal"``, ``"fan_in_normal:2"`` (std ``2/sqrt(fan_in)``), ``"orthogonal:1.1"``,
            ``"near_identity:0.05"``, ``"gaussian:0.1"``, ...

    Returns:
        The :class:`InitSpec`; its ``name`` is ``name`` in canonical form, so
        ``get(spec.name) == spec``.

    Raises:
        InputError: for an unknown name (listing the valid ones; a former name is answered with
            its new one), a value given to a name that takes none, or a value that is not a
            number >= 0.

    Example:
        >>> get("fan_in_normal:2").weight_variance  # the lecture's std 2/sqrt(n_prev)
        4.0
        >>> get("orthogonal").name
        'orthogonal:1'
        >>> get("he_normal") is he_normal
        True
    """
    if not isinstance(name, str):
        raise InputError(
            f"gradlab.init.get takes a name such as 'he_normal', got {type(name).__name__}; "
            "pass a string (an initialiser object can be used as it is)."
        )
    base, colon, arg = name.strip().partition(":")
    if base == "normal":
        raise InputError(f"Unknown initialiser {name!r}: {RENAMED_NORMAL}")
    if base not in _REGISTRY:
        hint = f" '{base}' was renamed: use '{_RENAMED[base]}'." if base in _RENAMED else ""
        raise InputError(f"Unknown initialiser {name!r}.{hint} Valid names: {_names_help()}.")
    _, made, default = _REGISTRY[base]
    if isinstance(made, InitSpec):
        if colon:
            raise InputError(f"{base!r} takes no ':value' (got {name!r}); pass just {base!r}.")
        return made
    if not colon:
        if default is None:
            raise InputError(f"{base!r} needs a value: pass e.g. '{base}:0.1'.")
        return made(default)
    try:
        value = float(arg)
    except ValueError:
        raise InputError(f"{name!r}: {arg!r} is not a number; pass e.g. '{base}:1.5'.") from None
    return made(value)
