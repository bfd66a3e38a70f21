"""The precision audit: the lowest precision f computes in, and every mode audited."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import gradlab


def _act(bad_in_float32):
    """sin with a rule 1.5x wrong only where its input is float32 (when ``bad_in_float32``)."""

    @jax.custom_vjp
    def act(x):
        return jnp.sin(x)

    def bwd(x, g):
        slope = jnp.cos(x)
        if bad_in_float32 and x.dtype == jnp.float32:
            slope = 1.5 * slope
        return (g * slope,)

    act.defvjp(lambda x: (jnp.sin(x), x), bwd)
    return act


def _bf16_mlp(bad=None):
    """A float32 MLP that runs its matmuls in bfloat16 on purpose (tanh, or a custom rule)."""
    act = jnp.tanh if bad is None else _act(bad)

    def f(p, x):  # the activation acts on the weights' own dtype: float64 in the check
        w1 = act(p["w1"])
        h = jnp.dot(x.astype(jnp.bfloat16), w1.astype(jnp.bfloat16)).astype(jnp.float32)
        h = jnp.tanh(h)
        out = jnp.dot(h.astype(jnp.bfloat16), p["w2"].astype(jnp.bfloat16)).astype(jnp.float32)
        return jnp.mean(out**2)

    k = jax.random.split(jax.random.key(0), 3)
    p = {"w1": jax.random.normal(k[0], (8, 16)) * 0.3, "w2": jax.random.normal(k[1], (16, 1))}
    return f, p, jax.random.normal(k[2], (32, 8))


MODES = [gradlab.Full(), gradlab.Sample(16), gradlab.Directional(4)]


@pytest.mark.slow
@pytest.mark.parametrize("entries", MODES, ids=["full", "sample", "directional"])
def test_bfloat16_pieces_on_purpose_are_not_a_wrong_rule(entries):
    f, p, x = _bf16_mlp()
    report = gradlab.check(f, p, x, entries=entries)
    assert report.outcome == "passed", report
    notes = " ".join(report.notes)
    assert "allows bfloat16 rounding" in notes and "dot_general" in notes


@pytest.mark.slow
@pytest.mark.parametrize("entries", MODES, ids=["full", "sample", "directional"])
def test_a_rule_wrong_on_the_float32_path_fails_beside_bfloat16_pieces(entries):
    f, p, x = _bf16_mlp(bad=True)
    report = gradlab.check(f, p, x, entries=entries)
    assert report.outcome == "failed", report
    assert not report.wrong  # the float64 check finds nothing wrong: only the audit does
    assert any("float32 path" in r and "bfloat16 pieces" in r for r in report.reasons)


def _float32_only(bad):
    act = _act(bad)
    f = lambda p, x: jnp.sum(act(x @ p) ** 2)
    p = jnp.linspace(-0.5, 0.5, 6, dtype=jnp.float32).reshape(3, 2)
    return f, p, jnp.ones((4, 3), jnp.float32)


@pytest.mark.parametrize("entries", MODES, ids=["full", "sample", "directional"])
@pytest.mark.parametrize("bad", [False, True])
def test_a_rule_wrong_only_in_float32_is_audited_in_every_mode(entries, bad):
    f, p, x = _float32_only(bad)
    report = gradlab.check(f, p, x, entries=entries)
    assert report.outcome == ("failed" if bad else "passed"), report
    if bad:
        assert "rounding explains" in report.reasons[0] and "float32 path" in report.reasons[0]
