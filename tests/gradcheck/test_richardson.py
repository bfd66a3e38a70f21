"""Where no single step resolves a leaf: Richardson extrapolation, and honest messages."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab
from gradlab.gradcheck.evaluation._richardson import extrapolate, ladder


def test_extrapolation_cancels_truncation_and_reports_its_error():
    # D(h) of sin at 1 over a ladder: the best R is exact to ~1e-13, its error bar honest
    h = np.array(ladder(0.2, 8))
    x = np.array([0.3, 1.0, 2.0])
    d = (np.sin(x + h[:, None]) - np.sin(x - h[:, None])) / (2 * h[:, None])
    value, err = extrapolate(d, np.full_like(d, 1e-16) / h[:, None])
    assert np.all(np.abs(value - np.cos(x)) <= np.maximum(err, 1e-15))
    assert np.all(err < 1e-10)
    single = np.abs(d - np.cos(x)).min(axis=0)
    assert np.all(np.abs(value - np.cos(x)) < single / 100)


def _logistic(n_steps=900):
    """A float32 logistic regression near convergence and its float64 closed-form gradient."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    y = (x @ np.array([1, -2, 0.5, 0, 1.0]) + rng.normal(size=200) > 0).astype(np.float32)
    w, xd = np.zeros(5), x.astype(np.float64)
    for _ in range(n_steps):  # gradient descent in float64, stopped near the minimum
        w -= xd.T @ (1 / (1 + np.exp(-(xd @ w))) - y) / 200
    w32 = np.asarray(w, np.float32)
    z = xd @ w32.astype(np.float64)
    f = np.mean(np.logaddexp(0.0, z) - y * z)
    grad = xd.T @ (1 / (1 + np.exp(-z)) - y) / 200  # closed form, float64
    return x, y, jnp.asarray(w32), f, grad


def _loss(x, y, scale=1.0):
    @jax.custom_vjp
    def loss(w):
        z = jnp.asarray(x, w.dtype) @ w
        return jnp.mean(jnp.logaddexp(0.0, z) - jnp.asarray(y, w.dtype) * z)

    def fwd(w):
        return loss(w), w

    def bwd(w, g):
        z = jnp.asarray(x, w.dtype) @ w
        r = jax.nn.sigmoid(z) - jnp.asarray(y, w.dtype)
        return (scale * g * jnp.asarray(x, w.dtype).T @ r / len(y),)

    loss.defvjp(fwd, bwd)
    return loss


@pytest.mark.slow
def test_logistic_regression_near_convergence_passes_by_extrapolation():
    x, y, w, f, grad = _logistic()
    assert 2e4 < f / np.linalg.norm(grad) < 5e5  # the gradient is tiny next to f
    report = gradlab.check(_loss(x, y), w)
    row = report["."]
    assert report.outcome == "passed", report
    assert "Richardson extrapolation" in row.note
    assert dict(report.stages)["Richardson extrapolation"] > 0
    # the extrapolated values agree with the float64 closed form, not only with jax.grad
    for entry in row.worst:
        assert abs(entry.numerical - grad[entry.index]) <= 1e-6 * np.linalg.norm(grad)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1.001, 1.01, 0.0])
def test_a_wrong_gradient_at_the_same_scale_still_fails(scale):
    x, y, w, _, _ = _logistic()
    report = gradlab.check(_loss(x, y, scale), w)
    assert report.outcome == "failed", report
    assert report["."].status == "wrong"


@pytest.mark.slow
def test_an_extrapolated_check_of_a_smooth_leaf_costs_nothing_extra():
    report = gradlab.check(lambda p: jnp.sum(jnp.sin(p) ** 2), jnp.linspace(0.1, 1.0, 7))
    assert report.ok and "Richardson extrapolation" not in dict(report.stages)


def _suggested(text):
    return [float(v) for v in re.findall(r"eps=([0-9.e+-]+) would resolve it", text)]


@pytest.mark.slow
def test_no_message_suggests_a_step_just_tried(monkeypatch):
    # without extrapolation the logistic regression stays unresolved after its retries: the
    # message used to say "eps=7e-05 would resolve it" right after a retry at 7e-05
    from gradlab.gradcheck.judging import _verify

    monkeypatch.setattr(_verify, "_extrapolated", lambda ctx, plans, rows, *a: (rows, 0, {}))
    x, y, w, _, _ = _logistic()
    report = gradlab.check(_loss(x, y), w)
    row = report["."]
    assert report.outcome == "inconclusive" and "retried at eps=" in row.note, report
    tried = [float(v) for v in re.findall(r"(?:at|retried at) eps=([0-9.e+-]+)", row.note)]
    assert tried
    for s in _suggested(row.note):
        assert all(s > 2 * t for t in tried), row.note
    if row.resolving_eps is not None:
        assert row.resolving_eps > 2 * row.eps, row
    assert "(try eps=" not in str(report) or row.resolving_eps is not None
