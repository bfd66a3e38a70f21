"""Bad input gets a clear CheckInputError naming the problem and the fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab


@pytest.mark.slow
def test_non_scalar_output_is_checked_through_cotangents():
    """A vector output is no longer an error: it is checked through random cotangents."""
    report = gradlab.check(lambda p: p * 2, jnp.ones(3))
    assert report.ok and len(report.projections) == 3
    assert "float64[3]" in report.output and "cotangents" in report.output


def test_non_float_array_output():
    with pytest.raises(gradlab.CheckInputError, match=r"floating-point.*int32"):
        gradlab.check(lambda p: (p > 0).astype(jnp.int32), jnp.ones(3))
    with pytest.raises(gradlab.CheckInputError, match=r"complex.*jnp\.real"):
        gradlab.check(lambda p: p * 1j, jnp.ones(3))


def test_tuple_output_suggests_has_aux():
    with pytest.raises(gradlab.CheckInputError, match="has_aux=True"):
        gradlab.check(lambda p: (jnp.sum(p), p), jnp.ones(3))


def test_has_aux_without_a_pair():
    with pytest.raises(gradlab.CheckInputError, match="did not return a pair"):
        gradlab.check(lambda p: jnp.sum(p), jnp.ones(3), has_aux=True)


def test_integer_output():
    with pytest.raises(gradlab.CheckInputError, match="floating-point scalar"):
        gradlab.check(lambda p: jnp.sum(p > 0), jnp.ones(3))


def test_no_float_leaves():
    with pytest.raises(gradlab.CheckInputError, match=r"no floating-point leaves.*int"):
        gradlab.check(lambda p: jnp.sum(p["n"]).astype(float), {"n": jnp.arange(3)})


@pytest.mark.slow
def test_nan_value():
    with pytest.raises(gradlab.CheckInputError, match=r"f\(θ\) = nan.*log\(0\)"):
        gradlab.check(lambda p: jnp.sum(jnp.log(p)) * 0.0 + jnp.nan, jnp.ones(2))


def test_inf_value():
    with pytest.raises(gradlab.CheckInputError, match="f\\(θ\\) = -inf"):
        gradlab.check(lambda p: jnp.sum(jnp.log(p)), jnp.array([0.0, 1.0]))


@pytest.mark.slow
def test_nan_gradient_names_the_leaf_and_index():
    params = {"ok": jnp.ones(2), "bad": jnp.array([[1.0, 0.0]])}
    with pytest.raises(gradlab.CheckInputError, match=r"'bad'.*index \(0, 1\)"):
        gradlab.check(lambda p: jnp.sum(jnp.sqrt(p["bad"])) + jnp.sum(p["ok"]), params)


def test_python_control_flow_on_values():
    def f(p):
        if p[0] > 0:  # not traceable
            return jnp.sum(p)
        return -jnp.sum(p)

    with pytest.raises(gradlab.CheckInputError, match=r"(?s)cannot be traced.*jnp\.where"):
        gradlab.check(f, jnp.ones(2))


def test_numpy_on_traced_values():
    with pytest.raises(gradlab.CheckInputError, match="cannot be traced"):
        gradlab.check(lambda p: jnp.asarray(np.sum(np.asarray(p))), jnp.ones(2))


def test_function_that_cannot_be_vmapped():
    def host(x):
        return np.asarray(np.sum(x**2), dtype=x.dtype)

    def f(p):
        out = jax.pure_callback(host, jax.ShapeDtypeStruct((), p.dtype), p)
        return out + jnp.sum(p)

    f_vjp = jax.custom_vjp(f)
    f_vjp.defvjp(lambda p: (f(p), p), lambda p, g: (g * (2 * p + 1),))
    with pytest.raises(gradlab.CheckInputError, match="vmap"):
        gradlab.check(f_vjp, jnp.ones(3))


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("eps", 0.0, "eps must be a finite number > 0"),
        ("eps", float("nan"), "eps must be a finite number > 0"),
        ("eps", 2.0, "not a small step"),
        ("tolerance", -1.0, "tolerance must be"),
        ("projections", 0, r"projections \(.*\) must be an integer >= 1"),
        ("check_determinism", "yes", "check_determinism must be True or False"),
        ("argnums", 3, "out of range"),
        ("argnums", (0, 0), "repeats"),
        ("argnums", "0", "argnums must be"),
    ],
)
def test_bad_options(option, value, match):
    with pytest.raises(gradlab.CheckInputError, match=match):
        gradlab.check(lambda p: jnp.sum(p**2), jnp.ones(2), **{option: value})


def test_non_array_leaf_in_params():
    with pytest.raises(gradlab.CheckInputError, match=r"'name'.*str"):
        gradlab.check(lambda p: jnp.sum(p["w"]), {"w": jnp.ones(2), "name": "layer"})


def test_not_callable():
    with pytest.raises(gradlab.CheckInputError, match="callable"):
        gradlab.check(3, jnp.ones(2))


def test_jax_state_is_restored_after_an_error():
    before = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)

    def f(p):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        gradlab.check(f, jnp.ones(2))
    after = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)
    assert after == before
    assert jnp.ones(1).dtype == (jnp.float64 if before[0] else jnp.float32)


def test_jax_state_is_restored_after_success_and_inside_is_float64():
    seen = []

    def f(p):
        seen.append((p.dtype, jax.config.jax_default_matmul_precision))
        return jnp.sum(p**2)

    before = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)
    gradlab.check(f, jnp.ones(2, dtype=jnp.float32))
    assert (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision) == before
    # the check runs f in float64; the precision audit once more at the params' own float32
    assert seen and all(prec == "highest" for _, prec in seen)
    assert {str(d) for d, _ in seen} == {"float64", "float32"}


def _sin2(p):
    return jnp.sum(jnp.sin(p) ** 2)


@pytest.mark.parametrize(
    ("keyword", "meant"),
    [
        ("tol", "tolerance="),
        ("atol", "tolerance="),
        ("rtol", "tolerance="),
        ("tolerence", "tolerance="),  # a typo
        ("tolerances", "tolerance="),
        ("epsilon", "eps="),
        ("esp", "eps="),  # a typo
        ("seeds", "seed="),
        ("projection", "projections="),
        ("check_determinsm", "check_determinism="),
    ],
)
def test_a_keyword_that_looks_like_an_option_names_the_right_spelling(keyword, meant):
    """Not passed to f (where it would be blamed on f) but named, with the option meant."""
    with pytest.raises(gradlab.InputError, match=rf"{keyword}= is not an option.*{meant}"):
        gradlab.check(_sin2, jnp.ones(3), **{keyword: 1e-3})
    with pytest.raises(gradlab.InputError, match=rf"{keyword}="):
        gradlab.assert_check(_sin2, jnp.ones(3), **{keyword: 1e-3})


def test_a_keyword_neither_option_nor_of_f_is_named():
    with pytest.raises(gradlab.CheckInputError, match=r"batch_size= is neither.*f's keywords: x"):
        gradlab.check(lambda p, *, x=1: _sin2(p) * x, jnp.ones(3), batch_size=4)


@pytest.mark.slow
def test_f_keywords_that_look_like_options_go_to_f():
    """A keyword f names itself is f's, however much it looks like an option."""

    def f(p, tol=0.0, train=True):
        return _sin2(p) + tol * jnp.sum(p) * (1.0 if train else 2.0)

    report = gradlab.check(f, jnp.ones(3), tol=0.5, train=False)
    assert report.ok and report.tolerance == 1e-6  # the checker's tolerance is untouched
    # tol reached f: the gradient has the 0.5 * 2 term (checked against differences of f)
    assert report.value == pytest.approx(float(_sin2(jnp.ones(3))) + 3.0)


