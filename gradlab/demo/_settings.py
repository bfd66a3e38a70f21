"""The demo's sizes (:class:`DemoSettings`), its progress runner, and how it formats numbers."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo's measurements.

    Attributes:
        depth: layers of the deep networks (the lecture's 150).
        width: their width.
        seeds: independent networks per configuration.
        batch: examples per network.
        steps: sequence length for LSTM and RNN (100).
        hidden: their hidden size.
        quick: the reduced demo (fewer configurations, smaller sizes).

    Example:
        >>> from gradlab.demo import DemoSettings
        >>> DemoSettings().depth, DemoSettings.quick_settings().width
        (150, 16)
    """

    depth: int = 150
    width: int = 64
    seeds: int = 32
    batch: int = 8
    steps: int = 100
    hidden: int = 64
    quick: bool = False

    @classmethod
    def quick_settings(cls, seeds: int | None = None) -> DemoSettings:
        """The ``--quick`` sizes: depth 150 and 100 steps, but width 16, 4 seeds, 2 examples."""
        return cls(width=16, seeds=seeds or 4, batch=2, hidden=16, quick=True)


def _fmt_ratio(log10: float) -> str:
    if not math.isfinite(log10):
        return "—"
    if -3 <= log10 <= 4:
        return f"{10**log10:.3g}"
    mant = 10 ** (log10 - math.floor(log10))
    return f"{mant:.2f}e{math.floor(log10):+d}"


def _pm(mean: float, std: float) -> str:
    return f"{mean:+.2f} ± {std:.2f}"


def _regime(log10: float) -> str:
    if not math.isfinite(log10):
        return "dead"
    if log10 < -2:
        return "vanishing"
    if log10 > 2:
        return "exploding"
    return "stable"


class _Runner:
    """Runs the measurements with a progress bar and collects the results."""

    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("gradlab demo", total=total)

    def step(self, description: str, fn: Callable[[], Any]) -> Any:
        self.progress.update(self.task, description=description)
        out = fn()
        self.progress.advance(self.task)
        return out
