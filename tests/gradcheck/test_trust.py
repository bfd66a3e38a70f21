"""gradlab.check never says OK about a gradient it did not verify (issue: trust).

Each case found by trying the checker on real gradient bugs: the buggy function must fail
(or at least never pass), and its correct twin (the same function, bug removed) must pass
with its leaves verified.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gradlab


def _scaled_rule(fn, scale):
    """``fn`` with a custom_vjp whose backward is ``scale`` × the true one."""

    @jax.custom_vjp
    def g(x):
        return fn(x)

    def fwd(x):
        return fn(x), x

    def bwd(x, ct):
        _, pull = jax.vjp(fn, x)
        return (scale * pull(ct)[0],)

    g.defvjp(fwd, bwd)
    return g


# ----------------------------------------------------------------- near a minimum: curvature


def _least_squares(scale):
    with jax.enable_x64():
        a = jax.random.normal(jax.random.key(0), (40, 6), jnp.float64)
        x_true = jax.random.normal(jax.random.key(1), (6,), jnp.float64)
        y = a @ x_true
        p = x_true + 1e-6
    sq = _scaled_rule(lambda r: jnp.sum(r**2), scale)
    return (lambda p: sq(a @ p - y)), p


@pytest.mark.slow
def test_converged_least_squares_with_a_doubled_rule_fails():
    # loss ~1e-10, gradients ~1e-5: one-sided slopes differ by h·f'' >> kink tolerance
    f, p = _least_squares(2.0)
    report = gradlab.check(f, p)
    assert report.outcome == "failed" and report.leaves[0].status == "wrong", report
    assert report.leaves[0].n_kinks == 0  # curvature is not a kink


def test_converged_least_squares_correct_twin_is_verified():
    f, p = _least_squares(1.0)
    report = gradlab.check(f, p)
    assert report.ok and report.leaves[0].status == "verified", report


# the fit's data are float64 constants made under enable_x64; the audit runs f in the caller's
# default config, where JAX warns that it truncates them to float32 (as it would for the user)
@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64:UserWarning")
def test_converged_least_squares_in_float32_is_not_blamed_on_the_rule():
    # near the minimum the float32 gradient is mostly cancellation: the precision audit
    # allows what its own rounding measurably does (a one-ulp move of θ), not sqrt(u) only
    f, p = _least_squares(1.0)
    report = gradlab.check(f, p.astype(jnp.float32))
    assert report.ok, report


# ------------------------------------------------------------------ float32 inside f


def _float32_inside(bug):
    def f(params, x):
        h = jnp.tanh(x @ params["w"])
        h32 = h.astype(jnp.float32)  # a float32 piece, as mixed-precision code has
        z = jax.nn.softmax(h32 @ params["v"].astype(jnp.float32), axis=-1)
        out = z.astype(params["w"].dtype)
        return jnp.sum(bug(out) * jnp.arange(out.shape[-1]))

    key = jax.random.key(3)
    params = {
        "w": jax.random.normal(key, (4, 5)) * 0.5,
        "v": jax.random.normal(jax.random.key(5), (5, 3)),
    }
    return f, params, jax.random.normal(jax.random.key(4), (6, 4))


@pytest.mark.slow
def test_float32_cast_inside_f_is_promoted_and_verified():
    f, params, x = _float32_inside(lambda z: z)
    report = gradlab.check(f, params, x)
    assert report.ok, report
    assert any("float32" in line for line in report.promoted), report.promoted
    assert all(leaf.relative_error < 1e-8 for leaf in report.leaves)


@pytest.mark.slow
def test_float32_cast_inside_f_with_a_bug_upstream_fails():
    f, params, x = _float32_inside(_scaled_rule(lambda z: z**2, 1.5))
    report = gradlab.check(f, params, x)
    assert report.outcome == "failed" and {leaf.status for leaf in report.leaves} == {"wrong"}


# ------------------------------------------------- custom rules inside a float32 region


def _user_tanh(error=1.0):
    """A user's own custom_jvp rule (``error`` × the true slope): checked as written."""

    @jax.custom_jvp
    def my_tanh(x):
        return jnp.tanh(x)

    my_tanh.defjvps(lambda t, ans, x: error * t * (1 - ans**2))
    return my_tanh


