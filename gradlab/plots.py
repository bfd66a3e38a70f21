"""Figures: gradient norms through depth and time, and the order/chaos phase diagram.

Every function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot``, so no GUI
backend is touched and nothing is left open), returns it, and writes PNG and SVG when given a
``path``. Pass ``ax=`` to draw into an existing axes instead.

Example:
    >>> from gradlab import flow, plots
    >>> p = flow.depth_profile("mlp", depth=10, width=8, activation="linear",
    ...                        init="orthogonal:0.9", seeds=2, batch=2)
    >>> fig = plots.plot_profiles([p], labels=["orthogonal x 0.9"])
    >>> fig.axes[0].get_yscale()
    'log'
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gradlab import theory as _theory
from gradlab._errors import InputError

__all__ = [
    "PALETTE",
    "plot_cell_path",
    "plot_phase_diagram",
    "plot_profiles",
    "save",
]

PALETTE: tuple[str, ...] = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
)
"""The colours :func:`plot_profiles` uses in order (matplotlib's tab10, reordered).

Example:
    >>> from gradlab import plots
    >>> plots.PALETTE[:2]
    ('#1f77b4', '#d62728')
"""
_COLORS = PALETTE


# What the plotting functions read of a :class:`gradlab.flow.FlowProfile` (and of its
# :class:`~gradlab.flow.Series` and :class:`~gradlab.flow.TheoryLine`): plots draws measured
# profiles without depending on the package that measures them.
class _TheoryLike(Protocol):
    @property
    def index(self) -> np.ndarray: ...
    @property
    def mean(self) -> np.ndarray: ...
    @property
    def std(self) -> np.ndarray: ...


class _SeriesLike(Protocol):
    @property
    def index(self) -> np.ndarray: ...
    @property
    def log10(self) -> np.ndarray: ...
    @property
    def mean(self) -> np.ndarray: ...
    @property
    def theory(self) -> _TheoryLike | None: ...
    def quantile(self, q: float | tuple[float, ...]) -> np.ndarray: ...


class _ProfileLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def config(self) -> Mapping[str, Any]: ...
    @property
    def series(self) -> Mapping[str, Any]: ...
    def __getitem__(self, name: str) -> _SeriesLike: ...


_YLABELS = {
    ("depth", "grad_h_rel"): r"$\|\partial L/\partial h_l\| \;/\; \|\partial L/\partial h_L\|$",
    ("depth", "grad_h"): r"$\|\partial L/\partial h_l\|$",
    ("depth", "grad_w"): r"per-example $\|\partial \ell/\partial W_l\|_F$",
    ("depth", "h"): r"$\|h_l\|$",
    ("time", "grad_h_rel"): r"$\|\partial L/\partial a_t\| \;/\; \|\partial L/\partial a_T\|$",
    ("time", "grad_h"): r"$\|\partial L/\partial a_t\|$",
    ("time", "grad_x"): r"$\|\partial L/\partial x_t\|$",
    ("time", "h"): r"$\|a_t\|$",
    ("time", "cell_path"): r"cell path $\prod_{s>t} f_s$ (geometric mean over units)",
}


def save(
    fig: Figure, path: str | os.PathLike[str], formats: Sequence[str] = ("png", "svg")
) -> list[Path]:
    """Writes ``fig`` as ``path`` with each suffix in ``formats`` (PNG at 150 dpi).

    Args:
        fig: the figure.
        path: file path; its suffix, if any, is replaced.
        formats: file formats to write.

    Returns:
        The paths written.

    Example:
        >>> import tempfile
        >>> from matplotlib.figure import Figure
        >>> from gradlab import plots
        >>> with tempfile.TemporaryDirectory() as d:
        ...     [p.name for p in plots.save(Figure(), f"{d}/empty.png", ("png",))]
        ['empty.png']
    """
    base = Path(path)
    if base.suffix.lower() in (".png", ".svg", ".pdf"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = base.with_suffix("." + fmt)
        fig.savefig(target, dpi=150, bbox_inches="tight")
        written.append(target)
    return written


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _pow10(a: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.power(10.0, np.asarray(a, dtype=np.float64))


def plot_profiles(
    profiles: Sequence[_ProfileLike],
    labels: Sequence[str] | None = None,
    *,
    quantity: str = "grad_h_rel",
    band: tuple[float, float] | None = (0.05, 0.95),
    theory: bool = True,
    colors: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Norms vs layer (or time step) on a log scale: mean, spread over seeds, theory.

    For each profile: the mean of ``log10`` norm over seeds and examples (solid, plotted as
    ``10**mean``, i.e. the geometric mean), a shaded band between two quantiles, and, where the
    series has one, its theory line (dashed, same colour; dotted band ±1 std when the theory
    models the spread).

    Args:
        profiles: :class:`gradlab.flow.FlowProfile` results of the same kind.
        labels: legend labels (default: each profile's init).
        quantity: which series (``"grad_h_rel"``, ``"grad_h"``, ``"grad_w"``, ``"h"``, ...).
        band: lower and upper quantile of the shaded band, or None.
        theory: draw theory lines.
        colors: one matplotlib colour per profile (default: a fixed palette in order).
        ax: draw into this axes.
        title: axes title.
        path: if given, save PNG and SVG there.

    Returns:
        The figure.

    Raises:
        InputError: for no profiles, depth and time profiles mixed, or as many labels or
            colors as profiles.

    Example:
        >>> from gradlab import flow, plots
        >>> p = flow.depth_profile("mlp", depth=10, width=8, activation="linear",
        ...                        init="orthogonal:0.9", seeds=2, batch=2)
        >>> fig = plots.plot_profiles([p], ["orthogonal x 0.9"], quantity="h", theory=False)
        >>> fig.axes[0].get_xlabel()
        'layer $l$'
    """
    if not profiles:
        raise InputError(
            "plot_profiles needs at least one FlowProfile; pass e.g. [flow.depth_profile(...)]."
        )
    kinds = {p.kind for p in profiles}
    if len(kinds) != 1:
        raise InputError(
            "plot_profiles: a mix of depth and time profiles; plot them in separate calls."
        )
    kind = kinds.pop()
    if labels is None:
        labels = [str(p.config.get("init")) for p in profiles]
    if len(labels) != len(profiles):
        raise InputError(
            f"{len(labels)} labels for {len(profiles)} profiles; pass one label per profile."
        )
    if colors is not None and len(colors) != len(profiles):
        raise InputError(
            f"{len(colors)} colors for {len(profiles)} profiles; pass one color per profile."
        )
    fig, ax = _new_axes(ax, (7.5, 4.6))
    theory_drawn = False
    for i, (p, label) in enumerate(zip(profiles, labels, strict=True)):
        s = p[quantity]
        color = colors[i] if colors is not None else _COLORS[i % len(_COLORS)]
        ax.plot(s.index, _pow10(s.mean), color=color, lw=2.0, label=label)
        if band is not None and s.log10.shape[0] * s.log10.shape[1] > 1:
            lo, hi = s.quantile(band)
            ax.fill_between(s.index, _pow10(lo), _pow10(hi), color=color, alpha=0.18, lw=0)
        if theory and s.theory is not None:
            t = s.theory
            ax.plot(t.index, _pow10(t.mean), color=color, lw=1.4, ls="--", alpha=0.95)
            if np.any(t.std > 0):
                for sign in (-1, 1):
                    ax.plot(t.index, _pow10(t.mean + sign * t.std), color=color, lw=0.8, ls=":")
            theory_drawn = True
    ax.set_yscale("log")
    ax.set_xlabel("layer $l$" if kind == "depth" else "time step $t$")
    ax.set_ylabel(_YLABELS.get((kind, quantity), quantity))
    ax.grid(True, which="major", alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if theory_drawn:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="0.3", ls="--", lw=1.4))
        names.append("theory (dashed; dotted ±1 std)")
    if band is not None:
        from matplotlib.patches import Patch

        handles.append(Patch(color="0.5", alpha=0.25, lw=0))
        names.append(f"{band[0]:.0%}–{band[1]:.0%} of seeds × examples")
    ax.legend(handles, names, fontsize=8, loc="best", framealpha=0.85)
    if title:
        ax.set_title(title, fontsize=11)
    if path is not None:
        save(fig, path)
    return fig


