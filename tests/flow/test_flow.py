"""Tests of gradlab.flow: measurements on gradlab.nn models against gradlab.theory.

Statistical tests use one example per seed (seeds are independent networks), Z = 4 standard
errors, the error of a mean being the predicted (or, for the approximate mean-field theory,
the sample) standard deviation over sqrt(seeds), and the error of a variance that of a sample
variance.
"""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from rich.console import Console

import gradlab
from gradlab import flow, init, theory

Z = 4.0
LN100 = 2.0 * math.log(10.0)  # log10 of a norm -> ln of a squared norm


def natural(log10_norm: np.ndarray) -> np.ndarray:
    """log10 ||.|| -> ln ||.||^2, the units of gradlab.theory."""
    return np.asarray(log10_norm, dtype=np.float64) * LN100


def assert_mean(x: np.ndarray, mean: float, std: float) -> None:
    se = std / math.sqrt(x.size)
    assert abs(x.mean() - mean) < Z * se, f"mean {x.mean():.4f} vs {mean:.4f} (SE {se:.3g})"


def assert_variance(x: np.ndarray, variance: float) -> None:
    n = x.size
    s2 = float(np.var(x, ddof=1))
    m4 = float(np.mean((x - x.mean()) ** 4))
    se = math.sqrt(max(m4 - s2**2 * (n - 3) / (n - 1), 0.0) / n)
    assert abs(s2 - variance) < Z * se, f"variance {s2:.4f} vs {variance:.4f} (SE {se:.3g})"


@pytest.fixture(scope="module")
def orthogonal64():
    return flow.depth_profile(
        "mlp",
        depth=150,
        width=8,
        activation="linear",
        init="orthogonal:1.1",
        seeds=2,
        batch=2,
        dtype="float64",
    )


@pytest.mark.slow
def test_orthogonal_linear_is_exactly_gain_to_the_depth(orthogonal64):
    rel = orthogonal64["grad_h_rel"]
    expected = np.arange(150, -1, -1) * math.log10(1.1)
    np.testing.assert_allclose(
        rel.log10[..., :], np.broadcast_to(expected, rel.log10.shape), atol=1e-10
    )
    assert rel.theory is not None and rel.theory.exact
    np.testing.assert_allclose(rel.theory.mean, expected, atol=1e-12)
    assert orthogonal64.headline()["typical_ratio"] == pytest.approx(1.1**150, rel=1e-9)


def test_per_example_weight_gradients_equal_across_layers(orthogonal64):
    """Orthogonal linear net: ||dl/dW_l|| = ||h_(l-1)||·||g_l|| = 1.1^(l-1)·1.1^(L-l)·const."""
    w = orthogonal64["grad_w"].log10  # (seeds, batch, depth)
    assert w.shape == (2, 2, 150)
    np.testing.assert_allclose(w, np.broadcast_to(w[..., :1], w.shape), atol=1e-10)


@pytest.mark.slow
def test_gaussian_linear_z_test():
    depth, width, sigma = 20, 8, 1.1
    p = flow.depth_profile(
        "mlp",
        depth=depth,
        width=width,
        activation="linear",
        init=f"fan_in_normal:{sigma}",
        seeds=400,
        batch=1,
        weight_gradients=False,
        key=11,
    )
    x = natural(p["grad_h_rel"].log10[:, 0, 0])
    r = theory.gaussian_linear(depth, width, sigma**2)
    assert_mean(x, float(r.mean), float(r.std))
    assert_variance(x, float(r.variance))
    assert p["grad_h_rel"].theory.exact


@pytest.mark.slow
def test_relu_he_exact_law_and_level_weight_gradients():
    depth, width, n = 20, 8, 400
    p = flow.depth_profile(
        "mlp",
        depth=depth,
        width=width,
        activation="relu",
        init="he_normal",
        seeds=n,
        batch=1,
        key=12,
    )
    x_all = natural(p["grad_h_rel"].log10[:, 0, 0])
    finite = x_all[np.isfinite(x_all)]
    # g_0 = 0 when h_0 or any of the depth layers has no active unit
    p_dead = 1 - (1 - 2.0**-width) ** (depth + 1)
    dead = n - finite.size
    assert abs(dead - n * p_dead) < Z * math.sqrt(n * p_dead * (1 - p_dead))
    r = theory.relu_gaussian(depth, width)
    assert_mean(finite, float(r.mean), float(r.std))
    assert_variance(finite, float(r.variance))
    # per-example weight gradients: same law at every layer (docs/theory.md), z-test on the
    # difference between the first and the last hidden layer
    w = p["grad_w"].log10[:, 0, :]
    ok = np.isfinite(w[:, 0]) & np.isfinite(w[:, -1])
    d = w[ok, 0] - w[ok, -1]
    assert abs(d.mean()) < Z * d.std(ddof=1) / math.sqrt(d.size)
    # while the activation gradient is far from level
    assert abs(float(np.mean(finite))) > 10 * d.std(ddof=1) / math.sqrt(d.size)


