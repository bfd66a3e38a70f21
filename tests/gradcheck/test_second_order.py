"""A corpus of realistic second-order checks, correct and buggy.

Every buggy case must fail with the bug pinned to the right leaf; every correct case must pass
(or, at a point where the second derivative does not exist, be inconclusive with that reason);
none may raise. The cases are the places researchers differentiate twice: PINN losses (the
Laplacian of a network), WGAN-GP's gradient penalty, MAML's inner step, Newton and
natural-gradient steps, Gauss-Newton vs the true Hessian, implicit layers whose backward pass
solves a fixed point, custom activations, a Gaussian NLL at a sensor-noise σ, leaves ``f`` is
linear in, and kinks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab

KEY = jax.random.PRNGKey


def _normal(seed: int, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * scale


# ------------------------------------------------------------------ building blocks


def _mlp(params: dict[str, Any], x: jax.Array, act: Callable[[jax.Array], jax.Array]) -> Any:
    h = act(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def _mlp_params(seed: int, n_in: int, width: int, n_out: int) -> dict[str, np.ndarray]:
    return {
        "w1": _normal(seed, (n_in, width), 1 / np.sqrt(n_in)),
        "b1": _normal(seed + 1, (width,), 0.1),
        "w2": _normal(seed + 2, (width, n_out), 1 / np.sqrt(width)),
        "b2": _normal(seed + 3, (n_out,), 0.1),
    }


def _stopped_vjp(fn: Callable[[jax.Array], jax.Array], dfn: Callable[[jax.Array], jax.Array]):
    """``fn`` with a backward pass right in value but blind to its own derivative."""

    @jax.custom_vjp
    def g(x):
        return fn(x)

    g.defvjp(lambda x: (fn(x), x), lambda x, ct: (ct * dfn(jax.lax.stop_gradient(x)),))
    return g


def _exact_vjp(fn: Callable[[jax.Array], jax.Array], dfn: Callable[[jax.Array], jax.Array]):
    @jax.custom_vjp
    def g(x):
        return fn(x)

    g.defvjp(lambda x: (fn(x), x), lambda x, ct: (ct * dfn(x),))
    return g


def _dtanh(x: jax.Array) -> jax.Array:
    return 1 - jnp.tanh(x) ** 2


tanh_ok = _exact_vjp(jnp.tanh, _dtanh)
tanh_stopped = _stopped_vjp(jnp.tanh, _dtanh)


@jax.custom_jvp
def swish(x):
    return x * jax.nn.sigmoid(x)


@swish.defjvp
def _swish_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    s = jax.nn.sigmoid(x)
    return swish(x), (s + x * s * (1 - s)) * t


@jax.custom_jvp
def swish_bad(x):
    return x * jax.nn.sigmoid(x)


@swish_bad.defjvp
def _swish_bad_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    s = jax.nn.sigmoid(jax.lax.stop_gradient(x))  # the jvp's own derivative is lost
    return swish_bad(x), (s + x * s * (1 - s)) * t


@jax.custom_vjp
def softplus_ok(x):
    return jnp.logaddexp(x, 0.0)


softplus_ok.defvjp(lambda x: (softplus_ok(x), x), lambda x, g: (g * jax.nn.sigmoid(x),))


softplus_bad = _stopped_vjp(lambda x: jnp.logaddexp(x, 0.0), jax.nn.sigmoid)


# ------------------------------------------------------------------ PINN: Laplacian of u


def _pinn_loss(act: Callable[[jax.Array], jax.Array]) -> Callable[..., Any]:
    def u(params, x):
        return _mlp(params, x, act)[0]

    def loss(params, xs, source):
        lap = jax.vmap(lambda x: jnp.trace(jax.hessian(u, argnums=1)(params, x)))(xs)
        return jnp.mean((lap - source) ** 2) + 0.1 * jnp.mean(
            jax.vmap(u, (None, 0))(params, xs) ** 2
        )

    return loss


def _pinn_args(seed: int = 0) -> tuple[Any, ...]:
    xs = np.random.default_rng(seed).uniform(-1, 1, (4, 2))
    return _mlp_params(seed + 10, 2, 4, 1), xs, np.sin(xs[:, 0]) * np.cos(xs[:, 1])


# ------------------------------------------------------------------ WGAN-GP critic


def _wgan_gp(act: Callable[[jax.Array], jax.Array]) -> Callable[..., Any]:
    def critic(params, x):
        return _mlp(params, x, act)[0]

    def loss(params, real, fake, alpha):
        mix = alpha[:, None] * real + (1 - alpha[:, None]) * fake
        grads = jax.vmap(jax.grad(critic, argnums=1), (None, 0))(params, mix)
        penalty = jnp.mean((jnp.sqrt(jnp.sum(grads**2, axis=1) + 1e-12) - 1.0) ** 2)
        d = jax.vmap(critic, (None, 0))
        return jnp.mean(d(params, fake)) - jnp.mean(d(params, real)) + 10.0 * penalty

    return loss


def _wgan_args(seed: int = 0) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    return (
        _mlp_params(seed + 20, 3, 5, 1),
        rng.standard_normal((6, 3)) + 1.0,
        rng.standard_normal((6, 3)),
        rng.uniform(0, 1, 6),
    )


# ------------------------------------------------------------------ MAML inner step


def _maml(act: Callable[[jax.Array], jax.Array], inner_lr: float = 0.3) -> Callable[..., Any]:
    def task_loss(params, x, y):
        return jnp.mean((_mlp(params, x, act)[:, 0] - y) ** 2)

    def loss(params, xs, ys, xq, yq):
        grads = jax.grad(task_loss)(params, xs, ys)
        adapted = jax.tree_util.tree_map(lambda p, g: p - inner_lr * g, params, grads)
        return task_loss(adapted, xq, yq)

    return loss


def _maml_args(seed: int = 0) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    xs, xq = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    return _mlp_params(seed + 30, 2, 4, 1), xs, np.sin(xs[:, 0]), xq, np.sin(xq[:, 0])


def _first_order_maml(params, xs, ys, xq, yq):
    """First-order MAML passed off as MAML: the inner gradient is held constant."""

    def task(p, x, y):
        return jnp.mean((_mlp(p, x, jnp.tanh)[:, 0] - y) ** 2)

    grads = jax.lax.stop_gradient(jax.grad(task)(params, xs, ys))
    adapted = jax.tree_util.tree_map(lambda p, g: p - 0.3 * g, params, grads)
    return task(adapted, xq, yq)


# ------------------------------------------------------------------ Newton step


def _newton(solve: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable[..., Any]:
    def inner_loss(w, x, y):
        return jnp.mean(jnp.logaddexp(0.0, -y * (x @ w))) + 0.05 * jnp.sum(w**2)

    def loss(w, x, y, xv, yv):
        g = jax.grad(inner_loss)(w, x, y)
        h = jax.hessian(inner_loss)(w, x, y)
        return inner_loss(w - solve(h, g), xv, yv)

    return loss


@jax.custom_vjp
def solve_ok(a, b):
    return jnp.linalg.solve(a, b)


def _solve_fwd(a, b):
    x = jnp.linalg.solve(a, b)
    return x, (a, x)


def _solve_bwd_ok(res, g):
    a, x = res
    lam = jnp.linalg.solve(a.T, g)
    return -jnp.outer(lam, x), lam


solve_ok.defvjp(_solve_fwd, _solve_bwd_ok)


@jax.custom_vjp
def solve_stopped(a, b):
    return jnp.linalg.solve(a, b)


def _solve_bwd_stopped(res, g):
    a, x = res
    lam = jnp.linalg.solve(jax.lax.stop_gradient(a).T, g)  # the adjoint's dependence on a lost
    return -jnp.outer(lam, x), lam


solve_stopped.defvjp(_solve_fwd, _solve_bwd_stopped)


def _logistic_args(seed: int = 0, d: int = 3) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    x, xv = rng.standard_normal((8, d)), rng.standard_normal((8, d))
    y, yv = np.sign(rng.standard_normal(8)), np.sign(rng.standard_normal(8))
    return rng.standard_normal(d) * 0.5, x, y, xv, yv


# ------------------------------------------------------------------ natural gradient


def _natural_gradient_step(fisher: Callable[..., jax.Array]) -> Callable[..., Any]:
    """The validation loss after a natural-gradient step of a softmax regression."""

    def nll(w, x, y):
        z = x @ w
        return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], 1)[:, 0])

    def loss(w, x, y, xv, yv):
        g = jax.grad(nll)(w, x, y).reshape(-1)
        f = fisher(w, x) + 0.1 * jnp.eye(g.size)
        step = jnp.linalg.solve(f, g).reshape(w.shape)
        return nll(w - 0.5 * step, xv, yv)

    return loss


def _fisher(w, x):
    """The softmax regression's Fisher: E_x[(diag p − ppᵀ) ⊗ xxᵀ]."""
    p = jax.nn.softmax(x @ w)
    cov = jax.vmap(lambda q: jnp.diag(q) - jnp.outer(q, q))(p)
    return jnp.einsum("ni,nj,nab->iajb", x, x, cov).reshape(w.size, w.size) / x.shape[0]


