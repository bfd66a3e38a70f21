"""Bad input gets a clear CheckInputError naming the problem and the fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab


def test_non_scalar_output_is_checked_through_cotangents():
    """A vector output is no longer an error: it is checked through random cotangents."""
    report = gradlab.check(lambda p: p * 2, jnp.ones(3))
    assert report.ok and len(report.projections) == 3
    assert "float64[3]" in report.output and "cotangents" in report.output


def test_non_float_array_output():
    with pytest.raises(gradlab.CheckInputError, match=r"floating-point.*int32"):
        gradlab.check(lambda p: (p > 0).astype(jnp.int32), jnp.ones(3))
    with pytest.raises(gradlab.CheckInputError, match=r"complex.*jnp\.real"):
        gradlab.check(lambda p: p * 1j, jnp.ones(3))


def test_tuple_output_suggests_has_aux():
    with pytest.raises(gradlab.CheckInputError, match="has_aux=True"):
        gradlab.check(lambda p: (jnp.sum(p), p), jnp.ones(3))


def test_has_aux_without_a_pair():
    with pytest.raises(gradlab.CheckInputError, match="did not return a pair"):
        gradlab.check(lambda p: jnp.sum(p), jnp.ones(3), has_aux=True)


def test_integer_output():
    with pytest.raises(gradlab.CheckInputError, match="floating-point scalar"):
        gradlab.check(lambda p: jnp.sum(p > 0), jnp.ones(3))


def test_no_float_leaves():
    with pytest.raises(gradlab.CheckInputError, match=r"no floating-point leaves.*int"):
        gradlab.check(lambda p: jnp.sum(p["n"]).astype(float), {"n": jnp.arange(3)})


def test_nan_value():
    with pytest.raises(gradlab.CheckInputError, match=r"f\(θ\) = nan.*log\(0\)"):
        gradlab.check(lambda p: jnp.sum(jnp.log(p)) * 0.0 + jnp.nan, jnp.ones(2))


def test_inf_value():
    with pytest.raises(gradlab.CheckInputError, match="f\\(θ\\) = -inf"):
        gradlab.check(lambda p: jnp.sum(jnp.log(p)), jnp.array([0.0, 1.0]))


def test_nan_gradient_names_the_leaf_and_index():
    params = {"ok": jnp.ones(2), "bad": jnp.array([[1.0, 0.0]])}
    with pytest.raises(gradlab.CheckInputError, match=r"'bad'.*index \(0, 1\)"):
        gradlab.check(lambda p: jnp.sum(jnp.sqrt(p["bad"])) + jnp.sum(p["ok"]), params)


def test_python_control_flow_on_values():
    def f(p):
        if p[0] > 0:  # not traceable
            return jnp.sum(p)
        return -jnp.sum(p)

    with pytest.raises(gradlab.CheckInputError, match=r"(?s)cannot be traced.*jnp\.where"):
        gradlab.check(f, jnp.ones(2))


def test_numpy_on_traced_values():
    with pytest.raises(gradlab.CheckInputError, match="cannot be traced"):
        gradlab.check(lambda p: jnp.asarray(np.sum(np.asarray(p))), jnp.ones(2))


def test_function_that_cannot_be_vmapped():
    def host(x):
        return np.asarray(np.sum(x**2), dtype=x.dtype)

    def f(p):
        out = jax.pure_callback(host, jax.ShapeDtypeStruct((), p.dtype), p)
        return out + jnp.sum(p)

    f_vjp = jax.custom_vjp(f)
    f_vjp.defvjp(lambda p: (f(p), p), lambda p, g: (g * (2 * p + 1),))
    with pytest.raises(gradlab.CheckInputError, match="vmap"):
        gradlab.check(f_vjp, jnp.ones(3))


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("eps", 0.0, "eps must be a positive"),
        ("eps", float("nan"), "eps must be a positive"),
        ("eps", 2.0, "not a small step"),
        ("tolerance", -1.0, "tolerance must be"),
        ("projections", 0, "projections must be a positive int"),
        ("check_determinism", "yes", "check_determinism must be True or False"),
        ("argnums", 3, "out of range"),
        ("argnums", (0, 0), "repeats"),
        ("argnums", "0", "argnums must be"),
    ],
)
def test_bad_options(option, value, match):
    with pytest.raises(gradlab.CheckInputError, match=match):
        gradlab.check(lambda p: jnp.sum(p**2), jnp.ones(2), **{option: value})


def test_non_array_leaf_in_params():
    with pytest.raises(gradlab.CheckInputError, match=r"'name'.*str"):
        gradlab.check(lambda p: jnp.sum(p["w"]), {"w": jnp.ones(2), "name": "layer"})


def test_not_callable():
    with pytest.raises(gradlab.CheckInputError, match="callable"):
        gradlab.check(3, jnp.ones(2))


def test_jax_state_is_restored_after_an_error():
    before = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)

    def f(p):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        gradlab.check(f, jnp.ones(2))
    after = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)
    assert after == before
    assert jnp.ones(1).dtype == (jnp.float64 if before[0] else jnp.float32)


def test_jax_state_is_restored_after_success_and_inside_is_float64():
    seen = []

    def f(p):
        seen.append((p.dtype, jax.config.jax_default_matmul_precision))
        return jnp.sum(p**2)

    before = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)
    gradlab.check(f, jnp.ones(2, dtype=jnp.float32))
    assert (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision) == before
    # the check runs f in float64; the precision audit once more at the params' own float32
    assert seen and all(prec == "highest" for _, prec in seen)
    assert {str(d) for d, _ in seen} == {"float64", "float32"}
