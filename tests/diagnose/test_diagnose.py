"""Tests of gradlab.flow.diagnose on Flax Linen, NNX, equinox and plain models.

Sizes are small so the whole file runs in well under a minute on 2 CPU cores. Thresholds: a
flag needs a growth or decay beyond ``10**decades`` (default 2); where the test depends on the
size of an effect, the expected effect is computed from gradlab.theory and the test checks it
sits well clear of the threshold (see each test's comment).
"""

from __future__ import annotations

import json
import math
import re

import equinox as eqx
import flax.linen as lnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gradlab import InputError, cli, flow, theory
from gradlab import init as ginit
from gradlab import nn as gnn

# LeCun tanh and sigma_w^2 = 4 need depth to be told apart: the mean-field gain per layer is
# 0.5*log10(chi1) = +0.067 decades at sigma_w^2 = 4 (gradlab.theory.chi1), +2.7 over 40 layers
# (2.6 measured at width 64), while LeCun's gradient decays slowly (-0.9 measured). The cheaper
# cases (sigma_w^2 = 0.25: -0.30 per layer; one layer x10) use 16 layers.
DEPTH, SHORT, WIDTH, BATCH = 40, 16, 64, 8


def _weights(s2: float, depth: int = DEPTH, scale_layer: int | None = None) -> list[np.ndarray]:
    """Kernels ``N(0, s2/n)`` of ``depth`` tanh layers, then a ``N(0, 1/n)`` readout."""
    rng = np.random.default_rng(0)
    shape = (WIDTH, WIDTH)
    ws = [rng.normal(0, math.sqrt(s2 / WIDTH), shape).astype(np.float32) for _ in range(depth)]
    if scale_layer is not None:
        ws[scale_layer] = ws[scale_layer] * 10
    ws.append(rng.normal(0, math.sqrt(1 / WIDTH), (WIDTH, 1)).astype(np.float32))
    return ws


X = jnp.asarray(np.random.default_rng(1).normal(size=(BATCH, WIDTH)), jnp.float32)


class LinenMLP(lnn.Module):
    depth: int

    @lnn.compact
    def __call__(self, x):
        for _ in range(self.depth):
            x = jnp.tanh(lnn.Dense(WIDTH)(x))
        return lnn.Dense(1)(x)


def linen_problem(ws):
    model = LinenMLP(len(ws) - 1)
    params = {
        f"Dense_{i}": {"kernel": jnp.asarray(w), "bias": jnp.zeros(w.shape[1])}
        for i, w in enumerate(ws)
    }
    return (lambda v, x: jnp.sum(model.apply(v, x))), {"params": params}


class NNXMLP(nnx.Module):
    def __init__(self, ws):
        self.layers = nnx.List([nnx.Linear(w.shape[0], w.shape[1], rngs=nnx.Rngs(0)) for w in ws])
        for layer, w in zip(self.layers, ws, strict=True):
            layer.kernel[...] = jnp.asarray(w)

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jnp.tanh(layer(x))
        return self.layers[-1](x)


def nnx_problem(ws):
    return (lambda m, x: jnp.sum(m(x))), NNXMLP(ws)


def eqx_problem(ws):
    mlp = eqx.nn.MLP(WIDTH, 1, WIDTH, len(ws) - 1, activation=jnp.tanh, key=jax.random.key(0))
    mlp = eqx.tree_at(
        lambda m: [lin.weight for lin in m.layers], mlp, [jnp.asarray(w.T) for w in ws]
    )
    mlp = eqx.tree_at(
        lambda m: [lin.bias for lin in m.layers], mlp, [jnp.zeros(w.shape[1]) for w in ws]
    )
    return (lambda m, x: jnp.sum(jax.vmap(m)(x))), mlp


FRAMEWORKS = {"linen": linen_problem, "nnx": nnx_problem, "equinox": eqx_problem}
_CACHE: dict = {}


def diag(framework: str, s2: float, scale_layer: int | None = None) -> flow.Diagnosis:
    key = (framework, s2, scale_layer)
    depth = DEPTH if s2 in (1.0, 4.0) and scale_layer is None else SHORT
    if key not in _CACHE:
        f, params = FRAMEWORKS[framework](_weights(s2, depth, scale_layer))
        _CACHE[key] = flow.diagnose(f, params, X)
    return _CACHE[key]