@jax.custom_vjp
def probs_blind(z):
    return jax.nn.softmax(z)


def _probs_fwd(z):
    p = jax.nn.softmax(z)
    return p, p


def _probs_bwd(p, g):  # the softmax Jacobian with p held constant: its derivative is lost
    p = jax.lax.stop_gradient(p)
    return (p * g - p * jnp.sum(p * g, axis=-1, keepdims=True),)


probs_blind.defvjp(_probs_fwd, _probs_bwd)


def _fisher_blind(w, x):
    p = probs_blind(x @ w)
    cov = jax.vmap(lambda q: jnp.diag(q) - jnp.outer(q, q))(p)
    return jnp.einsum("ni,nj,nab->iajb", x, x, cov).reshape(w.size, w.size) / x.shape[0]


def _softmax_args(seed: int = 0) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    x, xv = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    y, yv = rng.integers(0, 3, 6), rng.integers(0, 3, 6)
    return rng.standard_normal((2, 3)) * 0.5, x, y, xv, yv


# ------------------------------------------------------------------ Gauss-Newton vs Hessian


def _residuals(w, t):
    return jnp.exp(-w[0] * t) * jnp.cos(w[1] * t) - 0.5 * jnp.sin(t)


@jax.custom_vjp
def half_sq_gn(w, t):
    r = _residuals(w, t)
    return 0.5 * jnp.sum(r**2)


