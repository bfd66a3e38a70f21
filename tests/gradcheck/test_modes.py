"""Directional mode, forward mode (jax.jvp) and second order (Hessian-vector products).

Each mode is run on known-correct functions (must pass) and on functions with known bugs
(must fail, in the right leaf).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import act_with_rule, mlp_bce, small_mlp_data

import gradlab

_act = act_with_rule


def _loss(act):
    return lambda params, x, y: mlp_bce(params, x, y, act=act)


@pytest.fixture
def small():
    return small_mlp_data()


@jax.custom_jvp
def _softplus_bad(x):
    return jnp.logaddexp(x, 0.0)


_softplus_bad.defjvp(lambda p, t: (_softplus_bad(p[0]), jax.nn.sigmoid(-p[0]) * t[0]))  # sign


@jax.custom_jvp
def _logsumexp(x):
    return jnp.log(jnp.sum(jnp.exp(x)))


@_logsumexp.defjvp
def _(primals, tangents):
    (x,), (t,) = primals, tangents
    y = _logsumexp(x)
    return y, jnp.sum(jnp.exp(x - y) * t)


# ---------------------------------------------------------------- directional mode


@pytest.mark.slow
def test_directional_passes_a_correct_model_at_a_fraction_of_the_cost(mlp_problem):
    f, params, x, y = mlp_problem
    report = gradlab.check(f, params, x, y, entries=gradlab.Directional())
    assert report.ok and report.verdict == "happy", report
    assert report.entries == "directional (4 random unit directions per leaf, seed 0)"
    assert all(leaf.status == "verified" for leaf in report.leaves)
    assert report.n_evaluations == 2 * 4 * 6  # 4 directions × ± × 6 leaves
    assert report.n_evaluations < gradlab.check(f, params, x, y).n_evaluations / 4
    assert "(0,) direction" not in str(report)  # verified leaves list no worst entries


@pytest.mark.slow
def test_directional_finds_a_wrong_rule_in_the_right_leaves(small):
    act = _act(jnp.tanh, lambda z, g: 0.5 * g * (1 - jnp.tanh(z) ** 2))
    report = gradlab.check(_loss(act), *small, entries=gradlab.Directional(3))
    assert not report.ok
    assert report["1/w"].status == report["1/b"].status == "wrong"
    assert report["2/w"].status == report["2/b"].status == "verified"
    worst = report["1/w"].worst[0]
    assert worst.part == "direction" and worst.index[0] in range(3)


@pytest.mark.slow
def test_directional_small_leaf_is_not_drowned_by_a_big_one():
    """A 1% bug in a 30-entry bias next to a 1,200-entry weight: per-leaf directions."""

    @jax.custom_vjp
    def add_bias(h, b):
        return h + b

    add_bias.defvjp(lambda h, b: (h + b, None), lambda _, g: (g, 1.01 * jnp.sum(g, axis=0)))
    with jax.enable_x64(True):
        params = {"w": jax.random.normal(jax.random.PRNGKey(3), (40, 30)) / 6, "b": jnp.zeros(30)}
        x = jax.random.normal(jax.random.PRNGKey(4), (8, 40))
    f = lambda p, x: jnp.sum(jnp.tanh(add_bias(x @ p["w"], p["b"])) ** 2)
    report = gradlab.check(f, params, x, entries=gradlab.Directional(2))
    assert [leaf.path for leaf in report.wrong] == ["b"]
    assert report["w"].status == "verified"


def test_directional_is_seeded(small):
    act = _act(jnp.tanh, lambda z, g: 0.5 * g * (1 - jnp.tanh(z) ** 2))
    a = gradlab.check(_loss(act), *small, entries=gradlab.Directional(), seed=1)
    b = gradlab.check(_loss(act), *small, entries=gradlab.Directional(), seed=1)
    c = gradlab.check(_loss(act), *small, entries=gradlab.Directional(), seed=2)
    assert a["1/w"].relative_error == b["1/w"].relative_error
    assert a["1/w"].worst[0].numerical == b["1/w"].worst[0].numerical
    assert a["1/w"].worst[0].numerical != c["1/w"].worst[0].numerical


@pytest.mark.slow
def test_directional_complex_leaf_and_second_order():
    z = jnp.array([1.0 + 2.0j, -0.5 + 0.25j, 0.3 - 1.0j])
    f = lambda z: jnp.sum(jnp.abs(z) ** 2 + 3 * jnp.real(z) * jnp.imag(z) ** 2)
    report = gradlab.check(f, z, entries=gradlab.Directional())
    assert report.ok and report.verdict == "happy", report
    assert any("real and imaginary parts moved together" in n for n in report.notes)
    assert gradlab.check_second_order(f, z, entries=gradlab.Directional()).ok


# ---------------------------------------------------------------- forward mode (jax.jvp)


@pytest.mark.slow
def test_forward_mode_passes_a_correct_custom_jvp():
    x = jnp.array([0.3, -1.0, 2.0, 0.5])
    report = gradlab.check(_logsumexp, x, autodiff="forward")
    assert report.ok and report.verdict == "happy" and report.autodiff == "forward"
    assert [leaf.autodiff for leaf in report.leaves] == ["forward"]


@pytest.mark.slow
def test_forward_mode_catches_a_wrong_custom_jvp_in_every_mode():
    f = lambda w: jnp.sum(_softplus_bad(w * 2.0))
    w = jnp.array([0.3, -1.2, 2.0])
    for entries in (gradlab.Full(), gradlab.Directional()):
        report = gradlab.check(f, w, autodiff="forward", entries=entries)
        assert not report.ok and report.leaves[0].status == "wrong", report


def test_both_modes_give_a_row_each_and_share_the_differences(mlp_problem):
    f, params, x, y = mlp_problem
    report = gradlab.check(f, params, x, y, autodiff="both")
    assert report.ok and report.autodiff == "both"
    assert len(report.leaves) == 2 * 6 and report.n_entries == 109
    for path in ("0/w", "2/b"):
        rev, fwd = report[path], report[path, "forward"]
        assert (rev.autodiff, fwd.autodiff) == ("reverse", "forward")
        assert fwd.grad_norm == pytest.approx(rev.grad_norm, rel=1e-12)
        assert abs(fwd.relative_error - rev.relative_error) <= rev.noise_floor
    assert report.n_evaluations == gradlab.check(f, params, x, y).n_evaluations
    assert "forward" in str(report)  # the table gets an autodiff column
    with pytest.raises(KeyError, match="autodiff: forward, reverse"):
        report["0/w", "sideways"]


def test_forward_mode_through_a_custom_vjp_is_a_clear_error(small):
    act = _act(jnp.tanh, lambda z, g: g * (1 - jnp.tanh(z) ** 2))
    with pytest.raises(gradlab.CheckInputError, match=r"(?s)custom_vjp.*autodiff='reverse'"):
        gradlab.check(_loss(act), *small, autodiff="forward")


def test_forward_mode_complex_leaf():
    z = jnp.array([1.0 + 2.0j, -0.5 + 0.25j])
    f = lambda z: jnp.sum(jnp.abs(z) ** 2 + 3 * jnp.real(z) * jnp.imag(z))
    report = gradlab.check(f, z, autodiff="both")
    assert report.ok and report.verdict == "happy", report


# ---------------------------------------------------------------- second order


@jax.custom_vjp
def _sin_stopped(x):
    return jnp.sin(x)


# bwd is right in value, but stop_gradient hides its own derivative (−sin x) from autodiff
_sin_stopped.defvjp(
    lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(jax.lax.stop_gradient(x)),)
)


@jax.custom_jvp
def _cos_bad(x):
    return jnp.cos(x)


_cos_bad.defjvp(lambda p, t: (jnp.cos(p[0]), jnp.sin(p[0]) * t[0]))  # should be −sin


@jax.custom_vjp
def _sin_bad2(x):
    return jnp.sin(x)


_sin_bad2.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * _cos_bad(x),))


@pytest.mark.slow
def test_second_order_passes_a_correct_model(mlp_problem):
    f, params, x, y = mlp_problem
    report = gradlab.check_second_order(f, params, x, y)
    assert report.ok and report.verdict == "happy", report
    assert report.order == 2 and report.autodiff == "forward" and report.eps == "per leaf"
    rms = {k: float(np.sqrt(np.mean(np.asarray(v) ** 2))) for k, v in _flat_paths(params)}
    assert all(np.isclose(leaf.eps, 1e-5 * rms[leaf.path]) for leaf in report.leaves)
    assert report.n_evaluations == 2 * 109  # gradient evaluations: ± per entry
    assert all(leaf.status == "verified" for leaf in report.leaves)


@pytest.mark.slow
@pytest.mark.parametrize("ad", ["forward", "reverse"])
@pytest.mark.parametrize("fn", [_sin_stopped, _sin_bad2], ids=["stop_gradient", "bad_jvp"])
def test_bwd_that_is_not_differentiable_fails_order_2_but_passes_order_1(fn, ad):
    x = jnp.linspace(-1.0, 1.0, 5)
    f = lambda x: jnp.sum(fn(x) * x)
    assert gradlab.check(f, x).ok
    report = gradlab.check_second_order(f, x, autodiff=ad)
    assert not report.ok and report.leaves[0].status == "wrong", report
    assert report.leaves[0].worst[0].part.startswith("row θ[")


@pytest.mark.slow
def test_second_order_names_the_block_of_the_hessian():
    """Rows of the report are the leaf of e_i; worst entries name the gradient component."""

    @jax.custom_vjp
    def mix(a, b):
        return jnp.sum(jnp.sin(a) * b)

    # d/da is right; d/db = sin(a) with a stop_gradient: H[b, a] (= cos a) is lost
    mix.defvjp(
        lambda a, b: (jnp.sum(jnp.sin(a) * b), (a, b)),  # (mix(a, b) here: no forward mode)
        lambda r, g: (g * jnp.cos(r[0]) * r[1], g * jnp.sin(jax.lax.stop_gradient(r[0]))),
    )
    params = {"a": jnp.array([0.1, 0.7]), "b": jnp.array([1.5, -0.5])}
    report = gradlab.check_second_order(lambda p: mix(p["a"], p["b"]), params, autodiff="both")
    # forward-over-reverse differentiates the gradient along e_a: ∂(∂f/∂b)/∂a is lost
    assert report["a", "forward"].status == "wrong"
    assert "row b[" in report["a", "forward"].worst[0].part
    assert report["b", "forward"].status == "verified"
    # reverse-over-reverse computes Hᵀe_i, the gradient of ∂f/∂θ_i: ∇(∂f/∂b) is the bad one
    assert report["a", "reverse"].status == "verified"
    assert report["b", "reverse"].status == "wrong"
    assert "row a[" in report["b", "reverse"].worst[0].part
    assert gradlab.check(lambda p: mix(p["a"], p["b"]), params).ok


def test_second_order_relu_kinks_are_flagged_not_wrong_and_not_passed():
    theta = jnp.array([-1.0, 0.0, 0.5, 0.0, 2.0])
    report = gradlab.check_second_order(lambda t: jnp.sum(jax.nn.relu(t) * t), theta)
    # second order does not classify kinks: flagged, never wrong, never passed by absence
    assert report.outcome == "inconclusive" and report.n_kinks == 2 and not report.wrong, report


@pytest.mark.slow
def test_second_order_of_a_vector_valued_function():
    w = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    report = gradlab.check_second_order(lambda w, x: jnp.tanh(x @ w), w, x, projections=2)
    assert report.ok and report.verdict == "happy", report
    assert len(report.projections) == 2


# ---------------------------------------------------------------- options and plan


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"entries": "sample"}, r"entries must be gradlab.Full\(\), gradlab.Sample"),
        ({"autodiff": "sideways"}, "must be 'reverse'"),
        ({"projections": 0}, r"projections \(.*\) must be an integer >= 1"),
        ({"eps": "tiny"}, "eps must be a number, 'auto' or None"),
        ({"criteria": {"kink_tolerance": 1e-3}}, r"criteria must be a gradlab.Criteria\(...\)"),
        ({"seed": 1.5}, "seed must be an int"),
        # the earlier API's keywords say what replaces them
        ({"mode": "sample"}, r"mode= is not an option.*entries=gradlab.Sample\(n\)"),
        ({"order": 2}, r"order= is not an option.*check_second_order"),
        ({"sparse": False}, r"sparse= .*execution=gradlab.Execution\(slices=...\)"),
    ],
)
def test_bad_mode_options(options, match):
    with pytest.raises(gradlab.CheckInputError, match=match):
        gradlab.check(lambda p: jnp.sum(p**2), jnp.ones(2), **options)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: gradlab.Sample(0), "Sample: per_leaf must be an integer >= 1"),
        (lambda: gradlab.Directional(-1), "Directional: directions must be an integer >= 1"),
        (lambda: gradlab.Criteria(noise_factor=0.0), "noise_factor must be a finite number > 0"),
        (lambda: gradlab.Criteria(worst_entries=-1), "worst_entries must be a non-negative"),
        (lambda: gradlab.Execution(chunk_size=4, memory_budget=2**20), "give one of the two"),
        (lambda: gradlab.Execution(devices=[]), "devices must be a non-empty sequence"),
        (lambda: gradlab.Execution(devices=["cpu"]), "devices must be a non-empty sequence"),
        (lambda: gradlab.Execution(devices=0), "devices must be a non-empty sequence"),
        (lambda: gradlab.Execution(slices="yes"), "slices must be True or False"),
        (lambda: gradlab.Execution(compilation_cache="on"), "compilation_cache"),
    ],
)
def test_bad_settings_fail_where_they_are_written(make, match):
    with pytest.raises(gradlab.CheckInputError, match=match):
        make()


def test_one_device_is_taken_as_a_list_of_one():
    assert gradlab.Execution(devices=jax.devices()[0]).devices == (jax.devices()[0],)


def _flat_paths(tree):
    return [
        (jax.tree_util.keystr(p, simple=True, separator="/"), v)
        for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def test_second_order_auto_step():
    report = gradlab.check_second_order(lambda p: jnp.sum(p**3), jnp.ones(2), eps="auto")
    assert report.ok and report.eps == "auto" and report.leaves[0].estimated_error is not None


def test_a_keyword_of_f_is_passed_even_when_it_shares_an_old_option_name():
    f = lambda p, *, mode: jnp.sum(p**2) * (2.0 if mode == "train" else 1.0)
    report = gradlab.check(f, jnp.ones(3), mode="train")
    assert report.ok and report.value == pytest.approx(6.0), report


def test_verbose_prints_the_plan_and_the_estimate(capsys, mlp_problem):
    f, params, x, y = mlp_problem
    report = gradlab.check(
        f, params, x, y, execution=gradlab.Execution(verbose=True, chunk_size=16)
    )
    err = capsys.readouterr().err
    assert "gradlab.check plan: 218 evaluations of f over 6 leaves" in err
    assert "chunks of up to 16 perturbations" in err
    assert "first chunk of" in err and "about" in err and "for all 109" in err
    assert report.summary() in err
    gradlab.check(f, params, x, y, execution=gradlab.Execution(chunk_size=16))
    assert capsys.readouterr().err == ""  # quiet by default (not a terminal, short check)


def test_progress_with_a_console_prints_the_plan_with_its_estimate():
    import io

    from rich.console import Console

    from gradlab.gradcheck.report._progress import Progress

    out = io.StringIO()
    bar = Progress(True, False, 10, "plan: 20 evaluations", Console(file=out, width=100))
    for _ in range(5):
        bar.advance(2)
    bar.close("done")
    text = out.getvalue()
    assert "plan: 20 evaluations; first chunk of 2 took" in text and "about" in text
    assert "done" not in text  # the summary is for verbose only


@pytest.mark.slow
def test_sample_mode_still_seeded_and_every_leaf_checked(mlp_problem):
    f, params, x, y = mlp_problem
    report = gradlab.check(f, params, x, y, entries=gradlab.Sample(3), autodiff="both")
    assert report.ok and len(report.leaves) == 12
    first = dict(report.stages)["first step"]
    # at least 3 per leaf, and every structurally distinct slice (first and last index along
    # each axis, every index of a small axis) even beyond 3
    moved = [leaf.n_checked or leaf.size for leaf in report.leaves[::2]]
    assert first == 2 * sum(moved)
    assert all(m >= min(3, leaf.size) for m, leaf in zip(moved, report.leaves[::2], strict=True))
    assert report.n_evaluations == sum(n for _, n in report.stages)
    assert np.isfinite(report.relative_error)


@pytest.mark.slow
def test_repeat_flags_a_non_deterministic_f_in_every_order_1_mode():
    rng = np.random.default_rng(0)

    @jax.custom_jvp
    def jitter(p):
        noise = lambda: np.asarray(1e-6 * rng.standard_normal(), dtype=p.dtype)
        return jax.pure_callback(noise, jax.ShapeDtypeStruct((), p.dtype), vmap_method="sequential")

    jitter.defjvp(lambda p, t: (jitter(p[0]), jnp.zeros((), p[0].dtype)))
    f = lambda p: jnp.sum(jnp.sin(p) ** 2) + jitter(p)
    for entries in (gradlab.Full(), gradlab.Directional()):
        report = gradlab.check(
            f, jnp.linspace(0.0, 1.0, 5), check_determinism=True, entries=entries
        )
        assert report.outcome == "failed", report
        assert "not deterministic" in report.reasons[0] and "callback" in report.reasons[0]
        assert any("not deterministic" in n for n in report.notes), report