def _float32_region(act, bug):
    """``act`` and a softmax (a custom_jvp rule of JAX's own from JAX 0.12) in float32."""

    def f(params, x):
        h = act((x @ params["w"]).astype(jnp.float32))
        z = jax.nn.softmax(h @ params["v"].astype(jnp.float32), axis=-1)
        return jnp.sum(bug(z.astype(params["w"].dtype)) * jnp.arange(3.0))

    params = {
        "w": jax.random.normal(jax.random.key(3), (4, 5)),
        "v": jax.random.normal(jax.random.key(5), (5, 3)),
    }
    return f, params, jax.random.normal(jax.random.key(4), (6, 4))


def test_jax_own_rules_in_float32_are_promoted_and_verified():
    # jax.nn.relu is a custom_jvp of JAX's: promoted for autodiff as JAX's primitives are
    f, params, x = _float32_region(jax.nn.relu, lambda z: z)
    report = gradlab.check(f, params, x)
    assert report.outcome == "passed", report
    assert any(line.startswith("JAX's rule relu") for line in report.promoted), report.promoted
    assert not any("kept as written" in line for line in report.promoted), report.promoted


def test_a_users_rule_in_float32_is_kept_as_written():
    f, params, x = _float32_region(_user_tanh(), lambda z: z)
    report = gradlab.check(f, params, x)
    assert report.outcome == "passed", report
    assert any("kept as written: custom rule my_tanh" in line for line in report.promoted), (
        report.promoted
    )
    assert any("autodiff runs f's custom rules as written, in float32" in n for n in report.notes)
    assert not any("differs from f's own evaluation" in n for n in report.notes), report.notes


def test_a_float32_rule_whose_forward_pass_computes_something_else_is_noted():
    # the allowance for float32 rounding in the autodiff program's f(θ) hides no gross change

    @jax.custom_vjp
    def off(x):
        return jnp.tanh(x)

    off.defvjp(lambda x: (1.5 * jnp.tanh(x), x), lambda x, g: (g * (1 - jnp.tanh(x) ** 2),))
    f, params, x = _float32_region(off, lambda z: z)
    report = gradlab.check(f, params, x)
    assert any("differs from f's own evaluation" in n for n in report.notes), report.notes


@pytest.mark.parametrize("seed", range(4))
def test_a_users_float32_rule_next_to_kinks_is_not_called_wrong(seed):
    # the rule kept in float32 used to set float32 noise floors for the finite differences
    # too, whose float64 evaluations then took steps of 1e-2 across relu's kinks: "wrong"
    f, params, x = _float32_region(lambda h: jax.nn.relu(h) + 0.1 * _user_tanh()(h), lambda z: z)
    params = jax.tree_util.tree_map(lambda a: a * (1 + 0.1 * seed), params)
    report = gradlab.check(f, params, x)
    assert report.outcome == "passed", report
    assert all(leaf.eps == pytest.approx(1e-7) for leaf in report.leaves), report


@pytest.mark.parametrize("error", [1.5, 1.001])
def test_a_users_float32_rule_wrong_beyond_float32_rounding_fails(error):
    # the allowance for the rule's float32 rounding (sqrt(u) = 2.4e-4) hides no larger error
    f, params, x = _float32_region(lambda h: 0.5 * _user_tanh(error)(h), lambda z: z)
    report = gradlab.check(f, params, x)
    assert report.outcome == "failed", report
    assert "wrong" in {leaf.status for leaf in report.leaves}, report


def test_a_users_float32_rule_wrong_within_float32_rounding_is_not_passed():
    # 2e-5 off: below what the rule's float32 rounding may explain, far above the tolerance:
    # no verdict either way, and never "passed"
    f, params, x = _float32_region(lambda h: 0.5 * _user_tanh(1 + 2e-5)(h), lambda z: z)
    report = gradlab.check(f, params, x)
    assert report.outcome == "inconclusive", report
    assert any("autodiff runs custom rules kept as written" in leaf.note
               for leaf in report.leaves), report  # fmt: skip


def test_a_promoted_jax_rule_does_not_hide_a_wrong_rule_downstream():
    f, params, x = _float32_region(jax.nn.relu, _scaled_rule(lambda z: z**2, 1.5))
    report = gradlab.check(f, params, x)
    assert report.outcome == "failed", report
    assert {leaf.status for leaf in report.leaves} == {"wrong"}, report


# ----------------------------------------------------------------- Flax NNX attention


