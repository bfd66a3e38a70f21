"""The options of a training run: :class:`TrainOptions`, validated on construction."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from gradlab._errors import InputError
from gradlab.train._norms import GroupBy

__all__ = ["TrainOptions"]


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Options of :func:`~gradlab.train.train` and :func:`~gradlab.train.train_many`.

    Attributes:
        clip_norm: if set, gradients are clipped to this global norm before the optimizer
            (``optax.clip_by_global_norm``); :attr:`History.grad_norm` logs the norm before.
        chunk: steps per compiled ``lax.scan`` (the granularity of the progress bar). Every
            chunk runs the same compiled program; a last partial chunk runs masked steps.
        layer_steps: steps at which per-layer gradient norms are logged.
        group_by: maps a leaf's path to its layer, see :func:`gradlab.train.layer_grad_norms`.
        stacked: layer groups whose leaves have a leading layer axis (one norm per index).
        progress: show a rich progress bar; None shows it when the output is a terminal and
            there is more than one chunk.
        description: the progress bar's label.
        fast_compile: compile at XLA's lowest backend optimisation level: compiles several
            times faster, runs slower (for short runs and tests).

    Raises:
        InputError: for a field out of range (the message says which values are valid).

    Example:
        >>> TrainOptions(clip_norm=1.0, layer_steps=(0, 50)).layer_steps
        (0, 50)
        >>> TrainOptions(chunk=0)
        Traceback (most recent call last):
        ...
        gradlab.InputError: TrainOptions: chunk must be an integer >= 1, got 0; ...
    """

    clip_norm: float | None = None
    chunk: int = 100
    layer_steps: tuple[int, ...] = (0,)
    group_by: GroupBy | None = None
    stacked: tuple[str, ...] = ()
    progress: bool | None = None
    description: str = "training"
    fast_compile: bool = False

    def __post_init__(self) -> None:
        c = self.clip_norm
        if c is not None and not (
            isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) and c > 0
        ):
            raise InputError(
                f"TrainOptions: clip_norm must be None or a finite number > 0, got {c!r}; pass "
                "e.g. clip_norm=1.0, or None for no clipping."
            )
        if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1:
            raise InputError(
                f"TrainOptions: chunk must be an integer >= 1, got {self.chunk!r}; pass e.g. "
                "chunk=100 (steps per compiled scan)."
            )
        if isinstance(self.stacked, str):
            raise InputError(
                f"TrainOptions: stacked must be a tuple of group names, got the string "
                f"{self.stacked!r}; pass stacked=({self.stacked!r},)."
            )
        object.__setattr__(self, "layer_steps", _layer_steps(self.layer_steps))
        object.__setattr__(self, "stacked", tuple(self.stacked))


def _layer_steps(layer_steps: Iterable[int]) -> tuple[int, ...]:
    """``layer_steps`` as a tuple of distinct, increasing, non-negative ints."""
    try:
        steps = tuple(int(s) for s in layer_steps)
    except (TypeError, ValueError):
        steps = (-1,)
    if any(s < 0 for s in steps) or list(steps) != sorted(set(steps)):
        raise InputError(
            "TrainOptions: layer_steps must be distinct steps >= 0 in increasing order, got "
            f"{layer_steps!r}; pass e.g. layer_steps=(0, 99), or () to log no layer norms."
        )
    return steps
