"""Turns one draw of LeCun-normal weights into any Gaussian variance-scaling initialiser.

Every Gaussian initialiser compared here draws ``W ~ N(0, scale / fan)``, so scaling a
``lecun_normal`` draw (``N(0, 1 / fan_in)``) by ``sqrt(scale · fan_in / fan)`` gives exactly
that initialiser's distribution. The experiments use this for a paired design (every
initialiser sees the same underlying noise, seed by seed) and to build each network once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from jax.tree_util import tree_flatten_with_path, tree_map_with_path

from gradlab import init
from gradlab._errors import InputError
from gradlab.train import path_names

__all__ = ["from_lecun", "gaussian_init"]

#: The Gaussian initialisers of :mod:`gradlab.init` whose variance is ``scale / fan_avg``
#: (the others divide by ``fan_in``).
_FAN_AVG = frozenset({"glorot_normal", "lecture_glorot"})


def gaussian_init(name: str) -> tuple[float, str]:
    """``(scale, mode)`` of a Gaussian :mod:`gradlab.init` name: ``W ~ N(0, scale / fan)``.

    >>> gaussian_init("fan_in_normal:2")  # the lecture's std 2/sqrt(n_prev)
    (4.0, 'fan_in')
    >>> gaussian_init("lecture_glorot")  # the lecture's std 2/sqrt(n_prev + n_cur)
    (2.0, 'fan_avg')
    """
    spec = init.get(name)
    if spec.family != "normal" or spec.weight_variance is None:
        raise InputError(
            f"{name!r} is not a Gaussian variance-scaling initialiser; use one of "
            "he_normal, glorot_normal, lecun_normal, lecture_glorot or 'fan_in_normal:K'."
        )
    return float(spec.weight_variance), "fan_avg" if spec.name in _FAN_AVG else "fan_in"


def from_lecun(params: Mapping[str, Any], name: str, kernels: Mapping[str, int | None]) -> Any:
    """Rescales the ``kernels`` leaves of ``lecun_normal`` params to initialiser ``name``.

    Args:
        params: a flat mapping (an ``nnx.State`` of top-level parameters) drawn with
            ``lecun_normal`` kernels.
        name: the target initialiser (see :func:`gaussian_init`).
        kernels: ``{leaf name: stacking axis or None}``; other leaves are left as they are.

    Returns:
        A copy of ``params`` (same type) with rescaled kernels.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> p = {"w": init.lecun_normal(jax.random.key(0), (400, 100)), "b": jnp.zeros(100)}
        >>> q = from_lecun(p, "glorot_normal", {"w": None})
        >>> round(float(q["w"].std() / p["w"].std()) ** 2, 3)  # (2 / 500) / (1 / 400)
        1.6
    """
    scale, mode = gaussian_init(name)
    missing = set(kernels) - {path_names(p)[0] for p, _ in tree_flatten_with_path(params)[0]}
    if missing:
        raise InputError(
            f"from_lecun: no leaves named {sorted(missing)} in params; name only top-level "
            "kernel leaves of params in `kernels`."
        )

    def rescale(path: Any, w: Any) -> Any:
        leaf = path_names(path)[0]
        if leaf not in kernels:
            return w
        axis = kernels[leaf]
        fan_in, fan_out = init.compute_fans(w.shape, batch_axis=() if axis is None else axis)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        return w * math.sqrt(scale * fan_in / fan)

    return tree_map_with_path(rescale, params)