def _prefix(indices: set[int]) -> bool:
    return bool(indices) and indices == set(range(len(indices)))


# --------------------------------------------------------------------------- the deep tanh MLP


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_lecun_tanh_is_healthy_and_layers_are_found(framework):
    d = diag(framework, 1.0)
    assert d.ok, d.summary()
    assert len(d.layers) == DEPTH + 1  # DEPTH tanh layers and the readout
    assert [lay.activation for lay in d.layers] == ["tanh"] * DEPTH + ["linear"]
    assert all(lay.fan_in == WIDTH for lay in d.layers)


@pytest.mark.slow
def test_nnx_split_state_is_the_same_as_the_module():
    _, model = nnx_problem(_weights(0.25, SHORT))
    graphdef, state = nnx.split(model)
    d = flow.diagnose(lambda s, x: jnp.sum(nnx.merge(graphdef, s)(x)), state, X)
    ref = diag("nnx", 0.25)
    assert [lay.name for lay in d.layers] == [lay.name for lay in ref.layers]
    assert d.layers[3].name == "layers/3"
    np.testing.assert_allclose(
        [lay.grad_out for lay in d.layers], [lay.grad_out for lay in ref.layers]
    )
    assert [(f.kind, f.layers) for f in d.flags] == [(f.kind, f.layers) for f in ref.flags]


@pytest.mark.slow
def test_mean_field_line_follows_the_measurement():
    # The figure's theory: sqrt(chi) per layer at the measured q. Over 40 layers the mean-field
    # line and the measurement agree to 0.4 decades (the gap is the 1/width correction).
    from gradlab._diagnose._figure import theory_line

    for s2 in (1.0, 4.0):
        d = diag("linen", s2)
        pred = theory_line(d)
        assert pred is not None and abs(pred[0] - d.layers[0].grad_out) < 0.4


def test_no_layers_is_said():
    d = flow.diagnose(lambda p, x: jnp.sum(jnp.tanh(p * x)), jnp.ones(3), jnp.ones(3))
    assert d.ok and d.layers == () and "No layers found" in d.summary()


@pytest.mark.slow
def test_frameworks_measure_the_same_numbers():
    ref = diag("linen", 1.0)
    for fw in ("nnx", "equinox"):
        d = diag(fw, 1.0)
        np.testing.assert_allclose(
            [lay.grad_out for lay in d.layers], [lay.grad_out for lay in ref.layers], atol=1e-4
        )
        np.testing.assert_allclose(
            [lay.grad_w for lay in d.layers], [lay.grad_w for lay in ref.layers], atol=1e-4
        )


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("s2", "kind"), [(4.0, "exploding"), (0.25, "vanishing")])
def test_off_critical_tanh_is_flagged_from_the_input_side(framework, s2, kind):
    # +2.7 decades over 40 layers (s2=4) and -4.8 over 16 (s2=0.25) against the threshold of 2.
    d = diag(framework, s2)
    assert [f.kind for f in d.flags] == [kind], d.summary()
    flagged = d.flagged(kind)
    assert _prefix(flagged) and len(flagged) < len(d.layers)
    flag = d.flags[0]
    assert "tanh" in flag.why and "critical value 1" in flag.why
    assert "LeCun" in flag.fix.description


@pytest.mark.slow
@pytest.mark.parametrize("s2", [4.0, 0.25])
def test_the_suggested_init_fix_removes_the_flag(s2):
    d = diag("linen", s2)
    after = d.verify()
    assert after.ok, after.summary()
    sw = [lay.weight_variance for lay in after.layers[:-1]]
    np.testing.assert_allclose(sw, 1.0, rtol=1e-5)  # rescaled exactly onto the critical value


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_one_scaled_layer_is_flagged_and_only_it(framework):
    d = diag(framework, 1.0, scale_layer=8)
    assert [(f.kind, f.layers) for f in d.flags] == [("outlier", (8,))], d.summary()
    assert "×" in d.flags[0].why and "saturated" in d.flags[0].why
    assert d.verify().ok


