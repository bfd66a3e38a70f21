"""Step sizes: eps="auto" (Richardson), and the float32 fallback / the host for no-float64."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab
from gradlab.gradcheck.pipeline._precision import _precision
from gradlab.gradcheck.planning._step import cube_root_step, default_eps


def _scaled(scale):
    @jax.custom_vjp
    def tag(x):
        return x

    tag.defvjp(lambda x: (x, None), lambda _, g: (scale * g,))
    return tag


# ---------------------------------------------------------------- eps="auto"


def test_auto_is_more_accurate_than_the_lecture_step_on_the_mlp(mlp_problem):
    f, params, x, y = mlp_problem
    fixed = gradlab.check(f, params, x, y)
    auto = gradlab.check(f, params, x, y, eps="auto")
    assert auto.ok and auto.eps == "auto" and auto.verdict == "happy"
    assert auto.relative_error < fixed.relative_error / 5
    for leaf in auto.leaves:
        assert 1e-6 < leaf.eps < 1e-3  # near the cube-root optimum, far from 1e-7
        # the estimate is of the order of the error actually observed
        assert leaf.estimated_error / 10 < leaf.relative_error < 10 * leaf.estimated_error
    text = str(auto)
    assert "eps=auto" in text and "est. error" in text


@pytest.mark.slow
def test_auto_picks_smaller_steps_where_curvature_is_larger():
    f = lambda p: jnp.sum(jnp.sin(50 * p["fast"])) + jnp.sum(jnp.exp(p["slow"]))
    params = {"fast": jnp.linspace(0.1, 1.0, 20), "slow": jnp.linspace(-1.0, 1.0, 5)}
    report = gradlab.check(f, params, eps="auto")
    assert report.ok
    assert report["fast"].eps < report["slow"].eps / 10


@pytest.mark.slow
def test_auto_resolves_a_gradient_the_lecture_step_cannot():
    """|grad| ~ 1e-5 next to |f| = 10: rounding at 1e-7 is ~2e-7·|f|, most of the gradient."""
    f = lambda p: 10.0 + 1e-5 * jnp.sum(jnp.sin(p))
    theta = jnp.linspace(0.1, 1.0, 20)
    # the default check retries the leaf at the step its noise floor asks for
    retried = gradlab.check(f, theta).leaves[0]
    assert retried.status == "verified" and retried.eps > 1e-7, retried
    assert "verified at eps=" in retried.note
    leaf = gradlab.check(f, theta, eps="auto").leaves[0]
    assert leaf.status == "verified" and leaf.eps > 1e-4
    assert leaf.estimated_error < 1e-6


@pytest.mark.slow
def test_auto_still_catches_a_small_bug(mlp_problem):
    f, params, x, y = mlp_problem
    tag = _scaled(1.0001)
    report = gradlab.check(lambda p, x, y: tag(f(p, x, y)), params, x, y, eps="auto")
    assert not report.ok and len(report.wrong) == 6


def test_auto_with_a_function_that_leaves_its_domain_at_large_steps():
    """log(x) near 0: probes that step past 0 give NaN and the search backs off."""
    theta = jnp.array([2e-3, 5e-3, 1.0])
    report = gradlab.check(lambda p: jnp.sum(jnp.log(p)), theta, eps="auto")
    assert report.ok and report.leaves[0].n_nonfinite == 0, report
    assert report.leaves[0].eps < 2e-3


def test_cube_root_steps():
    assert cube_root_step(np.finfo(np.float64).eps) == pytest.approx(1.74e-5, rel=0.01)
    assert default_eps(2, "float64") == 1e-5 and default_eps(1, "float64") == 1e-7
    assert default_eps(1, "float32", scale=3.0) == pytest.approx(3 * 0.0142, rel=0.01)


# ---------------------------------------------------------------- float32 fallback, host


@pytest.mark.slow
def test_float32_fallback_passes_a_correct_model_with_honest_floors(mlp_problem):
    f, params, x, y = mlp_problem
    seen = []

    def spy(p, x, y):
        seen.append(p[0]["w"].dtype)
        return f(p, x, y)

    before = jax.config.jax_enable_x64
    report = gradlab.check(spy, params, x, y, dtype="float32")
    assert jax.config.jax_enable_x64 == before
    assert set(seen) == {np.dtype("float32")}
    assert report.ok and report.dtype == "float32" and report.tolerance == 1e-3, report
    assert any("dtype='float32' was asked for" in n for n in report.notes)
    for leaf in report.leaves:
        assert leaf.status == "verified"
        assert leaf.eps == pytest.approx(0.0142, rel=0.01)  # params of order one
        assert 1e-5 < leaf.noise_floor < 1e-2  # float32's rounding, not float64's
        assert leaf.relative_error < leaf.noise_floor


@pytest.mark.slow
def test_float32_fallback_still_catches_a_five_percent_bug(mlp_problem):
    f, params, x, y = mlp_problem
    tag = _scaled(1.05)
    report = gradlab.check(lambda p, x, y: tag(f(p, x, y)), params, x, y, dtype="float32")
    assert not report.ok and len(report.wrong) == 6


@pytest.mark.slow
def test_float32_fallback_says_what_it_cannot_resolve():
    f = lambda p: 10.0 + 1e-4 * jnp.sum(jnp.sin(p))  # |grad| ~ 1e-4 next to |f| = 10
    theta = jnp.linspace(0.1, 1.0, 10)
    leaf = gradlab.check(f, theta, dtype="float32").leaves[0]
    assert leaf.status == "unresolved" and "float32" in leaf.note
    on_host = gradlab.Execution(devices=jax.devices("cpu"))
    assert gradlab.check(f, theta, eps="auto", execution=on_host).leaves[0].status == "verified"


def test_the_host_checks_in_float64(mlp_problem):
    f, params, x, y = mlp_problem
    report = gradlab.check(f, params, x, y, execution=gradlab.Execution(devices=jax.devices("cpu")))
    assert report.ok and report.dtype == "float64"


def test_a_tpu_falls_back_to_float32_and_says_how_to_use_the_host(monkeypatch):
    tpu = types.SimpleNamespace(platform="tpu", process_index=0)
    dtype, device, note = _precision(None, [tpu])
    assert (dtype, device) == ("float32", tpu) and "not available on tpu" in note
    assert "Execution(devices=jax.devices('cpu'))" in note
    assert _precision(None, None)[0] == "float64"  # this CPU has float64
    with pytest.raises(gradlab.CheckInputError, match="tpu has no float64"):
        _precision("float64", [tpu])
    # a TPU machine checking on its host: float64 there, and the note says where it ran
    real = jax.devices
    monkeypatch.setattr(jax, "devices", lambda backend=None: real(backend) if backend else [tpu])
    cpu = real("cpu")[0]
    dtype, device, note = _precision(None, [cpu])
    assert (dtype, device) == ("float64", cpu) and "evaluated in float64 on cpu" in note


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"dtype": "float16"}, r"dtype=float16: a check runs in float64 or float32"),
        ({"host": True}, r"host= is not an option.*Execution\(devices=jax.devices\('cpu'\)\)"),
    ],
)
def test_bad_precision_options(options, match):
    with pytest.raises(gradlab.CheckInputError, match=match):
        gradlab.check(lambda p: jnp.sum(p**2), jnp.ones(2), **options)