def _gn_fwd(w, t):
    r = _residuals(w, t)
    return 0.5 * jnp.sum(r**2), (w, t)


def _gn_bwd(res, g):
    # Jᵀr with r held constant: differentiated again it gives JᵀJ (Gauss-Newton), not the
    # Hessian JᵀJ + Σ r ∇²r
    w, t = res
    r = jax.lax.stop_gradient(_residuals(w, t))
    _, pull = jax.vjp(lambda v: _residuals(v, t), w)
    return g * pull(r)[0], None


half_sq_gn.defvjp(_gn_fwd, _gn_bwd)


@jax.custom_vjp
def half_sq_ok(w, t):
    r = _residuals(w, t)
    return 0.5 * jnp.sum(r**2)


def _ok_bwd(res, g):
    w, t = res
    r = _residuals(w, t)
    _, pull = jax.vjp(lambda v: _residuals(v, t), w)
    return g * pull(r)[0], None


half_sq_ok.defvjp(_gn_fwd, _ok_bwd)


# ------------------------------------------------------------------ implicit layer


def _fixed_point(w, x, z0, n=80):
    return jax.lax.fori_loop(0, n, lambda _, z: jnp.tanh(w @ z + x), z0)


def _implicit(stop: bool) -> Callable[..., Any]:
    @jax.custom_vjp
    def layer(w, x):
        return _fixed_point(w, x, jnp.zeros_like(x))

    def fwd(w, x):
        z = _fixed_point(w, x, jnp.zeros_like(x))
        return z, (w, x, z)

    def bwd(res, g):
        w, x, z = res
        if stop:
            z = jax.lax.stop_gradient(z)
        d = 1 - jnp.tanh(w @ z + x) ** 2
        # adjoint u = g + (diag(d) W)ᵀ u, by the same fixed point
        u = jax.lax.fori_loop(0, 80, lambda _, u: g + w.T @ (d * u), g)
        return jnp.outer(d * u, z), d * u

    layer.defvjp(fwd, bwd)

    def loss(params, x, target):
        z = layer(params["w"], x @ params["v"])
        return jnp.sum((z - target) ** 2)

    return loss