# --------------------------------------------------------------------------- other models


def _relu_mlp(key, kernel_init, depth=20):
    model = gnn.MLP(
        WIDTH,
        1,
        width=WIDTH,
        depth=depth,
        activation="relu",
        kernel_init=kernel_init,
        rngs=nnx.Rngs(key),
    )
    return gnn.pure(model)


@pytest.mark.slow
def test_relu_glorot_vanishes_he_does_not():
    # Glorot on square layers is sigma_w^2 = 1, half ReLU's critical 2: ‖∂L/∂h‖ shrinks by
    # sqrt(1/2) per layer, -3.2 decades over 20 layers (theory, width 64). Spread: the exact
    # finite-width law (gradlab.theory.relu_gaussian) gives a std of
    # log10 ‖∂L/∂h_0‖/‖∂L/∂h_20‖ of 0.27 per network at width 64, so 0.19 for the mean over 2
    # initialisations: Glorot sits 5 std beyond the threshold of 2 decades, He (mean -0.17) 9
    # std inside it.
    apply_fn, params = _relu_mlp(0, ginit.glorot_normal)

    def f(p, x):
        return jnp.sum(apply_fn(p, x))

    x = X[:4]
    glorot = flow.diagnose(
        f, params, x, init=lambda k: _relu_mlp(k, ginit.glorot_normal)[1], seeds=2
    )
    assert glorot.samples == (2, 1)
    assert [fl.kind for fl in glorot.flags] == ["vanishing"], glorot.summary()
    assert "relu" in glorot.flags[0].why and "He" in glorot.flags[0].fix.description
    assert glorot.verify().ok
    he = flow.diagnose(f, params, x, init=lambda k: _relu_mlp(k, ginit.he_normal)[1], seeds=2)
    assert he.ok, he.summary()
    assert all(1.8 < lay.weight_variance < 2.2 for lay in he.layers[1:-1])  # He: sigma_w^2 = 2


def _residual(branch_scale, depth=16):
    model = gnn.ResidualStack(
        WIDTH,
        1,
        width=WIDTH,
        depth=depth,
        activation="relu",
        kernel_init=ginit.he_normal,
        branch_scale=branch_scale,
        rngs=nnx.Rngs(0),
    )
    apply_fn, params = gnn.pure(model)
    return (lambda p, x: jnp.sum(apply_fn(p, x))), params


@pytest.mark.slow
def test_residual_branches_add_up_and_one_over_sqrt_depth_fixes_it():
    # He-initialised ReLU branches at scale 1: E‖g‖² grows by (1 + 2) per block, 10^3.8 over
    # 16 blocks; at 1/sqrt(16): (1 + 2/16)^16 ~ e^1.9, 10^0.4.
    f, params = _residual(None)
    d = flow.diagnose(f, params, X)
    assert [fl.kind for fl in d.flags] == ["exploding"], d.summary()
    assert all(lay.residual for lay in d.layers[1:-1])
    assert "residual" in d.flags[0].why and "1/√L" in d.flags[0].fix.description
    assert d.verify().ok
    f, params = _residual(1.0 / 4.0)
    assert flow.diagnose(f, params, X).ok


def _lstm(forget_bias, steps=40, hidden=16):
    model = gnn.LSTM(8, hidden, forget_bias=forget_bias, rngs=nnx.Rngs(0))
    apply_fn, params = gnn.pure(model)
    xs = jnp.asarray(np.random.default_rng(2).normal(size=(4, steps, 8)), jnp.float32)
    return (lambda p, xs: jnp.sum(apply_fn(p, xs)[0][:, -1])), params, xs


@pytest.mark.slow
def test_lstm_forget_bias():
    f, params0, xs = _lstm(0.0)
    d0 = flow.diagnose(f, params0, xs)
    d1 = flow.diagnose(f, _lstm(1.0)[1], xs)  # the same f: the compiled program is reused
    assert [(f.kind, f.where) for f in d0.flags] == [("vanishing", "time")], d0.summary()
    assert "forget" in d0.flags[0].why and "forget-gate bias" in d0.flags[0].fix.description
    # the measured decay per step follows the forget gate: slower at b_f = 1 than at 0
    per_step = [(r.grad[-1] - r.grad[1]) for r in (d0.recurrences[0], d1.recurrences[0])]
    assert per_step[1] < per_step[0]
    b0 = d0.recurrences[0].forget[0]
    assert abs(b0) < 0.3 and abs(d1.recurrences[0].forget[0] - 1.0) < 0.3
    assert d0.verify().ok
    fig = d0.figure()  # no depth panel (no layers along depth), one panel through time
    assert d0.layers == () and [ax.get_xlabel() for ax in fig.axes] == ["time step t"]


