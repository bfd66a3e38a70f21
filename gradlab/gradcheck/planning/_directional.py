"""Directional mode: a few random unit directions per leaf, a cheap first screen.

For each leaf ``θ_k`` (``n_k`` entries), ``D`` random unit directions ``d`` over that leaf
alone are drawn, and the directional difference

    (F(θ + h·d) − F(θ − h·d)) / 2h

is compared with ``<∇_k F, δ> / 2h`` (reverse mode) or ``jax.jvp`` along ``δ / 2h`` (forward
mode), where ``δ = fl(θ + h·d) − fl(θ − h·d)`` is the move actually made, so rounding of the
perturbed parameters never enters the comparison. The ``±h`` evaluations of every leaf's
directions run as rows of one vmap (one compilation for all leaves), at a cost of ``2·D``
evaluations per leaf instead of ``2·n_k``; directions are drawn per leaf so that a small
leaf is never drowned by a big one. Each leaf's verdict uses the same
bands, kink detection and rounding noise floor as the full check, over its ``D`` directions.

A wrong gradient passes a random direction only on a set of measure zero, but a bug confined
to a few entries of a big leaf moves ``<∇F, d>`` by about ``(bug size)·(1/√n_k)``, so
this mode screens; the full mode localises (it names the entries).
"""

from __future__ import annotations

import numpy as np

__all__ = ["describe", "make_directions"]

#: Stream of ``np.random.default_rng((seed, stream, leaf))`` that draws directions.
DIRECTION_STREAM = 2


def make_directions(n: int, dtype: np.dtype, count: int, seed: int, k: int) -> np.ndarray:
    """``count`` random unit directions over a leaf of ``n`` entries, ``(count, n)``.

    Standard normal, normalised; complex leaves get complex directions (moving real and
    imaginary parts together). Seeded per leaf ``k`` so each leaf's directions do not depend
    on the other leaves.

    Example:
        >>> d = make_directions(5, np.dtype("float64"), 4, seed=0, k=0)
        >>> d.shape, np.allclose(np.linalg.norm(d, axis=1), 1.0)
        ((4, 5), True)
    """
    rng = np.random.default_rng((seed, DIRECTION_STREAM, k))
    d = rng.standard_normal((count, n))
    if np.issubdtype(dtype, np.complexfloating):
        d = d + 1j * rng.standard_normal((count, n))
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    return d.astype(dtype)


def describe(count: int, seed: int) -> str:
    """The report's ``mode`` for directional checks.

    Example:
        >>> describe(4, 0)
        'directional (4 random unit directions per leaf, seed 0)'
    """
    return f"directional ({count} random unit directions per leaf, seed {seed})"
