"""Checks of the parameters themselves, before anything is traced: finite values only."""

from __future__ import annotations

import numpy as np

from gradlab._errors import CheckInputError
from gradlab.gradcheck.planning._problem import Problem

__all__ = ["require_finite"]


def require_finite(problem: Problem) -> None:
    """Raises :class:`CheckInputError` naming the first leaf that holds a NaN or an infinity.

    Finite differences around such an entry, and the gradient there, mean nothing; the error
    gives the leaf's path and the entry's index.

    Example:
        >>> import jax, numpy as np
        >>> from gradlab.gradcheck.planning._problem import build_problem
        >>> with jax.enable_x64():
        ...     params = {"w": np.array([1.0, np.nan])}
        ...     problem = build_problem(lambda p: p["w"].sum(), (params,), 0, False)
        >>> require_finite(problem)
        Traceback (most recent call last):
        ...
        gradlab.CheckInputError: the parameters hold NaN at w, index (1,) ...
    """
    for leaf, value in zip(problem.checked, problem.checked_leaves, strict=True):
        host = np.asarray(value)
        bad = ~np.isfinite(host)
        if not bad.any():
            continue
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(host[first]) else "an infinity"
        raise CheckInputError(
            f"the parameters hold {kind} at {leaf.path}, index {first} ({int(bad.sum())} of "
            f"{host.size} entries of that leaf are not finite): f and its gradient are not "
            "defined there. Check the parameters as initialised or loaded (e.g. "
            "jax.tree_util.tree_map(jnp.isfinite, params))."
        )
