"""gradlab.check never crashes where ``jax.grad`` works: JAX's own differentiable functions.

Each case maps one parameter leaf to an array through a function of JAX (jax.numpy, jax.nn,
jax.scipy.special, jax.lax with its control flow under vmap, linear algebra, custom rules with
pytree outputs, a Pallas kernel in interpret mode), at a point where that function is smooth.
A group of cases is checked at once, one leaf per case, so each group costs one check and a
crash or a wrong verdict names the case. The bar: every check runs (no exception) and
passes, with float64 parameters and with float32 ones (the precision audit then also runs
each case at float32).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.experimental import pallas as pl

import gradlab

sp = jax.scipy.special
Case = tuple[Callable[[jax.Array], Any], np.ndarray]

#: Points where the functions below are smooth (no ties, no kinks, inside every domain).
X = np.array([0.31, 0.47, 0.62, 0.88])
M = np.array([[1.3, 0.2, -0.4], [0.1, 0.9, 0.3], [-0.2, 0.5, 1.7]])  # well conditioned
SPD = M @ M.T + np.eye(3)


def _scalar(out: Any) -> jax.Array:
    """A real scalar from any pytree of arrays: a weighted sum, so no entry cancels another."""
    total = jnp.zeros(())
    for leaf in jax.tree_util.tree_leaves(out):
        leaf = jnp.real(leaf) if jnp.iscomplexobj(leaf) else leaf
        weights = jnp.linspace(1.0, 2.0, leaf.size, dtype=leaf.dtype).reshape(leaf.shape)
        total = total + jnp.sum(leaf * weights)
    return total


def _group(cases: dict[str, Case]) -> tuple[Callable[[dict[str, Any]], jax.Array], dict]:
    """``f(params)`` summing every case on its own leaf, and the params at the points."""

    def f(params: dict[str, Any]) -> jax.Array:
        return sum((_scalar(fn(params[name])) for name, (fn, _) in cases.items()), jnp.zeros(()))

    return f, {name: np.asarray(x, np.float64) for name, (_, x) in cases.items()}


SPECIAL: dict[str, Case] = {
    "expi": (sp.expi, X),
    "exp1": (sp.exp1, X),
    "expn": (lambda v: sp.expn(2, v), X),
    "gammaln": (sp.gammaln, X),
    "lgamma": (lax.lgamma, X),
    "digamma": (sp.digamma, X),
    "polygamma": (lambda v: sp.polygamma(1, v), X),
    "zeta": (lambda v: sp.zeta(v + 2.0, 1.0), X),
    "gammainc": (lambda v: sp.gammainc(2.0, v), X),
    "gammaincc": (lambda v: sp.gammaincc(2.0, v), X),
    "betainc": (lambda v: sp.betainc(2.0, 3.0, v), X),
    "betaln": (lambda v: sp.betaln(v, v + 1.0), X),
    "erf": (sp.erf, X),
    "erfc": (sp.erfc, X),
    "erfinv": (lambda v: sp.erfinv(v / 2), X),
    "ndtr": (sp.ndtr, X),
    "ndtri": (sp.ndtri, X),
    "log_ndtr": (sp.log_ndtr, X),
    "xlogy": (lambda v: sp.xlogy(v, v + 1.0), X),
    "xlog1py": (lambda v: sp.xlog1py(v, v), X),
    "entr": (sp.entr, X),
    "kl_div": (lambda v: sp.kl_div(v, 1.0 - v / 2), X),
    "expit": (sp.expit, X),
    "logit": (sp.logit, X),
    "i0e": (sp.i0e, X),
    "i1e": (sp.i1e, X),
    "spence": (sp.spence, X),
    "logsumexp": (lambda v: sp.logsumexp(v * 3.0), X),
}

NN: dict[str, Case] = {
    "relu": (jax.nn.relu, X - 0.5),  # no entry at 0
    "relu6": (jax.nn.relu6, X * 3),
    "leaky_relu": (jax.nn.leaky_relu, X - 0.5),
    "gelu": (jax.nn.gelu, X - 0.5),
    "gelu_exact": (lambda v: jax.nn.gelu(v, approximate=False), X - 0.5),
    "silu": (jax.nn.silu, X - 0.5),
    "softplus": (jax.nn.softplus, X - 0.5),
    "sigmoid": (jax.nn.sigmoid, X - 0.5),
    "elu": (jax.nn.elu, X - 0.5),
    "celu": (jax.nn.celu, X - 0.5),
    "selu": (jax.nn.selu, X - 0.5),
    "mish": (jax.nn.mish, X - 0.5),
    "glu": (jax.nn.glu, X),
    "softmax": (jax.nn.softmax, X * 2),
    "log_softmax": (jax.nn.log_softmax, X * 2),
    "standardize": (jax.nn.standardize, X),
    "squareplus": (jax.nn.squareplus, X - 0.5),
    "attention": (  # runs its softmax in float32 inside, even for float64 inputs
        lambda v: jax.nn.dot_product_attention(v, v[:, ::-1] * 0.7, v + 0.1),
        (M / 2).reshape(1, 3, 1, 3),
    ),
}

NUMPY: dict[str, Case] = {
    "sin_exp_log": (lambda v: jnp.sin(v) * jnp.exp(v) + jnp.log1p(v), X),
    "tan_sinh_arccos": (lambda v: jnp.tan(v) + jnp.sinh(v) + jnp.arccos(v - 0.2), X),
    "sqrt_cbrt_power": (lambda v: jnp.sqrt(v) + jnp.cbrt(v) + jnp.power(v, 2.5), X),
    "arctan2_hypot": (lambda v: jnp.arctan2(v, v[::-1] + 1) + jnp.hypot(v, 1.0), X),
    "logaddexp": (lambda v: jnp.logaddexp(v, v[::-1] * 2), X),
    "cumsum_cumprod": (lambda v: jnp.cumsum(v) * jnp.cumprod(v + 0.5), X),
    "sort_median": (lambda v: jnp.sort(v * jnp.array([3.0, -1.0, 2.0, 0.5])) + jnp.median(v), X),
    "where_clip_max": (
        lambda v: jnp.where(v > 0.5, v**2, -v) + jnp.clip(v, 0.1, 0.9) + jnp.maximum(v, 0.5),
        X,
    ),
    "matmul_einsum": (lambda v: v @ v.T + jnp.einsum("ij,jk->ik", v, v), M),
    "norm_trace": (lambda v: jnp.linalg.norm(v) + jnp.trace(v @ v) + jnp.var(v), M),
    "fft": (lambda v: jnp.abs(jnp.fft.rfft(v)) ** 2, X),
    "interp_polyval": (
        lambda v: (
            jnp.interp(v, jnp.array([0.0, 0.4, 1.0]), jnp.array([1.0, 3.0, 2.0]))
            + jnp.polyval(jnp.array([1.0, -2.0, 0.5]), v)
        ),
        X,
    ),
    "take_roll_kron": (lambda v: jnp.kron(jnp.roll(v, 1), jnp.take(v, jnp.array([2, 0]))), X),
    "float32_inside": (lambda v: (v.astype(jnp.float32) ** 2).astype(v.dtype), X),
    "dot_float32_acc": (
        lambda v: lax.dot(v, v, preferred_element_type=jnp.float32).astype(v.dtype),
        M,
    ),
}


def _rnn(h0: jax.Array) -> jax.Array:
    def step(h: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = jnp.tanh(h * 0.9 + x)
        return h, h

    return lax.scan(step, h0, jnp.linspace(-0.5, 0.5, 5))[1]


@jax.custom_jvp
def _newton_sqrt(a: jax.Array) -> jax.Array:
    """sqrt by a Newton ``while_loop`` per entry: under vmap its predicate is batched."""

    def one(x: jax.Array) -> jax.Array:
        tol = 4 * jnp.finfo(x.dtype).eps * x
        cond = lambda c: (jnp.abs(c[1] * c[1] - x) > tol) & (c[0] < 60)
        body = lambda c: (c[0] + 1, 0.5 * (c[1] + x / c[1]))
        return lax.while_loop(cond, body, (0, x))[1]

    return jax.vmap(one)(a)


@_newton_sqrt.defjvp
def _newton_sqrt_jvp(primals: Any, tangents: Any) -> Any:
    (a,), (t,) = primals, tangents
    y = _newton_sqrt(a)
    return y, t / (2 * y)


LAX: dict[str, Case] = {
    "scan": (lambda v: _rnn(v[0]), X),
    "vmap_scan": (jax.vmap(lambda h: _rnn(h)), X),
    "fori_loop": (lambda v: lax.fori_loop(0, 4, lambda i, c: jnp.sin(c) + v * i, v), X),
    "while_batched_predicate": (_newton_sqrt, X + 1.0),
    "vmap_cond": (
        jax.vmap(lambda r: lax.cond(r > 0.5, jnp.sin, jnp.cos, r)),
        X,
    ),
    "cond": (lambda v: lax.cond(v[0] > 0.0, lambda u: u**2, lambda u: -u, v), X),
    "switch": (lambda v: lax.switch(1, [jnp.sin, jnp.exp, jnp.tanh], v), X),
    "map": (lambda v: lax.map(lambda r: jnp.sum(r**2), v), M),
    "associative_scan": (lambda v: lax.associative_scan(jnp.multiply, v + 0.5), X),
    "avg_pool": (
        lambda v: lax.reduce_window(v, 0.0, lax.add, (2, 2), (1, 1), "VALID") / 4,
        M,
    ),
    "max_pool": (lambda v: lax.reduce_window(v, -jnp.inf, lax.max, (2, 2), (1, 1), "VALID"), M),
    "conv": (
        lambda v: lax.conv_general_dilated(
            v.reshape(1, 1, 3, 3), v[::-1].reshape(1, 1, 3, 3) / 2, (1, 1), "SAME"
        ),
        M,
    ),
    "dynamic_slice": (lambda v: lax.dynamic_slice(v, (1,), (2,)) * v[0], X),
    "remat_jit": (jax.checkpoint(jax.jit(lambda v: jnp.tanh(v) ** 2)), X),
    "custom_linear_solve": (
        lambda v: lax.custom_linear_solve(
            lambda u: jnp.asarray(SPD, u.dtype) @ u,
            v,
            lambda _, b: jnp.linalg.solve(jnp.asarray(SPD, b.dtype), b),
            transpose_solve=lambda _, b: jnp.linalg.solve(jnp.asarray(SPD.T, b.dtype), b),
        ),
        X[:3],
    ),
    "reduce_precision": (lambda v: lax.reduce_precision(v, 8, 23) * v, X),
    "vmap_switch": (
        lambda v: jax.vmap(lambda i, r: lax.switch(i, [jnp.sin, jnp.exp, jnp.tanh], r))(
            jnp.array([0, 2, 1, 0]), v
        ),
        X,
    ),
}

LINALG: dict[str, Case] = {
    "qr": (lambda v: jnp.linalg.qr(v), M),
    "qr_fields": (lambda v: jnp.linalg.qr(v).R[0] * jnp.linalg.qr(v).Q[:, 0], M),
    "svd_values": (lambda v: jnp.linalg.svd(v, compute_uv=False), M),
    "eigh": (lambda v: jnp.linalg.eigh(v + v.T)[0], M),
    "eigh_vectors": (lambda v: jnp.linalg.eigh(v + v.T)[1] ** 2, M),
    "cholesky": (lambda v: jnp.linalg.cholesky(v @ v.T + jnp.eye(3)), M),
    "solve": (lambda v: jnp.linalg.solve(v, jnp.arange(1.0, 4.0)), M),
    "inv": (jnp.linalg.inv, M),
    "det": (jnp.linalg.det, M),
    "slogdet": (lambda v: jnp.linalg.slogdet(v)[1], M),
    "pinv": (jnp.linalg.pinv, M),
    "expm": (lambda v: jax.scipy.linalg.expm(v / 2), M),
    "triangular_solve": (
        lambda v: jax.scipy.linalg.solve_triangular(jnp.tril(v) + 2 * jnp.eye(3), v[0]),
        M,
    ),
    "norm_2": (lambda v: jnp.linalg.norm(v, ord=2), M),
}


class _Pair(NamedTuple):
    first: jax.Array
    second: jax.Array


@jax.custom_jvp
def _dict_out(v: jax.Array) -> dict[str, jax.Array]:
    return {"sin": jnp.sin(v), "sq": v**2}


@_dict_out.defjvp
def _dict_out_jvp(primals: Any, tangents: Any) -> Any:
    (v,), (t,) = primals, tangents
    return _dict_out(v), {"sin": jnp.cos(v) * t, "sq": 2 * v * t}


@jax.custom_vjp
def _pair_out(v: jax.Array) -> _Pair:
    return _Pair(jnp.exp(v), v * v[::-1])


_pair_out.defvjp(
    lambda v: (_pair_out(v), v),
    lambda v, g: (jnp.exp(v) * g.first + g.second * v[::-1] + (g.second * v)[::-1],),
)


@jax.custom_jvp
def _qr_like(v: jax.Array) -> _Pair:
    q, r = jnp.linalg.qr(v)
    return _Pair(q, r)


@_qr_like.defjvp
def _qr_like_jvp(primals: Any, tangents: Any) -> Any:
    """Returns plain tuples where the function returns a NamedTuple (as ``jax.grad`` allows)."""
    (v,), (t,) = primals, tangents
    return jax.jvp(lambda u: tuple(jnp.linalg.qr(u)), (v,), (t,))


@jax.custom_vjp
def _dict_in(p: dict[str, jax.Array]) -> jax.Array:
    return jnp.sum(p["a"] * jnp.tanh(p["b"]))


_dict_in.defvjp(
    lambda p: (_dict_in(p), p),
    lambda p, g: ({"a": g * jnp.tanh(p["b"]), "b": g * p["a"] / jnp.cosh(p["b"]) ** 2},),
)


def _sq_kernel(x_ref: Any, o_ref: Any) -> None:
    o_ref[...] = jnp.sin(x_ref[...]) * x_ref[...]


def _sq_grad_kernel(x_ref: Any, g_ref: Any, o_ref: Any) -> None:
    x = x_ref[...]
    o_ref[...] = g_ref[...] * (jnp.cos(x) * x + jnp.sin(x))


@jax.custom_vjp
def _pallas_op(v: jax.Array) -> jax.Array:
    shape = jax.ShapeDtypeStruct(v.shape, v.dtype)
    return pl.pallas_call(_sq_kernel, out_shape=shape, interpret=True)(v)


def _pallas_bwd(v: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    shape = jax.ShapeDtypeStruct(v.shape, v.dtype)
    return (pl.pallas_call(_sq_grad_kernel, out_shape=shape, interpret=True)(v, g),)


_pallas_op.defvjp(lambda v: (_pallas_op(v), v), _pallas_bwd)

CUSTOM: dict[str, Case] = {
    "custom_jvp_dict": (_dict_out, X),
    "custom_vjp_namedtuple": (_pair_out, X),
    "custom_jvp_tuple_rule_namedtuple_f": (lambda v: _qr_like(v)[1], M),
    "custom_vjp_dict_input": (lambda v: _dict_in({"a": v, "b": v[::-1] - 0.5}), X),
    "pallas_interpret": (_pallas_op, X),
}

GROUPS = {"numpy": NUMPY, "nn": NN, "lax": LAX, "linalg": LINALG, "custom": CUSTOM}


def _assert_passes(cases: dict[str, Case], dtype: Any) -> None:
    f, params = _group(cases)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
    jax.grad(f)(params)  # the premise: jax.grad works on every case
    report = gradlab.check(f, params)  # the bar: no exception ...
    assert report.outcome == "passed", report  # ... and a verdict of agreement


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("group", ["lax", "custom"])
def test_control_flow_and_custom_rules_never_crash(group: str, dtype: Any) -> None:
    """lax control flow under vmap (a batched while predicate), custom rules with pytree
    outputs (a rule returning tuples where f returns a NamedTuple) and a Pallas kernel."""
    with jax.enable_x64(dtype == jnp.float64):
        _assert_passes(GROUPS[group], dtype)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("group", ["numpy", "nn", "linalg", "special"])
def test_jax_functions_never_crash(group: str, dtype: Any) -> None:
    """jax.numpy, jax.nn, linear algebra and jax.scipy.special (series and while loops)."""
    cases = SPECIAL if group == "special" else GROUPS[group]
    with jax.enable_x64(dtype == jnp.float64):
        _assert_passes(cases, dtype)


@pytest.mark.slow
def test_while_loop_with_a_batched_predicate_alone() -> None:
    """``expi`` runs a ``while_loop`` under ``vmap`` whose predicate is batched; with a
    float32 cast in front, the promoted loop is what the finite differences evaluate, and
    expi's rule, JAX's own, is promoted for autodiff as JAX's primitives are: verified."""
    report = gradlab.check(lambda v: jnp.sum(sp.expi(v)), jnp.asarray(X))
    assert report.outcome == "passed", report
    cast = lambda v: jnp.sum(sp.expi(v.astype(jnp.float32)).astype(v.dtype))
    promoted = gradlab.check(cast, jnp.asarray(X))
    assert promoted.outcome == "passed", promoted
    assert any("convert_element_type to float32" in line for line in promoted.promoted)
    assert any(line.startswith("JAX's rule expi") for line in promoted.promoted), promoted
    assert not any("kept as written" in line for line in promoted.promoted), promoted


