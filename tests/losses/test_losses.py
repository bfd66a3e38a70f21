"""Tests for gradlab.losses: the lecture's J, its stability, its gradient, and grad checks."""

from __future__ import annotations

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import gradlab
from gradlab.losses import binary_cross_entropy, binary_cross_entropy_from_probs, mse

F64 = jnp.float64


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def literal_bce(logits: np.ndarray, labels: np.ndarray) -> float:
    """The slide's J = -1/m sum y log y^ + (1 - y) log(1 - y^), y^ = sigmoid(z), in numpy."""
    y_hat = 1 / (1 + np.exp(-logits))
    return float(-np.mean(labels * np.log(y_hat) + (1 - labels) * np.log(1 - y_hat)))


def test_equals_literal_formula_where_it_is_stable():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(7, 5))
    y = rng.uniform(size=(7, 5))  # soft labels too
    np.testing.assert_allclose(binary_cross_entropy(z, y), literal_bce(z, y), rtol=1e-13)
    hard = (y > 0.5).astype(np.float64)
    np.testing.assert_allclose(binary_cross_entropy(z, hard), literal_bce(z, hard), rtol=1e-13)


@pytest.mark.slow
def test_finite_and_exact_for_large_logits_where_the_literal_overflows():
    z = jnp.array([100.0, -100.0, 100.0, -100.0, 800.0])
    y = jnp.array([0.0, 1.0, 1.0, 0.0, 0.0])
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        assert not np.isfinite(literal_bce(np.asarray(z), np.asarray(y)))
    # per entry: softplus(z) - y z = 100, 100, ~e^-100, ~e^-100, 800
    expected = (100 + 100 + 800 + 2 * np.log1p(np.exp(-100.0))) / 5
    np.testing.assert_allclose(binary_cross_entropy(z, y), expected, rtol=1e-15)
    g = jax.grad(binary_cross_entropy)(z, y)
    assert bool(jnp.all(jnp.isfinite(g)))
    # (sigmoid(z) - y) / m, with sigmoid(z) - 1 written as -sigmoid(-z): sigmoid(100) - 1 is 0
    # in floating point but -3.7e-44 exactly, and the stable loss gets that right
    exact = jnp.where(y == 1, -jax.nn.sigmoid(-z), jax.nn.sigmoid(z)) / 5
    np.testing.assert_allclose(g, exact, rtol=1e-14, atol=0)
    # float32 too: 100 in float32 is far past where sigmoid rounds to exactly 1
    with jax.enable_x64(False):
        loss32 = binary_cross_entropy(z.astype(jnp.float32), y.astype(jnp.float32))
        chex.assert_type(loss32, jnp.float32)
        np.testing.assert_allclose(loss32, 200.0, rtol=1e-6)


def test_gradient_is_sigmoid_minus_label_over_m():
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(0, 4, size=(6, 3)))
    y = jnp.asarray(rng.uniform(size=(6, 3)))
    g = jax.grad(binary_cross_entropy)(z, y)
    chex.assert_trees_all_close(g, (jax.nn.sigmoid(z) - y) / 18, rtol=1e-12, atol=1e-16)


def test_from_probs_equals_literal_and_logit_form():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, size=(20,))
    y = (rng.uniform(size=20) > 0.5).astype(np.float64)
    p = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(binary_cross_entropy_from_probs(p, y), literal_bce(z, y), rtol=1e-12)
    np.testing.assert_allclose(
        binary_cross_entropy_from_probs(p, y), binary_cross_entropy(z, y), rtol=1e-12
    )
    # its gradient with respect to p is (p - y) / (p (1 - p) m)
    g = jax.grad(binary_cross_entropy_from_probs)(jnp.asarray(p), jnp.asarray(y))
    chex.assert_trees_all_close(g, (p - y) / (p * (1 - p) * 20), rtol=1e-10)