def _implicit_args(seed: int = 0) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((3, 3))
    w *= 0.4 / np.linalg.norm(w, 2)  # a contraction: the fixed point converges fast
    return (
        {"w": w, "v": rng.standard_normal((2, 3)) * 0.5},
        rng.standard_normal(2),
        rng.standard_normal(3) * 0.3,
    )


def _converge(f: Callable[[jax.Array], jax.Array], z0: jax.Array, tol: float = 1e-10) -> Any:
    """Iterates ``z ← f(z)`` until it moves by less than ``tol`` (a ``lax.while_loop``)."""

    def cond(c):
        z, prev, i = c
        return (jnp.max(jnp.abs(z - prev)) > tol) & (i < 500)

    return jax.lax.while_loop(cond, lambda c: (f(c[0]), c[0], c[2] + 1), (f(z0), z0, 0))[0]


def _implicit_while(stop: bool, fwd_calls_itself: bool = False) -> Callable[..., Any]:
    """A DEQ-style layer solved to a tolerance, its adjoint too (``lax.while_loop``)."""

    @jax.custom_vjp
    def layer(w, x):
        return _converge(lambda z: jnp.tanh(w @ z + x), jnp.zeros_like(x))

    def fwd(w, x):
        z = layer(w, x) if fwd_calls_itself else _converge(lambda z: jnp.tanh(w @ z + x), x * 0)
        return z, (w, x, z)

    def bwd(res, g):
        w, x, z = res
        if stop:
            z = jax.lax.stop_gradient(z)
        d = 1 - jnp.tanh(w @ z + x) ** 2
        u = _converge(lambda u: g + w.T @ (d * u), g)
        return jnp.outer(d * u, z), d * u

    layer.defvjp(fwd, bwd)
    return lambda p, x, t: jnp.sum((layer(p["w"], x @ p["v"]) - t) ** 2)


# ------------------------------------------------------------------ energy model, GMM, NLL


def _energy(params, data, samples):
    """Contrastive divergence: E = w·φ(x) + MLP(x); the feature weights w enter linearly."""

    def energy(x):
        feats = jnp.stack([x[0], x[1], x[0] * x[1]])
        return params["w"] @ feats + jnp.tanh(x @ params["v"]) @ params["u"]

    e = jax.vmap(energy)
    return jnp.mean(e(data)) - jnp.mean(e(samples)) + 0.1 * jnp.sum(params["u"] ** 2)


def _energy_args(seed: int = 0) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    params = {
        "w": rng.standard_normal(3),
        "v": rng.standard_normal((2, 3)),
        "u": rng.standard_normal(3),
    }
    return params, rng.standard_normal((5, 2)), rng.standard_normal((5, 2)) * 2


def _sensor_nll(params, readings):
    """Gaussian NLL of readings with a per-sensor σ ≈ 1e-4."""
    s = params["sigma"]
    return jnp.mean(jnp.log(s) + (readings - params["mu"]) ** 2 / (2 * s**2))


def _sensor_args(seed: int = 0) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    sigma = 1e-4 * (1 + 0.2 * rng.uniform(size=6))
    mu = rng.standard_normal(6) * 1e-3
    readings = mu + rng.standard_normal((40, 6)) * sigma
    return {"mu": mu + 2e-5, "sigma": sigma * 1.1}, readings


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _scaled_sin(x, s):
    return jnp.sin(x) * s


@_scaled_sin.defjvp
def _scaled_sin_jvp(s, primals, tangents):
    (x,), (t,) = primals, tangents
    return _scaled_sin(x, s), jnp.cos(x) * s * t


def _ce_offset(params, x, y):
    """Softmax cross-entropy with a shared logit offset (the loss does not depend on it)."""
    z = x @ params["w"] + params["b"] + params["offset"]
    return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], 1)[:, 0])


# ------------------------------------------------------------------ real Flax and equinox modules


class _FlaxNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.tanh(nn.Dense(4)(x)))[..., 0]


def _flax_pinn() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    net = _FlaxNet()
    xs = np.random.default_rng(7).normal(size=(5, 2))
    params = jax.tree_util.tree_map(np.asarray, net.init(KEY(0), xs))

    def loss(p, xs):
        u = lambda z: net.apply(p, z)
        lap = jax.vmap(lambda z: jnp.trace(jax.hessian(u)(z)))(xs)
        return jnp.mean(lap**2) + jnp.mean(jax.vmap(u)(xs) ** 2)

    return loss, (params, xs)