@pytest.mark.slow
def test_tanh_chaotic_mean_field_z_test():
    """Approximate theory (mean field + 1/n): its error must be below 4 standard errors."""
    depth, width = 50, 64
    p = flow.depth_profile(
        "mlp",
        depth=depth,
        width=width,
        activation="tanh",
        init="fan_in_normal:2",  # the lecture's std 2/sqrt(n_prev)
        seeds=32,
        batch=1,
        weight_gradients=False,
        key=13,
    )
    s = p["grad_h_rel"]
    assert s.theory is not None and not s.theory.exact
    x = s.log10[:, 0, 0]
    assert_mean(x, float(s.theory.mean[0]), float(np.std(x, ddof=1)))
    assert s.theory.mean[0] > 2  # exploding: chi1 > 1 at sigma_w^2 = 4
    assert float(theory.chi1(4.0, 0.0)) > 1
    # the line is gradlab.theory's at the initialiser's own numbers, by name or by object
    kw = dict(depth=depth, width=width, activation="tanh", seeds=32, batch=1, key=13)
    _same_by_object(p, init.fan_in_normal(2.0), weight_gradients=False, **kw)
    s2 = init.fan_in_normal(2.0).weight_variance
    expected = theory.mean_field_profile(depth, s2, 0.0, "tanh", input_q=s2, width=width)
    np.testing.assert_allclose(s.theory.mean, expected.log10_norm_mean, rtol=1e-12)


@pytest.mark.slow
def test_residual_rezero_is_the_identity():
    p = flow.depth_profile(
        "residual",
        depth=10,
        width=8,
        activation="relu",
        init="he_normal",
        branch_scale="rezero",
        seeds=2,
        batch=2,
    )
    np.testing.assert_allclose(p["grad_h_rel"].log10, 0.0, atol=1e-6)
    assert p["grad_h_rel"].theory.exact
    assert p["grad_w"].log10.shape == (2, 2, 10)


@pytest.mark.slow
def test_time_profiles_shapes_and_cell_path():
    T, H = 20, 8
    lstm = flow.time_profile("lstm", steps=T, hidden=H, seeds=2, batch=3, forget_bias=2.0)
    rnn = flow.time_profile("rnn", steps=T, hidden=H, seeds=2, batch=3)
    for p in (lstm, rnn):
        assert p.kind == "time"
        for name in ("grad_h", "grad_h_rel", "grad_x", "h"):
            assert p[name].log10.shape == (2, 3, T)
            np.testing.assert_array_equal(p[name].index, np.arange(1, T + 1))
        np.testing.assert_allclose(p["grad_h_rel"].log10[..., -1], 0.0)
        assert np.all(np.isfinite(p["grad_x"].log10))
    assert "cell_path" not in rnn.series
    cell = lstm["cell_path"]
    np.testing.assert_allclose(cell.log10[..., -1], 0.0, atol=1e-6)  # empty product
    assert np.all(np.diff(cell.mean) > 0)  # more forget gates, smaller product
    assert cell.theory is not None
    assert rnn["grad_h_rel"].theory is not None
    assert lstm.config["forget_preactivation_std"] > 0


@pytest.mark.slow
def test_one_compilation_per_configuration():
    calls = []

    def counting_init(key, shape, dtype=jnp.float32):
        calls.append(tuple(shape))
        return init.lecun_normal(key, shape, dtype)

    kw = dict(depth=5, width=4, activation="tanh", init=counting_init, seeds=3, batch=2)
    first = flow.depth_profile("mlp", key=0, **kw)
    traced = len(calls)
    assert traced > 0 and first.compiled
    assert first["grad_h_rel"].theory is None  # gradlab cannot know what a callable draws
    assert first.config["init"] == "counting_init"
    before = flow.cache_info()
    second = flow.depth_profile("mlp", key=1, **kw)
    assert len(calls) == traced, "the second call retraced the model construction"
    assert not second.compiled
    assert flow.cache_info() == before
    assert not np.allclose(first["grad_h"].log10, second["grad_h"].log10)


