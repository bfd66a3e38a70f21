"""Tests for gradlab.init: variances, bounds, orthogonality, fans, parity with jax.nn."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings

import gradlab
from gradlab import init

KEY = jax.random.key(20231126)

# Tolerance of the variance tests. With the mean known to be 0, the estimator v = mean(w**2) of
# N i.i.d. entries has standard error var * sqrt((kurtosis - 1) / N): sqrt(2 / N) for a normal
# (kurtosis 3; the sample variance's var * sqrt(2 / (N - 1)) to first order) and sqrt(0.8 / N)
# for a uniform (kurtosis 9 / 5). We accept |v - var| <= 5 standard errors: a false alarm has
# probability about 6e-7 per assertion, and with fixed seeds the tests are deterministic.
N_SIGMA = 5.0
KURTOSIS = {"normal": 3.0, "uniform": 1.8}


def assert_variance(w: jax.Array, variance: float, distribution: str) -> None:
    w64 = np.asarray(w, dtype=np.float64)
    n = w64.size
    estimate = float(np.mean(w64**2))
    se = variance * math.sqrt((KURTOSIS[distribution] - 1) / n)
    assert abs(estimate - variance) <= N_SIGMA * se, (
        f"variance {estimate:.6g} vs expected {variance:.6g} (tolerance {N_SIGMA * se:.3g})"
    )


# name, initialiser, distribution, variance as a function of (fan_in, fan_out)
NAMED = [
    ("lecun_normal", init.lecun_normal, "normal", lambda fi, fo: 1 / fi),
    ("lecun_uniform", init.lecun_uniform, "uniform", lambda fi, fo: 1 / fi),
    ("he_normal", init.he_normal, "normal", lambda fi, fo: 2 / fi),
    ("he_uniform", init.he_uniform, "uniform", lambda fi, fo: 2 / fi),
    ("glorot_normal", init.glorot_normal, "normal", lambda fi, fo: 2 / (fi + fo)),
    ("glorot_uniform", init.glorot_uniform, "uniform", lambda fi, fo: 2 / (fi + fo)),
    ("lecture_glorot", init.lecture_glorot, "normal", lambda fi, fo: 4 / (fi + fo)),
    ("fan_in_normal(2)", init.fan_in_normal(2.0), "normal", lambda fi, fo: 4 / fi),
    (
        "variance_scaling(9, uniform)",
        init.variance_scaling(9.0, "fan_in", "uniform"),
        "uniform",
        lambda fi, fo: 9 / fi,
    ),
    ("fan_in_normal(1.5)", init.fan_in_normal(1.5), "normal", lambda fi, fo: 2.25 / fi),
]

# shape, keyword arguments, (fan_in, fan_out)
SHAPES = [
    ((300, 200), {}, (300, 200)),  # dense
    ((3, 3, 16, 40), {}, (144, 360)),  # 2-D conv kernel (H, W, in, out)
    ((5, 24, 48), {}, (120, 240)),  # rank 3 defaults to a 1-D conv kernel (width, in, out)
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "init_fn", "dist", "var_fn"), NAMED, ids=[n[0] for n in NAMED])
@pytest.mark.parametrize(("shape", "kwargs", "fans"), SHAPES, ids=["dense", "conv2d", "conv1d"])
def test_variance_matches_formula(name, init_fn, dist, var_fn, shape, kwargs, fans):
    w = init_fn(KEY, shape, jnp.float32)
    chex.assert_shape(w, shape)
    chex.assert_type(w, jnp.float32)
    assert_variance(w, var_fn(*fans), dist)
    assert abs(float(jnp.mean(w))) <= N_SIGMA * math.sqrt(var_fn(*fans) / w.size)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "init_fn", "dist", "var_fn"), NAMED[:6], ids=[n[0] for n in NAMED[:6]]
)
def test_stacked_weights_use_per_layer_fans(name, init_fn, dist, var_fn):
    # 40 stacked (64, 32) layers: the layer axis is not a receptive field.
    shape = (40, 64, 32)
    per_layer = var_fn(64, 32)
    assert_variance(init_fn(KEY, shape, batch_axis=0), per_layer, dist)
    assert_variance(init.stacked(init_fn)(KEY, shape), per_layer, dist)
    # Without being told, the shape is read as a 1-D conv kernel with fans 40x larger.
    assert_variance(init_fn(KEY, shape), var_fn(40 * 64, 40 * 32), dist)


def test_compute_fans():
    assert init.compute_fans((7, 5)) == (7, 5)
    assert init.compute_fans((3, 3, 4, 8)) == (36, 72)
    assert init.compute_fans((6, 7, 5), batch_axis=0) == (7, 5)
    assert init.compute_fans((2, 6, 3, 3, 4, 8), batch_axis=(0, 1)) == (36, 72)
    assert init.compute_fans((4, 8, 3), in_axis=0, out_axis=1) == (12, 24)
    assert init.compute_fans((2, 3, 4), in_axis=(0, 1), out_axis=2) == (6, 4)


@pytest.mark.parametrize(("dist", "scale"), [("uniform", 1.0), ("uniform", 2.0), ("uniform", 0.5)])
def test_uniform_bounds(dist, scale):
    fan_in = 50
    w = init.variance_scaling(scale, "fan_in", dist)(KEY, (fan_in, 4000))
    bound = math.sqrt(3 * scale / fan_in)
    assert float(jnp.max(jnp.abs(w))) <= bound * (1 + 1e-6)
    # 200,000 draws: the largest |w| is within bound * (1 - 1e-4) with probability 1 - e^-20.
    assert float(jnp.max(jnp.abs(w))) >= bound * (1 - 1e-4)
    assert float(jnp.min(w)) < 0 < float(jnp.max(w))


# gradlab's initialisers are jitted (one compiled program per shape). The uniform and orthogonal
# samplers come out bit for bit equal to JAX's eager ones; in the normal ones XLA fuses the
# scaling into the inverse-erf sampler, which moves some entries by a float32 ulp or two.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("ours", "theirs", "exact"),
    [
        (init.lecun_uniform, jax.nn.initializers.lecun_uniform(), True),
        (init.he_uniform, jax.nn.initializers.he_uniform(), True),
        (init.glorot_uniform, jax.nn.initializers.glorot_uniform(), True),
        (init.orthogonal(), jax.nn.initializers.orthogonal(), True),
        (init.orthogonal(1.7), jax.nn.initializers.orthogonal(1.7), True),
        (init.lecun_normal, jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal"), False),
        (init.he_normal, jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal"), False),
        (
            init.glorot_normal,
            jax.nn.initializers.variance_scaling(1.0, "fan_avg", "normal"),
            False,
        ),
        (
            init.variance_scaling(1.0, "fan_in", "truncated_normal"),
            jax.nn.initializers.lecun_normal(),
            False,
        ),
    ],
)
@pytest.mark.parametrize("shape", [(30, 20), (20, 30), (3, 3, 4, 6)])
def test_same_key_same_array_as_jax(ours, theirs, exact, shape):
    w_ours, w_jax = ours(KEY, shape, jnp.float32), theirs(KEY, shape, jnp.float32)
    if exact:
        chex.assert_trees_all_equal(w_ours, w_jax)
    else:
        chex.assert_trees_all_close(w_ours, w_jax, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_batch_axis_matches_jax_variance_scaling():
    theirs = jax.nn.initializers.variance_scaling(2.0, "fan_in", "uniform", batch_axis=0)
    chex.assert_trees_all_equal(
        init.he_uniform(KEY, (6, 8, 4), batch_axis=0), theirs(KEY, (6, 8, 4))
    )


@pytest.mark.slow
def test_jax_normal_initialisers_are_truncated_ours_are_not():
    # jax.nn.initializers.lecun_normal/he_normal/glorot_normal draw a normal truncated at two
    # standard deviations (rescaled to the target variance), so the arrays differ from ours for
    # the same key. Compare distributions: the same variance, different tails.
    shape = (256, 512)
    var = 2 / 256
    ours = init.he_normal(KEY, shape)
    theirs = jax.nn.initializers.he_normal()(KEY, shape)
    assert_variance(theirs, var, "normal")  # the truncated normal has the same variance
    assert_variance(ours, var, "normal")
    cut = 2 * math.sqrt(var) / 0.87962566103423978
    assert float(jnp.max(jnp.abs(theirs))) <= cut * (1 + 1e-6)
    # P(|z| > 2.27) = 2.3% for the untruncated normal: thousands of entries beyond the cut.
    assert int(jnp.sum(jnp.abs(ours) > cut)) > 1000


@pytest.mark.slow
@pytest.mark.parametrize("gain", [1.0, 0.9, 1.1])
@pytest.mark.parametrize("shape", [(16, 16), (24, 10), (10, 24), (3, 3, 4, 36), (3, 3, 4, 8)])
def test_orthogonal_is_orthogonal(gain, shape):
    with jax.enable_x64(True):
        w = init.orthogonal(gain)(KEY, shape, jnp.float64)
        chex.assert_type(w, jnp.float64)
        m = np.asarray(w).reshape(-1, shape[-1])
        gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
        np.testing.assert_allclose(gram, gain**2 * np.eye(gram.shape[0]), atol=1e-6 * gain**2)


@pytest.mark.slow
def test_orthogonal_batch_axis_each_layer_orthogonal():
    with jax.enable_x64(True):
        w = np.asarray(init.orthogonal(batch_axis=0)(KEY, (5, 8, 8), jnp.float64))
        w2 = np.asarray(init.stacked(init.orthogonal())(KEY, (5, 8, 8), jnp.float64))
    for layer in range(5):
        for m in (w[layer], w2[layer]):
            np.testing.assert_allclose(m.T @ m, np.eye(8), atol=1e-6)
    assert not np.allclose(w[0], w[1])  # layers are independent draws
    # Without batch_axis, (5, 8, 8) is a conv kernel: (40, 8) with orthonormal columns only.
    m = np.asarray(init.orthogonal()(KEY, (5, 8, 8))).reshape(40, 8)
    np.testing.assert_allclose(m.T @ m, np.eye(8), atol=1e-5)
    assert not np.allclose(m[:8].T @ m[:8], np.eye(8), atol=1e-2)


@pytest.mark.slow
@pytest.mark.parametrize(("gain", "expected"), [(1.1, 1.6e6), (0.9, 1.4e-7), (1.0, 1.0)])
def test_orthogonal_norm_product_is_gain_to_the_depth(gain, expected):
    # The lecture's chain: 150 square layers, |x W_1 ... W_150| = gain^150 |x| exactly.
    depth, n = 150, 8
    with jax.enable_x64(True):
        ws = init.orthogonal(gain, batch_axis=0)(KEY, (depth, n, n), jnp.float64)
        x = jax.random.normal(jax.random.key(1), (3, n), jnp.float64)
        h, _ = jax.lax.scan(lambda h, w: (h @ w, None), x, ws)
        ratio = np.linalg.norm(np.asarray(h), axis=1) / np.linalg.norm(np.asarray(x), axis=1)
    np.testing.assert_allclose(ratio, gain**depth, rtol=1e-10)
    np.testing.assert_allclose(ratio, expected, rtol=0.05)  # the numbers on slide 5


def test_orthogonal_low_precision_dtypes():
    for dtype in (jnp.bfloat16, jnp.float16):
        w = init.orthogonal()(KEY, (16, 16), dtype)
        chex.assert_type(w, dtype)
        m = np.asarray(w, np.float32)
        np.testing.assert_allclose(m.T @ m, np.eye(16), atol=3e-2)


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 3)])
def test_near_identity_without_noise_is_eye_of_shape(shape):
    w = init.near_identity(0.0)(KEY, shape)
    chex.assert_trees_all_equal(w, jnp.eye(*shape))


@pytest.mark.slow
def test_near_identity_noise_and_stacking():
    w = init.near_identity(0.05, batch_axis=0)(KEY, (50, 40, 40))
    noise = w - jnp.eye(40)
    assert_variance(noise, 0.05**2, "normal")
    assert float(jnp.max(jnp.abs(noise))) < 0.05 * 6  # close to 1, not 1


@pytest.mark.slow
def test_near_identity_conv_kernel_is_identity_convolution():
    k = init.near_identity(0.0)(KEY, (3, 3, 4, 4))
    x = jax.random.normal(jax.random.key(2), (2, 6, 5, 4))
    y = jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    chex.assert_trees_all_close(y, x, atol=1e-6)


@pytest.mark.slow
def test_gaussian_fixed_std_any_rank():
    for shape in [(20000,), (100, 200), (10, 10, 10, 10)]:
        w = init.gaussian(0.3)(KEY, shape)
        chex.assert_shape(w, shape)
        assert_variance(w, 0.09, "normal")


def test_fan_in_normal_contains_lecun_and_he():
    chex.assert_trees_all_equal(
        init.fan_in_normal(1.0)(KEY, (9, 7)), init.lecun_normal(KEY, (9, 7))
    )
    chex.assert_trees_all_close(
        init.fan_in_normal(2**0.5)(KEY, (9, 7)), init.he_normal(KEY, (9, 7)), rtol=1e-6
    )


@pytest.mark.slow
def test_stacked_applies_init_per_layer_with_split_keys():
    w = init.stacked(init.he_normal)(KEY, (3, 6, 5))
    keys = jax.random.split(KEY, 3)
    for i in range(3):
        chex.assert_trees_all_close(w[i], init.he_normal(keys[i], (6, 5)), rtol=1e-6)
    w2 = init.stacked(init.he_normal, num_axes=2)(KEY, (2, 3, 6, 5))
    chex.assert_shape(w2, (2, 3, 6, 5))


@pytest.mark.slow
def test_stacked_accepts_unhashable_initialisers():
    @dataclasses.dataclass
    class Scaled:  # eq=True makes instances unhashable
        k: float

        def __call__(self, key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
            return init.fan_in_normal(self.k)(key, shape, dtype)

    w = init.stacked(Scaled(2.0))(KEY, (3, 4, 4))
    chex.assert_trees_all_close(w, init.stacked(init.fan_in_normal(2.0))(KEY, (3, 4, 4)), rtol=1e-6)


def test_constant_zeros_ones():
    chex.assert_trees_all_equal(init.zeros(KEY, (3,)), jnp.zeros(3))
    chex.assert_trees_all_equal(init.ones(KEY, (2, 2)), jnp.ones((2, 2)))
    chex.assert_trees_all_equal(
        init.constant(0.25)(KEY, (2,), jnp.float16), jnp.full(2, 0.25, jnp.float16)
    )


def test_usable_as_flax_kernel_init():
    layer = nnx.Linear(64, 32, kernel_init=init.he_normal, rngs=nnx.Rngs(0))
    chex.assert_shape(layer.kernel[...], (64, 32))
    conv = nnx.Conv(3, 8, (3, 3), kernel_init=init.orthogonal(), rngs=nnx.Rngs(0))
    m = np.asarray(conv.kernel[...]).reshape(27, 8)
    np.testing.assert_allclose(m.T @ m, np.eye(8), atol=1e-5)


@pytest.mark.parametrize(
    "init_fn",
    [
        init.lecun_normal,
        init.he_uniform,
        init.orthogonal(),
        init.near_identity(),
        init.fan_in_normal(2.0),
    ],
)
def test_rank_below_two_raises(init_fn):
    with pytest.raises(ValueError, match="rank >= 2"):
        init_fn(KEY, (5,))


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_, jnp.complex64])
def test_non_float_dtype_raises(dtype):
    for init_fn in (init.he_normal, init.orthogonal(), init.gaussian(1.0), init.near_identity()):
        with pytest.raises(ValueError, match="real floating dtype"):
            init_fn(KEY, (4, 4), dtype)


def test_bad_arguments_raise():
    with pytest.raises(gradlab.InputError, match="scale must be"):
        init.fan_in_normal(-1.0)
    with pytest.raises(ValueError, match="mode"):
        init.variance_scaling(1.0, "fan_geo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distribution"):
        init.variance_scaling(1.0, "fan_in", "cauchy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="different axes"):
        init.compute_fans((4, 4, 4), batch_axis=-1)
    with pytest.raises(ValueError, match="out of range"):
        init.compute_fans((4, 4), batch_axis=3)
    with pytest.raises(ValueError, match="no per-layer axes"):
        init.stacked(init.he_normal)(KEY, (4,))
    with pytest.raises(ValueError, match="negative"):
        init.he_normal(KEY, (4, -1))


def test_zero_size_shapes():
    for init_fn in (init.he_normal, init.orthogonal(), init.near_identity()):
        chex.assert_shape(init_fn(KEY, (0, 4)), (0, 4))


# --------------------------------------------------------------------------- properties

_FLOATS = [jnp.float32, jnp.float16, jnp.bfloat16]
_FAN_INITS = [
    init.lecun_normal,
    init.lecun_uniform,
    init.he_normal,
    init.glorot_uniform,
    init.lecture_glorot,
    init.fan_in_normal(2.0),
    init.orthogonal(1.3),
    init.near_identity(0.1),
]


@pytest.mark.slow
@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    shape=st.lists(st.integers(1, 4), min_size=2, max_size=4).map(tuple),
    dtype=st.sampled_from(_FLOATS),
    which=st.integers(0, len(_FAN_INITS) - 1),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_shape_dtype_finite(shape, dtype, which, seed):
    w = _FAN_INITS[which](jax.random.key(seed), shape, dtype)
    chex.assert_shape(w, shape)
    chex.assert_type(w, dtype)
    assert bool(jnp.all(jnp.isfinite(w)))


@pytest.mark.slow
@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    shape=st.lists(st.integers(1, 4), min_size=2, max_size=4).map(tuple),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_uniform_within_bound_and_deterministic(shape, seed):
    key = jax.random.key(seed)
    fan_in, fan_out = init.compute_fans(shape)
    w = init.glorot_uniform(key, shape)
    assert float(jnp.max(jnp.abs(w))) <= math.sqrt(6 / (fan_in + fan_out)) * (1 + 1e-6)
    chex.assert_trees_all_equal(w, init.glorot_uniform(key, shape))


@pytest.mark.slow
@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    layers=st.integers(1, 4),
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    gain=st.floats(0.1, 3.0),
)
def test_property_orthogonal_singular_values_equal_gain(layers, rows, cols, gain):
    with jax.enable_x64(True):
        w = init.orthogonal(gain, batch_axis=0)(KEY, (layers, rows, cols), jnp.float64)
        s = np.linalg.svd(np.asarray(w), compute_uv=False)
    np.testing.assert_allclose(s, gain, rtol=1e-6)


@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    shape=st.lists(st.integers(1, 5), min_size=3, max_size=4).map(tuple),
)
def test_property_batch_axis_fans_equal_layer_fans(shape):
    assert init.compute_fans(shape, batch_axis=0) == init.compute_fans(shape[1:])


# --------------------------------------------------------------------------- names

# A value for the parametric names (gaussian needs one; the others have defaults).
_VALUES = {"fan_in_normal": "1.7", "orthogonal": "1.1", "near_identity": "0.05", "gaussian": "0.3"}


def _spec(name: str) -> init.InitSpec:
    return init.get(f"{name}:{_VALUES[name]}" if name in _VALUES else name)


@pytest.mark.parametrize("name", init.NAMES)
def test_each_name_draws_the_distribution_it_claims(name):
    """A square (n, n) layer: mean(w**2) = weight_variance / n (or std**2 / noise for the rest).

    The tolerance is N_SIGMA standard errors of the second moment of n**2 i.i.d. entries,
    var * sqrt((kurtosis - 1) / n**2) (see assert_variance). For orthogonal weights the sum of
    squares is exactly gain**2 * n, so the check is to float rounding.
    """
    n = 128
    spec = _spec(name)
    assert init.get(spec.name) == spec  # the name round-trips
    w = np.asarray(spec(KEY, (n, n), jnp.float32), dtype=np.float64)
    if spec.family == "orthogonal":
        assert spec.gain is not None and spec.weight_variance == pytest.approx(spec.gain**2)
        np.testing.assert_allclose(np.mean(w**2), spec.weight_variance / n, rtol=1e-5)
    elif spec.family == "near_identity":
        assert spec.weight_variance is None
        assert_variance(w - np.eye(n), float(_VALUES[name]) ** 2, "normal")
    elif spec.weight_variance is None:  # gaussian: a fixed std
        assert_variance(w, float(_VALUES[name]) ** 2, "normal")
    else:
        assert_variance(w, spec.weight_variance / n, spec.family)


def test_names_are_one_per_distribution():
    draws = {name: np.asarray(_spec(name)(KEY, (64, 32)), dtype=np.float64) for name in init.NAMES}
    names = list(draws)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.allclose(draws[a], draws[b]), f"{a} and {b} draw the same arrays"


def test_get_returns_the_named_objects_and_factory_equals():
    assert init.get("he_normal") is init.he_normal
    assert init.get("fan_in_normal:2") == init.fan_in_normal(2.0)
    assert init.get("orthogonal") == init.orthogonal(1.0)
    assert init.get("near_identity").name == "near_identity:0.01"
    assert init.get("fan_in_normal:2").weight_variance == 4.0  # the lecture's std 2/sqrt(n_prev)
    assert init.lecture_glorot.weight_variance == 2.0  # 4/(n+n) for a square layer
    assert init.fan_in_normal(1.1).name == "fan_in_normal:1.1"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("xavier", "Valid names: lecun_normal"),
        ("lecture_2_over_sqrt_n", "use 'fan_in_normal:2'"),
        ("scaled:0.9", "use 'fan_in_normal:K'"),
        ("he_normal:2", "takes no ':value'"),
        ("orthogonal:abc", "not a number"),
        ("fan_in_normal:-1", ">= 0"),
        ("gaussian", "needs a value"),
    ],
)
def test_get_errors_say_the_fix(name, match):
    with pytest.raises(gradlab.InputError, match=match):
        init.get(name)


NAMED = ("lecun_normal", "lecun_uniform", "he_normal", "he_uniform", "glorot_normal")
NAMED += ("glorot_uniform", "lecture_glorot")


def test_named_initialisers_carry_their_docstrings_for_help_and_doctest():
    # Their docstrings are attribute docstrings in the source; the package copies each onto its
    # object (help) and into the module's __test__ (doctest), which would otherwise skip them.
    import doctest

    import gradlab.init._named as named  # the private module whose doctests are checked

    for name in NAMED:
        spec = getattr(init, name)
        assert spec.__name__ == spec.name == name
        assert ">>>" in spec.__doc__ and spec.__doc__ != init.InitSpec.__doc__
    found = {t.name.rsplit(".", 1)[-1] for t in doctest.DocTestFinder().find(named) if t.examples}
    assert set(NAMED) <= found


# --------------------------------------------------------------------------- JAX's conventions

# Names gradlab shares with jax.nn.initializers, each a factory there.
SHARED = ("lecun_normal", "lecun_uniform", "he_normal", "he_uniform")
SHARED += ("glorot_normal", "glorot_uniform")


@pytest.mark.slow
@pytest.mark.parametrize("name", SHARED)
def test_named_initialisers_are_also_factories_like_jax(name):
    ours, theirs = getattr(init, name), getattr(jax.nn.initializers, name)
    assert ours() is ours  # he_normal() is he_normal, as jax's he_normal() is an initialiser
    shape = (300, 200)
    w_ours, w_jax = ours()(KEY, shape), theirs()(KEY, shape)
    chex.assert_equal_shape([w_ours, w_jax])
    chex.assert_type(w_ours, w_jax.dtype)
    # The same variance, scale / fan, for the same name (the uniform ones: the same arrays).
    dist = "uniform" if name.endswith("uniform") else "normal"
    fan_in, fan_out = shape
    var = {"lecun": 1 / fan_in, "he": 2 / fan_in, "glorot": 2 / (fan_in + fan_out)}
    expected = var[name.split("_")[0]]
    assert_variance(w_ours, expected, dist)
    assert_variance(w_jax, expected, dist)  # jax's truncated normal has the same variance
    if dist == "uniform":
        chex.assert_trees_all_equal(w_ours, w_jax)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHARED)
def test_factory_options_are_jaxs(name):
    ours, theirs = getattr(init, name), getattr(jax.nn.initializers, name)
    shape = (6, 40, 24)  # read as 6 stacked (40, 24) layers, then as (in=24, out=40) per layer
    options: dict[str, Any] = {"in_axis": -1, "out_axis": -2, "batch_axis": 0}
    made = ours(**options)
    assert made != ours and made.name == f"{name}(in_axis=-1, out_axis=-2)"
    w = made(KEY, shape)
    if name.endswith("uniform"):  # the same arrays as jax's with the same options
        chex.assert_trees_all_equal(w, theirs(**options)(KEY, shape))
    else:  # per layer fan_in = 24, fan_out = 40: the variance says which axes were read
        var = {"lecun": 1 / 24, "he": 2 / 24, "glorot": 2 / 64}[name.split("_")[0]]
        assert_variance(w, var, "normal")
        scale = {"lecun": 1.0, "he": 2.0, "glorot": 1.0}[name.split("_")[0]]
        mode = "fan_avg" if name.startswith("glorot") else "fan_in"
        chex.assert_trees_all_close(
            w,
            jax.nn.initializers.variance_scaling(scale, mode, "normal", **options)(KEY, shape),
            rtol=1e-6,
            atol=1e-7,
        )
    # dtype=... is the dtype drawn when the call passes none, as in jax
    half = ours(dtype=jnp.float16)
    chex.assert_type(half(KEY, (4, 4)), jnp.float16)
    chex.assert_type(half(KEY, (4, 4), jnp.float32), jnp.float32)
    assert half != ours and ours(dtype=jnp.float16) == half


def test_gaussian_is_jaxs_normal():
    """``gaussian(std)`` draws what ``jax.nn.initializers.normal(std)`` draws: a fixed std."""
    for shape in [(300, 200), (40000,)]:
        ours, theirs = init.gaussian(0.5)(KEY, shape), jax.nn.initializers.normal(0.5)(KEY, shape)
        assert_variance(ours, 0.25, "normal")  # std 0.5 whatever the fans
        chex.assert_trees_all_close(ours, theirs, rtol=1e-6, atol=1e-7)
    # the fan-scaled Gaussian is a different distribution: std 0.5 / sqrt(300)
    assert_variance(init.fan_in_normal(0.5)(KEY, (300, 200)), 0.25 / 300, "normal")


@pytest.mark.slow
def test_structured_and_constant_factories_are_called_like_jaxs():
    assert init.orthogonal(1.1)() == init.orthogonal(1.1)
    chex.assert_trees_all_equal(
        init.orthogonal(1.1)(batch_axis=())(KEY, (8, 8)),
        jax.nn.initializers.orthogonal(1.1)(KEY, (8, 8)),
    )
    stacked = init.orthogonal()(batch_axis=0)(KEY, (3, 8, 8))
    np.testing.assert_allclose(
        np.asarray(stacked[1]).T @ np.asarray(stacked[1]), np.eye(8), atol=1e-5
    )
    chex.assert_trees_all_equal(
        init.constant(0.5)(KEY, (2, 3)), jax.nn.initializers.constant(0.5)(KEY, (2, 3))
    )
    for ours, theirs in (
        (init.zeros, jax.nn.initializers.zeros),
        (init.ones, jax.nn.initializers.ones),
    ):
        chex.assert_trees_all_equal(ours(KEY, (2, 3)), theirs(KEY, (2, 3)))


def test_factory_form_works_as_flax_kernel_init():
    layer = nnx.Linear(64, 32, kernel_init=init.he_uniform(), rngs=nnx.Rngs(0))
    flax_layer = nnx.Linear(64, 32, kernel_init=jax.nn.initializers.he_uniform(), rngs=nnx.Rngs(0))
    chex.assert_trees_all_equal(layer.kernel[...], flax_layer.kernel[...])


def test_former_name_normal_says_which_to_use():
    # jax.nn.initializers.normal(0.5) draws std 0.5; the fan-scaled one draws 0.5/sqrt(fan_in).
    # One name cannot mean both: 'normal' raises, naming both, in Python and by name.
    assert "normal" not in init.__all__ and "normal" not in init.NAMES
    for call in (lambda: init.normal(0.5), lambda: init.normal(), lambda: init.get("normal:2")):
        with pytest.raises(gradlab.InputError, match="fan_in_normal") as e:
            call()
        assert "gaussian(stddev)" in str(e.value) and "jax.nn.initializers.normal" in str(e.value)


def test_factory_form_errors_say_the_fix():
    with pytest.raises(gradlab.InputError, match=r"pass a key and a shape"):
        init.he_normal(KEY)  # type: ignore[call-overload]
    with pytest.raises(gradlab.InputError, match="options of the factory form"):
        init.he_normal(KEY, (4, 4), in_axis=0)  # type: ignore[call-overload]
    with pytest.raises(gradlab.InputError, match="no fans"):
        init.orthogonal()(in_axis=0)
    with pytest.raises(gradlab.InputError, match="real floating dtype"):
        init.he_normal(dtype=jnp.int32)