def _eqx_wgan(act: Callable[[jax.Array], jax.Array]) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    mlp = eqx.nn.MLP(2, 1, 4, 1, key=KEY(1), activation=act)
    arrays, static = eqx.partition(mlp, eqx.is_array)
    x = np.random.default_rng(8).normal(size=(5, 2))

    def loss(a, real, fake):
        critic = lambda z: eqx.combine(a, static)(z)[0]
        g = jax.vmap(jax.grad(critic))(0.5 * (real + fake))
        penalty = jnp.mean((jnp.linalg.norm(g, axis=1) - 1) ** 2)
        return jnp.mean(jax.vmap(critic)(fake)) - jnp.mean(jax.vmap(critic)(real)) + 10 * penalty

    return loss, (arrays, x, x[::-1] * 0.5)


# ------------------------------------------------------------------ the corpus


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    f: Callable[..., Any]
    args: tuple[Any, ...]
    outcome: str  # "passed", "failed" or "inconclusive"
    wrong: tuple[str, ...] = ()  # the leaves a buggy case must fail (at least these)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    slow: bool = False


def _cases() -> list[Case]:
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(4)
    return [
        # ---- PINN: third derivatives of the network (the Laplacian, differentiated twice)
        Case("pinn_laplacian", _pinn_loss(jnp.tanh), _pinn_args(), "passed", slow=True),
        Case(
            "pinn_stopped_tanh",
            _pinn_loss(tanh_stopped),
            _pinn_args(),
            "failed",
            ("w1",),
            slow=True,
        ),
        # ---- WGAN-GP: the output bias b2 enters linearly: its block is zero, verified flat
        Case("wgan_gp", _wgan_gp(jnp.tanh), _wgan_args(), "passed", slow=True),
        Case("wgan_gp_stopped_tanh", _wgan_gp(tanh_stopped), _wgan_args(), "failed", ("w1",)),
        Case("flax_pinn", *_flax_pinn(), "passed", slow=True),
        Case("equinox_wgan_gp", *_eqx_wgan(jax.nn.softplus), "passed", slow=True),
        Case(
            "equinox_wgan_gp_stopped_tanh", *_eqx_wgan(tanh_stopped), "failed", ("layers/0/weight",)
        ),
        # ---- MAML
        Case("maml", _maml(jnp.tanh), _maml_args(), "passed", slow=True),
        Case("maml_softplus", _maml(softplus_ok), _maml_args(1), "passed"),
        Case("maml_softplus_stopped", _maml(softplus_bad), _maml_args(1), "failed", ("w1",)),
        Case("maml_first_order_as_full", _first_order_maml, _maml_args(2), "failed", ("w1",)),
        # ---- Newton step through a linear solve with a custom rule
        Case("newton_step", _newton(solve_ok), _logistic_args(), "passed"),
        Case(
            "newton_step_solve_stopped", _newton(solve_stopped), _logistic_args(), "failed", (".",)
        ),
        # ---- natural gradient: Fisher built from probabilities whose derivative is lost
        Case("natural_gradient", _natural_gradient_step(_fisher), _softmax_args(), "passed"),
        Case(
            "natural_gradient_blind_fisher",
            _natural_gradient_step(_fisher_blind),
            _softmax_args(),
            "failed",
            (".",),
        ),
        # ---- Gauss-Newton passed off as the Hessian
        Case(
            "least_squares",
            lambda w, t: half_sq_ok(w, t),
            (np.array([0.3, 1.1]), np.linspace(0, 3, 12)),
            "passed",
        ),
        Case(
            "gauss_newton_as_hessian",
            lambda w, t: half_sq_gn(w, t),
            (np.array([0.3, 1.1]), np.linspace(0, 3, 12)),
            "failed",
            (".",),
        ),
        # ---- implicit layer: a fixed point with its adjoint solved in a custom_vjp
        Case("implicit_layer", _implicit(False), _implicit_args(), "passed"),
        Case("implicit_layer_stopped", _implicit(True), _implicit_args(), "failed", ("w",)),
        Case("implicit_layer_to_tolerance", _implicit_while(False), _implicit_args(1), "passed"),
        Case(
            "implicit_layer_to_tolerance_stopped",
            _implicit_while(True),
            _implicit_args(1),
            "failed",
            ("w", "v"),
        ),
        # ---- custom activations that must be differentiable twice
        Case(
            "swish_mlp",
            lambda p, x: jnp.sum(_mlp(p, x, swish) ** 2),
            (_mlp_params(5, 3, 4, 2), rng.standard_normal((4, 3))),
            "passed",
        ),
        Case(
            "swish_bad_mlp",
            lambda p, x: jnp.sum(_mlp(p, x, swish_bad) ** 2),
            (_mlp_params(5, 3, 4, 2), rng.standard_normal((4, 3))),
            "failed",
            ("w1",),
        ),
        Case(
            "tanh_rule_mlp",
            lambda p, x: jnp.sum(_mlp(p, x, tanh_ok) ** 2),
            (_mlp_params(6, 3, 4, 2), rng.standard_normal((4, 3))),
            "passed",
        ),
        # ---- a sensor-noise Gaussian NLL: σ ≈ 1e-4
        Case("sensor_nll", _sensor_nll, _sensor_args(), "passed"),
        Case("sensor_nll_auto", _sensor_nll, _sensor_args(1), "passed", options={"eps": "auto"}),
        # ---- leaves f is linear in, and one it does not depend on
        Case("energy_linear_features", _energy, _energy_args(), "passed"),
        Case(
            "logit_offset",
            _ce_offset,
            (
                {
                    "w": rng.standard_normal((3, 4)),
                    "b": rng.standard_normal(4),
                    "offset": np.array(0.7),
                },
                rng.standard_normal((5, 3)),
                np.array([0, 1, 3, 2, 1]),
            ),
            "passed",
        ),
        Case(
            "concatenate",
            lambda a, b: jnp.concatenate([a, 2 * b]),
            (theta, theta[:2]),
            "passed",
            options={"argnums": (0, 1)},
        ),
        Case("pad", lambda a: jnp.pad(a, (1, 2)), (theta,), "passed"),
        Case("roll", lambda a: jnp.roll(a, 1) * jnp.arange(1.0, 5.0), (theta,), "passed"),
        Case(
            "max_unique",
            lambda a, b: jnp.maximum(a, b),
            (theta, theta[::-1] + 0.3),
            "passed",
            options={"argnums": (0, 1)},
        ),
        Case("min_unique", lambda a: jnp.min(a) * 3.0, (theta,), "passed"),
        # ---- a traced value held constant by nondiff_argnums: the bug to catch
        Case(
            "nondiff_argnums_traced",
            lambda p: jnp.sum(_scaled_sin(p["x"], p["s"]) ** 2),
            ({"x": np.array([0.3, 0.7]), "s": np.array(1.5)},),
            "failed",
            ("s",),
        ),
        # ---- points where the second derivative does not exist: inconclusive, not failed
        Case(
            "relu_times_x_at_0",
            lambda t: jnp.sum(jax.nn.relu(t) * t + t**3),
            (np.array([-1.0, 0.0, 0.5]),),
            "inconclusive",
        ),
        Case(
            "abs_at_0",
            lambda t: jnp.sum(jnp.abs(t) + t**2),
            (np.array([0.0, 0.4, -1.2]),),
            "inconclusive",
        ),
        Case(
            "sort_ties",
            lambda a: jnp.sort(a) @ jnp.arange(1.0, 4.0),
            (np.array([0.5, 0.5, 1.0]),),
            "inconclusive",
        ),
        Case(
            "max_ties",
            lambda a: jnp.max(a) ** 2 + jnp.sum(a**2),
            (np.array([1.0, 1.0, 0.2]),),
            "inconclusive",
        ),
        Case(
            "clip_bounds",
            lambda a: jnp.sum(jnp.clip(a, -1.0, 1.0) ** 2),
            (np.array([1.0, 0.3, -1.0]),),
            "inconclusive",
        ),
    ]