class _Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, act):
        self.embed = nnx.Embed(11, 8, rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=2, in_features=8, qkv_features=8, decode=False, rngs=rngs
        )
        self.act = act

    def __call__(self, tokens):
        h = self.norm(self.embed(tokens))
        return jnp.mean(self.act(self.attn(h)) ** 2)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_nnx_attention_block(scale):
    model = _Block(nnx.Rngs(0), _scaled_rule(jnp.tanh, scale))
    graphdef, state = nnx.split(model)
    tokens = jnp.array([[1, 4, 2, 7, 3], [0, 9, 9, 5, 1]])
    f = lambda s, t: nnx.merge(graphdef, s)(t)
    report = gradlab.check(f, state, tokens)
    if scale == 1.0:
        assert report.ok, report
        # the key bias of softmax attention has a gradient zero by symmetry: verified as flat
        assert [leaf.path for leaf in report.leaves if leaf.flat] == ["attn/key/bias"]
    else:
        assert report.outcome == "failed", report
        assert "attn" in " ".join(leaf.path for leaf in report.wrong)


# ----------------------------------------------------------------- a primal from another program


@pytest.mark.slow
@pytest.mark.parametrize("symmetrize", [True, False])
def test_eigh_on_a_non_symmetric_input(symmetrize):
    def f(p):
        a = p.reshape(3, 3)
        w = jnp.linalg.eigh(a, symmetrize_input=symmetrize)[0]
        return jnp.sum(w * jnp.arange(1.0, 4.0))

    p = jnp.array([2.0, 0.3, -0.1, 0.7, 1.0, 0.2, 0.4, -0.5, 3.0])  # not symmetric
    report = gradlab.check(f, p)
    if symmetrize:
        assert report.ok, report
    else:
        # eigh's rule assumes a symmetric input: its gradient is not f's
        assert not report.ok and report.outcome == "failed", report


# ----------------------------------------------------------------- determinism


@pytest.mark.slow
def test_host_randomness_at_trace_time_fails_as_not_deterministic():
    rng = np.random.default_rng(0)

    def f(p):
        mask = jnp.asarray(rng.random(p.shape) > 0.5)  # drawn anew each time f is traced
        return jnp.sum(jnp.tanh(p * mask) ** 2)

    for _ in range(2):  # the second check reuses the first one's programs: still caught
        report = gradlab.check(f, jnp.linspace(-1.0, 1.0, 12))
        assert report.outcome == "failed", report
        assert "not deterministic" in report.reasons[0] and "traced" in report.reasons[0]


def test_deterministic_twin_passes():
    mask = jnp.asarray(np.random.default_rng(0).random(12) > 0.5)
    f = lambda p: jnp.sum(jnp.tanh(p * mask) ** 2)
    assert gradlab.check(f, jnp.linspace(-1.0, 1.0, 12)).ok


# ----------------------------------------------------------------- precision audit


def _dtype_branching(bad_in_float32):
    @jax.custom_vjp
    def act(x):
        return jnp.sin(x)

    def bwd(x, g):
        slope = jnp.cos(x)
        if bad_in_float32 and x.dtype == jnp.float32:
            slope = 1.1 * slope  # wrong only on the float32 path
        return (g * slope,)

    act.defvjp(lambda x: (jnp.sin(x), x), bwd)
    return lambda p, x: jnp.sum(act(x @ p) ** 2)


@pytest.mark.slow
@pytest.mark.parametrize("bad", [False, True])
def test_rule_wrong_only_in_float32_is_caught_by_the_audit(bad):
    f = _dtype_branching(bad)
    p = jnp.linspace(-0.5, 0.5, 6, dtype=jnp.float32).reshape(3, 2)
    x = jnp.ones((4, 3), jnp.float32)
    report = gradlab.check(f, p, x)
    # the float64 check of the mathematics passes either way
    assert report.leaves[0].status == "verified"
    if bad:
        assert report.outcome == "failed", report
        assert "float32" in report.reasons[0] and "own dtype" in report.reasons[0]
    else:
        assert report.ok, report


# ----------------------------------------------------------------- any pytree


