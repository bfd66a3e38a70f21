"""The compiled measurement programs of :func:`depth_profile` and :func:`time_profile`, cached.

One configuration compiles two programs (see :class:`_Compiled`), kept in ``lru_cache`` s keyed
on the configuration, so a second call with another ``key`` reuses them; :func:`cache_info` and
:func:`clear_cache` are the public view of that cache.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gradlab import init as _init
from gradlab import nn as _nn
from gradlab.flow._common import Initializer, _as_key, _dtype

__all__ = ["cache_info", "clear_cache"]


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


@dataclasses.dataclass(frozen=True)
class _DepthConfig:
    """A depth profile's configuration; ``init`` is the kernel initialiser (hashable)."""

    arch: str
    depth: int
    width: int
    activation: Any
    init: Initializer | None
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
    """A time profile's configuration; ``init``/``input_init`` are initialisers (hashable)."""

    arch: str
    steps: int
    hidden: int
    in_features: int
    activation: Any
    init: Initializer | None
    input_init: Initializer | None
    forget_bias: float
    variant: Literal["standard", "slide"]
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
    kernel_init = cfg.init
    assert kernel_init is not None
    dtype = _dtype(cfg.dtype)
    B, W = cfg.batch, cfg.width

    def make_one(key: jax.Array) -> tuple[Any, jax.Array, jax.Array]:
        k_model, k_x, k_y = jax.random.split(key, 3)
        _, params = _nn.pure(_build_depth(cfg, k_model, kernel_init, "linear"))
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
    with_hiddens, _ = _nn.pure(abstract, method="with_hiddens")

    def measure_one(params: Any, x: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
        probes = jnp.zeros((L + 1, B, W), dtype)

        def total(probes: jax.Array) -> tuple[jax.Array, jax.Array]:
            y, hs = with_hiddens(params, x, probes=probes)
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
                sq = [
                    jnp.sum(jnp.square(a), axis=tuple(range(1, a.ndim)))
                    for a in (jnp.asarray(g[name][...]) for name in _LAYER_LEAVES[cfg.arch])
                ]
                return 0.5 * jnp.log10(sum(sq[1:], sq[0]))

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
    make_cfg = dataclasses.replace(
        cfg, activation="linear", loss="", weight_gradients=False, seeds=0
    )
    measure_cfg = dataclasses.replace(cfg, init=None, seeds=0)
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
    """The ``make`` program of a time profile; ``cfg`` comes with measure-only fields blanked."""
    rec, inp = cfg.init, cfg.input_init
    assert rec is not None and inp is not None
    dtype = _dtype(cfg.dtype)
    B, T, H, D = cfg.batch, cfg.steps, cfg.hidden, cfg.in_features

    def make_one(key: jax.Array) -> tuple[Any, ...]:
        k_model, k_x, k_y, k_r = jax.random.split(key, 4)
        _, params = _nn.pure(_build_time(cfg, k_model, rec, inp))
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
    """The ``measure`` program of a time profile; ``cfg`` comes with the initialisers blanked."""
    dtype = _dtype(cfg.dtype)
    B, T, H = cfg.batch, cfg.steps, cfg.hidden
    lstm = cfg.arch == "lstm"
    with jax.enable_x64(cfg.dtype == "float64"):
        abstract = nnx.eval_shape(
            lambda: _build_time(cfg, jax.random.key(0), _init.zeros, _init.zeros)
        )
    apply_fn, _ = _nn.pure(abstract, method="with_gates" if lstm else "__call__")

    def measure_one(
        params: Any, xs: jax.Array, labels: jax.Array, readout: jax.Array
    ) -> dict[str, jax.Array]:
        probes = jnp.zeros((B, T, H), dtype)

        def total(probes: jax.Array, xs: jax.Array) -> tuple[jax.Array, Any]:
            if lstm:
                outputs, _, gates = apply_fn(params, xs, probes=probes)
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
    measure_cfg = dataclasses.replace(cfg, init=None, input_init=None, seeds=0)
    return _Compiled(_make_time(make_cfg, chunk), _measure_time(measure_cfg, chunk), chunk)


def cache_info() -> dict[str, Any]:
    """How many configurations are compiled and how many times each kind was traced.

    Returns:
        ``{"depth_programs", "time_programs"}``: compiled programs held (two per
        configuration); ``{"depth_traces", "time_traces"}``: traces so far (a trace per
        compilation, so a repeated configuration does not add any).

    Example:
        >>> from gradlab import flow
        >>> sorted(flow.cache_info())
        ['depth_programs', 'depth_traces', 'time_programs', 'time_traces']
    """
    return {
        "depth_programs": _make_depth.cache_info().currsize + _measure_depth.cache_info().currsize,
        "time_programs": _make_time.cache_info().currsize + _measure_time.cache_info().currsize,
        "depth_traces": _TRACES["depth"],
        "time_traces": _TRACES["time"],
    }


def clear_cache() -> None:
    """Forgets every compiled configuration (the next call of each compiles again).

    Example:
        >>> from gradlab import flow
        >>> flow.clear_cache()
        >>> flow.cache_info()["depth_programs"]
        0
    """
    for fn in (_make_depth, _measure_depth, _make_time, _measure_time):
        fn.cache_clear()


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
