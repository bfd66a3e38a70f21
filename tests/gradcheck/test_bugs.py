"""Realistic gradient bugs are caught, named by leaf, and the report shows where."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from conftest import act_with_rule, mlp_bce, mlp_params, small_mlp_data

import gradlab

_act_with_rule = act_with_rule


def _mlp_loss(act):
    return lambda params, x, y: mlp_bce(params, x, y, act=act)


@pytest.fixture
def data():
    return small_mlp_data()


BUGGY_TANH = {
    "sign": lambda z, g: -g * (1 - jnp.tanh(z) ** 2),
    "missing_square": lambda z, g: g * (1 - jnp.tanh(z)),
    "missing_factor": lambda z, g: 0.5 * g * (1 - jnp.tanh(z) ** 2),
    "sigmoid_derivative": lambda z, g: g * jax.nn.sigmoid(z) * (1 - jax.nn.sigmoid(z)),
}


@pytest.mark.slow
@pytest.mark.parametrize("bug", sorted(BUGGY_TANH))
def test_wrong_activation_rules_fail(data, bug):
    act = _act_with_rule(jnp.tanh, BUGGY_TANH[bug])
    report = gradlab.check(_mlp_loss(act), *data)
    assert not report.ok
    assert report.verdict in ("uncomfortable", "wrong")
    # the leaves feeding the last activation are wrong; the output layer is not
    # (for the sign bug, layer 0 passes through two flipped signs and is right again)
    assert report["1/w"].status == report["1/b"].status == "wrong"
    assert report["2/w"].status == report["2/b"].status == "verified"
    with pytest.raises(gradlab.GradCheckError) as err:
        gradlab.assert_check(_mlp_loss(act), *data)
    assert isinstance(err.value, AssertionError)
    assert "1/w" in str(err.value) and "FAILED" in str(err.value)
    assert err.value.report.ok is False


@pytest.mark.slow
def test_correct_rule_of_the_same_shape_passes(data):
    act = _act_with_rule(jnp.tanh, lambda z, g: g * (1 - jnp.tanh(z) ** 2))
    assert gradlab.check(_mlp_loss(act), *data).ok


@pytest.mark.slow
def test_transposed_weight_gradient_is_caught():
    @jax.custom_vjp
    def dense(x, w):
        return x @ w

    dense.defvjp(
        lambda x, w: (x @ w, (x, w)),
        lambda res, g: (g @ res[1].T, (res[0].T @ g).T),  # bug: dW transposed
    )
    w = jax.random.normal(jax.random.PRNGKey(0), (4, 4))
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 4))
    report = gradlab.check(lambda w, x: jnp.sum(jnp.tanh(dense(x, w)) ** 2), w, x)
    assert not report.ok and report.leaves[0].status == "wrong"


@pytest.mark.slow
def test_off_by_one_in_a_scan_backward_pass_is_caught():
    """A hand-written reverse scan for h_t = a*h_{t-1} + x_t that reads x one step late."""

    def forward(a, xs):
        def step(h, x):
            h = a * h + x
            return h, h

        return jax.lax.scan(step, 0.0, xs)[1]

    def make(shift):
        @jax.custom_vjp
        def recur(a, xs):
            return forward(a, xs)

        def fwd(a, xs):
            hs = forward(a, xs)
            return hs, (a, hs)

        def bwd(res, g):
            a, hs = res

            def back(carry, gt):
                carry = carry + gt
                return a * carry, carry

            _, dh = jax.lax.scan(back, 0.0, g, reverse=True)  # dL/dh_t total
            h_prev = jnp.concatenate([jnp.zeros(1 + shift), hs[: hs.shape[0] - 1 - shift]])
            return jnp.sum(dh * h_prev), dh

        recur.defvjp(fwd, bwd)
        return recur

    xs = jnp.linspace(-1.0, 1.0, 9)
    loss = lambda a, xs, recur: jnp.sum(jnp.sin(recur(a, xs)))
    assert gradlab.check(loss, jnp.array(0.7), xs, make(0)).ok
    report = gradlab.check(loss, jnp.array(0.7), xs, make(1))
    assert not report.ok and report.leaves[0].status == "wrong"


def test_stray_stop_gradient_is_caught(data):
    params, x, y = data

    def loss(params, x, y):
        h = jnp.tanh(x @ params[0]["w"] + jax.lax.stop_gradient(params[0]["b"]))
        h = jnp.tanh(h @ params[1]["w"] + params[1]["b"])
        z = (h @ params[2]["w"] + params[2]["b"])[:, 0]
        return jnp.mean(jax.nn.softplus(z) - y * z)

    report = gradlab.check(loss, params, x, y)
    assert not report.ok
    assert [leaf.path for leaf in report.wrong] == ["0/b"]
    assert report["0/b"].verdict == "wrong"


@pytest.mark.slow
def test_custom_jvp_with_wrong_rule_fails():
    @jax.custom_jvp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    softplus.defjvp(lambda p, t: (softplus(p[0]), jax.nn.sigmoid(-p[0]) * t[0]))  # sign bug
    report = gradlab.check(lambda w: jnp.sum(softplus(w * 2.0)), jnp.array([0.3, -1.2, 2.0]))
    assert not report.ok


def _biased(scale):
    @jax.custom_vjp
    def add_bias(h, b):
        return h + b

    add_bias.defvjp(lambda h, b: (h + b, None), lambda _, g: (g, scale * jnp.sum(g, axis=0)))
    return add_bias


@pytest.mark.slow
def test_one_percent_bug_in_a_small_bias_of_a_20k_parameter_model_is_caught():
    sizes = [50, 100, 100, 50, 1]
    with jax.enable_x64(True):
        params = mlp_params(jax.random.PRNGKey(7), sizes)
        x = jax.random.normal(jax.random.PRNGKey(8), (32, 50), dtype=jnp.float64)
        y = (jax.random.uniform(jax.random.PRNGKey(9), (32,)) > 0.5).astype(jnp.float64)
    bad_add = _biased(1.01)

    def loss(params, x, y):
        h = x
        for i, p in enumerate(params[:-1]):
            z = h @ p["w"]
            h = jnp.tanh(bad_add(z, p["b"]) if i == 2 else z + p["b"])
        z = (h @ params[-1]["w"] + params[-1]["b"])[:, 0]
        return jnp.mean(jax.nn.softplus(z) - y * z)

    report = gradlab.check(loss, params, x, y)
    assert report.n_entries == 20_301
    assert not report.ok
    assert [leaf.path for leaf in report.wrong] == ["2/b"]  # 50 of 20,301 entries
    # the overall relative error alone would not have failed at the lecture's bands
    assert report.relative_error < 1e-2


@pytest.mark.slow
def test_gradient_scaled_by_1_0001_is_caught(mlp_problem):
    f, params, x, y = mlp_problem

    @jax.custom_vjp
    def scaled_identity(v):
        return v

    scaled_identity.defvjp(lambda v: (v, None), lambda _, g: (1.0001 * g,))
    report = gradlab.check(lambda p, x, y: scaled_identity(f(p, x, y)), params, x, y)
    assert not report.ok
    assert len(report.wrong) == len(report.leaves)
    assert 1e-5 < report.relative_error < 1e-4  # 1e-4 / (2 + 1e-4)
    assert report.verdict == "ok"  # the lecture's band alone would let it through
