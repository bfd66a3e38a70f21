"""Results of a gradient-flow measurement and their JSON form.

:class:`FlowProfile` holds :class:`Series` (measured ``log10`` norms), each with an optional
:class:`TheoryLine`; all three are frozen dataclasses of numpy arrays with a ``to_dict``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["FlowProfile", "Series", "TheoryLine"]

_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclasses.dataclass(frozen=True)
class TheoryLine:
    """A closed-form prediction for a :class:`Series`, in the same ``log10`` units.

    Attributes:
        index: the layers / steps it covers.
        mean: predicted mean of ``log10`` norm.
        std: predicted standard deviation (0 where not modelled).
        exact: whether the prediction is exact at this width.
        note: what it is (formula and source).

    Example:
        >>> import numpy as np
        >>> from gradlab.flow import TheoryLine
        >>> line = TheoryLine(np.arange(3), np.array([-2.0, -1.0, 0.0]), np.zeros(3), True, "chain")
        >>> line.to_dict()["mean"]
        [-2.0, -1.0, 0.0]
    """

    index: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    exact: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return {
            "index": self.index.tolist(),
            "mean": _json_list(self.mean),
            "std": _json_list(self.std),
            "exact": self.exact,
            "note": self.note,
        }


def _json_list(a: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(a, dtype=np.float64)]


@dataclasses.dataclass(frozen=True)
class Series:
    """One measured quantity along depth or time: ``log10`` norms per seed and example.

    Attributes:
        name: key in :attr:`FlowProfile.series` (``"grad_h"``, ``"grad_h_rel"``, ...).
        label: a readable label, e.g. ``"‖∂L/∂h_l‖"``.
        index: layer or time-step numbers, shape ``(n,)``.
        log10: the measurements, shape ``(seeds, batch, n)``; ``-inf`` for an exact zero (a
            dead ReLU layer), ``+inf`` or ``nan`` for an overflow.
        theory: the matching prediction, if gradlab has one for this configuration.

    Example:
        >>> import numpy as np
        >>> from gradlab.flow import Series
        >>> norms = np.array([[[100.0, 10.0, 1.0]], [[1.0, 1.0, 1.0]]])  # 2 seeds, 1 example
        >>> s = Series("grad_h", "‖∂L/∂h_l‖", np.arange(3), np.log10(norms))
        >>> s.mean.tolist(), s.finite_fraction.tolist()
        ([1.0, 0.5, 0.0], [1.0, 1.0, 1.0])
    """

    name: str
    label: str
    index: np.ndarray
    log10: np.ndarray
    theory: TheoryLine | None = None

    def _flat(self) -> np.ndarray:
        """``(seeds * batch, n)`` samples with non-finite entries as nan."""
        a = np.where(np.isfinite(self.log10), self.log10, np.nan)
        return a.reshape(-1, self.log10.shape[-1])

    @property
    def finite_fraction(self) -> np.ndarray:
        """Fraction of (seed, example) samples that are finite, per index."""
        return np.mean(np.isfinite(self.log10), axis=(0, 1))

    @property
    def mean(self) -> np.ndarray:
        """Mean of ``log10`` norm over seeds and examples (finite samples only), per index."""
        return _quiet(np.nanmean, self._flat(), axis=0)

    @property
    def std(self) -> np.ndarray:
        """Standard deviation over seeds and examples (``ddof=1``), per index."""
        return _quiet(np.nanstd, self._flat(), axis=0, ddof=1)

    @property
    def sem(self) -> np.ndarray:
        """Standard error of :attr:`mean`: std of the per-seed means over ``sqrt(seeds)``."""
        a = np.where(np.isfinite(self.log10), self.log10, np.nan)
        per_seed = _quiet(np.nanmean, a, axis=1)  # (seeds, n)
        count = np.sum(np.isfinite(per_seed), axis=0)
        return _quiet(np.nanstd, per_seed, axis=0, ddof=1) / np.sqrt(np.maximum(count, 1))

    def quantile(self, q: float | tuple[float, ...]) -> np.ndarray:
        """Quantile(s) of ``log10`` norm over seeds and examples, per index."""
        return _quiet(np.nanquantile, self._flat(), q, axis=0)

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        """JSON-serialisable summary (and the raw samples with ``samples=True``)."""
        qs = self.quantile(_QUANTILES)
        out: dict[str, Any] = {
            "label": self.label,
            "index": self.index.tolist(),
            "mean": _json_list(self.mean),
            "std": _json_list(self.std),
            "sem": _json_list(self.sem),
            "quantiles": {f"{q:g}": _json_list(row) for q, row in zip(_QUANTILES, qs, strict=True)},
            "finite_fraction": _json_list(self.finite_fraction),
            "theory": None if self.theory is None else self.theory.to_dict(),
        }
        if samples:
            out["log10"] = [[_json_list(r) for r in s] for s in self.log10]
        return out


def _quiet(fn: Callable[..., np.ndarray], *args: Any, **kwargs: Any) -> np.ndarray:
    """Runs a nan-aware numpy reduction; an all-nan column gives nan without a warning."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(fn(*args, **kwargs), dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class FlowProfile:
    """The result of :func:`depth_profile` or :func:`time_profile`.

    Attributes:
        kind: ``"depth"`` or ``"time"``.
        config: the configuration, JSON-serialisable.
        series: the measured quantities by name (see :func:`depth_profile` and
            :func:`time_profile` for the names).
        seconds: wall time of the measurement (compilation included on a first call).
        compiled: True if this call compiled (first call for the configuration).

    Example:
        >>> import numpy as np
        >>> from gradlab.flow import FlowProfile, Series
        >>> rel = Series("grad_h_rel", "ratio", np.arange(3), np.log10([[[0.01, 0.1, 1.0]]]))
        >>> p = FlowProfile("depth", {"arch": "mlp"}, {"grad_h_rel": rel})
        >>> round(p.headline()["typical_ratio"], 6), p.index_label
        (0.01, 'layer l')
    """

    kind: str
    config: dict[str, Any]
    series: dict[str, Series]
    seconds: float = 0.0
    compiled: bool = False

    def __getitem__(self, name: str) -> Series:
        """The series called ``name`` (``"grad_h"``, ``"grad_h_rel"``, ``"h"``, ...)."""
        try:
            return self.series[name]
        except KeyError:
            raise KeyError(f"No series {name!r}; available: {sorted(self.series)}.") from None

    @property
    def index_label(self) -> str:
        """``"layer l"`` or ``"time step t"``."""
        return "layer l" if self.kind == "depth" else "time step t"

    @property
    def title(self) -> str:
        """A one-line description of the configuration."""
        c = self.config
        if self.kind == "depth":
            extra = ""
            if c["arch"] == "residual":
                extra = f", branch_scale={c.get('branch_scale')}"
            return (
                f"{c['arch']} depth={c['depth']} width={c['width']} {c['activation']} "
                f"init={c['init']}{extra} ({c['seeds']} seeds x {c['batch']} examples)"
            )
        extra = f", forget_bias={c['forget_bias']:g}" if c["arch"] == "lstm" else ""
        return (
            f"{c['arch']} steps={c['steps']} hidden={c['hidden']} init={c['init']}{extra} "
            f"({c['seeds']} seeds x {c['batch']} examples)"
        )

    def headline(self) -> dict[str, Any]:
        """End-to-end numbers: ``log10(‖∂L/∂h_first‖/‖∂L/∂h_last‖)`` measured and predicted."""
        s = self["grad_h_rel"]
        out: dict[str, Any] = {
            "log10_ratio_mean": float(s.mean[0]),
            "log10_ratio_std": float(s.std[0]),
            "log10_ratio_sem": float(s.sem[0]),
            "typical_ratio": float(10 ** s.mean[0]),
            "finite_fraction": float(s.finite_fraction[0]),
        }
        if s.theory is not None:
            out.update(
                theory_log10_mean=float(s.theory.mean[0]),
                theory_log10_std=float(s.theory.std[0]),
                theory_exact=s.theory.exact,
                theory_note=s.theory.note,
            )
        return out

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        """JSON-serialisable dict: config, headline and per-series summaries."""
        return {
            "kind": self.kind,
            "config": self.config,
            "seconds": self.seconds,
            "headline": _jsonable(self.headline()),
            "series": {k: v.to_dict(samples=samples) for k, v in self.series.items()},
        }

    def table(self, rows: int = 11) -> Any:
        """A :class:`rich.table.Table` of the main series at about ``rows`` indices."""
        from rich.table import Table

        g = self["grad_h_rel"]
        n = len(g.index)
        picks = sorted(set(np.linspace(0, n - 1, min(rows, n)).round().astype(int).tolist()))
        table = Table(title=self.title, title_justify="left")
        what = "‖∂L/∂h_l‖/‖∂L/∂h_L‖" if self.kind == "depth" else "‖∂L/∂a_t‖/‖∂L/∂a_T‖"
        table.add_column(self.index_label, justify="right")
        table.add_column(f"log10 {what}\nmean ± std", justify="right")
        table.add_column("5%..95%", justify="right")
        table.add_column("theory\nmean ± std", justify="right")
        other = [k for k in ("grad_w", "grad_x", "h") if k in self.series]
        for k in other:
            table.add_column(f"log10 {self.series[k].label}\nmean", justify="right")
        q = g.quantile((0.05, 0.95))
        for i in picks:
            th = "—"
            if g.theory is not None:
                j = np.searchsorted(g.theory.index, g.index[i])
                if j < len(g.theory.index) and g.theory.index[j] == g.index[i]:
                    th = f"{g.theory.mean[j]:+.2f} ± {g.theory.std[j]:.2f}"
            row = [
                str(int(g.index[i])),
                f"{g.mean[i]:+.2f} ± {g.std[i]:.2f}",
                f"{q[0][i]:+.2f}..{q[1][i]:+.2f}",
                th,
            ]
            for k in other:
                s = self.series[k]
                j = np.searchsorted(s.index, g.index[i])
                ok = j < len(s.index) and s.index[j] == g.index[i]
                row.append(f"{s.mean[j]:+.2f}" if ok else "—")
            table.add_row(*row)
        return table

    def __rich__(self) -> Any:
        return self.table()

    def __str__(self) -> str:
        """The table as plain text (``print(profile)``)."""
        import io

        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=120, color_system=None, force_terminal=False).print(self.table())
        return buf.getvalue().rstrip()


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out