class ConvNet(lnn.Module):
    scale: float

    @lnn.compact
    def __call__(self, x):
        init = lnn.initializers.variance_scaling(self.scale, "fan_in", "normal")
        for _ in range(6):
            x = jnp.tanh(lnn.Conv(8, (3, 3), kernel_init=init)(x))
        return lnn.Dense(1)(x.mean(axis=(1, 2)))


def _conv_diagnosis(scale: float) -> flow.Diagnosis:
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 8, 8, 8)), jnp.float32)
    model = ConvNet(scale)
    variables = model.init(jax.random.key(0), x)
    return flow.diagnose(lambda v, x: jnp.sum(model.apply(v, x)), variables, x)


@pytest.mark.slow
def test_convnet():
    # sigma_w^2 = 0.05 per conv: chi1 = 0.05, -0.65 decades per layer, -3.9 over 6 layers.
    bad = _conv_diagnosis(0.05)
    assert [lay.fan_in for lay in bad.layers] == [72] * 6 + [8]  # 3 x 3 x 8 inputs per output
    assert [lay.name for lay in bad.layers[:2]] == ["ConvNet/Conv_0", "ConvNet/Conv_1"]
    assert [f.kind for f in bad.flags] == ["vanishing"], bad.summary()
    assert "LeCun" in bad.flags[0].fix.description and bad.verify().ok
    good = _conv_diagnosis(1.0)
    assert good.ok, good.summary()  # the last conv also pools: its gain is not compared


def test_tanh_with_biases_uses_the_critical_line():
    # Judging only (no model): 20 tanh layers at sigma_w^2 = 1 with sigma_b^2 = 0.05 sit below
    # the mean-field critical line (sigma_w^2 = 1.761 there), so the fix rescales the kernels
    # onto the line, not to LeCun's 1.
    from gradlab._diagnose._judge import judge
    from gradlab._diagnose._layers import Layer

    def layer(i, grad_in):
        return Layer(
            index=i,
            name=f"l{i}",
            grad_out=grad_in + 0.1,
            grad_in=grad_in,
            gain=-0.1,
            h_out=0.0,
            grad_w=0.0,
            activation="tanh",
            weight_variance=1.0,
            bias_variance=0.05,
            saturation=0.0,
            residual=False,
            kernels=[(i, None)],
            fan_in=16,
            kernel_variances=[1.0],
            same_size=True,
            input_ms=1.0,
        )

    layers = [layer(i, -0.1 * (20 - i)) for i in range(20)]
    flags = judge(None, layers, [], decades=1.0, outlier=0.5)
    assert [f.kind for f in flags] == ["vanishing"]
    crit = float(theory.critical_weight_variance("tanh", 0.05))
    assert f"critical value {crit:.3g}" in flags[0].why and "σ_b² = 0.05" in flags[0].why
    edits = flags[0].fix.edits
    assert len(edits) == 20 and all(e.factor == pytest.approx(math.sqrt(crit)) for e in edits)