@pytest.mark.slow
def test_f_own_checker_named_keywords_need_f_kwargs():
    """seed=/eps= of f are never taken silently: ambiguous without f_kwargs, clear with it."""
    seen = []

    def f(p, x, seed=0, eps=0.0):
        seen.append((seed, eps))
        return jnp.sum(jnp.sin(p) * x) + eps * jnp.sum(p)

    p, x = jnp.ones(3), jnp.arange(3.0)
    for option in ("seed", "eps"):
        with pytest.raises(gradlab.CheckInputError, match=rf"{option}= is an option.*f_kwargs"):
            gradlab.check(f, p, x, **{option: 1 if option == "seed" else 1e-6})
    report = gradlab.check(f, p, x, eps=1e-6, seed=3, f_kwargs={"seed": 7, "eps": 0.25})
    assert report.ok and report.eps == 1e-6
    assert set(seen) == {(7, 0.25)}  # f saw only its own values
    assert report.value == pytest.approx(float(jnp.sum(jnp.sin(p) * x)) + 0.75)
    with pytest.raises(gradlab.CheckInputError, match="given twice"):
        gradlab.check(lambda q, **kw: _sin2(q), p, train=1, f_kwargs={"train": 2})


@pytest.mark.slow
def test_a_look_alike_reaching_f_only_through_var_keywords_is_ambiguous():
    def f(p, **kwargs):
        return _sin2(p) * kwargs.get("scale", 1.0)

    with pytest.raises(gradlab.CheckInputError, match=r"atol=.*\*\*kwargs.*f_kwargs=\{'atol'"):
        gradlab.check(f, jnp.ones(3), atol=1e-3)
    assert gradlab.check(f, jnp.ones(3), scale=2.0).ok  # not a look-alike: f's
    assert gradlab.check(f, jnp.ones(3), f_kwargs={"atol": 1e-3}).ok


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dtype", "name"),
    [(jnp.float32, "float32"), ("float32", "float32"), (np.float64, "float64"),
     (jnp.dtype("float64"), "float64"), (np.dtype(np.float32), "float32"), (None, "float64")],
)  # fmt: skip
def test_dtype_accepts_what_jnp_dtype_accepts(dtype, name):
    assert gradlab.check(_sin2, jnp.ones(3), dtype=dtype).dtype == name