@pytest.mark.slow
def test_numpy_float64_constant_with_float32_params() -> None:
    """A module-level NumPy float64 array inside f with float32 parameters: no crash, and
    the caller's float32 code computes afterwards as before."""
    mask = np.array([1.0, 0.0, 0.5, 2.0])
    f = lambda w: jnp.sum(jnp.tanh(w * mask) * np.float64(1.5))
    w = jnp.asarray(X, jnp.float32)
    before = jax.grad(f)(w)
    report = gradlab.check(f, w)
    assert report.outcome == "passed", report
    after = jax.grad(f)(w)
    assert after.dtype == jnp.float32 and np.array_equal(after, before)


@pytest.mark.slow
def test_f_as_a_whole_where_autodiff_of_the_promoted_rule_is_refused():
    """A float32 piece to widen and a custom_jvp rule returning tuples where f returns a
    NamedTuple: JAX refuses to differentiate the rule re-bound from a jaxpr, so autodiff
    runs f as written; the check passes and the report says what was kept and why."""

    def f(v: jax.Array) -> jax.Array:
        r = _qr_like(v)[1]
        return jnp.sum(r * jnp.arange(1.0, 10.0).reshape(3, 3)) + jnp.sum(
            v.astype(jnp.float32).astype(v.dtype) ** 2
        )

    jax.grad(f)(jnp.asarray(M))  # the premise
    report = gradlab.check(f, jnp.asarray(M))
    assert report.outcome in ("passed", "inconclusive"), report
    assert any("f as a whole" in line and "not promotable" in line for line in report.promoted)
    assert any("convert_element_type to float32" in line for line in report.promoted)


def test_promoted_while_with_a_batched_predicate_computes_what_f_computes():
    """The rebuilt loop runs each entry until its own predicate fails (as XLA does), in
    float64 where f casts to float32, with entries that need different trip counts."""
    from gradlab.gradcheck.programs._promote import Promotion, promoted

    def halvings(x: jax.Array) -> jax.Array:  # per entry: halve until below 1, count steps
        body = lambda c: (c[0] / 2, c[1] + 1.0)
        return lax.while_loop(lambda c: c[0] >= 1.0, body, (x, jnp.zeros_like(x)))

    def f(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jax.vmap(halvings)(x.astype(jnp.float32))

    x = np.array([0.5, 3.0, 17.0, 1000.0])
    with jax.enable_x64(True):
        log = Promotion()
        value, steps = promoted(f, rules=False, log=log)(jnp.asarray(x))
        assert value.dtype == jnp.float64 and any("float32" in w for w in log.promoted)
        expected = jax.vmap(halvings)(jnp.asarray(x))
    assert np.array_equal(np.asarray(steps), [0.0, 2.0, 5.0, 10.0])
    assert np.array_equal(np.asarray(value), np.asarray(expected[0]))
    assert not log.kept  # rebuilt, not kept as written