def plot_cell_path(
    profiles: Sequence[_ProfileLike],
    labels: Sequence[str] | None = None,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """The LSTM cell path ``Π_{s>t} f_s`` vs time, with ``σ(b_f)^(T−t)`` and the Gaussian theory.

    Args:
        profiles: LSTM :func:`gradlab.flow.time_profile` results.
        labels: legend labels (default: the forget bias).
        ax: draw into this axes.
        title: axes title.
        path: if given, save PNG and SVG there.

    Returns:
        The figure.

    Raises:
        InputError: if a profile has no ``cell_path`` series (not an LSTM time profile).

    Example:
        >>> from gradlab import flow, plots
        >>> p = flow.time_profile("lstm", steps=20, hidden=8, forget_bias=1.0, seeds=2, batch=2)
        >>> len(plots.plot_cell_path([p]).axes)
        1
    """
    lstms = [p for p in profiles if p.kind == "time" and "cell_path" in p.series]
    if not lstms:
        raise InputError(
            "plot_cell_path needs LSTM time profiles (with a 'cell_path' series); pass "
            "flow.time_profile('lstm', ...) results."
        )
    if labels is None:
        labels = [f"LSTM, $b_f$ = {p.config['forget_bias']:g}" for p in lstms]
    fig, ax = _new_axes(ax, (7.5, 4.6))
    for i, (p, label) in enumerate(zip(lstms, labels, strict=True)):
        s = p["cell_path"]
        color = _COLORS[(i + 1) % len(_COLORS)]
        ax.plot(s.index, _pow10(s.mean), color=color, lw=2.0, label=label + " (measured)")
        T = p.config["steps"]
        sig = 1.0 / (1.0 + np.exp(-p.config["forget_bias"]))
        ax.plot(s.index, sig ** (T - s.index), color=color, lw=1.2, ls=":")
        if s.theory is not None:
            ax.plot(s.theory.index, _pow10(s.theory.mean), color=color, lw=1.4, ls="--")
    from matplotlib.lines import Line2D

    handles, names = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="0.3", ls=":"), Line2D([], [], color="0.3", ls="--")]
    names += [
        r"$\sigma(b_f)^{T-t}$ (pre-activations at the bias)",
        r"$\exp((T-t)\,E[\ln\sigma(b_f+z)])$, measured spread of $z$",
    ]
    ax.legend(handles, names, fontsize=8, loc="best", framealpha=0.85)
    ax.set_yscale("log")
    ax.set_xlabel("time step $t$")
    ax.set_ylabel(_YLABELS[("time", "cell_path")])
    ax.grid(True, which="major", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=11)
    if path is not None:
        save(fig, path)
    return fig