@pytest.mark.slow
def test_overflow_and_exact_zero_are_flagged():
    # A linear chain at std 100/sqrt(n) grows ‖∂L/∂h‖ by ~100 per layer: 10^46 over 24 layers
    # overflows float32 (the forward pass too, but ∂L/∂h does not depend on it). A ReLU chain
    # at He init whose biases are -10 has no active unit: the gradient is exactly zero.
    rng = np.random.default_rng(5)
    ws = [jnp.asarray(rng.normal(size=(8, 8)) * 100 / math.sqrt(8), jnp.float32) for _ in range(24)]

    def linear(ws, x):
        for w in ws:
            x = x @ w
        return jnp.sum(x)

    big = flow.diagnose(linear, ws, jnp.ones((2, 8)))
    assert [f.kind for f in big.flags] == ["exploding"] and "overflow" in big.flags[0].measured
    assert "linear" in big.flags[0].why and big.verify().ok  # rescaled to sigma_w^2 = 1
    dead = [{"w": w * math.sqrt(2) / 100, "b": jnp.full(8, -10.0)} for w in ws[:6]]  # He

    def relu(ps, x):
        for p in ps:
            x = jax.nn.relu(x @ p["w"] + p["b"])
        return jnp.sum(x) + jnp.sum(x @ jnp.ones((8, 1)))

    d = flow.diagnose(relu, dead, jnp.ones((2, 8)))
    assert [f.kind for f in d.flags] == ["vanishing"], d.summary()
    assert "exactly zero" in d.flags[0].measured and "100% of the ReLU units are dead" in (
        d.flags[0].why
    )
    assert "close to critical" in d.flags[0].why and d.flags[0].fix is None  # not the init


# --------------------------------------------------------------------------- exact numbers


@pytest.mark.slow
def test_agrees_with_depth_profile():
    p = flow.depth_profile(
        "mlp",
        depth=6,
        width=8,
        activation="tanh",
        init="lecun_normal",
        seeds=1,
        batch=3,
        weight_gradients=False,
        theory=False,
    )
    k_model, k_x, _ = jax.random.split(jax.random.split(jax.random.key(0), 1)[0], 3)
    model = gnn.MLP(
        8,
        1,
        width=8,
        depth=6,
        activation="tanh",
        kernel_init=ginit.lecun_normal,
        rngs=nnx.Rngs(k_model),
    )
    apply_fn, params = gnn.pure(model)
    x = jax.random.normal(k_x, (3, 8), jnp.float32)
    d = flow.diagnose(lambda p, x: jnp.sum(apply_fn(p, x)[:, 0]), params, x)
    per_example = p["grad_h"].log10[0]  # (batch, depth + 1): ‖∂ℓ_i/∂h_l‖
    batch_norm = 0.5 * np.log10(np.sum(10.0 ** (2 * per_example), axis=0))
    np.testing.assert_allclose([lay.grad_out for lay in d.layers[:7]], batch_norm, atol=1e-4)


def test_hand_computed_three_layers():
    rng = np.random.default_rng(4)
    w1, w2, w3 = (rng.normal(size=s) / 2 for s in ((5, 4), (4, 4), (4, 1)))
    x = rng.normal(size=(3, 5))
    params = [jnp.asarray(w, jnp.float32) for w in (w1, w2, w3)]

    def f(ws, x):
        return jnp.sum(jnp.tanh(jnp.tanh(x @ ws[0]) @ ws[1]) @ ws[2])

    d = flow.diagnose(f, params, jnp.asarray(x, jnp.float32))
    h1 = np.tanh(x @ w1)
    h2 = np.tanh(h1 @ w2)
    g_y = np.ones((3, 1))
    g_h2 = g_y @ w3.T
    g_z2 = g_h2 * (1 - h2**2)
    g_h1 = g_z2 @ w2.T
    g_z1 = g_h1 * (1 - h1**2)
    g_x = g_z1 @ w1.T
    lg = lambda a: np.log10(np.linalg.norm(a))
    got = [(lay.grad_in, lay.grad_out, lay.grad_w, lay.h_out) for lay in d.layers]
    want = [
        (lg(g_x), lg(g_h1), lg(x.T @ g_z1), lg(h1)),
        (lg(g_h1), lg(g_h2), lg(h1.T @ g_z2), lg(h2)),
        (lg(g_h2), lg(g_y), lg(h2.T @ g_y), lg(h2 @ w3)),
    ]
    np.testing.assert_allclose(got, want, atol=1e-5)


# --------------------------------------------------------------------------- report, errors, CLI


