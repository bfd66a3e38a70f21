"""The slice-carrying evaluation of perturbed entries (gradlab.gradcheck.evaluation._slices).

Each test evaluates a function at every single-entry move of a leaf twice, vmapped as the
checker does: with the move carried as a slice, and densely (``leaf.at[i].set(moved)``).
The two agree to rounding: the rules change the cost of an evaluation, not its value. The
bound is 1e-12 relative to the output's scale (float64; a handful of roundings of values of
that scale), far below the 1e-7 changes that centered differences measure.
"""

from __future__ import annotations

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import mlp_bce, small_mlp_data
from hypothesis import Phase, given, settings
from jax import lax

import gradlab
from gradlab.gradcheck.evaluation import _slice_conv
from gradlab.gradcheck.evaluation._slice import Slice
from gradlab.gradcheck.evaluation._slices import call_at_entry, call_at_group_entry
from gradlab.gradcheck.programs._scope import precise

RTOL = 1e-12


def _both(fn, leaf, step=0.37):
    """Every entry of ``leaf`` moved by ``step``: (sliced, dense) outputs, vmapped."""
    leaf = jnp.asarray(leaf)
    index = jnp.arange(leaf.size)

    def sliced(i):
        x = leaf.reshape(-1)[i]
        return call_at_entry(fn, leaf, i, x + step)

    def dense(i):
        flat = leaf.reshape(-1)
        return fn(flat.at[i].set(flat[i] + step).reshape(leaf.shape))

    return jax.jit(jax.vmap(sliced))(index), jax.jit(jax.vmap(dense))(index)


def _assert_same(fn, leaf, step=0.37, must_change=True):
    with precise():
        got, want = _both(fn, leaf, step)
        at_leaf = jax.tree_util.tree_leaves(fn(jnp.asarray(leaf)))
        leaves = zip(*map(jax.tree_util.tree_leaves, (got, want)), at_leaf, strict=True)
        for g, w, w0 in leaves:
            g, w = np.asarray(g), np.asarray(w)
            assert g.shape == w.shape
            scale = max(1.0, float(np.max(np.abs(w))))
            np.testing.assert_allclose(g, w, rtol=0, atol=RTOL * scale)
            if must_change:
                assert not np.allclose(w, np.asarray(w0)[None]), "the moves must change f"


def _rng(seed=0):
    return np.random.default_rng(seed)


X = _rng(1).normal(size=(5, 4))
W = _rng(2).normal(size=(4, 3))
A3, B3, C3 = (
    _rng(20).normal(size=(2, 5, 4)),
    _rng(21).normal(size=(2, 4, 3)),
    _rng(22).normal(size=(2, 3)),
)


@jax.custom_jvp
def _softplus(x):
    return jnp.logaddexp(x, 0.0)


_softplus.defjvp(lambda p, t: (_softplus(p[0]), jax.nn.sigmoid(p[0]) * t[0]))


@jax.custom_vjp
def _cube(x):
    return x**3


_cube.defvjp(lambda x: (x**3, x), lambda x, g: (3 * x**2 * g,))


