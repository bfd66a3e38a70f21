"""Correct gradients pass gradlab.check, whatever the pytree, dtype or argument layout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from conftest import mlp_bce, mlp_params

import gradlab


@pytest.mark.slow
def test_lecture_mlp_with_bce_passes_and_is_happy(mlp_problem):
    f, params, x, y = mlp_problem
    report = gradlab.assert_check(f, params, x, y)
    assert report.ok
    assert report.verdict == "happy"
    assert [leaf.path for leaf in report.leaves] == ["0/b", "0/w", "1/b", "1/w", "2/b", "2/w"]
    assert all(leaf.status == "verified" for leaf in report.leaves)
    assert report.n_entries == 5 * 8 + 8 + 8 * 6 + 6 + 6 + 1
    assert report.n_evaluations >= 2 * report.n_entries


@pytest.mark.slow
def test_float32_params_are_checked_in_float64_and_keep_their_dtype_label():
    params = mlp_params(jax.random.PRNGKey(3), [4, 6, 1], dtype=jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(4), (8, 4))
    y = jnp.ones(8)
    report = gradlab.check(mlp_bce, params, x, y)
    assert report.ok and report.verdict == "happy", report
    assert {leaf.dtype for leaf in report.leaves} == {"float32"}
    assert report.dtype == "float64"


@pytest.mark.slow
def test_custom_vjp_with_correct_rule_passes():
    @jax.custom_vjp
    def softsign(x):
        return x / (1 + jnp.abs(x))

    def fwd(x):
        return softsign(x), x

    def bwd(x, g):
        return (g / (1 + jnp.abs(x)) ** 2,)

    softsign.defvjp(fwd, bwd)
    w = jnp.linspace(-2.0, 2.0, 12).reshape(3, 4) + 0.05
    x = jnp.ones((5, 3))
    report = gradlab.assert_check(lambda w, x: jnp.sum(softsign(x @ w) ** 2), w, x)
    assert report.verdict == "happy"


@pytest.mark.slow
def test_custom_jvp_with_correct_rule_passes():
    @jax.custom_jvp
    def logsumexp(x):
        return jnp.log(jnp.sum(jnp.exp(x)))

    @logsumexp.defjvp
    def _(primals, tangents):
        (x,), (t,) = primals, tangents
        y = logsumexp(x)
        return y, jnp.sum(jnp.exp(x - y) * t)

    report = gradlab.assert_check(logsumexp, jnp.array([0.3, -1.0, 2.0, 0.5]))
    assert report.verdict == "happy"


@pytest.mark.slow
def test_relu_at_exactly_zero_is_a_kink_not_a_failure():
    theta = jnp.array([-1.0, 0.0, 0.5, 0.0, 2.0])
    report = gradlab.check(lambda t: jnp.sum(jax.nn.relu(t) * jnp.arange(1.0, 6.0)), theta)
    assert report.ok, report
    assert report.n_kinks == 2
    kinks = {w.index for w in report.leaves[0].kinks}
    assert kinks == {(1,), (3,)}


@pytest.mark.slow
def test_ties_in_max_are_kinks():
    theta = jnp.array([1.0, 3.0, 3.0, -2.0])
    report = gradlab.check(lambda t: jnp.max(t) * 2.0 + jnp.sum(t**2), theta)
    assert report.ok, report
    # JAX splits max's gradient between tied entries: the centered difference agrees with
    # that subgradient exactly, so the tied entries verify without being excluded.
    assert report.leaves[0].relative_error < 1e-8


@pytest.mark.slow
def test_unused_leaf_has_zero_error_not_nan():
    params = {"used": jnp.array([1.0, 2.0]), "unused": jnp.ones((3, 2))}
    report = gradlab.check(lambda p: jnp.sum(p["used"] ** 3), params)
    unused = report["unused"]
    assert unused.relative_error == 0.0 and unused.grad_norm == 0.0
    assert unused.status == "verified" and unused.verdict == "happy"


@pytest.mark.slow
def test_integer_leaves_are_skipped_and_listed():
    params = {"w": jnp.array([0.5, -0.2]), "step": jnp.array(3), "mask": jnp.array([True, False])}
    report = gradlab.check(lambda p: jnp.sum(jnp.where(p["mask"], p["w"], 0.0) ** 2), params)
    assert [leaf.path for leaf in report.leaves] == ["w"]
    assert set(report.skipped) == {"mask (bool)", "step (int32)"}


@pytest.mark.slow
def test_argnums_and_paths_of_several_arguments():
    def f(a, b, c):
        return jnp.sum(jnp.sin(a) * b) + jnp.sum(c["z"] ** 2)

    a, b, c = jnp.array([0.1, 0.2]), jnp.array([1.0, -1.0]), {"z": jnp.array([3.0])}
    report = gradlab.check(f, a, b, c, argnums=(0, 2))
    assert [leaf.path for leaf in report.leaves] == ["a", "c/z"]  # f's parameter names
    assert report.ok
    report_b = gradlab.check(f, a, b, c, argnums=1)
    assert [leaf.path for leaf in report_b.leaves] == ["b"]
    unnamed = gradlab.check(lambda *xs: f(*xs), a, b, c, argnums=(0, 2))  # no names to read
    assert [leaf.path for leaf in unnamed.leaves] == ["arg0", "arg2/z"]


def test_has_aux_and_static_arguments():
    def f(p, scale, mode):
        y = jnp.sum(p**2) if mode == "sq" else jnp.sum(jnp.abs(p))
        return y * scale, {"mode": mode}

    report = gradlab.check(f, jnp.array([1.0, 2.0]), 3.0, "sq", has_aux=True)
    assert report.ok and report.verdict == "happy"


@pytest.mark.slow
def test_flax_nnx_state_is_a_valid_params_pytree():
    from flax import nnx

    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    x = jnp.ones((4, 3))

    def f(state, x):
        return jnp.mean(jnp.tanh(nnx.merge(graphdef, state)(x)) ** 2)

    report = gradlab.assert_check(f, state, x)
    assert {leaf.path for leaf in report.leaves} == {"bias", "kernel"}


@pytest.mark.slow
def test_flax_linen_params_dict():
    import flax.linen as nn

    model = nn.Dense(3)
    x = jnp.ones((2, 4))
    variables = model.init(jax.random.PRNGKey(0), x)
    report = gradlab.assert_check(lambda v, x: jnp.sum(model.apply(v, x) ** 2), variables, x)
    assert {leaf.path for leaf in report.leaves} == {"params/bias", "params/kernel"}


@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1000])
def test_chunking_does_not_change_the_numbers(mlp_problem, chunk_size):
    f, params, x, y = mlp_problem
    base = gradlab.check(f, params, x, y)
    chunked = gradlab.check(f, params, x, y, execution=gradlab.Execution(chunk_size=chunk_size))
    for a, b in zip(base.leaves, chunked.leaves, strict=True):
        assert a.path == b.path
        # Different batch shapes round differently inside f; the difference is rounding noise.
        assert abs(a.relative_error - b.relative_error) <= a.noise_floor
        assert a.status == b.status == "verified"


@pytest.mark.slow
def test_complex_parameters_checked_as_real_and_imaginary_parts():
    z = jnp.array([1.0 + 2.0j, -0.5 + 0.25j])
    report = gradlab.check(lambda z: jnp.sum(jnp.abs(z) ** 2 + 3 * jnp.real(z) * jnp.imag(z)), z)
    assert report.ok and report.verdict == "happy", report
    assert any("real and imaginary" in n for n in report.notes)