class _WithDropout(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.lin = nnx.Linear(3, 4, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x, *, train: bool):
        self.drop.deterministic = not train
        return jnp.sum(jnp.tanh(self.drop(self.lin(x))) ** 2)


@pytest.mark.slow
def test_nnx_model_with_dropout_state_and_module():
    model = _WithDropout(nnx.Rngs(0, dropout=1))
    x = jnp.linspace(-1, 1, 6).reshape(2, 3)
    graphdef, state = nnx.split(model)
    f = lambda s, x, train: nnx.merge(graphdef, s)(x, train=train)
    report = gradlab.check(f, state, x, False)
    assert report.ok, report
    assert any("key" in s for s in report.skipped), report.skipped  # PRNG keys listed
    # the module itself, with f's keyword argument passed through check
    report = gradlab.check(lambda m, x, train: m(x, train=train), model, x, train=False)
    assert report.ok and {leaf.path for leaf in report.leaves} >= {"lin/kernel", "lin/bias"}


def test_raw_uint32_keys_are_skipped():
    params = {"w": jnp.ones(3), "key": jax.random.key_data(jax.random.key(0))}
    report = gradlab.check(lambda p: jnp.sum(p["w"] ** 2), params)
    assert report.ok and report.skipped == ("key (uint32)",)


# ----------------------------------------------------------------- kinks are checked


KINK_TRAPS = {
    "relu at 0": (lambda t: jnp.sum(jax.nn.relu(t) * jnp.arange(1.0, 5.0)), [0.0, 1.0, 0.0, -2.0]),
    "abs at 0": (lambda t: jnp.sum(jnp.abs(t) * jnp.arange(1.0, 5.0)), [0.0, 1.0, -0.5, 0.0]),
    "max ties": (lambda t: jnp.max(t) * 2.0 + jnp.sum(t**2), [1.0, 3.0, 3.0, -2.0]),
    "sort ties": (lambda t: jnp.sum(jnp.sort(t) * jnp.arange(1.0, 5.0)), [2.0, 1.0, 2.0, 0.5]),
    "clip bounds": (lambda t: jnp.sum(jnp.clip(t, -1.0, 1.0) * t), [1.0, -1.0, 0.3, 2.0]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KINK_TRAPS))
def test_kink_traps_pass(name):
    f, theta = KINK_TRAPS[name]
    report = gradlab.check(f, jnp.array(theta))
    assert report.ok, report


def test_a_wrong_subgradient_at_a_kink_fails():
    @jax.custom_jvp
    def relu(x):
        return jnp.maximum(x, 0.0)

    relu.defjvps(lambda t, ans, x: t * jnp.where(x > 0, 1.0, jnp.where(x == 0, 3.0, 0.0)))
    report = gradlab.check(lambda t: jnp.sum(relu(t) * jnp.arange(1.0, 5.0)),
                           jnp.array([0.0, 1.0, 0.0, -2.0]))  # fmt: skip
    assert report.outcome == "failed", report
    assert "not a subgradient" in report.leaves[0].note


def test_a_kink_does_not_hide_a_bug_in_its_neighbours():
    # relu(0) entries are kinks; the other entries carry a 2x bug
    f = _scaled_rule(lambda t: jnp.sum(jax.nn.relu(t) * jnp.arange(1.0, 7.0)), 2.0)
    report = gradlab.check(f, jnp.array([0.0, 1.0, 0.0, -2.0, 0.5, 0.0]))
    assert report.outcome == "failed" and report.leaves[0].status == "wrong", report


# ----------------------------------------------------------------- noise and unresolved leaves


def test_a_leaf_drowned_in_rounding_is_retried_at_a_larger_step():
    # |f| ~ 1e2 and gradients ~ 1e-2: rounding dominates at eps=1e-7, a step of ~1e-4 resolves it
    f = lambda p: 1e2 + jnp.sum(1e-2 * jnp.sin(p["small"])) + jnp.sum(p["big"] ** 2)
    params = {"small": jnp.linspace(0.1, 1.0, 8), "big": jnp.array([1.0, 2.0])}
    report = gradlab.check(f, params)
    small = report["small"]
    assert report.ok and small.status == "verified", report
    assert small.eps > 1e-7 and "verified at eps=" in small.note


def test_the_same_leaf_with_a_bug_is_still_wrong_after_the_retry():
    g = _scaled_rule(lambda p: jnp.sum(1e-2 * jnp.sin(p)), 1.5)
    f = lambda p: 1e2 + g(p["small"]) + jnp.sum(p["big"] ** 2)
    params = {"small": jnp.linspace(0.1, 1.0, 8), "big": jnp.array([1.0, 2.0])}
    report = gradlab.check(f, params)
    assert report.outcome == "failed" and report["small"].status == "wrong", report


def test_a_truly_unresolvable_leaf_is_inconclusive_never_ok():
    f = lambda p: 1e8 + 1e-12 * jnp.sum(jnp.sin(p))
    report = gradlab.check(f, jnp.linspace(0.1, 1.0, 5))
    assert report.outcome == "inconclusive" and not report.ok
    assert report.reasons and "not verified" in report.reasons[0]
    with pytest.raises(gradlab.GradCheckError):
        gradlab.assert_check(f, jnp.linspace(0.1, 1.0, 5))


def test_entries_outside_f_domain_are_never_verified_by_absence():
    # log of a parameter that is ~0: f(θ − h) is NaN at both steps for that entry
    f = lambda p: jnp.sum(jnp.log(p))
    report = gradlab.check(f, jnp.array([1e-9, 1.0, 2.0]))
    assert not report.ok, report
    assert report.leaves[0].n_nonfinite == 1


def test_flatness_does_not_excuse_a_dropped_gradient():
    # a leaf whose gradient (1e-8) is unresolvable next to |f| = 1e4, with autodiff cut off:
    # jax.grad is exactly zero, but f does move over the flatness step: never verified
    f = lambda p: (
        1e4 + 1e-8 * jnp.sum(jnp.sin(jax.lax.stop_gradient(p["a"]))) + jnp.sum(p["b"] ** 2)
    )
    report = gradlab.check(f, {"a": jnp.linspace(0.1, 1.0, 4), "b": jnp.ones(2)})
    assert report["a"].status == "unresolved" and not report["a"].flat
    assert report.outcome == "inconclusive"


@pytest.mark.slow
def test_relu_units_at_exactly_zero_for_every_example_pass():
    # zero biases and weights: a unit's pre-activation is 0 for every example, so moving one
    # weight puts some examples on each side of the kink. Autodiff's relu'(0) = 0 gives 0,
    # which lies between 0 and the sum of the one-sided slopes, not between the slopes.
    key = jax.random.key(0)
    w1 = jax.random.normal(key, (6, 5)).at[:, :2].set(0.0)
    params = {"w1": w1, "b1": jnp.zeros(5), "w2": jnp.ones((5,)) * 0.7}
    x = jax.random.normal(jax.random.key(1), (16, 6))
    f = lambda p, x: jnp.mean(jnp.tanh(jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"]))
    report = gradlab.check(f, params, x)
    assert report.ok, report
    assert report["w1"].n_kinks > 0


@pytest.mark.slow
def test_a_wrong_rule_at_coincident_kinks_still_fails():
    # the same units at exactly 0 for every example, through a relu whose derivative at 0 is
    # 3: the value 3·(sum of the slopes) lies outside both the slopes and [0, their sum]
    @jax.custom_jvp
    def relu(x):
        return jnp.maximum(x, 0.0)

    relu.defjvps(lambda t, ans, x: t * jnp.where(x > 0, 1.0, jnp.where(x == 0, 3.0, 0.0)))
    w1 = jax.random.normal(jax.random.key(0), (6, 5)).at[:, :2].set(0.0)
    params = {"w1": w1, "b1": jnp.zeros(5), "w2": jnp.ones((5,)) * 0.7}
    x = jax.random.normal(jax.random.key(1), (16, 6))
    f = lambda p, x: jnp.mean(jnp.tanh(relu(x @ p["w1"] + p["b1"]) @ p["w2"]))
    report = gradlab.check(f, params, x)
    assert report.outcome == "failed" and report["w1"].status == "wrong", report


def _float32_bitcast(scale):
    """A piece no promotion can widen (a bit cast of float32), with a straight-through rule."""

    @jax.custom_vjp
    def roundtrip(x):
        x32 = jax.lax.bitcast_convert_type(
            jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32), jnp.float32
        )
        return x32.astype(x.dtype)

    roundtrip.defvjp(lambda x: (roundtrip(x), None), lambda _, ct: (ct,))
    tanh = _scaled_rule(jnp.tanh, scale)
    return lambda p: jnp.sum(jnp.sin(roundtrip(p)) * tanh(p))


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_a_piece_kept_in_float32_sets_the_floor_and_a_bug_still_fails(scale):
    report = gradlab.check(_float32_bitcast(scale), jnp.linspace(0.1, 1.0, 6))
    assert any(line.startswith("kept as written: bitcast") for line in report.promoted)
    if scale == 1.0:
        # float32 rounding inside f cannot be resolved to 1e-6 at any admissible step
        assert report.outcome == "inconclusive", report
    else:
        # retried at the largest admissible step, the 1.5x error stands clear of that rounding
        assert report.outcome == "failed", report
