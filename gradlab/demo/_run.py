"""The demo's driver, :func:`run`: every section in turn, then figures and the summary files."""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import jax
from rich.console import Console

from gradlab._errors import InputError
from gradlab.demo._checks import _check_section
from gradlab.demo._depth import _init_section, _lecture_section, _residual_section
from gradlab.demo._figures import _figures
from gradlab.demo._settings import DemoSettings, _Runner
from gradlab.demo._summary import _finite, _markdown
from gradlab.demo._time import _time_section


def run(
    out: str | Path = "gradlab-out",
    *,
    quick: bool = False,
    seeds: int | None = None,
    console: Console | None = None,
    figures: bool = True,
) -> dict[str, Any]:
    """Runs the demo, prints its tables, and writes figures, ``summary.json`` and ``summary.md``.

    Args:
        out: output folder (created).
        quick: the reduced demo (a few seconds of compute).
        seeds: override the number of seeds.
        console: where to print (default: a new :class:`rich.console.Console`).
        figures: write the figures.

    Returns:
        The summary (the contents of ``summary.json``).

    Raises:
        InputError: for fewer than two seeds.

    Example:
        >>> from gradlab import demo
        >>> summary = demo.run("gradlab-out", quick=True)  # doctest: +SKIP
        >>> sorted(summary)[:3]  # doctest: +SKIP
        ['checks', 'diagnosis', 'figures']
    """
    console = console or Console()
    if quick:
        settings = DemoSettings.quick_settings(seeds)
    else:
        settings = DemoSettings() if seeds is None else DemoSettings(seeds=seeds)
    if settings.seeds < 2:
        raise InputError(
            f"seeds must be >= 2 (a spread needs two), got {settings.seeds}; pass seeds=2 or more."
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    total = 11 if settings.quick else 22  # measurements + checks, as listed in each section
    console.rule("[bold]gradlab demo[/]: vanishing and exploding gradients, measured vs theory")
    runner = _Runner(console, total)
    with runner.progress:
        lecture, lecture_p = _lecture_section(settings, runner)
        inits, inits_p = _init_section(settings, runner)
        residual, residual_p = _residual_section(settings, runner, inits_p["relu_he_normal"])
        times, times_p = _time_section(settings, runner)
        checks = _check_section(settings, runner)
    diagnosis = _diagnose_section(console, settings)
    fig_paths: list[str] = []
    if figures:
        with console.status("writing figures"):
            fig_paths = _figures(out, settings, lecture_p, inits_p, residual_p, times_p)
    seconds = time.perf_counter() - t0
    profiles = {**lecture_p, **inits_p, **residual_p, **times_p}
    summary: dict[str, Any] = {
        "settings": dataclasses.asdict(settings),
        "seconds": seconds,
        "machine": f"{platform.machine()} {jax.default_backend()} ({jax.device_count()} device)",
        "jax": jax.__version__,
        "lecture": lecture,
        "initialisers": inits,
        "residual": residual,
        "time": times,
        "checks": checks,
        "diagnosis": diagnosis,
        "figures": fig_paths,
        "profiles": {k: p.to_dict() for k, p in profiles.items() if k != "plain"},
    }
    (out / "summary.json").write_text(json.dumps(_finite(summary), indent=1))
    (out / "summary.md").write_text(_markdown(summary))
    console.print(
        f"[bold green]Done[/] in {seconds:.0f} s. Summary: {out / 'summary.md'} and "
        f"{out / 'summary.json'}; figures: {out / 'figures'}/"
    )
    return summary


def _diagnose_section(console: Console, s: DemoSettings) -> dict[str, Any]:
    """6. A deliberately broken Flax model diagnosed, fixed, and diagnosed again."""
    from gradlab.demo._examples import demo_broken_model

    console.rule("6. gradlab.flow.diagnose on a broken Flax model (std 2/√n_prev, tanh)")
    del s  # the same model in --quick: 50 layers is what shows the explosion
    before, after = demo_broken_model(console, depth=50)
    return {"before": before.to_dict(), "after": after.to_dict()}
