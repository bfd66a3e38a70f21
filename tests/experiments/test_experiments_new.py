"""Tests of the experiments trainability-depth, isometry and transformer-ln.

Each runs at ``--size tiny`` (the machinery: result.json schema, claims with thresholds and
controls, figures); the pieces with a known answer (the boundary interpolation, the Jacobian
spectrum, the slope fit, the two layer-norm placements) are checked against it.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradlab import experiments, theory
from gradlab.experiments import _isometry, _trainability_depth, _transformer_ln

NEW = ("trainability-depth", "isometry", "transformer-ln")


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("experiments_new")


def test_registered():
    assert set(NEW) <= set(experiments.names())
    for name in NEW:
        assert experiments.describe(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_tiny_run_writes_schema_claims_controls_and_figures(name, out):
    result = experiments.run(name, size="tiny", out=out)
    folder = out / name
    data = json.loads((folder / "result.json").read_text())
    experiments.validate_result(data)
    assert data == result
    assert data["experiment"] == name and data["size"] == "tiny" and data["judged"] is False
    assert data["check"]["passed"] is None  # tiny is never judged
    assert len(data["claims"]) >= 2
    for claim in data["claims"]:
        assert isinstance(claim["holds"], bool) and claim["evidence"]
        assert claim["threshold"]["source"] in ("theory", "published", "development run")
        assert claim["threshold"]["derivation"]
        control = claim["control"]
        assert isinstance(control["holds"], bool) and "must be false" in control["text"]
    dev, ev = data["seeds"]["development"], data["seeds"]["evaluation"]
    cfg = experiments._module(name).CONFIGS["tiny"]
    assert not set(dev) & set(ev) and len(ev) == cfg.seeds
    assert ev[0] == getattr(cfg, "first_seed", 1000)  # an experiment's own fresh seeds
    for fig in data["figures"]:
        assert (folder / fig).stat().st_size > 1000


def test_boundary_interpolates_in_log_depth():
    depths = np.array([4.0, 8.0, 16.0])
    b = _trainability_depth._boundary
    # the fraction falls from 1 to 0 between 8 and 16: the 1/2 crossing at sqrt(8 * 16)
    assert b(np.array([1.0, 1.0, 0.0]), depths) == pytest.approx(math.sqrt(128))
    assert b(np.array([1.0, 0.75, 0.25]), depths) == pytest.approx(math.sqrt(128))
    assert math.isinf(b(np.array([1.0, 1.0, 0.5]), depths))  # trains everywhere
    assert math.isnan(b(np.array([0.0, 0.0, 0.0]), depths))  # never trains


def _synthetic_trained(boundary, seed=1):
    """Per (depth, column, seed): trains below ``boundary`` (a column's L*), with seed noise."""
    cfg = _trainability_depth.CONFIGS["default"]
    sws = np.array(cfg.weight_variances)
    depths = np.array(cfg.depths, float)
    xi = np.array([theory.correlation_depth_scale(s, cfg.bias_variance) for s in sws])
    noise = np.exp(np.random.default_rng(seed).normal(0, 0.15, (1, len(sws), 8)))
    trained = depths[:, None, None] < boundary(xi)[None, :, None] * noise
    fit = _trainability_depth._fit(trained, depths, sws, xi)
    return _trainability_depth._claims(cfg, trained, fit, xi, 0.62), fit


def test_trainable_depth_bound_holds_for_c_xi_and_fails_for_a_constant():
    # a boundary at 7 xi (capped at depth 20 by the step budget): within 2 x 6 xi, and the
    # xi-free bound (12 xi of the most ordered column, 11.5 layers) is exceeded
    (bound, deep), fit = _synthetic_trained(lambda xi: np.minimum(7 * xi, 20))
    assert bound.holds and not bound.control.holds
    assert 6.0 < fit["c"] < 8.0 and fit["c_interval"][0] <= fit["c"] <= fit["c_interval"][1]
    assert "depth 16" in deep.text and deep.holds and not deep.control.holds
    # a boundary at depth 20 whatever xi: the most ordered column breaks 2 x 6 xi = 11.5
    (bound, deep), _ = _synthetic_trained(lambda xi: np.full_like(xi, 20.0))
    assert not bound.holds and deep.control.holds


@pytest.mark.slow
def test_one_program_skips_layers_past_the_depth():
    # the padded network at depth d equals a plain d-layer network on the same weights
    cfg = _trainability_depth.CONFIGS["tiny"]
    p = _trainability_depth._init(jax.random.key(0), jnp.float32(1.0), cfg, 4)
    x = jax.random.normal(jax.random.key(1), (3, cfg.dim))
    for depth in (1, 2, 4):
        h = jnp.tanh(x @ p["w0"] + p["bs"][0])
        for i in range(depth - 1):
            h = jnp.tanh(h @ p["ws"][i] + p["bs"][i + 1])
        want = (h @ p["wo"])[:, 0]
        got = _trainability_depth._forward(p, x, jnp.int32(depth))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_orthogonal_tanh_near_zero_input_is_an_isometry():
    # tanh' = 1 - O(q): at q0 = 1e-8 the Jacobian is a product of orthogonal matrices
    lam = _isometry._spectrum(0, "tanh", "orthogonal", 32, 16, 1e-8)
    np.testing.assert_allclose(lam, 1.0, atol=1e-5)


def test_trained_networks_start_gaussian_or_orthogonal():
    # drawn outside the compiled training program: orthogonal rows or columns, scaled
    cfg = _isometry.CONFIGS["tiny"]
    rng = np.random.default_rng(0)
    for n_in, n_out in ((4, 8), (8, 8), (8, 4)):
        q = _isometry._np_init(rng, "orthogonal", n_in, n_out, 2.0)
        small = q.T @ q if n_in >= n_out else q @ q.T
        np.testing.assert_allclose(small, 2.0 * np.eye(min(n_in, n_out)), atol=1e-12)
    ps = _isometry._init_params([5, 6], "gaussian", cfg, depth=3)
    assert [p.shape for p in ps] == [(2, cfg.dim, 8), (2, 8, 8), (2, 8, 8), (2, 8, 1)]
    assert not np.allclose(ps[1][0], ps[1][1])  # seeds differ


def test_relu_jacobian_rank_is_the_number_of_active_units():
    # one ReLU layer: J = W D, so exactly the inactive units' columns are zero
    rng = np.random.default_rng(3)
    h = rng.normal(size=32) * math.sqrt(1.0)
    w = _isometry._np_weights(rng, "orthogonal", 32, 2.0)
    active = int(np.sum(h @ w > 0))
    lam = _isometry._spectrum(3, "relu", "orthogonal", 32, 1, 1.0)
    assert int(np.sum(lam > 1e-12)) == active
    np.testing.assert_allclose(lam[lam > 1e-12], 2.0, rtol=1e-9)  # orthogonal x sqrt(2)


def test_slope_fit_recovers_a_linear_law():
    depths = np.array([1.0, 2.0, 4.0, 8.0])
    var = np.stack([depths * 1.0, depths * 0.0 + 0.01])[:, :, None] * np.ones((1, 1, 3))
    np.testing.assert_allclose(_isometry._slopes(depths, var), [[1.0] * 3, [0.0] * 3], atol=1e-12)


@pytest.mark.slow
def test_layer_norm_placements_differ_and_pre_ln_is_residual():
    cfg = _transformer_ln.CONFIGS["tiny"]
    p = _transformer_ln._init(jax.random.key(0), cfg, 2)
    tokens, targets = _transformer_ln._batch(jax.random.key(1), cfg)
    assert bool(jnp.all(targets == tokens[:, ::-1]))
    post = _transformer_ln._logits(p, tokens, pre=False)
    pre = _transformer_ln._logits(p, tokens, pre=True)
    assert post.shape == pre.shape == (cfg.batch, cfg.length, cfg.vocab)
    assert not np.allclose(post, pre)
    # with every sub-layer's output weight at zero, pre-LN is the identity on the stream
    zero = {
        **p,
        "layers": {**p["layers"], "wo": p["layers"]["wo"] * 0, "w2": p["layers"]["w2"] * 0},
    }
    h = p["embed"][tokens] + p["pos"]
    want = _transformer_ln._ln(h) @ p["out"]
    np.testing.assert_allclose(_transformer_ln._logits(zero, tokens, pre=True), want, rtol=1e-5)