def plot_phase_diagram(
    activation: str = "tanh",
    *,
    weight_variances: np.ndarray | None = None,
    bias_variances: np.ndarray | None = None,
    markers: dict[str, tuple[float, float]] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Order/chaos phase diagram: ``χ₁(σ_w², σ_b²)`` as a colour map with the critical line.

    ``χ₁ < 1`` (blue): ordered, gradients vanish like ``χ₁^depth``; ``χ₁ > 1`` (red): chaotic,
    they explode. The black line is :func:`gradlab.theory.critical_weight_variance`. The
    colour scale is logarithmic and centred on 1.

    Args:
        activation: a :data:`gradlab.theory.MEAN_FIELD_ACTIVATIONS` name.
        weight_variances: grid of ``σ_w²`` (default 0.25..4.5).
        bias_variances: grid of ``σ_b²`` (default 0..0.5).
        markers: labelled points ``{label: (σ_w², σ_b²)}`` to mark (default: the lecture's
            initialisers at zero bias).
        ax: draw into this axes.
        title: axes title.
        path: if given, save PNG and SVG there.

    Returns:
        The figure.

    Example:
        >>> import numpy as np
        >>> from gradlab import plots
        >>> fig = plots.plot_phase_diagram("tanh", weight_variances=np.linspace(0.5, 3, 12),
        ...                                bias_variances=np.linspace(0, 0.3, 8))
        >>> len(fig.axes) >= 1
        True
    """
    sw = np.linspace(0.25, 4.5, 120) if weight_variances is None else np.asarray(weight_variances)
    sb = np.linspace(0.0, 0.5, 90) if bias_variances is None else np.asarray(bias_variances)
    SW, SB = np.meshgrid(sw, sb)
    chi = _theory.chi1(SW, SB, activation)
    fig, ax = _new_axes(ax, (7.0, 4.8))
    # Colour = log10 χ₁, diverging at χ₁ = 1 with each side stretched to its own range, so the
    # chaotic side (χ₁ up to ~2) is as visible as the ordered one (χ₁ down to ~0.1).
    logc = np.log10(np.clip(chi, 1e-12, None))
    lo_c = min(float(np.min(logc)), -1e-3)
    hi_c = max(float(np.max(logc)), 1e-3)
    norm = mcolors.TwoSlopeNorm(vmin=lo_c, vcenter=0.0, vmax=hi_c)
    mesh = ax.pcolormesh(SW, SB, logc, cmap="RdBu_r", norm=norm, shading="auto", rasterized=True)
    cbar = fig.colorbar(mesh, ax=ax)
    nice = np.array([0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.1, 1.2, 1.3, 1.5, 2, 3, 5, 10])
    nice = nice[(np.log10(nice) >= lo_c) & (np.log10(nice) <= hi_c)]
    cbar.set_ticks(np.log10(nice))
    cbar.set_ticklabels([f"{v:g}" for v in nice])
    cbar.set_label(r"$\chi_1 = \sigma_w^2\,E[\phi'(\sqrt{q^*}z)^2]$ (log scale)")
    # the critical line rises steeply from (1, 0): sample it densely near σ_b² = 0
    sb_line = np.unique(np.concatenate([np.geomspace(1e-6, 1.0, 60) * sb.max(), sb]))
    crit = _theory.critical_weight_variance(activation, sb_line)
    ax.plot(crit, sb_line, color="k", lw=2.0, label=r"critical line $\chi_1 = 1$")
    if markers is None and activation == "tanh":
        markers = {
            r"lecture $1/\sqrt{n}$ (LeCun)": (1.0, 0.0),
            r"lecture $2/\sqrt{n_{in}+n_{out}}$": (2.0, 0.0),
            r"lecture $2/\sqrt{n}$": (4.0, 0.0),
            r"$K/\sqrt{n}$, $K=0.9$": (0.81, 0.0),
        }
    for i, (label, (x, y)) in enumerate((markers or {}).items()):
        ax.plot(
            [x],
            [y],
            marker="o",
            ms=8,
            mec="k",
            mfc=_COLORS[(i + 2) % len(_COLORS)],
            ls="none",
            clip_on=False,
            label=label,
            zorder=5,
        )
    lo, hi = sw.min(), sw.max()
    ax.text(
        lo + 0.03 * (hi - lo),
        sb.max() * 0.92,
        "ordered\n(vanishing)",
        fontsize=10,
        va="top",
        color="navy",
    )
    ax.text(
        hi - 0.03 * (hi - lo),
        sb.max() * 0.92,
        "chaotic\n(exploding)",
        fontsize=10,
        va="top",
        ha="right",
        color="darkred",
    )
    ax.set_xlim(lo, hi)
    ax.set_ylim(sb.min(), sb.max())
    ax.set_xlabel(r"weight variance $\sigma_w^2$ (weights $\sim N(0, \sigma_w^2/n)$)")
    ax.set_ylabel(r"bias variance $\sigma_b^2$")
    ax.legend(fontsize=8, loc="center right", framealpha=0.85)
    ax.set_title(title or f"{activation}: order/chaos phase diagram (mean field)", fontsize=11)
    if path is not None:
        save(fig, path)
    return fig


def _figure_grid(n: int, figsize: tuple[float, float]) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, n)
    return fig, list(np.atleast_1d(axes))
