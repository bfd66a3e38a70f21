"""Vector-valued functions: checked through random cotangents, f evaluated once per point."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab


def _dense(bug: bool):
    @jax.custom_vjp
    def dense(w, x):
        return jnp.tanh(x @ w)

    def bwd(res, g):
        w, x = res
        d = g * (1 - jnp.tanh(x @ w) ** 2)
        if bug:
            d = d.at[:, 1].set(0.0)  # ignores the cotangent of output column 1
        return x.T @ d, d @ w.T

    dense.defvjp(lambda w, x: (dense(w, x), (w, x)), bwd)
    return dense


@pytest.fixture
def wx():
    with jax.enable_x64(True):
        w = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
        x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    return w, x


@pytest.mark.slow
def test_correct_vector_function_passes_and_states_its_cotangents(wx):
    report = gradlab.check(_dense(False), *wx, argnums=(0, 1), projections=4, seed=3)
    assert report.ok and report.verdict == "happy", report
    assert report.output == "float64[5, 4] projected on 4 random unit cotangents (seed 3)"
    assert len(report.projections) == 4
    for v in report.projections:
        assert v.shape == (5, 4) and np.linalg.norm(v) == pytest.approx(1.0)
    assert "random cotangents" in str(report)
    d = json.loads(json.dumps(report.to_dict()))
    assert np.asarray(d["projections"]).shape == (4, 5, 4)


def test_a_bug_in_one_output_column_is_caught(wx):
    report = gradlab.check(_dense(True), *wx, argnums=(0, 1))
    assert not report.ok
    assert report["w"].status == report["x"].status == "wrong"
    assert report["w"].worst[0].part in {"v0", "v1", "v2"}
    assert report["w"].worst[0].index[1] == 1  # column 1 of w feeds output column 1


@pytest.mark.slow
def test_evaluations_are_shared_across_cotangents(wx):
    one = gradlab.check(_dense(False), *wx, projections=1)
    many = gradlab.check(_dense(False), *wx, projections=7)
    assert one.n_evaluations == many.n_evaluations == 2 * 12
    assert len(many.projections) == 7


@pytest.mark.slow
def test_cotangents_are_seeded(wx):
    a = gradlab.check(_dense(True), *wx, seed=5)
    b = gradlab.check(_dense(True), *wx, seed=5)
    c = gradlab.check(_dense(True), *wx, seed=6)
    assert all(np.array_equal(u, v) for u, v in zip(a.projections, b.projections, strict=True))
    assert not np.array_equal(a.projections[0], c.projections[0])
    assert a.relative_error == b.relative_error != c.relative_error


@pytest.mark.slow
def test_pytree_output_and_every_mode():
    def f(p):
        h = jnp.tanh(p["w"] * 2.0)
        return {"h": h, "n": jnp.sum(h**2), "pair": [jnp.sin(p["w"]), p["b"] * 3.0]}

    params = {"w": jnp.array([[0.3, -0.2], [0.1, 0.5]]), "b": jnp.array([1.0, 2.0, 3.0])}
    for options in ({}, {"entries": gradlab.Directional()}, {"autodiff": "both"}, {"eps": "auto"}):
        report = gradlab.check(f, params, **options)
        assert report.ok and report.verdict == "happy", (options, report)
    assert report.output.startswith("{h: float64[2, 2]; n: float64[]; pair/0: float64[2, 2]")
    assert set(report.projections[0]) == {"h", "n", "pair"}


@pytest.mark.slow
def test_vector_output_with_has_aux_and_a_float32_output():
    f = lambda p: (jnp.sin(p).astype(jnp.float32), {"note": 1})
    report = gradlab.check(f, jnp.array([0.1, 0.2, 0.3]), has_aux=True)
    # the cast is promoted for the check: f's output is float64 there, and the report says so
    assert report.output.startswith("float64[3]")
    assert report.ok and report.verdict == "happy", report
    assert any("convert_element_type to float32" in line for line in report.promoted)


@pytest.mark.slow
def test_non_finite_output_names_where():
    with pytest.raises(
        gradlab.CheckInputError, match=r"f\(θ\) = nan in output array at index \(1,\)"
    ):
        gradlab.check(lambda p: jnp.log(p - 1.0) * 0 + jnp.sqrt(p - 2.0), jnp.array([3.0, 1.0]))
