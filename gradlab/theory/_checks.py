"""Validation shared by the predictions: widths, depths, and the array-like inputs they take."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gradlab._errors import InputError

#: A number or an array of numbers (depths, variances): the predictions broadcast over it.
ArrayLike = float | int | np.ndarray | Sequence[float]


def _check_width(width: int) -> int:
    if int(width) != width or width < 1:
        raise InputError(f"width must be a positive integer, got {width!r}; pass e.g. 64.")
    return int(width)


def _as_depth(depth: ArrayLike) -> np.ndarray:
    d = np.asarray(depth, dtype=np.float64)
    if np.any(d < 0):
        raise InputError(f"depth must be >= 0, got {depth!r}; pass a layer count such as 150.")
    return d
