"""What a sweep measured per entry: f (or its gradient) at θ and at θ ± h, and the steps taken."""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Columns", "Measured"]


@dataclasses.dataclass(frozen=True)
class Measured:
    """Evaluations of one part of a leaf at one step, per entry (one cotangent).

    Attributes:
        f0: ``F(θ)`` from the same program as ``fp``/``fm``, per entry ``(m,)``.
        fp: ``F(θ + h+·e_i)``.
        fm: ``F(θ + h−·e_i)``.
        hp: Steps actually taken upwards (positive).
        hm: Steps actually taken downwards (negative).
        scale: The size rounding in ``F`` scales with; None: ``max(|f0|, |f+|, |f−|)``.
    """

    f0: np.ndarray
    fp: np.ndarray
    fm: np.ndarray
    hp: np.ndarray
    hm: np.ndarray
    scale: float | np.ndarray | None = None

    def take(self, at: np.ndarray) -> Measured:
        """The entries at positions ``at``."""
        scale = self.scale
        if isinstance(scale, np.ndarray) and scale.ndim:
            scale = scale[at]
        return Measured(self.f0[at], self.fp[at], self.fm[at], self.hp[at], self.hm[at], scale)


@dataclasses.dataclass(frozen=True)
class Columns:
    """The gradient at ``θ ± h·e_i`` for ``m`` moved entries, one cotangent: ``(m, n)``.

    Attributes:
        g0: ``∇F(θ)`` ``(n,)``.
        gp: ``∇F(θ + h+·e_i)`` ``(m, n)``.
        gm: ``∇F(θ + h−·e_i)`` ``(m, n)``.
        hp: The steps actually taken upwards ``(m,)``.
        hm: The steps actually taken downwards ``(m,)`` (negative).
    """

    g0: np.ndarray
    gp: np.ndarray
    gm: np.ndarray
    hp: np.ndarray
    hm: np.ndarray

    def measured(self, scale: float | None) -> Measured:
        """The columns as flat elements; ``scale``: the gradient's (None: each row's own)."""
        m, n = self.gp.shape
        f0 = np.broadcast_to(self.g0, (m, n)).reshape(-1)
        fp, fm = self.gp.reshape(-1), self.gm.reshape(-1)
        size = None
        if scale is not None:
            size = np.maximum(np.maximum(np.abs(f0), np.abs(fp)), np.maximum(np.abs(fm), scale))
        return Measured(f0, fp, fm, np.repeat(self.hp, n), np.repeat(self.hm, n), size)
