"""The report's numbers against an independent slow loop; noise floor; output formats."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import loop_check
from jax._src import monitoring

import gradlab
from gradlab.gradcheck.report._bands import relative_error, verdict


@pytest.mark.slow
def test_numbers_match_the_slow_reference_loop(mlp_problem):
    f, params, x, y = mlp_problem
    report = gradlab.check(f, params, x, y, criteria=gradlab.Criteria(worst_entries=1000))
    ref = loop_check(f, params, x, y)
    assert len(ref) == len(report.leaves)
    for (num, ana, rel), leaf in zip(ref, report.leaves, strict=True):
        # same analytical gradient; numerical ones agree to rounding noise
        assert leaf.grad_norm == pytest.approx(np.linalg.norm(ana), rel=1e-12)
        assert abs(leaf.relative_error - rel) <= leaf.noise_floor
        # the worst entries carry the reference's values at their index
        for w in leaf.worst:
            flat = np.ravel_multi_index(w.index, leaf.shape)
            assert w.analytical == pytest.approx(ana[flat], rel=1e-12, abs=1e-300)
            assert w.numerical == pytest.approx(num[flat], abs=10 * leaf.noise_floor)


@pytest.mark.slow
def test_bug_report_matches_reference_relative_error():
    @jax.custom_vjp
    def cube(x):
        return x**3

    cube.defvjp(lambda x: (x**3, x), lambda x, g: (2 * x**2 * g,))  # should be 3x²
    f = lambda p: jnp.sum(cube(p["a"])) + jnp.sum(p["b"] ** 2)
    params = {"a": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array([1.0, 2.0])}
    report = gradlab.check(f, params)
    (_num_a, _ana_a, rel_a), (_, _, _rel_b) = loop_check(f, params)
    assert report["a"].relative_error == pytest.approx(rel_a, rel=1e-6)
    assert rel_a == pytest.approx(1 / 5, rel=1e-6)  # |3-2| / (3+2)
    assert report["a"].status == "wrong" and report["b"].status == "verified"
    worst = report["a"].worst[0]
    assert worst.index == (2,)  # largest |num - ana| = 4 at x = 2
    assert worst.numerical == pytest.approx(12.0, rel=1e-7)
    assert worst.analytical == pytest.approx(8.0, rel=1e-12)


@pytest.mark.slow
def test_tiny_gradient_next_to_a_large_value_is_unresolved_not_wrong():
    """The vanishing case: |grad| far below u·|f|/eps cannot be verified at this eps."""
    f = lambda p: 10.0 + 1e-9 * jnp.sum(jnp.sin(p["deep"])) + jnp.sum(p["top"] ** 2)
    params = {"deep": jnp.linspace(0.1, 1.0, 20), "top": jnp.array([1.0, -2.0])}
    report = gradlab.check(f, params)
    deep = report["deep"]
    assert deep.status == "unresolved", report
    # rounding error per entry ~ 8·u·|f|/eps ~ 2e-7 at 1e-7, against gradients ~ 1e-9: no
    # admissible step resolves it; retried at the largest (1e-2), still above the tolerance
    assert deep.eps == pytest.approx(1e-2) and deep.noise_floor > report.tolerance
    assert deep.resolving_eps is None
    assert "too small next to |f|" in deep.note
    assert report["top"].status == "verified"
    # nothing is wrong, but nothing was established about "deep": never OK
    assert report.outcome == "inconclusive" and not report.ok
    assert "unresolved" in str(report) and "INCONCLUSIVE" in str(report)
    with pytest.raises(gradlab.GradCheckError, match="deep was not verified"):
        gradlab.assert_check(f, params)


@pytest.mark.slow
def test_unresolved_leaf_does_not_hide_a_gross_error():
    """A wrong gradient far beyond the noise floor is still called wrong."""

    @jax.custom_vjp
    def g(p):
        return 1e-3 * jnp.sum(p)

    g.defvjp(lambda p: (g(p), None), lambda _, c: (jnp.full((4,), 1.0) * c,))  # 1000x off
    report = gradlab.check(lambda p: 1e3 + g(p), jnp.ones(4))
    assert report.leaves[0].status == "wrong"


@pytest.mark.slow
def test_noise_floor_bounds_the_observed_error_on_correct_functions(mlp_problem):
    """The rounding model is conservative: correct leaves sit under their noise floor."""
    f, params, x, y = mlp_problem
    for eps in (1e-5, 1e-7, 1e-9):
        report = gradlab.check(f, params, x, y, eps=eps)
        for leaf in report.leaves:
            assert leaf.relative_error <= max(leaf.noise_floor, 1e-9), (eps, leaf)
        # smaller steps resolve less: the floor grows like 1/eps
    rows = [gradlab.check(f, params, x, y, eps=e)["0/w"] for e in (1e-6, 1e-7)]
    assert [row.eps for row in rows] == [1e-6, 1e-7]  # both verified at their own step
    assert rows[1].noise_floor / rows[0].noise_floor == pytest.approx(10, rel=0.01)


def test_to_dict_is_json_serialisable_and_complete(mlp_problem):
    f, params, x, y = mlp_problem
    report = gradlab.check(f, params, x, y)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["ok"] is True and d["verdict"] == "happy"
    assert d["n_entries"] == report.n_entries
    assert [leaf["path"] for leaf in d["leaves"]] == [leaf.path for leaf in report.leaves]
    assert set(d["leaves"][0]) >= {
        "path",
        "shape",
        "size",
        "relative_error",
        "verdict",
        "status",
        "n_kinks",
        "noise_floor",
        "worst",
    }


@pytest.mark.slow
def test_str_is_a_readable_table_with_worst_entries_for_failures():
    @jax.custom_vjp
    def double(x):
        return 2 * x

    double.defvjp(lambda x: (2 * x, None), lambda _, g: (3 * g,))
    report = gradlab.check(lambda p: jnp.sum(double(p["w"]) ** 2), {"w": jnp.ones((2, 2))})
    text = str(report)
    assert text.startswith("gradlab.check FAILED")
    for token in (
        "leaf",
        "rel. error",
        "band",
        "status",
        "w",
        "(2, 2)",
        "wrong",
        "worst entries",
        "numerical",
        "analytical",
    ):
        assert token in text
    assert report.summary().splitlines()[0] in text


def test_missing_path_lists_the_known_ones(mlp_problem):
    f, params, x, y = mlp_problem
    report = gradlab.check(f, params, x, y)
    with pytest.raises(KeyError, match="0/w"):
        report["nope"]


@pytest.mark.parametrize(
    ("rel", "band"),
    [
        (0.0, "happy"),
        (9.99e-8, "happy"),
        (1e-7, "ok"),
        (9.9e-5, "ok"),
        (1e-4, "uncomfortable"),
        (1e-2, "wrong"),
        (float("nan"), "wrong"),
    ],
)
def test_lecture_bands(rel, band):
    assert verdict(rel) == band


def test_relative_error_zero_over_zero():
    assert relative_error(0.0, 0.0, 0.0) == 0.0
    assert relative_error(1.0, 1.0, 4.0) == 1.0


def test_second_call_compiles_nothing(mlp_problem):
    f, params, x, y = mlp_problem
    traces = []

    def counted(p, x, y):
        traces.append(1)
        return f(p, x, y)

    gradlab.check(counted, params, x, y)
    first = len(traces)
    with jax.enable_x64(True):
        x2 = x + 1.0
    compiles = []
    listener = lambda name, secs, **kw: compiles.append(name) if "backend_compile" in name else 0
    monitoring.register_event_duration_secs_listener(listener)
    try:
        gradlab.check(counted, params, x2, y)  # new values, same shapes
    finally:
        monitoring.unregister_event_duration_listener(listener)
    assert not compiles
    # f is traced afresh (the f you run now: tests/gradcheck/test_notebook_loop.py), as often as
    # on the first check, and its programs are found again by what it traces to
    assert len(traces) == 2 * first


@pytest.mark.slow
def test_truth_value_is_ok_for_every_outcome():
    """``assert gradlab.check(...)``, the idiom torch users bring, fails unless it passed."""

    @jax.custom_vjp
    def square(x):
        return x**2

    square.defvjp(lambda x: (x**2, x), lambda x, g: (x * g,))  # misses the factor 2
    passed = gradlab.check(lambda p: jnp.sum(p**2), jnp.arange(1.0, 4.0))
    failed = gradlab.check(lambda p: jnp.sum(square(p)), jnp.arange(1.0, 4.0))
    # the vanishing case: unresolved at every admissible step, so inconclusive
    tiny = lambda p: 10.0 + 1e-9 * jnp.sum(jnp.sin(p))
    inconclusive = gradlab.check(tiny, jnp.linspace(0.1, 1.0, 5))
    assert [r.outcome for r in (passed, failed, inconclusive)] == [
        "passed", "failed", "inconclusive"
    ]  # fmt: skip
    assert bool(passed) is True and bool(failed) is False and bool(inconclusive) is False
    assert passed and not failed and not inconclusive
    with pytest.raises(AssertionError):
        assert gradlab.check(lambda p: jnp.sum(square(p)), jnp.arange(1.0, 4.0))