CASES = _cases()


def _param(c: Case) -> Any:
    return pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else [])


@pytest.mark.slow
@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_second_order_corpus(case: Case) -> None:
    report = gradlab.check_second_order(case.f, *case.args, **case.options)
    assert report.outcome == case.outcome, report
    if case.outcome == "failed":
        wrong = {leaf.path for leaf in report.leaves if leaf.status == "wrong"}
        assert set(case.wrong) <= wrong, report
    if case.outcome == "inconclusive":
        # the reason is named: no second derivative at the kink, nothing else left open
        assert report.n_kinks > 0 and not report.wrong, report
        assert all(
            "second derivative does not exist" in leaf.note
            for leaf in report.leaves
            if leaf.status == "unresolved"
        ), report


def test_corpus_has_bugs_and_correct_cases() -> None:
    kinds = [c.outcome for c in CASES]
    assert len(CASES) >= 25 and kinds.count("failed") >= 10 and kinds.count("passed") >= 12


# ------------------------------------------------------------------ each rule, and its adversary


def test_a_column_zero_up_to_rounding_is_flat_not_a_kink():
    params, x, y = CASES[[c.name for c in CASES].index("logit_offset")].args
    report = gradlab.check_second_order(_ce_offset, params, x, y)
    offset = report["offset"]
    assert report.ok and offset.flat and offset.n_kinks == 0, report
    assert "does not move along this leaf's entries" in offset.note


