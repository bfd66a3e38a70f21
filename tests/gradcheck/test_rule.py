"""gradlab.check_rule: rule vs autodiff through the primal vs finite differences."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab


def _cube(rule):
    @jax.custom_vjp
    def cube(x):
        return x**3

    cube.defvjp(lambda x: (x**3, x), lambda x, g: (rule(x) * g,))
    return cube


X = jnp.array([0.5, -1.0, 2.0])


@pytest.mark.slow
def test_correct_rule_all_three_agree():
    report = gradlab.check_rule(_cube(lambda x: 3 * x**2), X)
    assert report.ok and report.culprit == "none" and report.kind == "custom_vjp"
    row = report["x"]
    assert row.rule_vs_autodiff < 1e-12 and row.rule_vs_fd < 1e-6 and row.autodiff_vs_fd < 1e-6
    assert report.message == "rule, autodiff and finite differences agree"


@pytest.mark.slow
def test_wrong_rule_is_named():
    report = gradlab.check_rule(_cube(lambda x: 2 * x**2), X)
    assert not report.ok and report.culprit == "rule"
    assert "the rule is wrong" in report.message
    row = report["x"]
    assert row.rule_vs_autodiff == pytest.approx(0.2, rel=1e-6)  # |3 − 2| / (3 + 2)
    assert row.autodiff_vs_fd < 1e-6
    w = row.worst[0]  # x³ is vector-valued: values are projected on a random cotangent
    assert w.index == (2,) and w.part in ("v0", "v1", "v2")  # three projections by default
    assert w.autodiff == pytest.approx(1.5 * w.rule) and w.numerical == pytest.approx(w.autodiff)


@pytest.mark.slow
def test_primal_that_autodiff_cannot_see_through_blames_autodiff_not_the_rule():
    """A straight-through primal: the value is sin(x) but autodiff sees a stop_gradient."""

    @jax.custom_vjp
    def st_sin(x):
        return jax.lax.stop_gradient(jnp.sin(x))

    st_sin.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(x),))
    report = gradlab.check_rule(st_sin, X)
    assert report.ok and report.culprit == "autodiff"
    assert "primal is not differentiable" in report.message
    assert report["x"].rule_vs_fd < 1e-6 and report["x"].rule_vs_autodiff == 1.0


@pytest.mark.slow
def test_primal_with_a_callback_records_why_autodiff_failed():
    @jax.custom_vjp
    def host_sin(x):
        shape = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return jax.pure_callback(np.sin, shape, x, vmap_method="sequential")

    host_sin.defvjp(lambda x: (host_sin(x), x), lambda x, g: (g * jnp.cos(x),))
    report = gradlab.check_rule(host_sin, X)
    assert report.ok and report.culprit == "autodiff"
    assert "JVP" in report.autodiff_error and report["x"].rule_vs_autodiff is None
    assert "autodiff through the primal failed" in str(report)


@pytest.mark.slow
def test_finite_differences_off_when_eps_is_too_large():
    @jax.custom_jvp
    def fast(x):
        return jnp.sin(300 * x)

    fast.defjvp(lambda p, t: (fast(p[0]), 300 * jnp.cos(300 * p[0]) * t[0]))
    x = jnp.array([0.1, 0.25, 0.3])
    report = gradlab.check_rule(fast, x, eps=1e-3)
    assert not report.ok and report.culprit == "finite_differences"
    assert "f is not smooth here or eps is off" in report.message
    assert report.kind == "custom_jvp"
    assert gradlab.check_rule(fast, x).ok  # the default step resolves it


@pytest.mark.slow
def test_several_arguments_and_a_vector_output():
    @jax.custom_vjp
    def dense(x, w):
        return jnp.tanh(x @ w)

    def bwd(res, g):
        x, w = res
        d = g * (1 - jnp.tanh(x @ w) ** 2)
        return d @ w.T, (x.T @ d).T.reshape(w.shape)  # bug: dW from the transposed product

    dense.defvjp(lambda x, w: (dense(x, w), (x, w)), bwd)
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
        w = jax.random.normal(jax.random.PRNGKey(1), (3, 3))
    report = gradlab.check_rule(dense, x, w, projections=2)
    assert [r.path for r in report.rows] == ["x", "w"]  # dense's parameter names
    assert report["x"].culprit == "none" and report["w"].culprit == "rule"
    assert report.culprit == "rule" and report.message.startswith("w: ")
    assert report.output == "float64[5, 3] projected on 2 random unit cotangents (seed 0)"
    assert len(report.projections) == 2
    d = json.loads(json.dumps(report.to_dict()))
    assert d["rows"][1]["culprit"] == "rule" and np.shape(d["projections"]) == (2, 5, 3)
    text = str(report)
    assert text.startswith("gradlab.check_rule FAILED") and "rule~autodiff" in text


@pytest.mark.slow
def test_nondiff_argnums_are_left_alone():
    @functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
    def power(x, n):
        return x**n

    power.defvjp(lambda x, n: (x**n, x), lambda n, x, g: (g * n * x ** (n - 1),))
    report = gradlab.check_rule(power, X, 3)
    assert report.ok and [r.path for r in report.rows] == ["x"]


@pytest.mark.slow
def test_a_plain_function_needs_a_primal():
    with pytest.raises(gradlab.CheckInputError, match="primal="):
        gradlab.check_rule(lambda x: x**2, X)
    report = gradlab.check_rule(lambda x: x**2, X, primal=lambda x: x * x)
    assert report.ok and report.kind == "function"


def test_check_rule_validates_its_options_like_check():
    with pytest.raises(gradlab.CheckInputError, match="not a small step"):
        gradlab.check_rule(jnp.sin, X, eps=2.0, primal=jnp.sin)
    with pytest.raises(
        gradlab.CheckInputError, match=r"projections \(.*\) must be an integer >= 1"
    ):
        gradlab.check_rule(jnp.sin, X, projections=0, primal=jnp.sin)


# ---------------------------------------------------------------- kinks, confirmed at two steps


def _relu_rule(at_zero: float, slope: float = 1.0):
    """relu with a custom rule: ``slope`` for x > 0 and ``at_zero`` at exactly 0."""

    @jax.custom_vjp
    def relu(x):
        return jnp.maximum(x, 0.0)

    def bwd(x, g):
        d = jnp.where(x > 0, slope, jnp.where(x == 0, at_zero, 0.0))
        return (d * g,)

    relu.defvjp(lambda x: (relu(x), x), bwd)
    return relu


@pytest.mark.slow
def test_kink_confirmed_at_two_steps_and_checked_against_its_one_sided_slopes():
    x = jnp.array([-1.0, 0.0, 0.5, 0.0])
    report = gradlab.check_rule(_relu_rule(0.0), x)
    assert report.ok and report.culprit == "none", report
    row = report["x"]
    assert row.n_kinks > 0 and "checked against their one-sided slopes" in row.message
    assert row.rule_vs_fd < 1e-6 and row.autodiff_vs_fd < 1e-6


@pytest.mark.slow
def test_a_rule_outside_the_one_sided_slopes_at_a_kink_is_wrong():
    # the derivative at a kink of relu lies in [0, 1]; a rule giving 3 there is no subgradient
    report = gradlab.check_rule(_relu_rule(3.0), jnp.array([-1.0, 0.0, 0.5]))
    assert not report.ok and report.culprit == "rule", report
    assert any(w.kink and w.index == (1,) for w in report["x"].worst)


@pytest.mark.slow
def test_a_wrong_rule_near_but_not_at_a_kink_is_wrong():
    # 1e-8 from the kink, inside the first step 1e-7 but outside the second: judged at 1e-8
    report = gradlab.check_rule(_relu_rule(0.0, slope=1.5), jnp.array([-1.0, 5e-8, 0.5]))
    assert not report.ok and report.culprit == "rule", report
    assert report["x"].n_kinks == 0


@pytest.mark.slow
def test_curvature_at_a_large_step_is_not_a_kink():
    # steep curvature: at eps = 1e-3 the one-sided slopes of exp(8x) disagree by ~1.6 %;
    # the second step shows them moving with the step, so nothing is called a kink
    @jax.custom_jvp
    def steep(x):
        return jnp.exp(8 * x)

    steep.defjvp(lambda p, t: (steep(p[0]), 8 * jnp.exp(8 * p[0]) * t[0]))
    report = gradlab.check_rule(steep, jnp.array([0.1, 0.3]), eps=1e-3, tolerance=1e-4)
    assert report["x"].n_kinks == 0, report