def test_results_are_json_and_a_table(orthogonal64):
    d = orthogonal64.to_dict()
    text = json.dumps(d)
    assert json.loads(text)["config"]["init"] == "orthogonal:1.1"
    assert set(d["series"]) == {"grad_h", "grad_h_rel", "grad_w", "h"}
    json.dumps(orthogonal64.to_dict(samples=True))
    console = Console(record=True, width=150)
    console.print(orthogonal64.table())
    out = console.export_text()
    assert "layer l" in out and "+6.21" in out
    plain = str(orthogonal64)
    assert "layer l" in plain and "+6.21" in plain


def _expected_line(spec, activation, depth, width):
    """The gradlab.theory prediction at the object's own numbers (log10 units)."""
    remaining = np.arange(depth, -1, -1).astype(float)
    s2 = spec.weight_variance
    if activation == "linear" and spec.family == "orthogonal":
        r = theory.orthogonal_linear(remaining, spec.gain)
    elif activation == "relu":
        r = theory.relu_gaussian(remaining, width, s2)
    else:
        r = theory.mean_field_profile(depth, s2, 0.0, activation, input_q=s2, width=width)
    return r.log10_norm_mean


def _same_by_object(by_name, obj, **kw):
    """Measures again with the initialiser object: same programs, data, and theory line."""
    by_obj = flow.depth_profile("mlp", init=obj, **kw)
    assert by_name.config["init"] == by_obj.config["init"] == obj.name
    assert not by_obj.compiled  # an equal initialiser shares the compiled programs
    np.testing.assert_array_equal(by_name["grad_h"].log10, by_obj["grad_h"].log10)
    a, b = by_name["grad_h_rel"].theory, by_obj["grad_h_rel"].theory
    assert a is not None and b is not None and a.note == b.note and a.exact == b.exact
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)


def test_theory_line_for_a_name_equals_the_objects_orthogonal(orthogonal64):
    kw = dict(depth=150, width=8, activation="linear", seeds=2, batch=2, dtype="float64")
    _same_by_object(orthogonal64, init.orthogonal(1.1), **kw)
    expected = theory.orthogonal_linear(np.arange(150, -1, -1), init.orthogonal(1.1).gain)
    np.testing.assert_allclose(
        orthogonal64["grad_h_rel"].theory.mean, expected.log10_norm_mean, rtol=1e-12
    )


def _depth_cfg(**changes):
    base = dict(
        arch="residual", depth=6, width=8, activation="relu", init=None, seeds=1, batch=1,
        loss="readout", dtype="float32", branch_scale=None, layer_norm=False, use_bias=True,
        weight_gradients=False,
    )  # fmt: skip
    return flow._programs._DepthConfig(**{**base, **changes})


@pytest.mark.parametrize(("branch_scale", "alpha"), [(None, 1.0), (0.5, 0.5), ("fixup", 6**-0.5)])
def test_residual_line_is_theory_residual_stack(branch_scale, alpha):
    """Unit test of the private helper: which theory.residual_stack a configuration gets."""
    cfg = _depth_cfg(branch_scale=branch_scale)
    line = flow._theory_lines.depth_line(cfg, init.he_normal)
    expected = theory.residual_stack(np.arange(6, -1, -1), 2.0, alpha, "relu")
    np.testing.assert_allclose(line.mean, expected.log10_norm_mean, rtol=1e-12)
    assert not line.exact and "Hanin" in line.note
    # no line where the law does not apply, or where the initialiser is unknown
    assert flow._theory_lines.depth_line(_depth_cfg(layer_norm=True), init.he_normal) is None
    assert flow._theory_lines.depth_line(cfg, init.near_identity(0.1)) is None
    assert flow._theory_lines.depth_line(cfg, None) is None


def test_input_errors_say_the_fix():
    with pytest.raises(gradlab.InputError, match="Valid names: lecun_normal"):
        flow.depth_profile("mlp", init="xavier")
    with pytest.raises(gradlab.InputError, match="use 'fan_in_normal:2'"):
        flow.depth_profile("mlp", init="lecture_2_over_sqrt_n")
    with pytest.raises(gradlab.InputError, match="initialiser name"):
        flow.time_profile("rnn", init=3)
    with pytest.raises(gradlab.InputError, match="arch"):
        flow.depth_profile("lstm")
    with pytest.raises(gradlab.InputError, match="arch"):
        flow.time_profile("mlp")
    with pytest.raises(gradlab.InputError, match="seeds"):
        flow.depth_profile("mlp", seeds=0)
    with pytest.raises(ValueError, match="Unknown activation"):
        flow.depth_profile("mlp", activation="swish")
    with pytest.raises(gradlab.InputError, match="loss"):
        flow.time_profile("rnn", loss="mse")
    with pytest.raises(gradlab.InputError, match="dtype"):
        flow.depth_profile("mlp", dtype="float16")
