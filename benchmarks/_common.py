"""Shared helpers for the benchmarks: timing, machine description, rich tables, JSON.

Timings on a shared machine are noisy, so the benchmarks compare methods as ratios measured
in the same repetition, repeat, and report medians; every result file records the load
average before and after the run.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "Timed",
    "cache_sizes",
    "finish_machine_info",
    "git_revision",
    "load_average",
    "machine_info",
    "median",
    "print_table",
    "timed",
    "write_json",
]

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent


class Timed:
    """The result of :func:`timed`: the value, wall seconds and minor page faults."""

    __slots__ = ("minor_faults", "seconds", "value")

    def __init__(self, value: Any, seconds: float, minor_faults: int) -> None:
        self.value = value
        self.seconds = seconds
        self.minor_faults = minor_faults


def timed(fn: Callable[[], T]) -> Timed:
    """Runs ``fn()`` once; wall-clock seconds and the process's minor page faults meanwhile."""
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    return Timed(value, seconds, faults)


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else float("nan")


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (what ``uptime`` prints)."""
    return [round(v, 2) for v in os.getloadavg()]


def _uptime() -> str:
    try:
        done = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
        return done.stdout.strip()
    except OSError:
        return ""


def cache_sizes() -> dict[str, str]:
    """The CPU's cache sizes as ``lscpu`` reports them (empty where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return {}
    sizes = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip().endswith("cache"):
            sizes[key.strip()] = value.strip()
    return sizes


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_revision() -> str:
    """The checkout's commit, with ``+dirty`` when the working tree has changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (rev or "unknown") + ("+dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on, and how loaded the machine was at the start."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "caches": cache_sizes(),
        "uptime_at_start": _uptime(),
        "load_average_at_start": load_average(),
        "gradlab_revision": git_revision(),
    }


def finish_machine_info(info: dict[str, Any]) -> dict[str, Any]:
    """Adds the load at the end of the run to :func:`machine_info`'s record."""
    info["uptime_at_end"] = _uptime()
    info["load_average_at_end"] = load_average()
    return info


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    caption: str | None = None,
    sections: Sequence[int] = (),
    left: int = 2,
    width: int = 170,
) -> None:
    """Prints a rich table; ``sections`` are row indices after which a rule is drawn.

    The first ``left`` columns are left-aligned (labels), the others right-aligned (numbers).
    """
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption, caption_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < left else "right")
    for i, row in enumerate(rows):
        table.add_row(*(str(c) for c in row), end_section=i in sections)
    Console(width=width).print(table)


def write_json(path: Path, data: Any) -> None:
    """Writes ``data`` as indented JSON (NaN becomes null), creating the folder."""

    def clean(x: Any) -> Any:
        if isinstance(x, float) and x != x:
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(data), indent=1) + "\n")