@pytest.mark.slow
def test_report_table_dict_figure(tmp_path):
    d = diag("linen", 0.25)
    text = str(d)
    assert "Dense_0" in text and "vanishing" in text and "fix:" in text
    blob = json.loads(json.dumps(d.to_dict(), allow_nan=False))  # strict JSON: no NaN, no inf
    assert blob["flags"][0]["kind"] == "vanishing" and len(blob["layers"]) == SHORT + 1
    assert blob["layers"][0]["flags"] == ["vanishing"]
    assert "params/Dense_0/kernel" in blob["weight_grads"]
    fig = d.figure(tmp_path / "d")
    assert (tmp_path / "d.png").exists() and (tmp_path / "d.svg").exists()
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and any(
        "flagged" in t.get_text() for t in ax.get_legend().get_texts()
    )


@pytest.mark.slow
def test_several_batches():
    f, params = linen_problem(_weights(1.0, depth=3))
    d = flow.diagnose(f, params, X, batches=[(X * 2,), (X * 3,)])
    assert d.samples == (1, 3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: flow.diagnose(lambda p, x: p["w"] * x, {"w": jnp.ones(3)}, jnp.ones(3)), "scalar"),
        (lambda: flow.diagnose(lambda p, x: jnp.sum(x), {"n": 3}, jnp.ones(3)), "no floating"),
        (lambda: flow.diagnose(lambda p: p, {"w": 1.0}, bogus=1), "unknown option"),
        (lambda: flow.diagnose(lambda p: jnp.sum(p), jnp.ones(2), decades=-1), "decades"),
        (lambda: flow.diagnose(lambda p: jnp.sum(p), jnp.ones(2), seeds=0), "seeds"),
        (lambda: flow.diagnose(lambda p: jnp.sum(p), jnp.ones(2), depth_scales=0), "depth_scales"),
        (lambda: flow.diagnose(lambda p: jnp.sum(p), jnp.ones(2), init=3), "init"),
        (lambda: flow.diagnose("f", jnp.ones(2)), "must be a function"),
        (
            lambda: flow.diagnose(
                lambda p, x: jnp.sum(p * x), jnp.ones(2), jnp.ones(2), batches=[(jnp.ones(3),)]
            ),
            "shapes",
        ),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(InputError, match=match):
        call()


_TARGET = """
import jax.numpy as jnp, numpy as np
def make():
    rng = np.random.default_rng(0)
    ws = [jnp.asarray(rng.normal(size=(8, 8)) * 0.2) for _ in range(12)]
    def f(ws, x):
        for w in ws:
            x = jnp.tanh(x @ w)
        return jnp.sum(x)
    return f, ws, (jnp.ones((2, 8)),)
"""


@pytest.mark.slow
def test_cli(tmp_path):
    target = tmp_path / "mymodel.py"
    target.write_text(_TARGET)
    out = tmp_path / "d.json"
    rc = cli.main(["diagnose", f"{target}:make", "--json", str(out), "--out", str(tmp_path)])
    assert rc == 1  # std 0.2*sqrt(8)/sqrt(8): sigma_w^2 = 0.32, vanishing over 12 layers
    blob = json.loads(out.read_text())
    assert blob["flags"][0]["kind"] == "vanishing" and blob["after_fixes"]["ok"]
    assert (tmp_path / "diagnose.png").exists()


# --------------------------------------------------------------------------- judged against theory
# A consistent per-layer trend over more layers than 6 depth scales (the trainable depth of
# Schoenholz et al. 2017) is flagged even when the total is under the 2 decades.

TREND_DEPTH = 30