@jax.custom_jvp
def _cubic_blind(b):
    return b**3


@_cubic_blind.defjvp
def _cubic_blind_jvp(primals, tangents):
    (b,), (t,) = primals, tangents
    return _cubic_blind(b), 3 * jax.lax.stop_gradient(b) ** 2 * t  # second derivative lost


@pytest.mark.slow
@pytest.mark.parametrize("weight", [1e-3, 1e-9])
def test_a_small_true_block_with_a_zero_analytical_one_fails(weight):
    """The flat rule must not verify a leaf whose Hessian autodiff lost, however small."""
    f = lambda p: 3 * jnp.sum(jnp.sin(p["w"])) + weight * jnp.sum(_cubic_blind(p["b"]))
    report = gradlab.check_second_order(f, {"w": np.array([0.3, 1.2]), "b": np.array([0.5, -0.7])})
    assert report.outcome == "failed" and report["b"].status == "wrong", report
    assert not report["b"].flat and report["w"].status == "verified"


@jax.custom_jvp
def _sq_relu_blind(x):
    return jnp.where(x > 0, x**2, 0.0)


@_sq_relu_blind.defjvp
def _sq_relu_blind_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _sq_relu_blind(x), jnp.where(x > 0, 2 * jax.lax.stop_gradient(x), 0.0) * t


@pytest.mark.slow
@pytest.mark.parametrize("distance", [1e-3, 3e-6])
def test_a_wrong_hessian_near_but_not_at_a_kink_fails(distance):
    report = gradlab.check_second_order(
        lambda x: jnp.sum(_sq_relu_blind(x)), np.array([distance, -0.5, 1.0])
    )
    assert report.outcome == "failed" and report["."].status == "wrong", report


def test_kinks_are_named_with_their_entries():
    report = gradlab.check_second_order(
        lambda t: jnp.sum(jax.nn.relu(t) * t), np.array([-1.0, 0.0, 0.5, 0.0, 2.0])
    )
    leaf = report["."]
    assert report.outcome == "inconclusive" and leaf.n_kinks == 2, report
    assert {k.index for k in leaf.kinks} == {(1,), (3,)} and all(k.kink for k in leaf.kinks)
    assert "second derivative does not exist at 2 entries" in report.reasons[0]


def test_steps_scale_with_the_leaf_and_truncation_is_retried_smaller():
    params, readings = _sensor_args()
    report = gradlab.check_second_order(_sensor_nll, params, readings)
    rms = float(np.sqrt(np.mean(params["sigma"] ** 2)))
    assert report.ok and report["sigma"].eps == pytest.approx(1e-5 * rms), report
    # a fixed step of a tenth of σ: truncation, seen by Richardson, not "kinks"
    fixed = gradlab.check_second_order(_sensor_nll, params, readings, eps=1e-5)
    assert fixed.ok and fixed["sigma"].n_kinks == 0 and fixed["sigma"].n_restepped > 0, fixed
    assert "truncation left it open" in fixed["sigma"].note