@pytest.mark.slow
def test_from_probs_clipping():
    y = jnp.array([1.0, 0.0, 1.0])
    p = jnp.array([0.0, 1.0, 1.0])
    eps = float(jnp.finfo(F64).eps)
    loss = binary_cross_entropy_from_probs(p, y)
    assert bool(jnp.isfinite(loss))
    np.testing.assert_allclose(loss, (-2 * np.log(eps) - np.log1p(-eps)) / 3, rtol=1e-12)
    # the clipped entries get no gradient
    g = jax.grad(binary_cross_entropy_from_probs)(p, y)
    chex.assert_trees_all_equal(g, jnp.zeros(3))
    # a custom eps bounds each term by -log(eps)
    np.testing.assert_allclose(
        binary_cross_entropy_from_probs(jnp.array([0.0]), jnp.array([1.0]), eps=1e-3),
        -np.log(1e-3),
        rtol=1e-12,
    )
    with jax.enable_x64(False):  # default eps follows the dtype
        loss32 = binary_cross_entropy_from_probs(jnp.array([0.0]), jnp.array([1.0]))
        np.testing.assert_allclose(loss32, -np.log(np.finfo(np.float32).eps), rtol=1e-6)
    with pytest.raises(gradlab.InputError, match="eps"):
        binary_cross_entropy_from_probs(p, y, eps=0.0)


def test_mse():
    p, t = jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.array([[0.0, 2.0], [1.0, 0.0]])
    np.testing.assert_allclose(mse(p, t), (1 + 0 + 4 + 16) / 4, rtol=1e-15)
    chex.assert_trees_all_close(jax.grad(mse)(p, t), 2 * (p - t) / 4, rtol=1e-15)


@pytest.mark.parametrize("loss", [binary_cross_entropy, binary_cross_entropy_from_probs, mse])
def test_bad_shapes_raise(loss):
    with pytest.raises(gradlab.InputError, match=r"same shape, got \(4, 1\) and \(4,\)"):
        loss(jnp.zeros((4, 1)), jnp.zeros(4))
    with pytest.raises(gradlab.InputError, match="empty"):
        loss(jnp.zeros((0,)), jnp.zeros((0,)))


def test_integer_labels_and_inputs_are_promoted():
    loss = binary_cross_entropy(jnp.array([0, 0]), jnp.array([1, 0]))
    np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    z=st.lists(st.floats(-15, 15), min_size=1, max_size=8),
    y=st.lists(st.floats(0, 1), min_size=8, max_size=8),
)
def test_property_logit_and_probability_forms_agree_and_are_symmetric(z, y):
    z = jnp.asarray(z, F64)
    y = jnp.asarray(y[: z.shape[0]], F64)
    loss = binary_cross_entropy(z, y)
    assert float(loss) >= 0
    # swapping the classes: J(z, y) = J(-z, 1 - y)
    np.testing.assert_allclose(binary_cross_entropy(-z, 1 - y), loss, rtol=1e-12, atol=1e-15)
    # the probability form loses |log(1 - p)| to the rounding of p = sigmoid(z) near 1: a
    # relative error of about 1e-16 / (1 - p), below 1e-9 for |z| <= 15
    np.testing.assert_allclose(
        binary_cross_entropy_from_probs(jax.nn.sigmoid(z), y), loss, rtol=1e-6, atol=1e-12
    )


@pytest.mark.slow
def test_grad_check_logistic_regression():
    # The lecture's J(W, b) with y^ = sigmoid(a W + b): every loss passes the grad check.
    key_a, key_w, key_y = jax.random.split(jax.random.key(0), 3)
    a = jax.random.normal(key_a, (8, 3), F64)
    params = {"W": jax.random.normal(key_w, (3, 1), F64), "b": jnp.zeros(1, F64)}
    y = (jax.random.uniform(key_y, (8, 1)) > 0.5).astype(F64)
    logits = lambda p, a: a @ p["W"] + p["b"]
    gradlab.assert_check(lambda p, a: binary_cross_entropy(logits(p, a), y), params, a)
    gradlab.assert_check(
        lambda p, a: binary_cross_entropy_from_probs(jax.nn.sigmoid(logits(p, a)), y), params, a
    )
    gradlab.assert_check(lambda p, a: mse(logits(p, a), y), params, a)
