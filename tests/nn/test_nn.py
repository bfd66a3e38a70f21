"""Tests for gradlab.nn: shapes, probes, reference implementations, Flax parity, grad checks.

Sizes are shared between tests so that JAX's compilation cache is reused (compiling dominates
the run time on small CPUs); the references are hand-written Python loops, independent of the
modules' scans.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

import gradlab
from gradlab import init, losses
from gradlab.nn import LSTM, MLP, RNN, LSTMCell, ResidualStack, RNNCell, pure

IN, OUT, WIDTH, DEPTH, BATCH = 3, 2, 4, 3, 5
HIDDEN, STEPS, SEQS = 4, 6, 2
F64 = jnp.float64


@pytest.fixture(autouse=True)
def _float64():
    """Every test runs with float64 enabled (scoped, restored afterwards), and the modules are
    built with float64 parameters: exact comparisons, and one set of compiled shapes."""
    with jax.enable_x64(True):
        yield


def normal(seed: int, shape: tuple[int, ...], dtype: Any = F64) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def _sub_jaxprs(eqn: Any) -> list[Any]:
    subs = []
    for param in eqn.params.values():
        for sub in param if isinstance(param, tuple | list) else (param,):
            if isinstance(sub, jax.extend.core.ClosedJaxpr):
                subs.append(sub.jaxpr)
            elif isinstance(sub, jax.extend.core.Jaxpr):
                subs.append(sub)
    return subs


def count_primitives(jaxpr: Any, name: str) -> int:
    """Counts equations of primitive ``name`` in a jaxpr, sub-jaxprs included."""
    return sum(
        (eqn.primitive.name == name) + sum(count_primitives(s, name) for s in _sub_jaxprs(eqn))
        for eqn in jaxpr.eqns
    )


def scan_bodies(jaxpr: Any) -> list[Any]:
    """The body jaxprs of the outermost scans in a jaxpr."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            out.append(eqn.params["jaxpr"].jaxpr)
        else:
            for sub in _sub_jaxprs(eqn):
                out.extend(scan_bodies(sub))
    return out


# --------------------------------------------------------------------------- references


def mlp_reference(model: MLP, x: jax.Array, deltas: jax.Array) -> jax.Array:
    """MLP forward as a Python loop; ``deltas[l]`` is added to ``h_l``."""
    act = model.activation
    h = act(x @ model.w_in[...] + model.b_in[...]) + deltas[0]
    for layer in range(model.depth):
        h = act(h @ model.w_hidden[layer] + model.b_hidden[layer]) + deltas[layer + 1]
    return h @ model.w_out[...] + model.b_out[...]


def residual_reference(model: ResidualStack, x: jax.Array, deltas: jax.Array) -> jax.Array:
    """Dense relu residual forward (no LayerNorm, alpha = 1) as a Python loop."""
    h = x @ model.in_kernel[...] + model.in_bias[...] + deltas[0]
    for layer in range(model.depth):
        f = jax.nn.relu(h @ model.kernel1[layer] + model.bias1[layer])
        h = h + f @ model.kernel2[layer] + model.bias2[layer] + deltas[layer + 1]
    return h @ model.out_kernel[...] + model.out_bias[...]