CASES = {
    "rhs of a matmul, tanh, mean": (lambda w: jnp.mean(jnp.tanh(X @ w)), W),
    "two layers (rank-one change of the second)": (
        lambda w: jnp.sum(jnp.tanh(jnp.tanh(X @ w) @ W.T)),
        W,
    ),
    "lhs of a matmul": (lambda x: jnp.sum(jnp.sin(x @ W)), X),
    "transposed weight": (lambda w: jnp.sum(jnp.tanh(X @ w.T) ** 2), W.T.copy()),
    "bias broadcast over the batch": (
        lambda b: jnp.sum(jax.nn.sigmoid(X @ W + b)),
        _rng(3).normal(size=3),
    ),
    "matrix-vector": (lambda w: jnp.sum(jnp.exp(0.1 * (w @ X[0]))), _rng(4).normal(size=(3, 4))),
    "sum over the fixed dimension": (lambda w: jnp.prod(jnp.sum(w**2, axis=0)), W),
    "sum over the free dimension": (lambda w: jnp.prod(1 + jnp.sum(jnp.cos(w), axis=1)), W),
    "sum of everything": (lambda w: jnp.sum(w * w) ** 1.5, W),
    "relu via max and where": (
        lambda w: jnp.sum(jnp.where(X @ w > 0, X @ w, 0.01 * X @ w)) + jnp.sum(jnp.maximum(w, 0.1)),
        W,
    ),
    "reshape of the leaf": (
        lambda w: jnp.sum(jnp.tanh(w.reshape(2, 6) @ _rng(5).normal(size=(6, 2)))),
        W,
    ),
    "squeeze": (lambda w: jnp.sum(jnp.tanh(jnp.squeeze(w, 0) @ X.T)), _rng(6).normal(size=(1, 4))),
    "expert einsum (batch dimensions)": (
        lambda w: jnp.sum(jnp.tanh(jnp.einsum("ebk,ekn->ebn", _rng(7).normal(size=(2, 5, 3)), w))),
        _rng(8).normal(size=(2, 3, 4)),
    ),
    "batch dimension not leading": (
        lambda w: jnp.sum(
            jnp.sin(
                lax.dot_general(_rng(9).normal(size=(3, 2, 4)), w, (((2,), (0,)), ((1,), (2,))))
            )
        ),
        _rng(10).normal(size=(4, 5, 2)),
    ),
    "size-1 broadcasting in a binary op (a stacked bias)": (
        lambda b: jnp.sum(jnp.tanh(jnp.einsum("ebk,ekn->ebn", A3, B3) + b[:, None, :])),
        _rng(17).normal(size=(2, 3)),
    ),
    "size-1 broadcasting of the other operand": (
        lambda w: jnp.sum(jnp.tanh(jnp.einsum("ebk,ekn->ebn", A3, w) * jnp.sin(C3)[:, None, :])),
        B3,
    ),
    "the leaf on both sides (w @ w.T)": (lambda w: jnp.sum(jnp.tanh(w @ w.T)), W),
    "custom_jvp and custom_vjp primals, nested jit": (
        lambda w: jnp.sum(jax.jit(lambda v: _cube(_softplus(X @ v)))(w)),
        W,
    ),
    "conv, NCHW (kernel entry moved)": (
        lambda k: jnp.sum(
            jnp.tanh(lax.conv(_rng(11).normal(size=(1, 2, 6, 6)), k, (1, 1), "SAME"))
        ),
        _rng(12).normal(size=(3, 2, 3, 3)),
    ),
    "fallback: scan over the leaf": (
        lambda w: lax.scan(lambda h, _: (jnp.tanh(h @ w), None), jnp.ones(3), None, length=4)[
            0
        ].sum(),
        _rng(13).normal(size=(3, 3)),
    ),
    "fallback: logsumexp, max, gather": (
        lambda w: jax.nn.logsumexp(X @ w) + jnp.max(w) + w[jnp.array([0, 2]), 1].sum(),
        W,
    ),
    "scalar leaf": (lambda a: jnp.sum(jnp.tanh(a * X)), np.asarray(0.3)),
    "vector output and a pytree": (lambda w: {"a": jnp.tanh(X @ w), "b": jnp.sum(w)}, W),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_sliced_evaluation_equals_dense(name):
    fn, leaf = CASES[name]
    _assert_same(fn, leaf)


@pytest.mark.slow
def test_complex_leaf():
    w = _rng(14).normal(size=(4, 3)) + 1j * _rng(15).normal(size=(4, 3))
    fn = lambda w: jnp.sum(jnp.abs(jnp.tanh(X @ w)) ** 2)
    _assert_same(fn, w, step=0.2j)


@pytest.mark.slow
def test_slices_cover_the_moved_entry_only():
    with precise():
        w = jnp.arange(12.0).reshape(4, 3)
        out = call_at_entry(lambda v: X @ v, w, 7, 100.0)  # W[2, 1] moved
        want = X @ w.at[2, 1].set(100.0)
        np.testing.assert_allclose(out, want, rtol=1e-12)
        s = Slice(w, (0, 1), (jnp.asarray(2), jnp.asarray(1)), jnp.asarray(100.0))
        np.testing.assert_array_equal(s.dense(), w.at[2, 1].set(100.0))
        assert float(s.delta()) == 100.0 - 7.0


@pytest.mark.slow
@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    data=st.data(),
    n_batch=st.integers(0, 2),
    n_contract=st.integers(0, 2),
    n_lhs_free=st.integers(0, 2),
    n_rhs_free=st.integers(0, 2),
    moved_lhs=st.booleans(),
)
def test_dot_general_any_dimension_numbers(
    data, n_batch, n_contract, n_lhs_free, n_rhs_free, moved_lhs
):
    """Random dimension numbers and dimension orders, either operand moved."""
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=8, max_size=8))
    kinds = ["b"] * n_batch + ["c"] * n_contract
    lhs_kinds = data.draw(st.permutations(kinds + ["l"] * n_lhs_free))
    rhs_kinds = data.draw(st.permutations(kinds + ["r"] * n_rhs_free))
    size_of = {}
    lhs_shape, rhs_shape, lhs_ids, rhs_ids = [], [], [], []
    counters = {"b": 0, "c": 0, "l": 0, "r": 0}
    for kind in lhs_kinds:
        key = (kind, counters[kind])
        counters[kind] += 1
        size_of[key] = sizes[len(size_of) % len(sizes)] + 1
        lhs_shape.append(size_of[key])
        lhs_ids.append(key)
    counters = {"b": 0, "c": 0, "l": 0, "r": 0}
    for kind in rhs_kinds:
        key = (kind, counters[kind])
        counters[kind] += 1
        size_of.setdefault(key, sizes[len(size_of) % len(sizes)] + 1)
        rhs_shape.append(size_of[key])
        rhs_ids.append(key)
    pair = lambda kind: [
        (lhs_ids.index(key), rhs_ids.index(key)) for key in lhs_ids if key[0] == kind
    ]
    lc, rc = zip(*pair("c"), strict=True) if n_contract else ((), ())
    lb, rb = zip(*pair("b"), strict=True) if n_batch else ((), ())
    dims = ((tuple(lc), tuple(rc)), (tuple(lb), tuple(rb)))
    rng = _rng(len(lhs_shape) * 7 + len(rhs_shape))
    lhs, rhs = rng.normal(size=lhs_shape), rng.normal(size=rhs_shape)
    if moved_lhs:
        fn = lambda a: jnp.tanh(lax.dot_general(a, rhs, dims))
        _assert_same(fn, lhs)
    else:
        fn = lambda b: jnp.tanh(lax.dot_general(lhs, b, dims))
        _assert_same(fn, rhs)


