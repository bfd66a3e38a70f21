"""A check's keyword arguments split between the checker's options and ``f``'s own.

Renamed options and misspelt ones (close to an option's name) are named in the error.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from gradlab._errors import CheckInputError

#: Keywords of the earlier API, and what replaces each (a call using one gets this message,
#: unless ``f`` itself takes a keyword of that name).
_RENAMED = {
    "mode": "entries=gradlab.Sample(n) or entries=gradlab.Directional(k)",
    "samples": "entries=gradlab.Sample(n)",
    "directions": "entries=gradlab.Directional(k)",
    "ad": "autodiff=",
    "order": "gradlab.check_second_order(...) for Hessian-vector products",
    "cotangents": "projections=",
    "repeat": "check_determinism=True",
    "host": "execution=gradlab.Execution(devices=jax.devices('cpu'))",
    "kink_tolerance": "criteria=gradlab.Criteria(kink_tolerance=...)",
    "noise_factor": "criteria=gradlab.Criteria(noise_factor=...)",
    "max_worst": "criteria=gradlab.Criteria(worst_entries=...)",
    **{
        name: f"execution=gradlab.Execution({'slices' if name == 'sparse' else name}=...)"
        for name in (
            "sparse", "chunk_size", "memory_budget", "devices", "progress", "verbose",
            "compilation_cache",
        )
    },
}  # fmt: skip


#: The checker's own keyword options (every keyword of ``check`` after ``*args``).
OPTIONS = (
    "argnums", "has_aux", "entries", "eps", "tolerance", "autodiff", "dtype", "projections",
    "seed", "check_determinism", "criteria", "execution", "f_kwargs",
)  # fmt: skip


#: Keywords other checkers use for what ``gradlab.check`` calls otherwise.
_ALIASES = {
    "tol": "tolerance=", "atol": "tolerance= (relative, per leaf)",
    "rtol": "tolerance= (relative, per leaf)", "rel_tol": "tolerance=",
    "abs_tol": "tolerance= (relative, per leaf)", "epsilon": "eps=", "step": "eps=",
    "step_size": "eps=", "delta": "eps=", "modes": "autodiff=", "mode_ad": "autodiff=",
    "raise_exception": "gradlab.assert_check(...)",
    "fast_mode": "entries=gradlab.Directional(k)",
    "nondet_tol": "check_determinism=True", "check_undefined_grad": "(no such check; drop it)",
    "argnum": "argnums=", "precision": "dtype=", "n_samples": "entries=gradlab.Sample(n)",
    "random_seed": "seed=", "key": "seed= (an int)", "rng": "seed= (an int)",
}  # fmt: skip


def _keywords_of(f: Callable[..., Any], n_positional: int) -> tuple[set[str], bool] | None:
    """``f``'s keywords left by the positional arguments, and whether it takes ``**kwargs``.

    None when its signature cannot be read.
    """
    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        return None
    named, var_keyword, filled = set(), False, 0
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            var_keyword = True
        elif p.kind is p.VAR_POSITIONAL:
            filled = n_positional
        elif p.kind is p.POSITIONAL_ONLY:
            filled += 1
        elif p.kind is p.POSITIONAL_OR_KEYWORD and filled < n_positional:
            filled += 1
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            named.add(p.name)
    return named, var_keyword


def _looks_like_option(name: str, cutoff: float) -> str | None:
    """What ``name`` probably meant among the checker's options (None: nothing close).

    ``cutoff`` is difflib's similarity: loose where the keyword is an error anyway (only
    the hint is at stake), strict where ``f`` could take it through ``**kwargs``.
    """
    if name in _RENAMED:
        return _RENAMED[name]
    if name in _ALIASES:
        return _ALIASES[name]
    close = difflib.get_close_matches(name, OPTIONS, n=1, cutoff=cutoff)
    return f"{close[0]}=" if close else None


def split_keywords(
    f: Callable[..., Any],
    n_positional: int,
    given: dict[str, Any],
    to_f: dict[str, Any],
    f_kwargs: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The keywords to pass to ``f``; an error for any keyword that could be misread.

    Args:
        f: The checked function.
        n_positional: Positional arguments ``f`` receives (``params`` and ``*args``).
        given: The checker options the caller passed by name.
        to_f: The other keywords of the call (for ``f``).
        f_kwargs: Keywords for ``f`` given explicitly.

    Rules: a keyword the caller names that is both a checker option and a parameter of
    ``f`` is ambiguous unless ``f_kwargs`` gives ``f``'s value; a keyword ``f`` does not
    take is an error naming it (with the option it probably meant); a keyword that looks
    like a checker option and reaches ``f`` only through ``**kwargs`` (or a signature that
    cannot be read) is an error too: ``f_kwargs`` passes it on purpose.

    Example:
        >>> def f(params, x, seed=0):
        ...     return params
        >>> split_keywords(f, 2, {"seed": 1}, {}, {"seed": 7})
        {'seed': 7}
        >>> split_keywords(f, 2, {}, {"tolerence": 1e-3}, None)
        Traceback (most recent call last):
        ...
        gradlab.CheckInputError: tolerence= is not an option ... did you mean tolerance=?
    """
    if f_kwargs is not None and not isinstance(f_kwargs, Mapping):
        raise CheckInputError(f"f_kwargs must be a dict of keywords for f, got {f_kwargs!r}.")
    extra = dict(f_kwargs or {})
    for name in sorted(set(extra) & set(to_f)):
        raise CheckInputError(f"{name}= is given twice: as a keyword and in f_kwargs; give one.")
    sig = _keywords_of(f, n_positional)
    named, var_keyword = sig if sig is not None else (set(), True)
    for name in sorted(given):
        if name in named and name not in extra:
            raise CheckInputError(
                f"{name}= is an option of gradlab.check and also a keyword of f: pass f's as "
                f"f_kwargs={{{name!r}: ...}}; {name}= then stays the checker's."
            )
    for name in sorted(to_f):
        if name in named:
            continue
        meant = _looks_like_option(name, 0.8 if var_keyword else 0.6)
        if meant is not None:
            takes = "it only through **kwargs" if var_keyword else "no keyword " + repr(name)
            hint = f"use {meant}." if name in _RENAMED else f"did you mean {meant}?"
            to_f_too = f" To pass it to f, use f_kwargs={{{name!r}: ...}}." if var_keyword else ""
            raise CheckInputError(
                f"{name}= is not an option of gradlab.check, and f takes {takes}: {hint}{to_f_too}"
            )
        if not var_keyword:
            raise CheckInputError(
                f"{name}= is neither an option of gradlab.check nor a keyword of f "
                f"(f's keywords: {', '.join(sorted(named)) or 'none'}); the checker's options "
                f"are {', '.join(o + '=' for o in OPTIONS)}."
            )
    return {**to_f, **extra}
