"""Figure pieces the experiments share: loss curves whose diverged runs stay visible.

A diverged run's loss becomes ``inf`` or ``nan``, which matplotlib leaves out: the run would
vanish from the panel. :func:`loss_curves` draws every seed up to the step where it left the
plotted range and marks that step with a cross on the panel's top edge, so a reader sees which
runs diverged and when.

How a new experiment uses it::

    fig = Figure(...); ax = fig.subplots()
    loss_curves(ax, loss[arm], color=plots.PALETTE[i], label="He, lr 0.01", top=5.0)
"""

from __future__ import annotations

import warnings

import numpy as np
from matplotlib.axes import Axes

__all__ = ["diverged_step", "loss_curves"]


def diverged_step(loss: np.ndarray, top: float) -> np.ndarray:
    """Per run, the first step whose loss is non-finite or above ``top`` (``-1`` if none).

    Example:
        >>> diverged_step(np.array([[1.0, 2.0, np.inf], [1.0, 0.5, 0.4]]), top=10.0).tolist()
        [2, -1]
    """
    bad = ~np.isfinite(loss) | (loss > top)
    first = np.argmax(bad, axis=-1)
    return np.where(bad.any(axis=-1), first, -1)


def loss_curves(
    ax: Axes,
    loss: np.ndarray,
    *,
    color: str,
    label: str,
    top: float,
    median: bool = True,
    ls: str = "-",
) -> int:
    """Draws every run's loss (thin) and their median (thick); marks diverged runs.

    A run that leaves ``(0, top]`` is drawn up to that step and marked with an ``x`` at
    height ``top`` (the panel's upper limit is set to ``top``); the legend entry counts them.

    Args:
        ax: the axes.
        loss: ``(runs, steps)``.
        color: the runs' colour.
        label: the legend label.
        top: the panel's upper limit; larger or non-finite losses count as diverged.
        median: also draw the median over runs while at least half the runs are below ``top``.
        ls: the median's line style.

    Returns:
        How many runs diverged.
    """
    loss = np.asarray(loss, dtype=np.float64)
    steps = np.arange(loss.shape[-1])
    first = diverged_step(loss, top)
    for run, stop in zip(loss, first, strict=True):
        end = len(run) if stop < 0 else stop
        ax.plot(steps[:end], run[:end], color=color, lw=0.5, alpha=0.35)
        if stop >= 0:
            ax.plot([stop], [top], marker="x", color=color, ms=7, mew=1.8, clip_on=False)
    n_div = int((first >= 0).sum())
    if median:
        shown = np.where(np.isfinite(loss) & (loss <= top), loss, np.inf)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.median(shown, axis=0)
        med = np.where(np.isfinite(med), med, np.nan)
        ax.plot(steps, med, color=color, lw=1.6, ls=ls)
    suffix = f" ({n_div}/{len(loss)} diverged, x)" if n_div else ""
    ax.plot([], [], color=color, lw=1.6, ls=ls, label=label + suffix)
    ax.set_ylim(top=top)
    return n_div