@pytest.mark.slow
def test_check_agrees_with_the_dense_evaluation():
    params, x, y = small_mlp_data()
    sparse = gradlab.check(mlp_bce, params, x, y)
    dense = gradlab.check(mlp_bce, params, x, y, execution=gradlab.Execution(slices=False))
    assert sparse.ok and dense.ok
    for a, b in zip(sparse.leaves, dense.leaves, strict=True):
        assert a.path == b.path and a.status == b.status
        # both are dominated by the same O(eps^2) truncation error
        assert a.relative_error == pytest.approx(b.relative_error, rel=0.2, abs=1e-9)


def test_slices_option_is_validated():
    with pytest.raises(gradlab.InputError, match="slices"):
        gradlab.check(
            lambda p: jnp.sum(p**2), jnp.ones(3), execution=gradlab.Execution(slices="yes")
        )


# --- convolutions --------------------------------------------------------------------------
# A moved kernel entry changes one output channel; a moved input entry one batch element, and
# needs the weights of its input channel only. Random configurations of conv_general_dilated
# (strides, padding — negative too —, input and kernel dilation, feature groups, dimension
# orders), either operand moved, are compared with dense evaluation to RTOL like the rules
# above: one entry moved, or a whole channel (the leaf a per-channel scale of the operand:
# a slice fixed in the input's feature or the kernel's output-feature dimension only).


