"""The plan of a check, its time estimate from the first chunk, and a progress bar."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console

__all__ = ["Progress"]

#: Show a progress bar when the finite differences are expected to take longer than this.
PROGRESS_AFTER_SECONDS = 2.0


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
    ) -> None:
        self.enabled, self.verbose, self.total, self.plan = enabled, verbose, total, plan
        self.console, self.n_calls = console, n_calls
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