@pytest.mark.parametrize("dtype", [jnp.bfloat16, "int32", "complex64", "float128x"])
def test_dtype_other_than_float32_or_float64_is_refused(dtype):
    with pytest.raises(gradlab.CheckInputError, match="dtype"):
        gradlab.check(_sin2, jnp.ones(3), dtype=dtype)


@pytest.mark.parametrize(
    ("bad", "kind"), [(np.nan, "NaN"), (np.inf, "an infinity"), (-np.inf, "an infinity")]
)
def test_non_finite_params_name_the_leaf(bad, kind):
    params = {"layer": [{"w": jnp.ones((2, 2))}, {"w": jnp.array([[1.0, 2.0], [3.0, bad]])}]}
    with pytest.raises(gradlab.CheckInputError, match=rf"{kind} at layer/1/w, index \(1, 1\)"):
        gradlab.check(lambda p: sum(jnp.sum(q["w"] ** 2) for q in p["layer"]), params)


@pytest.mark.slow
def test_positional_argument_leaves_are_named_by_f_parameters():
    def f(weights, inputs, *, scale=1.0):
        return jnp.sum(jnp.tanh(inputs["x"] @ weights)) * scale

    w, data = jnp.ones((3, 2)) / 3, {"x": jnp.arange(6.0).reshape(2, 3) / 6}
    report = gradlab.check(f, w, data, argnums=(0, 1))
    assert [leaf.path for leaf in report.leaves] == ["weights", "inputs/x"]
    with pytest.raises(gradlab.CheckInputError, match=r"NaN at inputs/x, index \(0, 0\)"):
        gradlab.check(f, w, {"x": data["x"].at[0, 0].set(jnp.nan)}, argnums=(0, 1))


@pytest.mark.slow
def test_a_check_expected_to_take_too_long_says_so_before_its_sweep():
    """The estimate from the first batch against Execution.max_seconds (no wall clock:
    a limit no batch can meet)."""
    calls = []

    def f(w):
        calls.append(1)
        return jnp.sum(jnp.sin(w) * jnp.arange(w.size))

    slow = gradlab.Execution(max_seconds=1e-12, chunk_size=4)
    with pytest.raises(gradlab.CheckInputError) as info:
        gradlab.check(f, jnp.linspace(0.1, 1.0, 200), execution=slow)
    message = str(info.value)
    assert "gradlab.check would take" in message and "max_seconds=1e-12" in message
    assert "entries=gradlab.Sample(64)" in message and "(64 perturbations" in message
    assert "entries=gradlab.Directional(4)" in message
    assert "execution=gradlab.Execution(max_seconds=None)" in message
    # a check that is done after its first batch has nothing left to save
    small = gradlab.check(f, jnp.ones(4), execution=slow)
    assert small.ok
    # and the limit lifted, the same check runs to its verdict
    free = gradlab.Execution(max_seconds=None, chunk_size=4)
    assert gradlab.check(f, jnp.linspace(0.1, 1.0, 200), execution=free).ok


def test_max_seconds_is_validated():
    for bad in (0, -1.0, float("nan"), "60"):
        with pytest.raises(gradlab.CheckInputError, match="max_seconds"):
            gradlab.Execution(max_seconds=bad)
