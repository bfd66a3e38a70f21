"""Ties: many terms of ``f`` tying at once, broken at a nearby point, and routing bugs.

A conv, a zero-initialised positional bias and an overlapping 2x2 max-pool on images with an
exact-zero background: every background window is a 4-way tie, and each bias entry sits in
four windows. Moving it up makes it the maximum of all four; autodiff picks it in one. The
analytical value then lies outside the one-sided slopes of the sum, which is all finite
differences at θ see: the check re-checks those entries at a nearby θ + δ where the ties
are broken. A max-pool whose backward routes the gradient to the wrong element, or to every
tied element, must still fail.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gradlab

# ------------------------------------------------------------------- custom max-pools


def _windows(y):
    """The four elements of every 2x2 window (stride 1): ``(4, B, H-1, W-1, C)``."""
    h, w = y.shape[1] - 1, y.shape[2] - 1
    return jnp.stack([y[:, i : i + h, j : j + w, :] for i in (0, 1) for j in (0, 1)])


def _scatter(g4, shape):
    """The adjoint of :func:`_windows`: per-window cotangents back onto ``y``."""
    out = jnp.zeros(shape, g4.dtype)
    h, w = shape[1] - 1, shape[2] - 1
    for n, (i, j) in enumerate((i, j) for i in (0, 1) for j in (0, 1)):
        out = out.at[:, i : i + h, j : j + w, :].add(g4[n])
    return out


def _custom_pool(route):
    """A 2x2 stride-1 max-pool whose backward sends each window's cotangent by ``route``."""

    @jax.custom_vjp
    def pool(y):
        return jnp.max(_windows(y), axis=0)

    def fwd(y):
        return pool(y), y

    def bwd(y, g):
        win = _windows(y)
        return (_scatter(route(win) * g[None], y.shape),)

    pool.defvjp(fwd, bwd)
    return pool


def _first_max(win):  # what autodiff does: one element per window, the first maximal one
    return jax.nn.one_hot(jnp.argmax(win, axis=0), 4, axis=0, dtype=win.dtype)


def _every_tied(win):  # a routing bug: every maximal element gets the window's cotangent
    return (win == jnp.max(win, axis=0, keepdims=True)).astype(win.dtype)


def _minimum(win):  # a routing bug: the cotangent goes to the window's smallest element
    return jax.nn.one_hot(jnp.argmin(win, axis=0), 4, axis=0, dtype=win.dtype)


def _builtin(y):
    return nnx.max_pool(y, (2, 2), strides=(1, 1))


class TiedNet(nnx.Module):
    """Conv, a zero-initialised positional bias, an overlapping max-pool, a linear readout."""

    def __init__(self, pool, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 2, (3, 3), padding="SAME", rngs=rngs)
        self.pos = nnx.Param(jnp.zeros((8, 8, 2)))
        self.out = nnx.Linear(2 * 7 * 7, 3, rngs=rngs)
        self.pool = pool

    def __call__(self, x, labels):
        h = self.pool(self.conv(x) + self.pos[...])
        logits = self.out(h.reshape(h.shape[0], -1))
        picked = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)


def _problem(pool):
    net = TiedNet(pool, nnx.Rngs(0))
    x = np.zeros((4, 8, 8, 1), np.float32)  # an exact-zero background around a 3x3 blob
    x[:, 2:5, 2:5, 0] = np.random.default_rng(0).normal(size=(4, 3, 3))
    graphdef, state = nnx.split(net)
    loss = lambda state, x, labels: nnx.merge(graphdef, state)(x, labels)
    return loss, state, jnp.asarray(x), jnp.array([0, 1, 2, 0])


@pytest.mark.slow
@pytest.mark.parametrize("pool", [_builtin, _custom_pool(_first_max)], ids=["nnx", "custom"])
def test_many_terms_tied_at_once_are_verified_nearby(pool):
    loss, state, x, labels = _problem(pool)
    report = gradlab.check(loss, state, x, labels)
    assert report.outcome == "passed", report
    pos = report["pos"]
    assert pos.status == "verified" and pos.n_ties > 0, report
    assert "at a tie: verified nearby" in pos.note and "conservative gradient" in pos.note
    assert "at ties verified nearby" in report.summary()
    assert dict(report.stages)["ties broken nearby"] > 0
    # the other leaves needed no tie-breaking: conv/bias moves every tied element together
    assert all(leaf.n_ties == 0 for leaf in report.leaves if leaf.path != "pos")


@pytest.mark.slow
def test_without_tie_breaking_the_same_model_reads_as_not_a_subgradient(monkeypatch):
    # the control: the finding the tie-breaking answers is real at θ
    from gradlab.gradcheck.judging import _verify

    def refuse(ctx, plans, rows, tied, *rest):
        return rows, 0

    monkeypatch.setattr(_verify, "_break_ties", refuse)
    loss, state, x, labels = _problem(_builtin)
    report = gradlab.check(loss, state, x, labels)
    assert report.outcome == "failed" and "not a subgradient" in report["pos"].note


@pytest.mark.slow
@pytest.mark.parametrize("route", [_every_tied, _minimum], ids=["every-tied", "minimum"])
def test_a_max_pool_routing_bug_still_fails(route):
    loss, state, x, labels = _problem(_custom_pool(route))
    report = gradlab.check(loss, state, x, labels)
    assert report.outcome == "failed", report
    assert report.wrong


@pytest.mark.slow
def test_routing_to_the_minimum_fails_nearby_too():
    # the pos entries outside their slopes at θ are re-checked at θ + δ: wrong there as well
    loss, state, x, labels = _problem(_custom_pool(_minimum))
    report = gradlab.check(loss, state, x, labels)
    pos = report["pos"]
    assert pos.status == "wrong" and pos.n_ties == 0
    assert "wrong too" in pos.note, pos.note


@pytest.mark.slow
def test_identical_ensemble_members_pass():
    w = jax.random.normal(jax.random.key(1), (3, 4)) * 0.5
    heads = {f"h{i}": {"w": w} for i in range(3)}
    x = jax.random.normal(jax.random.key(0), (6, 3))

    def ens(p, x):
        outs = jnp.stack([jnp.tanh(x @ p[k]["w"]) for k in sorted(p)])
        return jnp.mean(jnp.max(outs, axis=0) ** 2)

    assert gradlab.check(ens, heads, x).outcome == "passed"

    def ens_bug(p, x):  # every member gets the gradient of the maximum
        outs = jnp.stack([jnp.tanh(x @ p[k]["w"]) for k in sorted(p)])
        best = jnp.max(outs, axis=0)
        return jnp.mean((best + jnp.sum(outs - jax.lax.stop_gradient(outs), 0)) ** 2)

    assert gradlab.check(ens_bug, heads, x).outcome == "failed"