def _biased_linen_problem(s2: float, sb2: float, depth: int = TREND_DEPTH):
    """The Linen tanh MLP with kernels N(0, s2/n) and biases N(0, sb2)."""
    ws = _weights(s2, depth)
    rng = np.random.default_rng(7)
    f, variables = linen_problem(ws)
    for i in range(depth):
        b = rng.normal(0, math.sqrt(sb2), WIDTH).astype(np.float32)
        variables["params"][f"Dense_{i}"]["bias"] = jnp.asarray(b)
    return f, variables


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_chaotic_tanh_at_depth_30_is_flagged_under_two_decades(framework):
    # sigma_w^2 = 4 at zero bias: chi1 = 1.363 (theory), +0.067 decades per layer, xi =
    # 1/ln chi1 = 3.2 layers, trainable depth 6 xi = 19 < 30. Measured at width 64: +0.058 per
    # layer (median; standard error 0.007), +1.7 decades in all, under the 2-decade rule; the
    # flag needs more than 6 measured depth scales, i.e. a median above 1.30/30 = 0.043.
    f, params = FRAMEWORKS[framework](_weights(4.0, TREND_DEPTH))
    d = flow.diagnose(f, params, X)
    total = d.layers[0].grad_in - d.layers[-1].grad_out
    assert total < 2.0  # the total alone would not be flagged
    assert [fl.kind for fl in d.flags] == ["exploding"], d.summary()
    t = d.trend
    assert t is not None and t.depth == TREND_DEPTH and t.consistent()
    assert t.prediction is not None and t.prediction.activation == "tanh"
    assert t.prediction.chi1 == pytest.approx(float(theory.chi1(4.0, 0.0, "tanh")), rel=0.02)
    assert t.xi * 6 < TREND_DEPTH < t.prediction.xi * 6 * 2  # measured and theory both beyond
    flag = d.flags[0]
    assert "χ₁ = 1.36" in flag.why and "ξ = 1/|ln χ₁| = 3.2" in flag.why
    assert f"depth {TREND_DEPTH} >" in flag.why and "6ξ = 19" in flag.why
    assert _prefix(d.flagged()) and d.flagged() < set(t.layers)  # from the input side
    assert "LeCun" in flag.fix.description and d.verify().ok


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["linen", "equinox"])
def test_ordered_tanh_at_depth_30_is_flagged_vanishing_with_theory(framework):
    # sigma_w^2 = 0.5: chi1 = 0.5, xi = 1.44 layers, 6 xi = 8.7 << 30.
    f, params = FRAMEWORKS[framework](_weights(0.5, TREND_DEPTH))
    d = flow.diagnose(f, params, X)
    assert [fl.kind for fl in d.flags] == ["vanishing"], d.summary()
    why = d.flags[0].why
    chi = float(re.search(r"χ₁ = ([0-9.]+),", why).group(1))
    xi = float(re.search(r"ξ = 1/\|ln χ₁\| = ([0-9.]+) layers", why).group(1))
    assert chi == pytest.approx(0.5, abs=0.01) and xi == pytest.approx(-1 / math.log(chi), rel=0.01)
    assert "ordered phase" in why and f"depth {TREND_DEPTH} >" in why
    assert d.trend.per_layer < 0 and d.trend.prediction.per_layer < 0


@pytest.mark.slow
def test_critical_tanh_with_biases_and_lecun_stay_unflagged_at_depth_30():
    crit = float(theory.critical_weight_variance("tanh", 0.05))  # 1.761
    f, params = _biased_linen_problem(crit, 0.05)
    d = flow.diagnose(f, params, X)
    assert d.ok, d.summary()
    assert d.trend.prediction.chi1 == pytest.approx(1.0, abs=0.03)
    assert abs(d.trend.total) < 0.5  # measured: -0.07 decades in all
    assert flow.diagnose(*_biased_linen_problem(1.0, 0.0), X).ok  # LeCun, zero bias


@pytest.mark.slow
def test_he_relu_stays_unflagged_at_depth_30():
    apply_fn, params = _relu_mlp(0, ginit.he_normal, depth=TREND_DEPTH)
    d = flow.diagnose(
        lambda p, x: jnp.sum(apply_fn(p, x)),
        params,
        X[:4],
        init=lambda k: _relu_mlp(k, ginit.he_normal, depth=TREND_DEPTH)[1],
        seeds=2,
    )
    assert d.ok, d.summary()
    assert d.trend.prediction.activation == "relu"
    assert d.trend.prediction.chi1 == pytest.approx(1.0, abs=0.1)


def _orthogonal_chain(gains: list[float], act=None):
    """Linear (or ``act``) layers ``s_l Q_l``: going back, ‖∂L/∂h‖ is multiplied exactly by s_l."""
    rng = np.random.default_rng(11)
    ws = [jnp.asarray(np.linalg.qr(rng.normal(size=(16, 16)))[0] * s, jnp.float32) for s in gains]
    ws.append(jnp.asarray(rng.normal(size=(16, 1)) / 4, jnp.float32))

    def f(ws, x):
        for w in ws[:-1]:
            x = x @ w if act is None else act(x @ w)
        return jnp.sum(x @ ws[-1])

    return f, ws