def test_auto_step_reports_its_estimate():
    params, readings = _sensor_args(1)
    report = gradlab.check_second_order(_sensor_nll, params, readings, eps="auto")
    assert report.ok and report.eps == "auto", report
    assert all(leaf.estimated_error is not None for leaf in report.leaves)
    assert dict(report.stages)["step search"] > 0


@pytest.mark.slow
def test_a_traced_value_held_constant_by_nondiff_argnums_fails_not_raises():
    f = lambda p: jnp.sum(_scaled_sin(p["x"], p["s"]) ** 2)
    params = {"x": np.array([0.3, 0.7]), "s": np.array(1.5)}
    jax.hessian(f)(jax.tree_util.tree_map(jnp.asarray, params))  # JAX itself runs it
    report = gradlab.check_second_order(f, params)
    assert report.outcome == "failed" and report["s"].status == "wrong", report
    assert report["x"].status == "verified"


@pytest.mark.slow
def test_a_custom_vjp_inside_f_is_checked_reverse_over_reverse():
    report = gradlab.check_second_order(_maml(softplus_ok), *_maml_args(1))
    assert report.ok and report.autodiff == "reverse", report
    assert all(leaf.autodiff == "reverse" for leaf in report.leaves)
    assert "no forward mode" in report.leaves[0].note
    # asked for explicitly, forward mode still says why it cannot run
    with pytest.raises(gradlab.CheckInputError, match="custom_vjp"):
        gradlab.check_second_order(_maml(softplus_ok), *_maml_args(1), autodiff="both")


@pytest.mark.slow
def test_a_leaf_f_is_piecewise_linear_in_is_flat_up_to_its_nearest_kink():
    a, b = np.array([0.1, 2.0, -1.0]), np.array([0.5, 1.0, 3.0])
    report = gradlab.check_second_order(lambda a, b: jnp.maximum(a, b), a, b, argnums=(0, 1))
    assert report.ok and all(leaf.flat for leaf in report.leaves), report
    # the widest step (4× the magnitude) crosses a tie: flat at a smaller one
    assert dict(report.stages)["flatness probe"] > 2 * 2 * 3


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _scaled_sin_vjp(x, s):
    return jnp.sin(x) * s


_scaled_sin_vjp.defvjp(
    lambda x, s: (_scaled_sin_vjp(x, s), x), lambda s, x, g: (jnp.cos(x) * s * g,)
)


def test_a_traced_value_in_a_custom_vjps_nondiff_argnums_is_a_clear_input_error():
    """JAX cannot differentiate it at all (jax.hessian raises): the error names the construct."""
    f = lambda p: jnp.sum(_scaled_sin_vjp(p["x"], p["s"]) ** 2)
    params = {"x": np.array([0.3, 0.7]), "s": np.array(1.5)}
    with pytest.raises(jax.errors.UnexpectedTracerError):
        jax.hessian(f)(jax.tree_util.tree_map(jnp.asarray, params))
    with pytest.raises(gradlab.CheckInputError, match="nondiff_argnums"):
        gradlab.check_second_order(f, params)


@pytest.mark.slow
def test_a_second_derivative_jax_cannot_take_either_way_is_a_clear_input_error():
    """fwd calls the custom_vjp itself (no jvp) and the adjoint is a while_loop (no vjp)."""
    f = _implicit_while(False, fwd_calls_itself=True)
    with pytest.raises(
        gradlab.CheckInputError, match=r"either way(.|\n)*custom_vjp(.|\n)*while_loop"
    ):
        gradlab.check_second_order(f, *_implicit_args(1))


@pytest.mark.slow
def test_an_entry_far_smaller_than_its_leaf_is_retried_at_a_smaller_step():
    """The leaf's step (from its rms) would move 1e-6 across log's 0: retried smaller."""
    report = gradlab.check_second_order(
        lambda t: jnp.sum(jnp.log(t) * t**2), np.array([1e-6, 0.5, 2.0])
    )
    assert report.ok and report["."].eps < 1e-6, report
    # an entry no admissible step keeps inside the domain stays open, never passed
    closer = gradlab.check_second_order(
        lambda t: jnp.sum(jnp.log(t) * t**2), np.array([3e-11, 0.5])
    )
    assert closer.outcome == "inconclusive" and closer["."].n_nonfinite == 1, closer
