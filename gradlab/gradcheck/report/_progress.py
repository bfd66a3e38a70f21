"""The plan of a check, its time estimate from the first chunk, and a progress bar."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from gradlab._errors import CheckInputError

__all__ = ["Progress", "human_duration", "too_long"]

#: Show a progress bar when the finite differences are expected to take longer than this.
PROGRESS_AFTER_SECONDS = 2.0


def human_duration(seconds: float, about: str = "about") -> str:
    """A duration as people say it: ``"about 3 h 20 min"``.

    Example:
        >>> [human_duration(s) for s in (0.2, 4.2, 75, 600)]
        ['under a second', 'about 4 s', 'about 75 s', 'about 10 min']
        >>> human_duration(12_000), human_duration(3 * 86_400 + 7_200)
        ('about 3 h 20 min', 'about 3 days 2 h')
    """
    if seconds < 0.5:
        return "under a second"
    if seconds < 90:
        return f"{about} {round(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{about} {minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{about} {hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{about} {days} days" + (f" {hours} h" if hours else "")


def too_long(
    expected: float,
    limit: float,
    done: int,
    elapsed: float,
    sizes: Sequence[int],
    mode: str,
    *,
    basis: str | None = None,
) -> str:
    """Why a check stops before its sweep: the estimate, the cheaper checks, how to go on.

    Args:
        expected: Estimated seconds for the whole sweep.
        limit: ``Execution.max_seconds``.
        done: Perturbations in the first batch (or all of them, estimated before the sweep).
        elapsed: Seconds the first batch took (or ``expected``).
        sizes: Entries of each checked leaf.
        mode: ``"full"``, ``"sample"`` or ``"directional"``.
        basis: What the estimate comes from, in words; default: the first batch.

    Example:
        >>> print(too_long(12_000.0, 60.0, 1000, 2.4, [5_000_000, 1000], "full"))
        ... # doctest: +NORMALIZE_WHITESPACE
        gradlab.check would take about 3 h 20 min (its first 1,000 perturbations took 2.4 s
        after compilation), more than Execution(max_seconds=60) allows. Check fewer entries:
        entries=gradlab.Sample(64) moves 64 entries per leaf (128 perturbations, under a
        second at this rate); entries=gradlab.Directional(4) moves each leaf along 4 random
        directions (8 perturbations, each a full evaluation of f). Or go on anyway with
        execution=gradlab.Execution(max_seconds=None).
    """
    rate = elapsed / max(done, 1)
    sample = sum(min(64, n) for n in sizes)
    if basis is None:
        basis = f"its first {done:,} perturbations took {elapsed:.2g} s after compilation"
    shown = human_duration(expected) if expected >= 0.5 else f"about {expected:.2g} s"
    text = (
        f"gradlab.check would take {shown} ({basis}), more than "
        f"Execution(max_seconds={limit:g}) allows. Check fewer entries: "
    )
    options = []
    if sample < sum(sizes):
        options.append(
            f"entries=gradlab.Sample(64) moves 64 entries per leaf ({sample:,} perturbations, "
            f"{human_duration(sample * rate, 'roughly')} at this rate)"
        )
    if mode != "directional":
        options.append(
            f"entries=gradlab.Directional(4) moves each leaf along 4 random directions "
            f"({4 * len(sizes):,} perturbations, each a full evaluation of f)"
        )
    else:
        options.append("fewer directions, entries=gradlab.Directional(1)")
    return (
        text + "; ".join(options) + ". Or go on anyway with "
        "execution=gradlab.Execution(max_seconds=None)."
    )


class Progress:
    """Prints the plan and a time estimate (``verbose``), and a bar for long checks.

    The kernels compile first (:meth:`compiled` reports how long that took); the estimate is
    then the first kernel call's time scaled to the whole check by the number of
    perturbations, or by the number of kernel calls when that is smaller. The bar appears
    once a check turns out to be long, on a terminal (``enabled=None``), always (``True``)
    or never (``False``); the plan is printed above it.

    Args:
        enabled: Show the progress bar: None for automatic.
        verbose: Print the plan before the check and the estimate after its first chunk.
        total: Perturbations to evaluate.
        plan: The plan, in words.
        console: Where to print; default: standard error.
        n_calls: Kernel calls the check will make (bounds the estimate), if known.
        limit: With the estimate above this many seconds, stop after the first chunk with
            a :class:`~gradlab.CheckInputError` (:func:`too_long`); None: no limit.
        sizes: Entries of each checked leaf (for the cheaper checks the error offers).
        mode: The check's mode (``"full"``, ``"sample"``, ``"directional"``).

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> bar = Progress(False, True, 10, "plan: 20 evaluations", Console(file=out))
        >>> bar.advance(5); bar.advance(5); bar.close()
        >>> print(out.getvalue().splitlines()[0])
        plan: 20 evaluations
    """

    def __init__(
        self,
        enabled: bool | None,
        verbose: bool,
        total: int,
        plan: str,
        console: Console | None = None,
        n_calls: int | None = None,
        limit: float | None = None,
        sizes: Sequence[int] = (),
        mode: str = "full",
    ) -> None:
        self.enabled, self.verbose, self.total, self.plan = enabled, verbose, total, plan
        self.console, self.n_calls = console, n_calls
        self.limit, self.sizes, self.mode = limit, tuple(sizes), mode
        self.done = 0
        self.start = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None
        self._estimated = False
        if verbose:
            self._print(plan)

    def _print(self, text: str) -> None:
        console = self.console or Console(stderr=True)
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    def compiled(self, n_kernels: int, seconds: float, note: str = "") -> None:
        """Reports the compilation that precedes the first call; the clock starts after it."""
        text = f"compiled {n_kernels} kernel{'s' * (n_kernels != 1)} in {seconds:.2f} s"
        text += f"; {note}" if note else ""
        self.plan += f"; {text}"
        if self.verbose:
            self._print(text)
        self.start = time.perf_counter()

    def advance(self, n: int) -> None:
        """Marks ``n`` more perturbations as done."""
        self.done += n
        if not self._estimated and self.done:
            self._estimated = True
            elapsed = time.perf_counter() - self.start
            scale = self.total / self.done
            if self.n_calls:
                scale = min(scale, self.n_calls)
            expected = elapsed * scale
            estimate = (
                f"first chunk of {self.done:,} took {elapsed:.2f} s: "
                f"about {expected:.1f} s for all {self.total:,}"
            )
            self.plan += f"; {estimate}"
            if self.limit is not None and expected > self.limit and self.done < self.total:
                raise CheckInputError(
                    too_long(expected, self.limit, self.done, elapsed, self.sizes, self.mode)
                )
            if self.verbose and self.done < self.total:
                self._print(estimate)
            show = self.enabled
            if show is None:
                show = expected > PROGRESS_AFTER_SECONDS and sys.stderr.isatty()
            if show and self.done < self.total:
                self._open()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)

    def _open(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        console = self.console or Console(stderr=True)
        if not self.verbose:
            console.print(self.plan, highlight=False, markup=False)
        self._bar = Bar(
            TextColumn("gradlab.check"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task("perturbations", total=self.total)

    def close(self, summary: str | None = None) -> None:
        """Stops the bar; with ``verbose``, prints ``summary``."""
        if self._bar is not None:
            self._bar.stop()
        if self.verbose and summary:
            self._print(summary)
