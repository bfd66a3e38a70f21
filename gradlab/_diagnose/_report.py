"""The :class:`Diagnosis`: layers, recurrences, flags; a rich table, ``to_dict`` and a figure."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from gradlab._diagnose._fixes import Fix
from gradlab._diagnose._judge import Flag
from gradlab._diagnose._layers import Layer, Recurrence
from gradlab._diagnose._trend import Trend
from gradlab._errors import InputError


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _pow(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{10**x:.2e}"


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """Where the gradient vanishes or explodes in a model, why, and what to change.

    Attributes:
        layers: the layers along depth, in data-flow order.
        recurrences: the recurrences through time.
        flags: what was found; empty for a healthy model.
        weight_grads: ``log10 ‖∂L/∂θ‖`` per params leaf (per layer for stacked leaves).
        samples: ``(initialisations, batches)`` measured.
        seconds: wall time (tracing, compilation, run).
        rerun: re-runs the diagnosis with given fixes applied (used by :meth:`verify`).
        trend: the per-layer trend of ``‖∂L/∂h‖`` over the plain layers, measured and (where
            the activation is known) predicted by mean-field theory; None for fewer than 8.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradlab.flow import diagnose
        >>> def f(ws, x):  # 8 tanh layers whose weights shrink the signal 3x each
        ...     for w in ws:
        ...         x = jnp.tanh(x @ w)
        ...     return jnp.sum(x)
        >>> d = diagnose(f, [jnp.eye(4) / 3] * 8, jnp.ones((2, 4)))
        >>> d.ok, [(fl.kind, fl.where) for fl in d.flags], len(d.layers)
        (False, [('vanishing', 'depth')], 8)
        >>> print(d.summary().splitlines()[0][:44])
        VANISHING (depth): ‖∂L/∂h‖ at the input of 0
        >>> d.verify().ok  # the suggested fix applied to the params, measured again
        True
    """

    layers: tuple[Layer, ...]
    recurrences: tuple[Recurrence, ...]
    flags: tuple[Flag, ...]
    weight_grads: dict[str, Any]
    samples: tuple[int, int]
    seconds: float
    rerun: Callable[[tuple[Fix, ...]], Diagnosis] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    trend: Trend | None = None

    @property
    def ok(self) -> bool:
        """True when nothing was flagged.

        Example:
            >>> Diagnosis(layers=(), recurrences=(), flags=(), weight_grads={}, samples=(1, 1),
            ...           seconds=0.0).ok
            True
        """
        return not self.flags

    @property
    def fixes(self) -> tuple[Fix, ...]:
        """The suggested fixes, one per flag that has one.

        Example:
            >>> Diagnosis(layers=(), recurrences=(), flags=(), weight_grads={}, samples=(1, 1),
            ...           seconds=0.0).fixes
            ()
        """
        return tuple(f.fix for f in self.flags if f.fix is not None)

    def flagged(self, kind: str | None = None) -> set[int]:
        """Indices of the layers flagged (of ``kind``, if given).

        Example:
            >>> flag = Flag("vanishing", "depth", (0, 1), ("[0]", "[1]"), "...", "", None)
            >>> d = Diagnosis(layers=(), recurrences=(), flags=(flag,), weight_grads={},
            ...               samples=(1, 1), seconds=0.0)
            >>> d.flagged(), d.flagged("exploding")
            ({0, 1}, set())
        """
        return {i for f in self.flags if kind in (None, f.kind) for i in f.layers}

    def verify(self, fixes: tuple[Fix, ...] | None = None) -> Diagnosis:
        """Re-runs the diagnosis with ``fixes`` (default: all suggested) applied to the params.

        Returns:
            The new :class:`Diagnosis`; its ``flags`` show whether the fixes worked.

        Raises:
            InputError: if this Diagnosis was built by hand rather than by ``diagnose``.

        Example:
            >>> Diagnosis(layers=(), recurrences=(), flags=(), weight_grads={}, samples=(1, 1),
            ...           seconds=0.0).verify()
            Traceback (most recent call last):
            ...
            gradlab.InputError: verify: this Diagnosis was not made by diagnose(), ...
        """
        if self.rerun is None:
            raise InputError(
                "verify: this Diagnosis was not made by diagnose(), so there is nothing to "
                "re-run; call gradlab.flow.diagnose(f, params, *args).verify()."
            )
        return self.rerun(self.fixes if fixes is None else tuple(fixes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict: layers, recurrences, flags, weight gradients.

        Example:
            >>> d = Diagnosis(layers=(), recurrences=(), flags=(), weight_grads={},
            ...               samples=(1, 1), seconds=0.5)
            >>> sorted(d.to_dict())
            ['flags', 'layers', 'ok', 'recurrences', 'samples', 'seconds', 'trend', 'weight_grads']
        """
        layers = [
            {
                "index": lay.index,
                "name": lay.name,
                "log10_grad_out": _num(lay.grad_out),
                "log10_grad_in": _num(lay.grad_in),
                "log10_gain": _num(lay.gain),
                "log10_h_out": _num(lay.h_out),
                "log10_grad_w": _num(lay.grad_w),
                "activation": lay.activation,
                "weight_variance": _num(lay.weight_variance),
                "bias_variance": _num(lay.bias_variance),
                "saturation": _num(lay.saturation),
                "residual": lay.residual,
                "flags": [f.kind for f in self.flags if lay.index in f.layers],
            }
            for lay in self.layers
        ]
        recs = [
            {
                "name": r.name,
                "log10_grad": [_num(v) for v in r.grad],
                "forget_preactivation": None if r.forget is None else list(r.forget),
                "weight_variance": _num(r.weight_variance),
            }
            for r in self.recurrences
        ]
        return {
            "ok": self.ok,
            "samples": list(self.samples),
            "seconds": self.seconds,
            "layers": layers,
            "recurrences": recs,
            "flags": [f.to_dict() for f in self.flags],
            "weight_grads": self.weight_grads,
            "trend": None if self.trend is None else self.trend.to_dict(),
        }

    def table(self) -> Any:
        """A :class:`rich.table.Table`: layer, ‖∂L/∂h_out‖, gain, ‖∂L/∂W‖, flag.

        Example:
            >>> d = Diagnosis(layers=(), recurrences=(), flags=(), weight_grads={},
            ...               samples=(2, 1), seconds=0.5)
            >>> d.table().title
            'gradient flow (2 inits × 1 batch)'
        """
        from rich.table import Table

        i, b = self.samples
        t = Table(
            title=f"gradient flow ({i} init{'s' * (i > 1)} × {b} batch{'es' * (b > 1)})",
            title_justify="left",
        )
        for col in ("#", "layer", "‖∂L/∂h_out‖", "gain", "‖∂L/∂W‖", "σ_w²·fan_in", "act", "flag"):
            t.add_column(col, justify="left" if col in ("layer", "act", "flag") else "right")
        for lay in self.layers:
            kinds = [f.kind for f in self.flags if lay.index in f.layers]
            flag = ", ".join(kinds)
            t.add_row(
                str(lay.index),
                lay.name + (" (residual)" if lay.residual else ""),
                _pow(lay.grad_out),
                "—" if not math.isfinite(lay.gain) else f"×{10**lay.gain:.3g}",
                _pow(lay.grad_w),
                "—" if lay.weight_variance is None else f"{lay.weight_variance:.3g}",
                lay.activation,
                f"[bold red]{flag}[/]" if flag else "",
            )
        for r in self.recurrences:
            g = r.grad[np.isfinite(r.grad)]
            per = (g[0] - g[-1]) / max(len(g) - 1, 1) if g.size > 1 else math.nan
            kinds = [f.kind for f in self.flags if f.where == "time" and r.name in f.names]
            flag = ", ".join(kinds)
            t.add_row(
                "t",
                f"{r.name} ({len(r.grad)} steps)",
                _pow(float(r.grad[-1])),
                "—" if not math.isfinite(per) else f"×{10**per:.3g}/step",
                "",
                "—" if r.weight_variance is None else f"{r.weight_variance:.3g}",
                r.activation,
                f"[bold red]{flag}[/]" if flag else "",
            )
        return t

    def summary(self) -> str:
        """The flags in words: what, why, fix (or that nothing was found).

        Example:
            >>> Diagnosis(layers=(), recurrences=(), flags=(), weight_grads={}, samples=(1, 1),
            ...           seconds=0.0).summary()[:16]
            'No layers found:'
        """
        if not self.layers and not self.recurrences:
            return (
                "No layers found: no dot_general or conv_general_dilated in f reads a params "
                "leaf, so there is no gradient flow through layers to diagnose."
            )
        if not self.flags:
            return "No vanishing or exploding gradients found."
        lines = []
        for f in self.flags:
            lines.append(f"{f.kind.upper()} ({f.where}): {f.measured}.")
            if f.why:
                lines.append(f"  why: {f.why}.")
            if f.fix is not None:
                lines.append(f"  fix: {f.fix.description}.")
        return "\n".join(lines)

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        return Group(self.table(), Text(self.summary()))

    def __str__(self) -> str:
        import io

        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=120, color_system=None, force_terminal=False).print(self)
        return buf.getvalue().rstrip()

    def figure(self, path: str | os.PathLike[str] | None = None, theory: bool = True) -> Any:
        """Gradient norm through the layers (and steps), flagged layers marked, theory dashed.

        Args:
            path: if given, also write PNG and SVG there (:func:`gradlab.plots.save`).
            theory: draw the mean-field prediction ``√χ₁`` per layer, anchored at the output.

        Returns:
            The :class:`matplotlib.figure.Figure`.

        Example:
            >>> import jax.numpy as jnp
            >>> from gradlab.flow import diagnose
            >>> f = lambda ws, x: jnp.sum(jnp.tanh(jnp.tanh(x @ ws[0]) @ ws[1]))
            >>> fig = diagnose(f, [jnp.eye(4)] * 2, jnp.ones((2, 4))).figure()  # doctest: +SKIP
            >>> fig.savefig("diagnosis.png")  # doctest: +SKIP
        """
        from gradlab._diagnose._figure import draw

        fig = draw(self, theory=theory)
        if path is not None:
            from gradlab import plots

            plots.save(fig, path)
        return fig