def _conv_case(data, moved_lhs):
    nd = data.draw(st.integers(1, 2), label="spatial dims")
    groups = data.draw(st.integers(1, 3), label="feature groups")
    per_group, out_per_group = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    batch = data.draw(st.integers(1, 2))
    kernel = [data.draw(st.integers(1, 3)) for _ in range(nd)]
    strides = tuple(data.draw(st.integers(1, 2)) for _ in range(nd))
    lhs_dil = tuple(data.draw(st.integers(1, 2)) for _ in range(nd))
    rhs_dil = tuple(data.draw(st.integers(1, 2)) for _ in range(nd))
    padding = [(data.draw(st.integers(-1, 2)), data.draw(st.integers(-1, 2))) for _ in range(nd)]
    spatial = [data.draw(st.integers(2, 5)) for _ in range(nd)]
    letters = "HW"[:nd]
    lhs_spec = "".join(data.draw(st.permutations("NC" + letters)))
    rhs_spec = "".join(data.draw(st.permutations("OI" + letters)))
    out_spec = "".join(data.draw(st.permutations("NC" + letters)))
    sizes = {"N": batch, "C": groups * per_group, "O": groups * out_per_group, "I": per_group}
    lhs_shape = [sizes.get(c) or spatial[letters.index(c)] for c in lhs_spec]
    rhs_shape = [sizes.get(c) or kernel[letters.index(c)] for c in rhs_spec]
    rng = _rng(sum(lhs_shape) * 31 + sum(rhs_shape))
    lhs, rhs = rng.normal(size=lhs_shape), rng.normal(size=rhs_shape)

    def conv(a, b):
        return lax.conv_general_dilated(
            a, b, strides, padding, lhs_dil, rhs_dil, (lhs_spec, rhs_spec, out_spec),
            feature_group_count=groups,
        )  # fmt: skip

    conv.specs = (lhs_spec, rhs_spec)
    out_shape = jax.eval_shape(conv, lhs, rhs).shape
    return conv, lhs, rhs, out_shape


def _per_channel(x, spec, letter, scale):
    """``x`` times ``scale`` along the dimension ``letter`` names in ``spec``."""
    return x * lax.broadcast_in_dim(scale, x.shape, (spec.index(letter),))


@pytest.mark.slow
@settings(max_examples=12, deadline=None, derandomize=True, phases=[Phase.generate])
@given(data=st.data(), moved_lhs=st.booleans(), channel=st.booleans())
def test_conv_general_dilated_any_configuration(data, moved_lhs, channel):
    conv, lhs, rhs, out_shape = _conv_case(data, moved_lhs)
    if 0 in out_shape:  # the padding cut everything away: nothing to compare
        return
    # (with wide padding an output may see padding only: a move need not change it)
    lhs_spec, rhs_spec = conv.specs
    if moved_lhs and channel:  # a slice fixed in the input's feature dimension
        scale = _rng(3).normal(size=lhs.shape[lhs_spec.index("C")])
        fn = lambda v: jnp.tanh(conv(_per_channel(lhs, lhs_spec, "C", v), rhs))
        _assert_same(fn, scale, must_change=False)
    elif channel:  # a slice fixed in the kernel's output-feature dimension
        scale = _rng(4).normal(size=rhs.shape[rhs_spec.index("O")])
        fn = lambda v: jnp.tanh(conv(lhs, _per_channel(rhs, rhs_spec, "O", v)))
        _assert_same(fn, scale, must_change=False)
    elif moved_lhs:
        _assert_same(lambda a: jnp.tanh(conv(a, rhs)), lhs, must_change=False)
    else:
        _assert_same(lambda b: jnp.tanh(conv(lhs, b)), rhs, must_change=False)


NHWC = ("NHWC", "HWIO", "NHWC")
IMG = _rng(30).normal(size=(2, 5, 5, 4))
K1, K2 = _rng(31).normal(size=(3, 3, 4, 6)) / 6, _rng(32).normal(size=(3, 3, 6, 3)) / 6


def _conv2d(x, k, groups=1, strides=(1, 1)):
    return lax.conv_general_dilated(
        x, k, strides, "SAME", dimension_numbers=NHWC, feature_group_count=groups
    )