@pytest.mark.slow
@pytest.mark.parametrize(("total", "flagged"), [(1.25, False), (1.35, True), (-1.35, True)])
def test_the_threshold_is_six_depth_scales(total, flagged):
    # 20 orthogonal layers: the per-layer gain is exactly total/20 decades, so
    # 6 xi = 6/(2 ln 10 |total|/20) = 20.8 layers for |total| = 1.25 and 19.3 for 1.35: only the
    # second exceeds the depth (20). The 2-decade rule flags neither.
    f, ws = _orthogonal_chain([10 ** (total / 20)] * 20)
    d = flow.diagnose(f, ws, jnp.ones((2, 16)))
    assert [fl.kind for fl in d.flags] == (
        [("exploding" if total > 0 else "vanishing")] if flagged else []
    ), d.summary()
    assert d.trend.per_layer == pytest.approx(total / 20, abs=1e-5)
    # theory for a linear chain: chi1 = sigma_w^2 = s^2, the same depth scale as measured
    assert d.trend.prediction.xi == pytest.approx(d.trend.xi, rel=1e-3)
    if flagged:
        assert "linear" in d.flags[0].why and "depth 20 >" in d.flags[0].why
        assert flow.diagnose(f, ws, jnp.ones((2, 16)), depth_scales=7.0).ok  # 7 xi = 22.5 > 20


def test_one_big_layer_is_an_outlier_not_a_trend():
    # 19 layers at gain 1 and one at x30 (+1.48 decades, under the 2 decades): the median gain
    # is 0, so no trend; the outlier rule names that layer.
    gains = [1.0] * 20
    gains[10] = 30.0
    f, ws = _orthogonal_chain(gains)
    d = flow.diagnose(f, ws, jnp.ones((2, 16)))
    assert [(fl.kind, fl.layers) for fl in d.flags] == [("outlier", (10,))], d.summary()
    assert d.trend.per_layer == pytest.approx(0.0, abs=1e-5) and not d.trend.consistent()


def test_alternating_gains_are_not_a_trend():
    # 11 layers at x10^0.1 and 10 at x10^-0.1, interleaved: the median is +0.1 decades per layer
    # with zero spread, which over 21 layers would be 2.1 decades, beyond 6 xi = 13 layers; but
    # only 52% of the layers grow the gradient (the total is +0.1), so it is no trend.
    gains = [10 ** (0.1 if i % 2 == 0 else -0.1) for i in range(21)]
    f, ws = _orthogonal_chain(gains)
    d = flow.diagnose(f, ws, jnp.ones((2, 16)))
    assert d.ok, d.summary()
    assert d.trend.per_layer == pytest.approx(0.1, abs=1e-5)
    assert d.trend.agreement == pytest.approx(11 / 21) and not d.trend.consistent()


def test_a_trend_without_theory_is_judged_on_its_own():
    # sin layers (no mean-field theory in gradlab) at small inputs act like the identity:
    # orthogonal x0.85 gives -0.071 decades per layer, -1.4 over 20, 6 xi = 18.5 < 20.
    f, ws = _orthogonal_chain([0.85] * 20, act=jnp.sin)
    d = flow.diagnose(f, ws, jnp.ones((2, 16)) * 0.1)
    assert [lay.activation for lay in d.layers[:-1]] == ["other"] * 20
    assert [fl.kind for fl in d.flags] == ["vanishing"], d.summary()
    assert d.trend.prediction is None and "no mean-field theory" in d.flags[0].why
    assert d.flags[0].fix is None


def test_trend_in_the_report_dict():
    f, ws = _orthogonal_chain([10 ** (1.35 / 20)] * 20)
    blob = json.loads(json.dumps(flow.diagnose(f, ws, jnp.ones((2, 16))).to_dict()))
    assert blob["trend"]["prediction"]["activation"] == "linear"
    assert blob["trend"]["xi"] == pytest.approx(1 / (2 * math.log(10) * 1.35 / 20), rel=1e-3)
