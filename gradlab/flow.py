"""Gradient-flow measurements: per-layer and per-time-step gradient norms over many seeds.

Two entry points, one compiled function per configuration (cached: calling again with the same
configuration and a different ``key`` does not retrace):

* :func:`depth_profile` — an :class:`gradlab.nn.MLP` or :class:`gradlab.nn.ResidualStack` of any
  depth: per layer ``l``, the per-example norms of ``∂L/∂h_l`` (through zero probes), of the
  weight gradients ``∂L/∂W_l`` and of the hidden states ``h_l``.
* :func:`time_profile` — an :class:`gradlab.nn.LSTM` or :class:`gradlab.nn.RNN`: per time step
  ``t``, the norms of ``∂L/∂a^(t)``, ``∂L/∂x^(t)`` and ``a^(t)`` (and, for the LSTM, the product
  of forget gates along the cell path).

Every seed draws its own network (the model is built inside a compiled, ``vmap`` ped function
from the seed's key), its own inputs ``x ~ N(0, I)`` and its own random labels.

The loss. The network has one output ``y_i`` per example and the loss is the *sum* over the
batch of a per-example loss, so row ``i`` of ``∂L/∂h_l`` is example ``i``'s own gradient.
``loss="readout"`` (default) is ``ℓ_i = y_i``: a random linear readout of the last hidden
state (``y = h_depth·w_out + b_out`` with random ``w_out``), whose gradient there is exactly
``w_out``. ``loss="bce"`` is the lecture's binary cross-entropy of the logit ``y_i`` against a
random label ``t_i``: ``∂ℓ_i/∂h_depth = (σ(y_i) − t_i)·w_out``. Either way the loss only sets a
per-example scale, so the profile *relative to the last layer*,
``‖∂ℓ_i/∂h_l‖ / ‖∂ℓ_i/∂h_depth‖``, is a property of the network alone — that is the quantity
:mod:`gradlab.theory` predicts. (With BCE, an exploding network saturates the sigmoid:
``σ(y) − t`` underflows to exactly 0 and the example's gradient vanishes at *every* layer;
those samples are ``-inf`` and left out of the statistics, see ``finite_fraction``.)

All norms are stored as ``log10`` per seed and example (arrays ``(seeds, batch, n)``) in a
:class:`FlowProfile`; statistics pool seeds and examples, and ``sem`` is the standard error
of the mean across seeds.

Example:
    >>> from gradlab import flow
    >>> p = flow.depth_profile("mlp", depth=20, width=16, activation="linear",
    ...                        init="orthogonal:0.9", seeds=2, batch=2)
    >>> round(float(p["grad_h_rel"].mean[0]), 4)  # log10(0.9 ** 20)
    -0.9151
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gradlab import init as _init
from gradlab import nn as _nn
from gradlab import theory as _theory
from gradlab._diagnose import DiagnoseOptions, Diagnosis, diagnose

__all__ = [
    "INIT_NAMES",
    "DiagnoseOptions",
    "Diagnosis",
    "FlowProfile",
    "InitSpec",
    "Series",
    "TheoryLine",
    "cache_info",
    "clear_cache",
    "depth_profile",
    "diagnose",
    "resolve_init",
    "time_profile",
]

Initializer = Callable[..., jax.Array]
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)

# --------------------------------------------------------------------------- initialisers


@dataclasses.dataclass(frozen=True)
class InitSpec:
    """A resolved initialiser and what the theory needs to know about it.

    Attributes:
        name: the canonical name (``"orthogonal:1.1"``, ``"he_normal"``, or a callable's name).
        fn: the initialiser ``(key, shape, dtype) -> Array``.
        family: ``"normal"`` (i.i.d. Gaussian), ``"uniform"``, ``"orthogonal"`` or ``"other"``.
        weight_variance: ``σ²`` for a square ``n × n`` layer (entries have variance ``σ²/n``),
            or None when unknown.
        gain: the orthogonal gain, for ``family == "orthogonal"``.
    """

    name: str
    fn: Initializer
    family: str
    weight_variance: float | None = None
    gain: float | None = None


# name -> (description, factory(arg) -> (fn, family, σ², gain), default argument or None)
_INITS: dict[str, tuple[str, Callable[[float | None], tuple[Any, ...]], float | None]] = {
    "lecun_normal": ("N(0, 1/n)", lambda a: (_init.lecun_normal, "normal", 1.0, None), None),
    "lecun_uniform": (
        "U, variance 1/n",
        lambda a: (_init.lecun_uniform, "uniform", 1.0, None),
        None,
    ),
    "he_normal": ("N(0, 2/n)", lambda a: (_init.he_normal, "normal", 2.0, None), None),
    "he_uniform": ("U, variance 2/n", lambda a: (_init.he_uniform, "uniform", 2.0, None), None),
    "glorot_normal": (
        "N(0, 2/(n_in+n_out))",
        lambda a: (_init.glorot_normal, "normal", 1.0, None),
        None,
    ),
    "glorot_uniform": (
        "U, variance 2/(n_in+n_out)",
        lambda a: (_init.glorot_uniform, "uniform", 1.0, None),
        None,
    ),
    "lecture_1_over_sqrt_n": (
        "the lecture's std 1/sqrt(n_prev) (= LeCun)",
        lambda a: (_init.lecture_tanh, "normal", 1.0, None),
        None,
    ),
    "lecture_2_over_sqrt_n": (
        "the lecture's std 2/sqrt(n_prev) (variance 4/n)",
        lambda a: (_init.scaled(2.0), "normal", 4.0, None),
        None,
    ),
    "lecture_2_over_sqrt_n_plus_m": (
        "the lecture's std 2/sqrt(n_prev + n_cur) (variance 2/n when square)",
        lambda a: (_init.lecture_glorot, "normal", 2.0, None),
        None,
    ),
    "lecture_k_over_sqrt_n": (
        "the lecture's std K/sqrt(n_prev); 'lecture_k_over_sqrt_n:K' (default K=1.5)",
        lambda a: (_init.scaled(a), "normal", a * a, None),
        1.5,
    ),
    "scaled": (
        "std K/sqrt(n); 'scaled:K'",
        lambda a: (_init.scaled(a), "normal", a * a, None),
        1.0,
    ),
    "normal": (
        "N(0, sigma^2/n); 'normal:sigma'",
        lambda a: (_init.normal(a), "normal", a * a, None),
        1.0,
    ),
    "orthogonal": (
        "gain x random orthogonal; 'orthogonal:gain'",
        lambda a: (_init.orthogonal(a), "orthogonal", a * a, a),
        1.0,
    ),
    "near_identity": (
        "identity + N(0, std^2) noise; 'near_identity:std'",
        lambda a: (_init.near_identity(a), "other", None, None),
        0.01,
    ),
}
#: Initialiser names accepted by :func:`resolve_init` (append ``:value`` where it takes one).
INIT_NAMES: tuple[str, ...] = tuple(_INITS)


def _init_help() -> str:
    return "; ".join(f"{k} ({v[0]})" for k, v in _INITS.items())


def resolve_init(spec: str | Initializer) -> InitSpec:
    """Turns an initialiser name (or a callable) into an :class:`InitSpec`.

    Names are those of :data:`INIT_NAMES`; the parametric ones take ``name:value``, e.g.
    ``"orthogonal:1.1"``, ``"scaled:0.9"``, ``"normal:1.2"``, ``"lecture_k_over_sqrt_n:2"``.
    A callable is used as it is (family ``"other"``, no theory line).

    Args:
        spec: a name or an initialiser ``(key, shape, dtype) -> Array``.

    Returns:
        The :class:`InitSpec`.

    Raises:
        ValueError: for an unknown name, listing the valid ones.

    >>> s = resolve_init("lecture_2_over_sqrt_n")
    >>> s.family, s.weight_variance
    ('normal', 4.0)
    >>> resolve_init("orthogonal:1.1").gain
    1.1
    """
    if callable(spec):
        name = getattr(spec, "__name__", type(spec).__name__)
        return InitSpec(name=name, fn=spec, family="other")
    if not isinstance(spec, str):
        raise ValueError(f"init must be a name or a callable, got {type(spec).__name__}.")
    base, _, arg = spec.partition(":")
    if base not in _INITS:
        raise ValueError(f"Unknown init {spec!r}. Valid names: {_init_help()}.")
    _, factory, default = _INITS[base]
    if arg and default is None:
        raise ValueError(f"init {base!r} takes no ':value' argument (got {spec!r}).")
    value = default
    if arg:
        try:
            value = float(arg)
        except ValueError:
            raise ValueError(f"init {spec!r}: {arg!r} is not a number.") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"init {spec!r}: the value must be finite and >= 0.")
    fn, family, variance, gain = factory(value)
    name = base if default is None else f"{base}:{value:g}"
    return InitSpec(name=name, fn=fn, family=family, weight_variance=variance, gain=gain)


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class TheoryLine:
    """A closed-form prediction for a :class:`Series`, in the same ``log10`` units.

    Attributes:
        index: the layers / steps it covers.
        mean: predicted mean of ``log10`` norm.
        std: predicted standard deviation (0 where not modelled).
        exact: whether the prediction is exact at this width.
        note: what it is (formula and source).
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
    """

    kind: str
    config: dict[str, Any]
    series: dict[str, Series]
    seconds: float = 0.0
    compiled: bool = False

    def __getitem__(self, name: str) -> Series:
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


# --------------------------------------------------------------------------- measurement


def _log10_norm(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """``log10 ‖x‖`` over ``axes`` without overflow or underflow of the squares."""
    m = jnp.max(jnp.abs(x), axis=axes, keepdims=True)
    safe = jnp.where(m > 0, m, 1.0)
    s = jnp.sum(jnp.square(x / safe), axis=axes)
    m = jnp.squeeze(m, axis=axes)
    return jnp.where(m > 0, jnp.log10(jnp.where(m > 0, m, 1.0)) + 0.5 * jnp.log10(s), -jnp.inf)


def _per_example_loss(logits: jax.Array, labels: jax.Array, loss: str) -> jax.Array:
    if loss == "readout":
        return logits
    # The lecture's binary cross-entropy of a logit, written so that its gradient
    # -t·σ(-y) + (1-t)·σ(y) has no cancellation (softplus(y) - t·y would round σ(y) - 1 to 0).
    return labels * jax.nn.softplus(-logits) + (1.0 - labels) * jax.nn.softplus(logits)


_LAYER_LEAVES = {"mlp": ("w_hidden",), "residual": ("kernel1", "kernel2")}


def _dtype(name: str) -> Any:
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {name!r}.")
    return jnp.float64 if name == "float64" else jnp.float32


@dataclasses.dataclass(frozen=True)
class _DepthConfig:
    arch: str
    depth: int
    width: int
    activation: Any
    init: Any
    seeds: int
    batch: int
    loss: str
    dtype: str
    branch_scale: Any
    layer_norm: bool
    use_bias: bool
    weight_gradients: bool


@dataclasses.dataclass(frozen=True)
class _TimeConfig:
    arch: str
    steps: int
    hidden: int
    in_features: int
    activation: Any
    init: Any
    input_init: Any
    forget_bias: float
    variant: str
    seeds: int
    batch: int
    loss: str
    dtype: str
    input_scale: float


def _chunk(seeds: int, per_seed_bytes: int, budget: int = 192 * 2**20) -> int:
    """Seeds per compiled call, so that one call's arrays stay within ``budget`` bytes."""
    return int(max(1, min(seeds, budget // max(per_seed_bytes, 1))))


_TRACES: dict[str, int] = {"depth": 0, "time": 0}
# ``make`` runs once per call and takes milliseconds, so its compile time is all that counts:
# XLA's backend optimisation level 0 compiles it about 3x faster (measured 1.0 s vs 2.9 s).
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


@dataclasses.dataclass(frozen=True)
class _Compiled:
    """A configuration's two compiled functions and the seeds each call handles.

    ``make(keys) -> state`` draws ``chunk`` networks and their data (``lax.map`` over seeds:
    batched QR for orthogonal weights compiles slowly under ``vmap``); ``measure(*state)``
    returns the log-norms (``vmap`` over seeds). They are separate programs on purpose: in
    jax 0.10.2 on CPU, one program that draws orthogonal weights and then runs the network
    under ``vmap`` can deadlock the XLA CPU runtime; two programs never did. ``make`` does not
    depend on the activation and ``measure`` not on the initialiser, so comparing initialisers
    compiles one ``measure`` and a cheap ``make`` per initialiser.
    """

    make: Callable[[jax.Array], tuple[Any, ...]]
    measure: Callable[..., dict[str, jax.Array]]
    chunk: int


def _build_depth(cfg: _DepthConfig, key: jax.Array, kernel_init: Initializer, act: Any) -> Any:
    rngs = nnx.Rngs(key)
    dtype = _dtype(cfg.dtype)
    common = dict(width=cfg.width, depth=cfg.depth, activation=act, kernel_init=kernel_init)
    if cfg.arch == "mlp":
        return _nn.MLP(cfg.width, 1, **common, use_bias=cfg.use_bias, rngs=rngs, param_dtype=dtype)
    return _nn.ResidualStack(
        cfg.width,
        1,
        **common,
        branch_scale=cfg.branch_scale,
        layer_norm=cfg.layer_norm,
        rngs=rngs,
        param_dtype=dtype,
    )


@functools.lru_cache(maxsize=64)
def _make_depth(cfg: _DepthConfig, chunk: int) -> Callable[[jax.Array], tuple[Any, ...]]:
    """The ``make`` program; ``cfg`` comes with ``activation`` (and measure-only fields) blanked."""
    spec = resolve_init(cfg.init)
    dtype = _dtype(cfg.dtype)
    B, W = cfg.batch, cfg.width

    def make_one(key: jax.Array) -> tuple[Any, jax.Array, jax.Array]:
        k_model, k_x, k_y = jax.random.split(key, 3)
        _, params = _nn.pure(_build_depth(cfg, k_model, spec.fn, "linear"))
        x = jax.random.normal(k_x, (B, W), dtype)
        labels = jax.random.bernoulli(k_y, 0.5, (B,)).astype(dtype)
        return params, x, labels

    def make(keys: jax.Array) -> tuple[Any, ...]:
        _TRACES["depth"] += 1
        return jax.lax.map(make_one, keys)

    return jax.jit(make, compiler_options=_FAST_COMPILE)


@functools.lru_cache(maxsize=64)
def _measure_depth(cfg: _DepthConfig, chunk: int) -> Callable[..., dict[str, jax.Array]]:
    """The ``measure`` program; ``cfg`` comes with ``init`` blanked."""
    dtype = _dtype(cfg.dtype)
    B, L, W = cfg.batch, cfg.depth, cfg.width
    with jax.enable_x64(cfg.dtype == "float64"):
        abstract = nnx.eval_shape(
            lambda: _build_depth(cfg, jax.random.key(0), _init.zeros, cfg.activation)
        )
    apply_fn, _ = _nn.pure(abstract)

    def measure_one(params: Any, x: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
        probes = jnp.zeros((L + 1, B, W), dtype)

        def total(probes: jax.Array) -> tuple[jax.Array, jax.Array]:
            y, hs = apply_fn(params, x, probes=probes, return_hiddens=True)
            return jnp.sum(_per_example_loss(y[:, 0], labels, cfg.loss)), hs

        g_h, hs = jax.grad(total, has_aux=True)(probes)
        out = {
            "grad_h": _log10_norm(g_h, (-1,)).T,  # (B, L + 1)
            "h": _log10_norm(hs, (-1,)).T,
        }
        if cfg.weight_gradients and L > 0 and cfg.arch == "mlp":
            # h_l = act(z_l), z_l = h_(l-1) W_l + b_l, so example i's gradient of W_l is the
            # outer product h_(l-1),i ⊗ δ_l,i with δ_l = act'(z_l) ⊙ ∂L/∂h_l: its Frobenius norm
            # is ‖h_(l-1),i‖·‖δ_l,i‖. No per-example backward pass, no (L, W, W) per example.
            w = jnp.asarray(params["w_hidden"][...])
            z = jnp.einsum("lbi,lij->lbj", hs[:-1], w)
            if cfg.use_bias:
                z = z + jnp.asarray(params["b_hidden"][...])[:, None, :]
            dact = jnp.vectorize(jax.grad(_nn.get_activation(cfg.activation)))
            delta = g_h[1:] * dact(z)
            out["grad_w"] = (_log10_norm(hs[:-1], (-1,)) + _log10_norm(delta, (-1,))).T
        elif cfg.weight_gradients and L > 0:

            def one(xi: jax.Array, ti: jax.Array) -> jax.Array:
                def f(p: Any) -> jax.Array:
                    return _per_example_loss(apply_fn(p, xi[None])[0, 0], ti, cfg.loss)

                g = jax.grad(f)(params)
                sq = 0.0
                for name in _LAYER_LEAVES[cfg.arch]:
                    a = jnp.asarray(g[name][...])
                    sq = sq + jnp.sum(jnp.square(a), axis=tuple(range(1, a.ndim)))
                return 0.5 * jnp.log10(sq)

            out["grad_w"] = jax.vmap(one)(x, labels)  # (B, L)
        return out

    def measure(*state: Any) -> dict[str, jax.Array]:
        _TRACES["depth"] += 1
        return jax.vmap(measure_one)(*state)

    return jax.jit(measure)


def _compiled_depth(cfg: _DepthConfig) -> _Compiled:
    itemsize = 8 if cfg.dtype == "float64" else 4
    B, L, W = cfg.batch, cfg.depth, cfg.width
    layer_params = (2 if cfg.arch == "residual" else 1) * L * W * W
    per_example = cfg.weight_gradients and cfg.arch == "residual"
    grads = 3 * B * layer_params if per_example else 0
    chunk = _chunk(cfg.seeds, (layer_params + grads + 8 * (L + 1) * B * W) * itemsize)
    blank = dict(seeds=0)
    make_cfg = dataclasses.replace(
        cfg, activation="linear", loss="", weight_gradients=False, **blank
    )
    measure_cfg = dataclasses.replace(cfg, init="", **blank)
    return _Compiled(_make_depth(make_cfg, chunk), _measure_depth(measure_cfg, chunk), chunk)


def _build_time(cfg: _TimeConfig, key: jax.Array, rec: Initializer, inp: Initializer) -> Any:
    rngs = nnx.Rngs(key)
    dtype = _dtype(cfg.dtype)
    if cfg.arch == "lstm":
        return _nn.LSTM(
            cfg.in_features,
            cfg.hidden,
            variant=cfg.variant,
            forget_bias=cfg.forget_bias,
            kernel_init=inp,
            recurrent_init=rec,
            rngs=rngs,
            param_dtype=dtype,
        )
    return _nn.RNN(
        cfg.in_features,
        cfg.hidden,
        activation=cfg.activation,
        kernel_init=inp,
        recurrent_init=rec,
        rngs=rngs,
        param_dtype=dtype,
    )


@functools.lru_cache(maxsize=64)
def _make_time(cfg: _TimeConfig, chunk: int) -> Callable[[jax.Array], tuple[Any, ...]]:
    rec = resolve_init(cfg.init)
    inp = resolve_init(cfg.input_init)
    dtype = _dtype(cfg.dtype)
    B, T, H, D = cfg.batch, cfg.steps, cfg.hidden, cfg.in_features

    def make_one(key: jax.Array) -> tuple[Any, ...]:
        k_model, k_x, k_y, k_r = jax.random.split(key, 4)
        _, params = _nn.pure(_build_time(cfg, k_model, rec.fn, inp.fn))
        xs = cfg.input_scale * jax.random.normal(k_x, (B, T, D), dtype)
        labels = jax.random.bernoulli(k_y, 0.5, (B,)).astype(dtype)
        readout = jax.random.normal(k_r, (H,), dtype) / math.sqrt(H)
        return params, xs, labels, readout

    def make(keys: jax.Array) -> tuple[Any, ...]:
        _TRACES["time"] += 1
        return jax.lax.map(make_one, keys)

    return jax.jit(make, compiler_options=_FAST_COMPILE)


@functools.lru_cache(maxsize=64)
def _measure_time(cfg: _TimeConfig, chunk: int) -> Callable[..., dict[str, jax.Array]]:
    dtype = _dtype(cfg.dtype)
    B, T, H = cfg.batch, cfg.steps, cfg.hidden
    lstm = cfg.arch == "lstm"
    with jax.enable_x64(cfg.dtype == "float64"):
        abstract = nnx.eval_shape(
            lambda: _build_time(cfg, jax.random.key(0), _init.zeros, _init.zeros)
        )
    apply_fn, _ = _nn.pure(abstract)

    def measure_one(
        params: Any, xs: jax.Array, labels: jax.Array, readout: jax.Array
    ) -> dict[str, jax.Array]:
        probes = jnp.zeros((B, T, H), dtype)

        def total(probes: jax.Array, xs: jax.Array) -> tuple[jax.Array, Any]:
            if lstm:
                outputs, _, gates = apply_fn(params, xs, probes=probes, return_gates=True)
            else:
                outputs, _ = apply_fn(params, xs, probes=probes)
                gates = None
            logits = outputs[:, -1] @ readout
            return jnp.sum(_per_example_loss(logits, labels, cfg.loss)), (outputs, gates)

        (g_a, g_x), (outputs, gates) = jax.grad(total, argnums=(0, 1), has_aux=True)(probes, xs)
        out = {
            "grad_h": _log10_norm(g_a, (-1,)),  # (B, T)
            "grad_x": _log10_norm(g_x, (-1,)),
            "h": _log10_norm(outputs, (-1,)),
        }
        if lstm:
            f = gates["forget"]  # (B, T, H)
            log10_f = jnp.log10(f)
            # log10 of prod_{s = t+1}^{T} f_s, geometric mean over units, for t = 1..T.
            after = jnp.cumsum(log10_f[:, ::-1], axis=1)[:, ::-1]  # sum over s >= t
            out["cell_path"] = jnp.mean(after - log10_f, axis=-1)
            # spread of the forget pre-activations around their bias, for the theory line
            z = jnp.log(f) - jnp.log1p(-f) - cfg.forget_bias
            out["forget_pre_std"] = jnp.broadcast_to(jnp.std(z), (B, 1))
        return out

    def measure(*state: Any) -> dict[str, jax.Array]:
        _TRACES["time"] += 1
        return jax.vmap(measure_one)(*state)

    return jax.jit(measure)


def _compiled_time(cfg: _TimeConfig) -> _Compiled:
    itemsize = 8 if cfg.dtype == "float64" else 4
    B, T, H, D = cfg.batch, cfg.steps, cfg.hidden, cfg.in_features
    chunk = _chunk(cfg.seeds, (40 * B * T * H + 8 * H * (H + D)) * itemsize)
    make_cfg = dataclasses.replace(cfg, loss="", seeds=0)
    measure_cfg = dataclasses.replace(cfg, init="", input_init="", seeds=0)
    return _Compiled(_make_time(make_cfg, chunk), _measure_time(measure_cfg, chunk), chunk)


def cache_info() -> dict[str, Any]:
    """How many configurations are compiled and how many times each kind was traced.

    >>> sorted(cache_info())
    ['depth_programs', 'depth_traces', 'time_programs', 'time_traces']
    """
    return {
        "depth_programs": _make_depth.cache_info().currsize + _measure_depth.cache_info().currsize,
        "time_programs": _make_time.cache_info().currsize + _measure_time.cache_info().currsize,
        "depth_traces": _TRACES["depth"],
        "time_traces": _TRACES["time"],
    }


def clear_cache() -> None:
    """Forgets every compiled configuration."""
    for fn in (_make_depth, _measure_depth, _make_time, _measure_time):
        fn.cache_clear()


def _as_key(key: int | jax.Array) -> jax.Array:
    if isinstance(key, int | np.integer):
        return jax.random.key(int(key))
    return key


def _name(x: Any) -> Any:
    if isinstance(x, str | int | float | bool) or x is None:
        return x
    return getattr(x, "__name__", repr(x))


def _run(
    get: Callable[[], _Compiled], key: int | jax.Array, seeds: int, dtype: str
) -> tuple[dict[str, np.ndarray], float, bool]:
    """Runs a configuration over ``seeds`` keys in chunks; returns numpy arrays (seeds, ...)."""
    before = dict(_TRACES)
    t0 = time.perf_counter()
    with jax.enable_x64(dtype == "float64"):
        compiled = get()
        keys = jax.random.split(_as_key(key), seeds)
        c = compiled.chunk
        pad = (-seeds) % c
        if pad:  # repeat some keys to fill the last chunk; their results are dropped
            keys = jnp.concatenate([keys, keys[:pad]])
        parts = []
        for i in range(0, seeds + pad, c):
            state = compiled.make(keys[i : i + c])
            parts.append(jax.device_get(compiled.measure(*state)))
    out = {
        k: np.concatenate([np.asarray(p[k], dtype=np.float64) for p in parts])[:seeds]
        for k in parts[0]
    }
    seconds = time.perf_counter() - t0
    return out, seconds, _TRACES != before


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


# --------------------------------------------------------------------------- depth


def depth_profile(
    arch: Literal["mlp", "residual"] = "mlp",
    *,
    depth: int = 150,
    width: int = 64,
    activation: str | Callable[[jax.Array], jax.Array] = "tanh",
    init: str | Initializer = "lecun_normal",
    seeds: int = 32,
    batch: int = 8,
    key: int | jax.Array = 0,
    loss: Literal["readout", "bce"] = "readout",
    dtype: Literal["float32", "float64"] = "float32",
    branch_scale: float | str | None = None,
    layer_norm: bool = False,
    use_bias: bool = True,
    weight_gradients: bool = True,
    theory: bool = True,
) -> FlowProfile:
    """Measures gradient norms layer by layer in deep networks at initialisation.

    Builds ``seeds`` independent networks (``gradlab.nn.MLP`` or dense
    ``gradlab.nn.ResidualStack``, ``in_features = width``, one output), feeds each a batch of
    ``x ~ N(0, I)`` with random labels, and records per example (see the module docstring for
    the loss):

    * ``"grad_h"``: ``log10 ‖∂ℓ/∂h_l‖``, ``l = 0..depth`` (through zero probes);
    * ``"grad_h_rel"``: the same minus its value at ``l = depth`` — the profile the theory
      predicts, attached as ``series["grad_h_rel"].theory`` where gradlab has a formula;
    * ``"grad_w"``: ``log10 ‖∂ℓ/∂W_l‖_F``, ``l = 1..depth`` (per-example weight gradients of the
      hidden layers; for a residual block both kernels together);
    * ``"h"``: ``log10 ‖h_l‖`` (forward).

    One compiled function per configuration: a second call with the same arguments (any
    ``key``) reuses it. Theory lines (``theory=True``): exact for linear networks with
    orthogonal or Gaussian weights and for ReLU with Gaussian weights (zero bias); mean field
    with a ``1/width`` correction (approximate) for tanh/sigmoid; the mean-square growth
    ``(1 + α²c)^depth`` for dense ReLU / linear residual stacks (approximate).

    Args:
        arch: ``"mlp"`` or ``"residual"``.
        depth: number of hidden layers / residual blocks.
        width: units per layer.
        activation: ``"tanh"``, ``"relu"``, ``"linear"``, ``"sigmoid"``, ``"gelu"`` or a callable.
        init: initialiser name (:data:`INIT_NAMES`, e.g. ``"he_normal"``, ``"orthogonal:1.1"``,
            ``"lecture_2_over_sqrt_n"``) or a callable ``(key, shape, dtype) -> Array``.
        seeds: number of independent networks.
        batch: examples per network.
        key: an int seed or a JAX key.
        loss: ``"readout"`` (``ℓ_i = y_i``) or ``"bce"`` (binary cross-entropy, random labels).
        dtype: ``"float32"`` or ``"float64"`` (float64 is enabled only inside this call).
        branch_scale: residual only: None, a float, ``"rezero"`` or ``"fixup"``.
        layer_norm: residual only: pre-LayerNorm in each branch.
        use_bias: MLP only: biases (initialised at zero) or none.
        weight_gradients: also measure per-example weight gradients (costs ``batch`` backward
            passes).
        theory: attach theory lines where available.

    Returns:
        A :class:`FlowProfile`.

    Raises:
        ValueError: for an unknown arch, init or activation, or non-positive sizes.
    """
    if arch not in ("mlp", "residual"):
        raise ValueError(f"arch must be 'mlp' or 'residual' for depth_profile, got {arch!r}.")
    if loss not in ("readout", "bce"):
        raise ValueError(f"loss must be 'readout' or 'bce', got {loss!r}.")
    depth = _positive_int("depth", depth, 0)
    width = _positive_int("width", width)
    seeds = _positive_int("seeds", seeds)
    batch = _positive_int("batch", batch)
    _dtype(dtype)
    spec = resolve_init(init)  # validates the name early
    _nn.get_activation(activation)
    cfg = _DepthConfig(
        arch=arch,
        depth=depth,
        width=width,
        activation=activation,
        init=init,
        seeds=seeds,
        batch=batch,
        loss=loss,
        dtype=dtype,
        branch_scale=branch_scale if arch == "residual" else None,
        layer_norm=bool(layer_norm) if arch == "residual" else False,
        use_bias=bool(use_bias),
        weight_gradients=bool(weight_gradients),
    )
    raw, seconds, compiled = _run(lambda: _compiled_depth(cfg), key, seeds, dtype)
    layers = np.arange(depth + 1)
    grad_h = raw["grad_h"]
    rel = grad_h - grad_h[..., -1:]
    line = _depth_theory(cfg, spec) if theory else None
    series = {
        "grad_h": Series("grad_h", "‖∂L/∂h_l‖", layers, grad_h),
        "grad_h_rel": Series("grad_h_rel", "‖∂L/∂h_l‖/‖∂L/∂h_L‖", layers, rel, line),
        "h": Series("h", "‖h_l‖", layers, raw["h"]),
    }
    if "grad_w" in raw:
        series["grad_w"] = Series("grad_w", "‖∂L/∂W_l‖", layers[1:], raw["grad_w"])
    config = {
        "arch": arch,
        "depth": depth,
        "width": width,
        "activation": _name(activation),
        "init": spec.name,
        "seeds": seeds,
        "batch": batch,
        "loss": loss,
        "dtype": dtype,
        "branch_scale": _name(cfg.branch_scale),
        "layer_norm": cfg.layer_norm,
        "use_bias": cfg.use_bias,
        "key": key if isinstance(key, int) else "jax key",
    }
    return FlowProfile("depth", config, series, seconds=seconds, compiled=compiled)


def _depth_theory(cfg: _DepthConfig, spec: InitSpec) -> TheoryLine | None:
    """The closed-form prediction for ``grad_h_rel``, or None if gradlab has none."""
    act, L, n = cfg.activation, cfg.depth, cfg.width
    if not isinstance(act, str):
        return None
    index = np.arange(L + 1)
    remaining = (L - index).astype(np.float64)
    r: _theory.LogNormRatio | None = None
    if cfg.arch == "mlp":
        if act == "linear" and spec.family == "orthogonal":
            r = _theory.orthogonal_linear(remaining, spec.gain or 1.0)
        elif act == "linear" and spec.family in ("normal", "uniform"):
            r = _theory.gaussian_linear(remaining, n, spec.weight_variance)
        elif act == "relu" and spec.family in ("normal", "uniform"):
            r = _theory.relu_gaussian(remaining, n, spec.weight_variance)
        elif act in ("tanh", "sigmoid") and spec.family in ("normal", "uniform", "orthogonal"):
            # z_0 = x W_in + b_in with x ~ N(0, I_width): variance σ² (biases start at zero).
            r = _theory.mean_field_profile(
                L,
                spec.weight_variance,
                0.0,
                act,
                input_q=spec.weight_variance,
                width=n,
                orthogonal=spec.family == "orthogonal",
            )
        if r is None:
            return None
        # Biases start at zero, so the zero-bias laws apply; uniform weights are not Gaussian.
        exact = r.exact and spec.family != "uniform"
        note = r.note + (
            "; uniform weights: Gaussian formula, approximate" if spec.family == "uniform" else ""
        )
    else:
        if cfg.layer_norm or act not in ("relu", "linear") or spec.weight_variance is None:
            return None
        if spec.family not in ("normal", "uniform"):
            return None
        bs = cfg.branch_scale
        if bs == "rezero":
            alpha2 = 0.0
        elif bs == "fixup":
            alpha2 = 1.0 / max(L, 1)
        elif bs is None:
            alpha2 = 1.0
        else:
            alpha2 = float(bs) ** 2
        s2 = spec.weight_variance
        c = s2 * s2 / 2.0 if act == "relu" else s2 * s2
        mean = remaining * math.log1p(alpha2 * c)
        r = _theory.LogNormRatio(mean=mean, variance=np.zeros_like(mean), exact=False)
        exact = alpha2 == 0.0
        note = (
            f"residual: E‖g_(l-1)‖² = (1 + α²c)·E‖g_l‖², α²={alpha2:.4g}, c={c:g} (log of the "
            "mean square, infinite width; Hanin & Rolnick 2018)"
        )
    return TheoryLine(
        index=index,
        mean=np.asarray(r.log10_norm_mean, dtype=np.float64),
        std=np.asarray(r.log10_norm_std, dtype=np.float64),
        exact=bool(exact),
        note=note,
    )


# --------------------------------------------------------------------------- time


def time_profile(
    arch: Literal["lstm", "rnn"] = "lstm",
    *,
    steps: int = 100,
    hidden: int = 64,
    in_features: int | None = None,
    seeds: int = 32,
    batch: int = 8,
    key: int | jax.Array = 0,
    init: str | Initializer = "orthogonal",
    input_init: str | Initializer | None = None,
    activation: str | Callable[[jax.Array], jax.Array] = "tanh",
    forget_bias: float = 1.0,
    variant: Literal["standard", "slide"] = "standard",
    input_scale: float = 1.0,
    loss: Literal["readout", "bce"] = "readout",
    dtype: Literal["float32", "float64"] = "float32",
    theory: bool = True,
) -> FlowProfile:
    """Measures gradient norms step by step through an LSTM or RNN at initialisation.

    The loss reads only the last step: ``ℓ_i = r·a_T`` with a random readout
    ``r ~ N(0, I/hidden)`` (or its BCE against a random label with ``loss="bce"``), so
    ``∂ℓ/∂a^(t)`` is how much step ``t`` matters to the end of the sequence. Series, for
    ``t = 1..steps``:

    * ``"grad_h"``: ``log10 ‖∂ℓ/∂a^(t)‖`` (through zero probes), ``"grad_h_rel"`` the same minus
      its value at ``t = steps``;
    * ``"grad_x"``: ``log10 ‖∂ℓ/∂x^(t)‖``; ``"h"``: ``log10 ‖a^(t)‖``;
    * LSTM only, ``"cell_path"``: ``log10 Π_{s=t+1}^{T} f_s`` (geometric mean over units) — the
      cell path ``∂c_T/∂c_t``, with the theory :func:`gradlab.theory.lstm_cell_path` at the
      measured spread of the forget pre-activations.

    Args:
        arch: ``"lstm"`` or ``"rnn"``.
        steps: sequence length ``T``.
        hidden: hidden size ``H``.
        in_features: input size (default ``hidden``).
        seeds: number of independent networks.
        batch: sequences per network.
        key: an int seed or a JAX key.
        init: recurrent initialiser (name or callable; default orthogonal, gain 1).
        input_init: input-kernel initialiser (default: ``glorot_uniform`` for the LSTM,
            ``lecun_normal`` for the RNN, as in :mod:`gradlab.nn`).
        activation: RNN activation.
        forget_bias: LSTM forget-gate bias at init.
        variant: LSTM variant, ``"standard"`` or ``"slide"``.
        input_scale: inputs are ``input_scale · N(0, I)``.
        loss: ``"readout"`` (``ℓ_i = r·a_T``) or ``"bce"`` (of that logit, random labels).
        dtype: ``"float32"`` or ``"float64"``.
        theory: attach the cell-path theory (LSTM).

    Returns:
        A :class:`FlowProfile` with ``kind == "time"``.
    """
    if arch not in ("lstm", "rnn"):
        raise ValueError(f"arch must be 'lstm' or 'rnn' for time_profile, got {arch!r}.")
    if loss not in ("readout", "bce"):
        raise ValueError(f"loss must be 'readout' or 'bce', got {loss!r}.")
    if variant not in ("standard", "slide"):
        raise ValueError(f"variant must be 'standard' or 'slide', got {variant!r}.")
    steps = _positive_int("steps", steps)
    hidden = _positive_int("hidden", hidden)
    seeds = _positive_int("seeds", seeds)
    batch = _positive_int("batch", batch)
    d_in = hidden if in_features is None else _positive_int("in_features", in_features)
    _dtype(dtype)
    if input_init is None:
        input_init = "glorot_uniform" if arch == "lstm" else "lecun_normal"
    rec, inp = resolve_init(init), resolve_init(input_init)
    if arch == "rnn":
        _nn.get_activation(activation)
    cfg = _TimeConfig(
        arch=arch,
        steps=steps,
        hidden=hidden,
        in_features=d_in,
        activation=activation if arch == "rnn" else "tanh",
        init=init,
        input_init=input_init,
        forget_bias=float(forget_bias) if arch == "lstm" else 0.0,
        variant=variant if arch == "lstm" else "standard",
        seeds=seeds,
        batch=batch,
        loss=loss,
        dtype=dtype,
        input_scale=float(input_scale),
    )
    raw, seconds, compiled = _run(lambda: _compiled_time(cfg), key, seeds, dtype)
    t = np.arange(1, steps + 1)
    grad_h = raw["grad_h"]
    series = {
        "grad_h": Series("grad_h", "‖∂L/∂a_t‖", t, grad_h),
        "grad_h_rel": Series("grad_h_rel", "‖∂L/∂a_t‖/‖∂L/∂a_T‖", t, grad_h - grad_h[..., -1:]),
        "grad_x": Series("grad_x", "‖∂L/∂x_t‖", t, raw["grad_x"]),
        "h": Series("h", "‖a_t‖", t, raw["h"]),
    }
    config: dict[str, Any] = {
        "arch": arch,
        "steps": steps,
        "hidden": hidden,
        "in_features": d_in,
        "init": rec.name,
        "input_init": inp.name,
        "seeds": seeds,
        "batch": batch,
        "loss": loss,
        "dtype": dtype,
        "input_scale": float(input_scale),
        "key": key if isinstance(key, int) else "jax key",
    }
    if arch == "lstm":
        config.update(forget_bias=float(forget_bias), variant=variant)
        s = float(np.mean(raw["forget_pre_std"]))
        config["forget_preactivation_std"] = s
        line = None
        if theory:
            rate = _theory.lstm_cell_path(1, forget_bias, s).per_step_log
            zero_spread = -math.log1p(math.exp(-forget_bias)) / math.log(10.0)
            line = TheoryLine(
                index=t,
                mean=(steps - t) * rate / math.log(10.0),
                std=np.zeros(steps),
                exact=False,
                note=(
                    f"cell path: exp((T-t)·E[ln σ(b_f + z)]), z ~ N(0, {s:.3f}²) (measured "
                    f"spread); at zero spread σ(b_f)^(T-t), log10 slope {zero_spread:.4f}"
                ),
            )
        series["cell_path"] = Series("cell_path", "Π f_s (s>t)", t, raw["cell_path"], line)
    else:
        config["activation"] = _name(activation)
        if theory:
            series["grad_h_rel"] = dataclasses.replace(
                series["grad_h_rel"], theory=_rnn_theory(cfg, rec, inp)
            )
    return FlowProfile("time", config, series, seconds=seconds, compiled=compiled)


def _rnn_theory(cfg: _TimeConfig, rec: InitSpec, inp: InitSpec) -> TheoryLine | None:
    """Mean-field prediction for an RNN's ``grad_h_rel``, or None if gradlab has none."""
    act = cfg.activation
    if not isinstance(act, str) or act not in _theory.MEAN_FIELD_ACTIVATIONS:
        return None
    if rec.weight_variance is None or inp.weight_variance is None:
        return None
    if rec.family == "other" or inp.family == "other":
        return None
    # x_t W with x_t ~ input_scale·N(0, I_D): variance input_scale²·σ_in²·D/fan (fan_in = D;
    # Glorot's fan_avg is exact only when D == hidden).
    s_x = cfg.input_scale**2 * inp.weight_variance
    r = _theory.rnn_mean_field_profile(
        cfg.steps,
        rec.weight_variance,
        s_x,
        act,
        width=cfg.hidden,
        orthogonal=rec.family == "orthogonal",
    )
    return TheoryLine(
        index=np.arange(1, cfg.steps + 1),
        mean=np.asarray(r.log10_norm_mean, dtype=np.float64),
        std=np.asarray(r.log10_norm_std, dtype=np.float64),
        exact=False,
        note=f"RNN mean field: the q-map with the input as a bias of variance {s_x:g}; " + r.note,
    )