CONV_CASES = {
    "kernel of the first of two convs (one output channel, then one input channel)": (
        lambda k: jnp.mean(jnp.tanh(_conv2d(jnp.tanh(_conv2d(IMG, k)), K2)) ** 2),
        K1,
    ),
    "bias before a conv (a slice fixed in the channel only)": (
        lambda b: jnp.sum(jnp.sin(_conv2d(jnp.tanh(_conv2d(IMG, K1) + b), K2))),
        _rng(33).normal(size=6),
    ),
    "bias of a grouped (depthwise) conv's input": (
        lambda b: jnp.sum(
            jnp.sin(_conv2d(jnp.tanh(IMG + b), _rng(34).normal(size=(3, 3, 1, 8)), 4))
        ),
        _rng(35).normal(size=4),
    ),
    "per-example scale (a slice fixed in the batch only), strided": (
        lambda s: jnp.sum(jnp.tanh(_conv2d(IMG * s[:, None, None, None], K1, strides=(2, 2)))),
        _rng(36).normal(size=2),
    ),
    "kernel built from a transposed leaf": (
        lambda k: jnp.sum(jnp.tanh(_conv2d(IMG, jnp.transpose(k, (2, 3, 1, 0))))),
        _rng(37).normal(size=(6, 4, 3, 3)),
    ),
    "the same leaf as input and kernel": (
        lambda k: jnp.sum(jnp.tanh(_conv2d(k[:, :, :, 0][None], k))),
        _rng(38).normal(size=(3, 3, 3, 3)),
    ),
    "batch groups (dense fallback)": (
        lambda k: jnp.sum(
            jnp.tanh(
                lax.conv_general_dilated(
                    IMG, k, (1, 1), "SAME", dimension_numbers=NHWC, batch_group_count=2
                )
            )
        ),
        _rng(39).normal(size=(3, 3, 4, 6)),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv_cases_equal_dense(name):
    fn, leaf = CONV_CASES[name]
    _assert_same(fn, leaf)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "bias before a conv (a slice fixed in the channel only)",
        "bias of a grouped (depthwise) conv's input",
    ],
)
def test_wide_windows_take_a_one_channel_convolution(name, monkeypatch):
    """Above SHIFTS_LIMIT window positions a moved input channel is convolved, not shifted."""
    monkeypatch.setattr(_slice_conv, "SHIFTS_LIMIT", 0)
    fn, leaf = CONV_CASES[name]
    _assert_same(fn, leaf)


def test_conv_moves_compute_one_channel():
    """A moved kernel entry reads one input channel; a moved input channel one kernel slice.

    Vmapped over rows, no convolution of the whole input remains per row: the only
    convolutions left are the base ones (unbatched), so XLA computes them once per batch.
    """
    fn = lambda k: jnp.sum(jnp.tanh(_conv2d(jnp.tanh(_conv2d(IMG, k)), K2)))
    with precise():
        leaf = jnp.asarray(K1)
        rows = lambda i: call_at_entry(fn, leaf, i, leaf.reshape(-1)[i] + 0.1)
        jaxpr = jax.make_jaxpr(jax.vmap(rows))(jnp.arange(5)).jaxpr
    convs = [e for e in _eqns(jaxpr) if e.primitive.name == "conv_general_dilated"]
    assert len(convs) == 2  # conv1 and conv2 at θ
    for e in convs:  # the base convolutions have the unbatched shapes of f's own
        assert e.outvars[0].aval.shape[0] == IMG.shape[0]


def _eqns(jaxpr):
    for e in jaxpr.eqns:
        yield e
        for v in e.params.values():
            inner = getattr(v, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                yield from _eqns(inner)


@pytest.mark.slow
def test_group_entry_equals_dense_for_every_owner():
    """The shared kernel of small leaves: each row moves an entry of the leaf ``owner``."""
    b1, b2 = _rng(40).normal(size=6), _rng(41).normal(size=3)
    fn = lambda t: jnp.sum(jnp.sin(_conv2d(jnp.tanh(_conv2d(IMG, t[0]) + t[1]), K2) + t[2]))
    leaves = (K1, b1, b2)
    owner = jnp.repeat(jnp.arange(3), K1.size)
    index = jnp.tile(jnp.arange(K1.size), 3)  # past a leaf's end: its last entry (clipped)
    step = 0.37

    def dense(o, i):
        moved = []
        for pos, leaf in enumerate(leaves):
            flat = jnp.asarray(leaf).reshape(-1)
            j = jnp.minimum(i, flat.size - 1)
            moved.append(flat.at[j].add(jnp.where(o == pos, step, 0.0)).reshape(leaf.shape))
        return fn(tuple(moved))

    with precise():
        sliced = lambda o, i: call_at_group_entry(fn, leaves, o, i, step)
        got, taken = jax.jit(jax.vmap(sliced))(owner, index)
        want = jax.jit(jax.vmap(dense))(owner, index)
        scale = max(1.0, float(jnp.max(jnp.abs(want))))
        np.testing.assert_allclose(got, want, rtol=0, atol=RTOL * scale)
        np.testing.assert_allclose(taken, step, rtol=1e-14)
        assert float(jnp.std(want)) > 0, "the moves must change f"