def lstm_reference(
    lstm: LSTM, xs: jax.Array, deltas: jax.Array | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Slide 7 written literally: separate W_c, W_u, W_f, W_o acting on concatenations.

    ``variant="standard"`` feeds ``[a, x]`` to every gate; ``"slide"`` feeds ``[C, x]`` to the
    forget and output gates. ``deltas[:, t]`` is added to ``a(t)``.
    """
    h = lstm.hidden_features
    kernel, rec, bias = lstm.kernel[...], lstm.recurrent_kernel[...], lstm.bias[...]
    cols = lambda i: slice(i * h, (i + 1) * h)
    # packed order: update, forget, candidate, output
    w = {g: jnp.concatenate([rec[:, cols(i)], kernel[:, cols(i)]]) for i, g in enumerate("ufco")}
    b = {g: bias[cols(i)] for i, g in enumerate("ufco")}
    c = a = jnp.zeros((xs.shape[0], h), xs.dtype)
    outs, gates = [], {"update": [], "forget": [], "output": [], "candidate": []}
    for t in range(xs.shape[1]):
        ax = jnp.concatenate([a, xs[:, t]], -1)
        sx = jnp.concatenate([c, xs[:, t]], -1) if lstm.variant == "slide" else ax
        cand = jnp.tanh(ax @ w["c"] + b["c"])
        g_u = jax.nn.sigmoid(ax @ w["u"] + b["u"])
        g_f = jax.nn.sigmoid(sx @ w["f"] + b["f"])
        g_o = jax.nn.sigmoid(sx @ w["o"] + b["o"])
        c = g_u * cand + g_f * c
        a = g_o * jnp.tanh(c)
        if deltas is not None:
            a = a + deltas[:, t]
        outs.append(a)
        for name, g in zip(gates, (g_u, g_f, g_o, cand), strict=True):
            gates[name].append(g)
    return jnp.stack(outs, 1), {k: jnp.stack(v, 1) for k, v in gates.items()}


def rnn_reference(rnn: RNN, xs: jax.Array, deltas: jax.Array) -> jax.Array:
    a = jnp.zeros((xs.shape[0], rnn.hidden_features), xs.dtype)
    outs = []
    for t in range(xs.shape[1]):
        z = xs[:, t] @ rnn.kernel[...] + a @ rnn.recurrent_kernel[...] + rnn.bias[...]
        a = rnn.activation(z) + deltas[:, t]
        outs.append(a)
    return jnp.stack(outs, 1)


# --------------------------------------------------------------------------- MLP


@pytest.mark.slow
def test_mlp_shapes_hiddens_and_reference():
    model = MLP(IN, OUT, width=WIDTH, depth=DEPTH, param_dtype=F64, rngs=nnx.Rngs(0))
    chex.assert_shape(model.w_in[...], (IN, WIDTH))
    chex.assert_shape(model.w_hidden[...], (DEPTH, WIDTH, WIDTH))
    chex.assert_shape(model.b_hidden[...], (DEPTH, WIDTH))
    chex.assert_shape(model.w_out[...], (WIDTH, OUT))
    x = normal(1, (BATCH, IN))
    y, hiddens = model.with_hiddens(x)
    chex.assert_shape(y, (BATCH, OUT))
    chex.assert_shape(hiddens, (DEPTH + 1, BATCH, WIDTH))
    chex.assert_trees_all_close(model(x), y)
    zeros = jnp.zeros((DEPTH + 1, BATCH, WIDTH))
    chex.assert_trees_all_close(y, mlp_reference(model, x, zeros), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(
        hiddens[1], jnp.tanh(hiddens[0] @ model.w_hidden[0] + model.b_hidden[0]), rtol=1e-5
    )


def test_mlp_depth_zero_and_no_bias():
    model = MLP(IN, OUT, width=WIDTH, depth=0, use_bias=False, param_dtype=F64, rngs=nnx.Rngs(0))
    assert model.b_in is None and model.b_hidden is None and model.b_out is None
    chex.assert_shape(model.w_hidden[...], (0, WIDTH, WIDTH))
    x = normal(1, (BATCH, IN))
    y, hiddens = model.with_hiddens(x)
    chex.assert_shape(hiddens, (1, BATCH, WIDTH))
    chex.assert_trees_all_close(y, jnp.tanh(x @ model.w_in[...]) @ model.w_out[...], rtol=1e-5)


@pytest.mark.slow
def test_mlp_kernel_init_sees_per_layer_shapes():
    seen: list[tuple[int, ...]] = []

    def spy(key: jax.Array, shape: Any, dtype: Any = F64) -> jax.Array:
        seen.append(tuple(shape))
        return init.orthogonal()(key, shape, dtype)

    model = MLP(
        IN, OUT, width=WIDTH, depth=DEPTH, kernel_init=spy, param_dtype=F64, rngs=nnx.Rngs(0)
    )
    assert set(seen) == {(IN, WIDTH), (WIDTH, WIDTH), (WIDTH, OUT)}
    for w in np.asarray(model.w_hidden[...]):  # every stacked layer orthogonal on its own
        np.testing.assert_allclose(w.T @ w, np.eye(WIDTH), atol=1e-5)
    assert not np.allclose(model.w_hidden[0], model.w_hidden[1])


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["tanh", "relu", "linear", "sigmoid", "gelu", jax.nn.silu])
def test_mlp_activations(activation):
    model = MLP(
        IN, OUT, width=WIDTH, depth=DEPTH, activation=activation, param_dtype=F64, rngs=nnx.Rngs(0)
    )
    fn = activation if callable(activation) else gradlab.nn.ACTIVATIONS[activation]
    x = normal(1, (BATCH, IN))
    _, hiddens = model.with_hiddens(x)
    chex.assert_trees_all_close(hiddens[0], fn(x @ model.w_in[...] + model.b_in[...]), rtol=1e-5)


@pytest.mark.slow
def test_mlp_probe_gradients_are_dL_dh():
    model = MLP(IN, OUT, width=WIDTH, depth=DEPTH, param_dtype=F64, rngs=nnx.Rngs(0))
    x, r = normal(1, (BATCH, IN), F64), normal(2, (BATCH, OUT), F64)
    zeros = jnp.zeros((DEPTH + 1, BATCH, WIDTH), F64)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(model(x, probes=p) * r)))(zeros)
    expected = jax.jit(jax.grad(lambda d: jnp.sum(mlp_reference(model, x, d) * r)))(zeros)
    chex.assert_trees_all_close(grads, expected, rtol=1e-12, atol=1e-14)
    assert float(jnp.min(jnp.abs(grads[0]))) > 0  # nonzero at every layer
    # probes shift the hidden states they are added to
    probes = normal(3, zeros.shape, F64)
    _, hiddens = model.with_hiddens(x, probes=probes)
    _, plain = model.with_hiddens(x)
    chex.assert_trees_all_close(hiddens[0], plain[0] + probes[0], rtol=1e-12)


@pytest.mark.slow
def test_mlp_extra_batch_axes_and_single_example():
    model = MLP(IN, OUT, width=WIDTH, depth=DEPTH, param_dtype=F64, rngs=nnx.Rngs(0))
    x = normal(1, (2, BATCH, IN))
    chex.assert_shape(model(x), (2, BATCH, OUT))
    chex.assert_trees_all_close(model(x[0, 1]), model(x)[0, 1], rtol=1e-5, atol=1e-6)


def test_mlp_bad_inputs_raise():
    model = MLP(IN, OUT, width=WIDTH, depth=DEPTH, param_dtype=F64, rngs=nnx.Rngs(0))
    with pytest.raises(gradlab.InputError, match=r"shape \(\.\.\., 3\)"):
        model(jnp.ones((BATCH, 2)))
    with pytest.raises(gradlab.InputError, match="probes must have shape"):
        model(jnp.ones((BATCH, IN)), probes=jnp.zeros((DEPTH, BATCH, WIDTH)))
    with pytest.raises(gradlab.InputError, match="Unknown activation 'swish'"):
        MLP(
            IN, OUT, width=WIDTH, depth=DEPTH, activation="swish", param_dtype=F64, rngs=nnx.Rngs(0)
        )
    with pytest.raises(gradlab.InputError, match="depth >= 0"):
        MLP(IN, OUT, width=WIDTH, depth=-1, param_dtype=F64, rngs=nnx.Rngs(0))
    with pytest.raises(gradlab.InputError, match="or a callable, got int"):
        gradlab.nn.get_activation(3)  # type: ignore[arg-type]


@pytest.mark.slow
def test_dtypes():
    model = MLP(IN, OUT, width=WIDTH, depth=DEPTH, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    chex.assert_type(jax.tree.leaves(nnx.state(model, nnx.Param)), jnp.float32)
    x32 = normal(1, (BATCH, IN), jnp.float32)
    chex.assert_type(model(x32), jnp.float32)
    # dtype=None promotes: float32 inputs with float64 parameters compute in float64
    model = MLP(IN, OUT, width=WIDTH, depth=DEPTH, param_dtype=F64, rngs=nnx.Rngs(0))
    chex.assert_type(model(x32), F64)
    # a given dtype casts inputs and parameters to it
    model.dtype = jnp.float32
    y, hiddens = model.with_hiddens(normal(1, (BATCH, IN)))
    chex.assert_type([y, hiddens], jnp.float32)
    lstm = LSTM(IN, HIDDEN, param_dtype=F64, dtype=jnp.float32, rngs=nnx.Rngs(0))
    outputs, (c, a) = lstm(normal(1, (SEQS, STEPS, IN)))
    chex.assert_type([outputs, c, a], jnp.float32)
    cell = LSTMCell(IN, HIDDEN, param_dtype=F64, dtype=jnp.float32, rngs=nnx.Rngs(0))
    carry = cell.initialize_carry((SEQS, IN))
    chex.assert_type(jax.tree.leaves((carry, cell(carry, normal(1, (SEQS, IN))))), jnp.float32)


# --------------------------------------------------------------------------- ResidualStack


@pytest.mark.slow
def test_residual_dense_shapes_and_probe_gradients():
    model = ResidualStack(IN, OUT, width=WIDTH, depth=DEPTH, param_dtype=F64, rngs=nnx.Rngs(0))
    chex.assert_shape(model.kernel1[...], (DEPTH, WIDTH, WIDTH))
    chex.assert_shape(model.bias2[...], (DEPTH, WIDTH))
    x, r = normal(1, (BATCH, IN), F64), normal(2, (BATCH, OUT), F64)
    zeros = jnp.zeros((DEPTH + 1, BATCH, WIDTH), F64)
    y, hiddens = model.with_hiddens(x)
    chex.assert_shape(y, (BATCH, OUT))
    chex.assert_shape(hiddens, (DEPTH + 1, BATCH, WIDTH))
    chex.assert_trees_all_close(y, residual_reference(model, x, zeros), rtol=1e-12)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(model(x, probes=p) * r)))(zeros)
    expected = jax.jit(jax.grad(lambda d: jnp.sum(residual_reference(model, x, d) * r)))(zeros)
    chex.assert_trees_all_close(grads, expected, rtol=1e-12, atol=1e-14)
    # L = sum(r * (h_L W_out + b)), so dL/dh_L = r W_out^T
    chex.assert_trees_all_close(grads[-1], r @ model.out_kernel[...].T, rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("block", "options"),
    [("dense", {"layer_norm": True, "branch_scale": 0.5}), ("dense", {"branch_scale": "rezero"})],
)
def test_residual_scan_equals_unroll(block, options):
    kwargs = dict(width=WIDTH, depth=DEPTH, block=block, param_dtype=F64, **options)
    scanned = ResidualStack(IN, OUT, rngs=nnx.Rngs(0), **kwargs)
    unrolled = ResidualStack(IN, OUT, rngs=nnx.Rngs(0), unroll=True, **kwargs)
    if options.get("branch_scale") == "rezero":
        for m in (scanned, unrolled):
            m.alpha[...] = jnp.array([0.3, -0.5, 0.7])
    x = normal(1, (BATCH, IN))
    h_shape = (BATCH, WIDTH)
    probes = normal(2, (DEPTH + 1, *h_shape), F64)
    y1, h1 = scanned.with_hiddens(x, probes=probes)
    y2, h2 = unrolled.with_hiddens(x, probes=probes)
    chex.assert_shape(h1, (DEPTH + 1, *h_shape))
    chex.assert_trees_all_close((y1, h1), (y2, h2), rtol=1e-12, atol=1e-12)
    loss = lambda m, p: jnp.sum(m(x, probes=p) ** 2)
    g1 = jax.jit(jax.grad(lambda p: loss(scanned, p)))(jnp.zeros_like(probes))
    g2 = jax.jit(jax.grad(lambda p: loss(unrolled, p)))(jnp.zeros_like(probes))
    chex.assert_trees_all_close(g1, g2, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_residual_conv_shapes_and_pooling():
    model = ResidualStack(
        IN, OUT, width=WIDTH, depth=DEPTH, block="conv", param_dtype=F64, rngs=nnx.Rngs(0)
    )
    chex.assert_shape(model.in_kernel[...], (3, 3, IN, WIDTH))
    chex.assert_shape(model.kernel1[...], (DEPTH, 3, 3, WIDTH, WIDTH))
    x = normal(1, (2, 5, 5, IN))
    y, hiddens = model.with_hiddens(x)
    chex.assert_shape(y, (2, OUT))
    chex.assert_shape(hiddens, (DEPTH + 1, 2, 5, 5, WIDTH))
    expected = jnp.mean(hiddens[-1], axis=(1, 2)) @ model.out_kernel[...] + model.out_bias[...]
    chex.assert_trees_all_close(y, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("block", ["dense", "conv"])
def test_rezero_is_identity_at_init(block):
    model = ResidualStack(
        IN,
        OUT,
        width=WIDTH,
        depth=DEPTH,
        block=block,
        branch_scale="rezero",
        param_dtype=F64,
        rngs=nnx.Rngs(0),
    )
    chex.assert_trees_all_equal(model.alpha[...], jnp.zeros(DEPTH))
    x = normal(1, (2, 5, 5, IN) if block == "conv" else (BATCH, IN))
    _, hiddens = model.with_hiddens(x)
    for layer in range(1, DEPTH + 1):
        chex.assert_trees_all_equal(hiddens[layer], hiddens[0])
    model.alpha[...] = jnp.full(DEPTH, 0.5)  # a nonzero alpha switches the branches on
    _, hiddens = model.with_hiddens(x)
    assert not np.allclose(hiddens[-1], hiddens[0])


@pytest.mark.slow
def test_fixup_and_fixed_branch_scale():
    plain = ResidualStack(IN, OUT, width=WIDTH, depth=DEPTH, param_dtype=F64, rngs=nnx.Rngs(0))
    fixup = ResidualStack(
        IN, OUT, width=WIDTH, depth=DEPTH, branch_scale="fixup", param_dtype=F64, rngs=nnx.Rngs(0)
    )
    chex.assert_trees_all_close(fixup.kernel2[...], plain.kernel2[...] * DEPTH**-0.5, rtol=1e-6)
    chex.assert_trees_all_equal(fixup.kernel1[...], plain.kernel1[...])
    half = ResidualStack(
        IN, OUT, width=WIDTH, depth=DEPTH, branch_scale=0.5, param_dtype=F64, rngs=nnx.Rngs(0)
    )
    x = normal(1, (BATCH, IN))
    _, hp = plain.with_hiddens(x)
    _, hh = half.with_hiddens(x)
    chex.assert_trees_all_close(hh[1] - hh[0], 0.5 * (hp[1] - hp[0]), rtol=1e-5, atol=1e-6)


def test_layer_norm_parameters_and_scale_invariance():
    model = ResidualStack(
        IN, OUT, width=WIDTH, depth=DEPTH, layer_norm=True, param_dtype=F64, rngs=nnx.Rngs(0)
    )
    chex.assert_trees_all_equal(model.ln_scale[...], jnp.ones((DEPTH, WIDTH)))
    chex.assert_trees_all_equal(model.ln_bias[...], jnp.zeros((DEPTH, WIDTH)))
    # h_0 = x W_in (zero bias at init) scales with x; the pre-normalised branch does not.
    x = normal(1, (BATCH, IN))
    _, h = model.with_hiddens(x)
    _, h10 = model.with_hiddens(10 * x)
    chex.assert_trees_all_close(h10[0], 10 * h[0], rtol=1e-5)
    chex.assert_trees_all_close(h10[1] - h10[0], h[1] - h[0], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_residual_scan_program_size_does_not_grow_with_depth():
    def n_eqns(depth: int, unroll: bool) -> int:
        model = ResidualStack(
            IN, OUT, width=WIDTH, depth=depth, unroll=unroll, param_dtype=F64, rngs=nnx.Rngs(0)
        )
        apply_fn, params = pure(model)
        return len(jax.make_jaxpr(apply_fn)(params, jnp.ones((BATCH, IN))).jaxpr.eqns)

    assert n_eqns(DEPTH, unroll=False) == n_eqns(40, unroll=False)
    assert n_eqns(40, unroll=True) > n_eqns(DEPTH, unroll=True) + 100


@pytest.mark.slow
def test_residual_bad_inputs_raise():
    kwargs = dict(width=WIDTH, depth=DEPTH, param_dtype=F64, rngs=nnx.Rngs(0))
    with pytest.raises(gradlab.InputError, match="block must be 'dense' or 'conv'"):
        ResidualStack(IN, OUT, block="attention", **kwargs)
    with pytest.raises(gradlab.InputError, match="branch_scale"):
        ResidualStack(IN, OUT, branch_scale="skipinit", **kwargs)
    with pytest.raises(gradlab.InputError, match="branch_scale"):
        ResidualStack(IN, OUT, branch_scale=float("nan"), **kwargs)
    conv = ResidualStack(IN, OUT, block="conv", **kwargs)
    with pytest.raises(gradlab.InputError, match="NHWC"):
        conv(jnp.ones((BATCH, IN)))
    dense = ResidualStack(IN, OUT, **kwargs)
    with pytest.raises(gradlab.InputError, match="probes must have shape"):
        dense(jnp.ones((BATCH, IN)), probes=jnp.zeros((DEPTH, BATCH, WIDTH)))


# --------------------------------------------------------------------------- LSTM


def flax_cell_from(lstm: LSTM) -> nnx.LSTMCell:
    """A flax.nnx.LSTMCell holding the same weights (packed order i, f, g, o)."""
    h = lstm.hidden_features
    cell = nnx.LSTMCell(
        lstm.in_features, h, dtype=lstm.param_dtype, param_dtype=lstm.param_dtype, rngs=nnx.Rngs(1)
    )
    kernel, rec, bias = lstm.kernel[...], lstm.recurrent_kernel[...], lstm.bias[...]
    names = [("ii", "hi"), ("if_", "hf"), ("ig", "hg"), ("io", "ho")]
    for g, (i_name, h_name) in enumerate(names):
        cols = slice(g * h, (g + 1) * h)
        getattr(cell, i_name).kernel[...] = kernel[:, cols]
        getattr(cell, h_name).kernel[...] = rec[:, cols]
        getattr(cell, h_name).bias[...] = bias[cols]
    return cell


@pytest.mark.slow
def test_standard_lstm_matches_flax_lstm_cell():
    lstm = LSTM(IN, HIDDEN, param_dtype=F64, rngs=nnx.Rngs(0))
    lstm.bias[...] = normal(9, (4 * HIDDEN,))  # nonzero biases for every gate
    cell = flax_cell_from(lstm)
    xs = normal(1, (SEQS, STEPS, IN))
    c0, a0 = normal(2, (SEQS, HIDDEN)), normal(3, (SEQS, HIDDEN))
    ours, (c_t, a_t) = lstm(xs, initial_state=(c0, a0))
    (c_f, a_f), theirs = nnx.RNN(cell, return_carry=True)(xs, initial_carry=(c0, a0))
    # float64 throughout: equal up to the rounding of a different summation order
    chex.assert_trees_all_close((ours, c_t, a_t), (theirs, c_f, a_f), rtol=1e-13, atol=1e-13)
    assert float(jnp.max(jnp.abs(ours))) > 0.1  # not trivially zero
    # the one-step cell against flax's cell, one step, and run by flax's own nnx.RNN
    ours_cell = LSTMCell(IN, HIDDEN, param_dtype=F64, rngs=nnx.Rngs(0))
    ours_cell.bias[...] = lstm.bias[...]
    chex.assert_trees_all_close(
        ours_cell((c0, a0), xs[:, 0]), cell((c0, a0), xs[:, 0]), rtol=1e-13, atol=1e-13
    )
    chex.assert_trees_all_close(nnx.RNN(ours_cell)(xs), lstm(xs)[0], rtol=1e-13, atol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["standard", "slide"])
def test_lstm_cell_steps_equal_the_scanned_lstm(variant):
    lstm = LSTM(IN, HIDDEN, variant=variant, param_dtype=F64, rngs=nnx.Rngs(0))
    cell = LSTMCell(IN, HIDDEN, variant=variant, param_dtype=F64, rngs=nnx.Rngs(0))
    # the same initialisation from the same rngs, and the same parameter names
    chex.assert_trees_all_equal(nnx.state(cell, nnx.Param), nnx.state(lstm, nnx.Param))
    bias = normal(9, (4 * HIDDEN,))
    lstm.bias[...], cell.bias[...] = bias, bias
    xs = normal(1, (SEQS, STEPS, IN))
    carry = (normal(2, (SEQS, HIDDEN)), normal(3, (SEQS, HIDDEN)))
    outputs, final, gates = lstm.with_gates(xs, initial_state=carry)
    call, with_gates = jax.jit(cell.__call__), jax.jit(cell.with_gates)
    for t in range(STEPS):
        new_carry, a = call(carry, xs[:, t])
        carry, a_g, step_gates = with_gates(carry, xs[:, t])
        chex.assert_trees_all_equal((new_carry, a), (carry, a_g))
        step = (a, jax.tree.map(lambda g, t=t: g[:, t], gates))
        chex.assert_trees_all_close((a, step_gates), step, rtol=1e-13, atol=1e-13)
    chex.assert_trees_all_close(carry, final, rtol=1e-13, atol=1e-13)
    assert float(jnp.max(jnp.abs(outputs[:, -1]))) > 0.1  # not trivially zero
    # one step takes any leading axes, and zeros are the default carry
    c0, a0 = cell.initialize_carry((SEQS, IN))
    chex.assert_trees_all_equal((c0, a0), (jnp.zeros((SEQS, HIDDEN)),) * 2)
    (c1, _), _ = cell((c0, a0), xs[:, 0])
    chex.assert_trees_all_close(c1, lstm(xs[:, :1])[1][0], rtol=1e-13, atol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["standard", "slide"])
def test_lstm_matches_slide_7_equations_and_probes(variant):
    lstm = LSTM(IN, HIDDEN, variant=variant, param_dtype=F64, rngs=nnx.Rngs(0))
    lstm.bias[...] = normal(9, (4 * HIDDEN,), F64)
    xs, r = normal(1, (SEQS, STEPS, IN), F64), normal(2, (SEQS, STEPS, HIDDEN), F64)
    ours, (_, a_t), gates = lstm.with_gates(xs)
    ref, ref_gates = jax.jit(lambda xs: lstm_reference(lstm, xs))(xs)
    chex.assert_trees_all_close(ours, ref, rtol=1e-12, atol=1e-12)
    chex.assert_trees_all_close(gates, ref_gates, rtol=1e-12, atol=1e-12)
    chex.assert_trees_all_close(a_t, ref[:, -1], rtol=1e-12)
    # gradient with respect to zero probes = dL/da(t) of the hand-written loop
    zeros = jnp.zeros((SEQS, STEPS, HIDDEN), F64)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(lstm(xs, probes=p)[0] * r)))(zeros)
    expected = jax.jit(jax.grad(lambda d: jnp.sum(lstm_reference(lstm, xs, d)[0] * r)))(zeros)
    chex.assert_trees_all_close(grads, expected, rtol=1e-11, atol=1e-13)
    chex.assert_trees_all_close(grads[:, -1], r[:, -1], rtol=1e-12)


@pytest.mark.slow
def test_lstm_variants_differ():
    xs = normal(1, (SEQS, STEPS, IN))
    standard = LSTM(IN, HIDDEN, variant="standard", param_dtype=F64, rngs=nnx.Rngs(0))
    slide = LSTM(IN, HIDDEN, variant="slide", param_dtype=F64, rngs=nnx.Rngs(0))
    chex.assert_trees_all_equal(nnx.state(standard), nnx.state(slide))  # same weights
    assert not np.allclose(standard(xs)[0], slide(xs)[0], atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["standard", "slide"])
def test_lstm_gates_shapes_ranges_and_forget_bias(variant):
    lstm = LSTM(IN, HIDDEN, variant=variant, forget_bias=1.0, param_dtype=F64, rngs=nnx.Rngs(0))
    chex.assert_trees_all_equal(lstm.bias[HIDDEN : 2 * HIDDEN], jnp.ones(HIDDEN))
    chex.assert_trees_all_equal(lstm.bias[:HIDDEN], jnp.zeros(HIDDEN))
    xs = normal(1, (SEQS, STEPS, IN))
    outputs, (c_t, a_t), gates = lstm.with_gates(xs)
    chex.assert_shape(outputs, (SEQS, STEPS, HIDDEN))
    chex.assert_shape([c_t, a_t], (SEQS, HIDDEN))
    assert set(gates) == set(gradlab.nn.GATES)
    chex.assert_shape(list(gates.values()), (SEQS, STEPS, HIDDEN))
    for name in ("update", "forget", "output"):
        assert bool(jnp.all((gates[name] > 0) & (gates[name] < 1)))
    assert bool(jnp.all(jnp.abs(gates["candidate"]) < 1))
    chex.assert_trees_all_close(outputs[:, -1], a_t)
    # zero input and zero state: the forget gate is sigmoid(forget_bias) at t = 0
    _, _, g0 = lstm.with_gates(jnp.zeros((SEQS, STEPS, IN)))
    chex.assert_trees_all_close(g0["forget"][:, 0], jnp.full((SEQS, HIDDEN), jax.nn.sigmoid(1.0)))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["standard", "slide"])
def test_lstm_hoisted_and_per_step_input_agree(variant):
    xs, probes = normal(1, (SEQS, STEPS, IN)), normal(2, (SEQS, STEPS, HIDDEN))
    kw = dict(variant=variant, param_dtype=F64)
    hoisted = LSTM(IN, HIDDEN, hoist_input=True, rngs=nnx.Rngs(0), **kw)
    per_step = LSTM(IN, HIDDEN, hoist_input=False, rngs=nnx.Rngs(0), **kw)
    chex.assert_trees_all_close(
        hoisted.with_gates(xs, probes=probes),
        per_step.with_gates(xs, probes=probes),
        rtol=1e-13,
        atol=1e-14,
    )
    for hoist in (True, False):
        lstm = LSTM(IN, HIDDEN, hoist_input=hoist, rngs=nnx.Rngs(0), **kw)
        apply_fn, params = pure(lstm)
        jaxpr = jax.make_jaxpr(apply_fn)(params, xs).jaxpr
        (body,) = scan_bodies(jaxpr)
        in_body = count_primitives(body, "dot_general")
        # per step: two (H, 2H) recurrent products, plus two (in, 2H) input ones if not hoisted
        assert in_body == (2 if hoist else 4)
        # hoisted: one matmul outside the scan for the input of every step
        assert count_primitives(jaxpr, "dot_general") == in_body + (1 if hoist else 0)


def test_rnn_hoisted_and_per_step_input_agree():
    xs = normal(1, (SEQS, STEPS, IN))
    a = RNN(IN, HIDDEN, hoist_input=True, param_dtype=F64, rngs=nnx.Rngs(0))(xs)
    b = RNN(IN, HIDDEN, hoist_input=False, param_dtype=F64, rngs=nnx.Rngs(0))(xs)
    chex.assert_trees_all_close(a, b, rtol=1e-13, atol=1e-14)


def test_lstm_bad_inputs_raise():
    with pytest.raises(gradlab.InputError, match="variant must be 'standard'"):
        LSTM(IN, HIDDEN, variant="peephole", param_dtype=F64, rngs=nnx.Rngs(0))
    lstm = LSTM(IN, HIDDEN, param_dtype=F64, rngs=nnx.Rngs(0))
    with pytest.raises(gradlab.InputError, match=r"\(batch, T, 3\)"):
        lstm(jnp.ones((STEPS, IN)))
    bad_state = (jnp.zeros((SEQS, HIDDEN)), jnp.zeros((SEQS + 1, HIDDEN)))
    with pytest.raises(gradlab.InputError, match=r"initial_state\[1\]"):
        lstm(jnp.ones((SEQS, STEPS, IN)), initial_state=bad_state)
    with pytest.raises(gradlab.InputError, match="probes"):
        lstm(jnp.ones((SEQS, STEPS, IN)), probes=jnp.zeros((STEPS, SEQS, HIDDEN)))


# --------------------------------------------------------------------------- RNN


@pytest.mark.slow
def test_rnn_matches_flax_simple_cell_and_reference():
    rnn = RNN(IN, HIDDEN, param_dtype=F64, rngs=nnx.Rngs(0))
    rnn.bias[...] = normal(5, (HIDDEN,), F64)
    cell = nnx.SimpleCell(IN, HIDDEN, dtype=F64, param_dtype=F64, rngs=nnx.Rngs(1))
    cell.dense_i.kernel[...] = rnn.kernel[...]
    cell.dense_i.bias[...] = rnn.bias[...]
    cell.dense_h.kernel[...] = rnn.recurrent_kernel[...]
    xs, a0 = normal(1, (SEQS, STEPS, IN), F64), normal(2, (SEQS, HIDDEN), F64)
    ours, a_t = rnn(xs, initial_state=a0)
    a_f, theirs = nnx.RNN(cell, return_carry=True)(xs, initial_carry=a0)
    chex.assert_trees_all_close((ours, a_t), (theirs, a_f), rtol=1e-13, atol=1e-13)
    chex.assert_shape(ours, (SEQS, STEPS, HIDDEN))
    # probes: dL/da(t) of the hand-written loop
    r = normal(3, (SEQS, STEPS, HIDDEN), F64)
    zeros = jnp.zeros((SEQS, STEPS, HIDDEN), F64)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(rnn(xs, probes=p)[0] * r)))(zeros)
    expected = jax.jit(jax.grad(lambda d: jnp.sum(rnn_reference(rnn, xs, d) * r)))(zeros)
    chex.assert_trees_all_close(grads, expected, rtol=1e-11, atol=1e-13)


@pytest.mark.slow
def test_rnn_cell_steps_equal_the_scanned_rnn_and_flax_simple_cell():
    rnn = RNN(IN, HIDDEN, activation="gelu", param_dtype=F64, rngs=nnx.Rngs(0))
    cell = RNNCell(IN, HIDDEN, activation="gelu", param_dtype=F64, rngs=nnx.Rngs(0))
    chex.assert_trees_all_equal(nnx.state(cell, nnx.Param), nnx.state(rnn, nnx.Param))
    bias = normal(5, (HIDDEN,))
    rnn.bias[...], cell.bias[...] = bias, bias
    xs, a = normal(1, (SEQS, STEPS, IN)), normal(2, (SEQS, HIDDEN))
    outputs, a_t = rnn(xs, initial_state=a)
    step = jax.jit(cell.__call__)
    for t in range(STEPS):
        a, y = step(a, xs[:, t])
        chex.assert_trees_all_equal(a, y)
        chex.assert_trees_all_close(y, outputs[:, t], rtol=1e-13, atol=1e-13)
    chex.assert_trees_all_close(a, a_t, rtol=1e-13, atol=1e-13)
    chex.assert_trees_all_equal(cell.initialize_carry((SEQS, IN)), jnp.zeros((SEQS, HIDDEN)))
    flax_cell = nnx.SimpleCell(
        IN, HIDDEN, activation_fn=cell.activation, dtype=F64, param_dtype=F64, rngs=nnx.Rngs(1)
    )
    flax_cell.dense_i.kernel[...] = cell.kernel[...]
    flax_cell.dense_i.bias[...] = cell.bias[...]
    flax_cell.dense_h.kernel[...] = cell.recurrent_kernel[...]
    chex.assert_trees_all_close(
        cell(a_t, xs[:, 0]), flax_cell(a_t, xs[:, 0]), rtol=1e-13, atol=1e-13
    )


def test_cells_bad_inputs_raise():
    lstm_cell = LSTMCell(IN, HIDDEN, param_dtype=F64, rngs=nnx.Rngs(0))
    carry = lstm_cell.initialize_carry((SEQS, IN))
    with pytest.raises(gradlab.InputError, match=r"x must have shape \(\.\.\., 3\)"):
        lstm_cell(carry, jnp.ones((SEQS, IN + 1)))
    with pytest.raises(gradlab.InputError, match=r"carry\[1\] \(a\) must have shape \(2, 4\)"):
        lstm_cell((carry[0], jnp.zeros((SEQS, HIDDEN + 1))), jnp.ones((SEQS, IN)))
    with pytest.raises(gradlab.InputError, match="variant must be 'standard'"):
        LSTMCell(IN, HIDDEN, variant="peephole", rngs=nnx.Rngs(0))
    rnn_cell = RNNCell(IN, HIDDEN, param_dtype=F64, rngs=nnx.Rngs(0))
    with pytest.raises(gradlab.InputError, match=r"carry \(a\) must have shape \(2, 4\)"):
        rnn_cell(jnp.zeros((HIDDEN,)), jnp.ones((SEQS, IN)))
    with pytest.raises(gradlab.InputError, match="hidden_features=0"):
        RNNCell(IN, 0, rngs=nnx.Rngs(0))
    with pytest.raises(gradlab.InputError, match="in_features=0"):
        LSTM(0, HIDDEN, rngs=nnx.Rngs(0))


def test_rnn_bad_inputs_raise():
    rnn = RNN(IN, HIDDEN, param_dtype=F64, rngs=nnx.Rngs(0))
    with pytest.raises(gradlab.InputError, match=r"\(batch, T, 3\)"):
        rnn(jnp.ones((SEQS, STEPS, IN + 1)))
    with pytest.raises(gradlab.InputError, match="initial_state"):
        rnn(jnp.ones((SEQS, STEPS, IN)), initial_state=jnp.zeros((HIDDEN,)))
    with pytest.raises(gradlab.InputError, match="Unknown activation"):
        RNN(IN, HIDDEN, activation="softmax", param_dtype=F64, rngs=nnx.Rngs(0))


# --------------------------------------------------------------------------- pure


@pytest.mark.slow
def test_pure_works_under_plain_jit_vmap_scan_and_grad():
    model = MLP(IN, OUT, width=WIDTH, depth=DEPTH, param_dtype=F64, rngs=nnx.Rngs(0))
    apply_fn, params = pure(model)
    assert isinstance(params, nnx.State)
    x = normal(1, (BATCH, IN))
    chex.assert_trees_all_close(jax.jit(apply_fn)(params, x), model(x), rtol=1e-5, atol=1e-6)
    per_example = jax.vmap(apply_fn, in_axes=(None, 0))(params, x)
    chex.assert_trees_all_close(per_example, model(x), rtol=1e-5, atol=1e-6)
    ensemble = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
    ys = jax.jit(jax.vmap(apply_fn, in_axes=(0, None)))(ensemble, x)
    chex.assert_shape(ys, (2, BATCH, OUT))
    chex.assert_trees_all_close(ys[0], model(x), rtol=1e-5, atol=1e-6)
    with_hiddens, _ = pure(model, method="with_hiddens")
    grads = jax.jit(jax.grad(lambda p: jnp.sum(with_hiddens(p, x)[1])))(params)
    chex.assert_trees_all_equal_structs(grads, params)

    def outer(total: jax.Array, _: None) -> tuple[jax.Array, None]:
        return total + jnp.sum(apply_fn(params, x)), None

    total, _ = jax.lax.scan(outer, jnp.zeros(()), None, length=3)
    np.testing.assert_allclose(total, 3 * float(jnp.sum(model(x))), rtol=1e-5)


def test_pure_calls_the_named_method():
    lstm = LSTM(IN, HIDDEN, param_dtype=F64, rngs=nnx.Rngs(0))
    xs = normal(1, (SEQS, STEPS, IN))
    with_gates, params = pure(lstm, method="with_gates")
    chex.assert_trees_all_close(with_gates(params, xs), lstm.with_gates(xs), rtol=1e-13)
    outputs, carry = pure(lstm)[0](params, xs)  # __call__: always (outputs, carry)
    chex.assert_trees_all_close((outputs, carry), lstm.with_gates(xs)[:2], rtol=1e-13)
    with pytest.raises(gradlab.InputError, match=r"no method 'gates'.*'__call__', 'with_gates'"):
        pure(lstm, method="gates")
    mlp = MLP(IN, OUT, width=WIDTH, depth=DEPTH, param_dtype=F64, rngs=nnx.Rngs(0))
    with pytest.raises(gradlab.InputError, match=r"\['__call__', 'with_hiddens'\]"):
        pure(mlp, method="hiddens")


@pytest.mark.slow
def test_pure_keeps_non_param_state_fixed():
    class WithBatchNorm(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.linear = nnx.Linear(IN, WIDTH, rngs=rngs)
            self.norm = nnx.BatchNorm(WIDTH, use_running_average=False, rngs=rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            return self.norm(self.linear(x))

    model = WithBatchNorm(nnx.Rngs(0))
    stats_before = jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))
    apply_fn, params = pure(model)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    assert len(paths) == 4 and not any("mean" in p or "var" in p for p in paths)
    x = normal(1, (BATCH, IN), jnp.float32)
    y1 = jax.jit(apply_fn)(params, x)
    apply_fn(params, x + 1.0)  # would update the running statistics of a stateful call
    chex.assert_trees_all_close(apply_fn(params, x), y1, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal(nnx.state(model, nnx.BatchStat), stats_before)
    grads = jax.grad(lambda p: jnp.sum(apply_fn(p, x) ** 3))(params)
    chex.assert_trees_all_equal_structs(grads, params)


# --------------------------------------------------------------------------- grad checks


def assert_grad_check(model: nnx.Module, x: jax.Array, *, flat: bool = False) -> None:
    """gradlab.assert_check of a smooth scalar of the model's output, per parameter leaf, or
    over all parameters as one vector (``flat``: one compiled program instead of one per leaf,
    for the big models)."""
    apply_fn, params = pure(model)

    def loss(p: nnx.State, x: jax.Array) -> jax.Array:
        out = apply_fn(p, x)
        out = out[0] if isinstance(out, tuple) else out
        return jnp.mean(jnp.sin(out))  # a generic smooth scalar of every output

    if flat:
        vector, unravel = ravel_pytree(params)
        gradlab.assert_check(lambda v, x: loss(unravel(v), x), vector, x)
    else:
        gradlab.assert_check(loss, params, x)


@pytest.mark.slow
def test_grad_check_mlp_with_probes():
    model = MLP(IN, OUT, width=WIDTH, depth=DEPTH, param_dtype=F64, rngs=nnx.Rngs(0))
    apply_fn, params = pure(model)
    x = normal(1, (BATCH, IN), F64)
    y = (normal(2, (BATCH, OUT), F64) > 0).astype(F64)
    loss = lambda p, x, probes: losses.binary_cross_entropy(apply_fn(p, x, probes=probes), y)
    probes = 0.1 * normal(3, (DEPTH + 1, BATCH, WIDTH), F64)
    gradlab.assert_check(loss, params, x, probes, argnums=(0, 2))


@pytest.mark.slow
def test_grad_check_deep_residual_150_blocks():
    # 150 blocks with every dense option on: pre-LayerNorm, learnable ReZero scales (set away
    # from 0, where the kernels' gradients would be exactly 0) and gelu.
    depth = 150
    model = ResidualStack(
        IN,
        OUT,
        width=WIDTH,
        depth=depth,
        branch_scale="rezero",
        layer_norm=True,
        activation="gelu",
        param_dtype=F64,
        rngs=nnx.Rngs(0),
    )
    model.alpha[...] = normal(4, (depth,)) * depth**-0.5
    model.ln_scale[...] = 1 + 0.1 * normal(5, (depth, WIDTH))
    assert_grad_check(model, normal(1, (BATCH, IN)), flat=True)


@pytest.mark.slow
def test_grad_check_residual_conv_fixup():
    model = ResidualStack(
        IN,
        OUT,
        width=WIDTH,
        depth=DEPTH,
        block="conv",
        branch_scale="fixup",
        activation="tanh",
        param_dtype=F64,
        rngs=nnx.Rngs(0),
    )
    assert_grad_check(model, normal(1, (1, 3, 3, IN)), flat=True)


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "hoist"), [("standard", False), ("slide", True)])
def test_grad_check_lstm_100_steps(variant, hoist):
    lstm = LSTM(IN, HIDDEN, variant=variant, hoist_input=hoist, param_dtype=F64, rngs=nnx.Rngs(0))
    assert_grad_check(lstm, normal(1, (SEQS, 100, IN), F64))


@pytest.mark.slow
def test_grad_check_rnn():
    rnn = RNN(IN, HIDDEN, param_dtype=F64, rngs=nnx.Rngs(0))
    assert_grad_check(rnn, normal(1, (SEQS, 20, IN), F64))


@pytest.mark.slow
def test_grad_check_catches_a_wrong_gradient():
    # The check must be able to fail: a custom_vjp halves the gradient flowing out of the LSTM
    # (checked with respect to the probes, one leaf: dL/da(t) for every step).
    lstm = LSTM(IN, HIDDEN, param_dtype=F64, rngs=nnx.Rngs(0))
    xs = normal(1, (SEQS, STEPS, IN))

    @jax.custom_vjp
    def halve_grad(y: jax.Array) -> jax.Array:
        return y

    halve_grad.defvjp(lambda y: (y, None), lambda _, g: (0.5 * g,))

    def loss(probes: jax.Array, fn: Any) -> jax.Array:
        return jnp.mean(fn(lstm(xs, probes=probes)[0]) ** 2)

    probes = 0.1 * normal(2, (SEQS, STEPS, HIDDEN))
    gradlab.assert_check(lambda p: loss(p, lambda y: y), probes)
    with pytest.raises(gradlab.GradCheckError):
        gradlab.assert_check(lambda p: loss(p, halve_grad), probes)
