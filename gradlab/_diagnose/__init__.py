"""``gradlab.flow.diagnose``: where gradients vanish or explode in *your* model, and why.

Private implementation, split by purpose: :mod:`._program` finds the layers in the traced
program, :mod:`._probe` runs it with zero probes at every layer, :mod:`._measure` compiles
one program for all measurements, :mod:`._layers` turns them into layers, :mod:`._judge` flags
and explains, :mod:`._fixes` edits the params, :mod:`._report` and :mod:`._figure` present.
The public names are re-exported from :mod:`gradlab.flow`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax

from gradlab._diagnose._fixes import Fix, apply_edits, apply_stacked
from gradlab._diagnose._judge import Flag, judge
from gradlab._diagnose._layers import Layer, Recurrence, build_layers, build_recurrences
from gradlab._diagnose._layers import weight_grads as _weight_grads
from gradlab._diagnose._measure import Prepared, measure
from gradlab._diagnose._report import Diagnosis
from gradlab._diagnose._trend import Trend, measure_trend
from gradlab._errors import InputError

__all__ = [
    "DiagnoseOptions",
    "Diagnosis",
    "Fix",
    "Flag",
    "Layer",
    "Recurrence",
    "Trend",
    "diagnose",
]


@dataclasses.dataclass(frozen=True)
class DiagnoseOptions:
    """Options of :func:`diagnose` (validated on construction).

    Attributes:
        batches: more argument tuples, each like ``args`` (same shapes), measured too.
        init: ``init(key) -> params`` (same structure as ``params``): measure ``seeds`` fresh
            initialisations (drawn with ``lax.map``, measured at once with ``vmap``) instead
            of ``params`` itself.
        seeds: number of initialisations with ``init``.
        key: seed for ``init``.
        decades: flag a gradient that vanishes or explodes by more than ``10**decades`` over
            the depth (or the sequence).
        outlier: flag a layer whose gain differs from the typical layer's by more than
            ``10**outlier`` (and by more than 5 robust standard deviations).
        depth_scales: flag a consistent per-layer growth or decay of the gradient (even under
            ``decades`` in all) over more plain layers than ``depth_scales × ξ``, with the
            depth scale ``ξ = 1/|ln χ₁|`` of the measured per-layer factor ``χ₁`` of
            ``‖∂L/∂h‖²``; 6 is the trainable depth of Schoenholz et al. (2017).

    Raises:
        InputError: for a field out of range (the message says what to pass).

    Example:
        >>> from gradlab.flow import DiagnoseOptions
        >>> DiagnoseOptions(seeds=8, decades=3.0).decades
        3.0
        >>> DiagnoseOptions(seeds=0)
        Traceback (most recent call last):
        ...
        gradlab.InputError: diagnose: seeds must be an integer >= 1, got 0; pass e.g. seeds=4.
    """

    batches: tuple[tuple[Any, ...], ...] = ()
    init: Callable[[jax.Array], Any] | None = None
    seeds: int = 4
    key: int = 0
    decades: float = 2.0
    outlier: float = 0.5
    depth_scales: float = 6.0

    def __post_init__(self) -> None:
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise InputError(
                f"diagnose: seeds must be an integer >= 1, got {self.seeds!r}; pass e.g. seeds=4."
            )
        for name in ("decades", "outlier", "depth_scales"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise InputError(
                    f"diagnose: {name} must be a positive finite number, got {v!r}; pass e.g. "
                    f"{name}={getattr(DiagnoseOptions, name)}."
                )
        if self.init is not None and not callable(self.init):
            raise InputError(
                "diagnose: init must be a function init(key) -> params, got "
                f"{type(self.init).__name__}; pass e.g. init=lambda key: make_params(key)."
            )
        if not all(isinstance(b, tuple) for b in self.batches):
            raise InputError(
                "diagnose: batches must be a sequence of argument tuples; pass e.g. "
                "batches=[(x2, y2), (x3, y3)] for f(params, x, y)."
            )


def diagnose(f: Callable[..., Any], params: Any, *args: Any, **options: Any) -> Diagnosis:
    """Finds where the gradient vanishes or explodes in a model, says why, suggests a fix.

    ``f(params, *args)`` returns the scalar loss. ``params`` is any pytree: Flax Linen
    variables (``f = lambda v, x, y: loss(model.apply(v, x), y)``), an NNX module or its
    ``nnx.split`` state, an equinox model, a dict of arrays. The model is not edited: its layers
    are the parameterised linear maps (``dot_general``, ``conv_general_dilated``) found in the
    traced program, named by the params paths (or the Flax name stack), in data-flow order; a
    ``lax.scan`` over stacked weights gives one layer per step, a scan with shared weights is a
    recurrence through time. One compiled program measures, per layer: ``‖∂L/∂h‖`` at its
    input and output (through zero probes), its gain, ``‖∂L/∂W‖``, ``‖h‖``, and the saturation
    of its activation, over every batch and initialisation.

    Like :func:`jax.jit`, a second call with the same ``f`` and inputs of the same structure
    and shapes reuses the first call's trace and compiled program (the params are inputs of
    it, so other values are measured as they are); globals that ``f`` reads are not read again.

    Args:
        f: ``f(params, *args) -> scalar loss``.
        params: the parameters (float array leaves are measured; other leaves stay fixed).
        *args: one batch of inputs for ``f``.
        **options: fields of :class:`DiagnoseOptions` (``batches``, ``init``, ``seeds``,
            ``key``, ``decades``, ``outlier``, ``depth_scales``).

    Returns:
        A :class:`Diagnosis`; ``.flags`` lists the problems, ``.verify()`` re-runs it with the
        suggested fixes applied.

    Raises:
        InputError: for an unknown option, a non-scalar ``f``, params without float arrays,
            or batches of another shape.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.flow import diagnose
        >>> ws = [jax.random.normal(jax.random.key(i), (16, 16)) * 0.3 / 4.0 for i in range(8)]
        >>> def f(ws, x):  # 8 tanh layers at std 0.3/sqrt(n): sigma_w^2 = 0.09, far below 1
        ...     for w in ws:
        ...         x = jnp.tanh(x @ w)
        ...     return jnp.sum(x)
        >>> d = diagnose(f, ws, jnp.ones((4, 16)))
        >>> [(fl.kind, fl.names[0]) for fl in d.flags]
        [('vanishing', '0')]
        >>> d.verify().ok  # every kernel rescaled to LeCun's std 1/sqrt(n), as suggested
        True
    """
    unknown = set(options) - {fld.name for fld in dataclasses.fields(DiagnoseOptions)}
    if unknown:
        names = ", ".join(fld.name for fld in dataclasses.fields(DiagnoseOptions))
        raise InputError(f"diagnose: unknown option(s) {sorted(unknown)}; valid: {names}.")
    if not callable(f):
        raise InputError(
            f"diagnose: f must be a function f(params, *args) -> scalar loss, got "
            f"{type(f).__name__}; pass the loss function first, then params and the batch."
        )
    opts = DiagnoseOptions(**{**options, "batches": tuple(options.get("batches", ()))})
    return _run(f, params, args, opts)


def _run(
    f: Callable[..., Any],
    params: Any,
    args: tuple[Any, ...],
    opts: DiagnoseOptions,
    prepared: Prepared | None = None,
    drawn: list[Any] | None = None,
) -> Diagnosis:
    batches = (args, *opts.batches)
    shapes = [jax.tree.map(lambda a: getattr(a, "shape", None), b) for b in batches]
    if any(s != shapes[0] for s in shapes[1:]):
        raise InputError(
            "diagnose: every batch must have the structure and shapes of args; pass batches "
            "of the same size (or diagnose each size on its own)."
        )
    m = measure(f, params, batches, opts.init, opts.seeds, opts.key, prepared, drawn)
    layers = build_layers(m)
    recurrences = build_recurrences(m)
    trend = measure_trend(layers)
    flags = judge(m, layers, recurrences, opts.decades, opts.outlier, opts.depth_scales, trend)

    def rerun(fixes: tuple[Fix, ...]) -> Diagnosis:
        # The same program measures the fixed params (no new trace or compilation); with an
        # init function, the edits apply to every initialisation already drawn.
        edits = tuple(e for fx in fixes for e in fx.edits)
        fixed = apply_edits(params, edits)
        return _run(f, fixed, args, opts, m.prepared, apply_stacked(m.values, edits))

    return Diagnosis(
        layers=tuple(layers),
        recurrences=tuple(recurrences),
        flags=tuple(flags),
        weight_grads=_weight_grads(m),
        samples=(m.values[0].shape[0], len(batches)),
        seconds=m.seconds,
        rerun=rerun,
        trend=trend,
    )
