"""The kernel plan by cost, the cheap compile tier and the cost estimates they rest on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import gradlab
from gradlab.gradcheck.evaluation import _kernels
from gradlab.gradcheck.planning import _plan
from gradlab.gradcheck.planning._memory import program_cost
from gradlab.gradcheck.planning._problem import build_problem
from gradlab.gradcheck.programs import _runner, _tier
from gradlab.gradcheck.programs._scope import precise


@pytest.fixture
def fresh_executables(monkeypatch):
    """An empty executable cache, so that a test sees what its own check compiles."""
    monkeypatch.setattr(_runner, "_EXECUTABLES", type(_runner._EXECUTABLES)())


def _fd_kernels() -> list[tuple[object, str, bool]]:
    """``(which, kind, cheap)`` of every difference kernel compiled."""
    return [
        (key[1][1], key[1][2], exe.cheap)
        for key, exe in _runner._EXECUTABLES.items()
        if key[0] is _kernels.fd_chunk
    ]


# --- the cost model ------------------------------------------------------------------------


def test_program_cost_counts_products_convolutions_and_loops():
    a, b = jnp.ones((8, 5)), jnp.ones((5, 3))
    assert program_cost(jax.make_jaxpr(jnp.matmul)(a, b)).flops == 2 * 8 * 5 * 3
    x, k = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 7))
    conv = lambda x, k: lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    # every output entry (2·6·6·7) is a 3·3·4 window: a multiply-add each
    assert program_cost(jax.make_jaxpr(conv)(x, k)).flops == 2 * (2 * 6 * 6 * 7) * (3 * 3 * 4)
    body = lambda c, _: (jnp.tanh(c @ b @ b.T), None)
    once = program_cost(jax.make_jaxpr(lambda c: body(c, None)[0])(a)).flops
    looped = program_cost(jax.make_jaxpr(lambda c: lax.scan(body, c, None, length=10)[0])(a))
    assert looped.flops == pytest.approx(10 * once, rel=0.05)
    # what sets a program's compile tier: its convolutions and its loops, nested ones too
    assert program_cost(jax.make_jaxpr(conv)(x, k)).convolutions == 1
    assert (looped.loops, looped.convolutions) == (1, 0)
    assert program_cost(jax.make_jaxpr(jnp.matmul)(a, b)).loops == 0
    nested = jax.jit(lambda c: lax.while_loop(lambda c: c.sum() < 0, jnp.tanh, c))
    both = program_cost(jax.make_jaxpr(lambda c: nested(c).sum() + conv(x, k).sum())(a))
    assert (both.loops, both.convolutions) == (1, 1)


def test_a_leaf_gets_its_own_kernel_when_its_dense_rows_outweigh_a_compile():
    base, per_eqn, rate = _plan.KERNEL_COST["cpu"]
    compile_seconds = base + per_eqn * 20
    per_row = 1e6
    rows_at_par = compile_seconds * rate / per_row
    assert _plan.shares_kernel(int(rows_at_par / 2), per_row, "cpu", eqns=20)
    assert not _plan.shares_kernel(int(rows_at_par * 2), per_row, "cpu", eqns=20)
    # a bigger program compiles longer: more rows share its kernel
    assert _plan.shares_kernel(int(rows_at_par * 2), per_row, "cpu", eqns=200)


# --- the plan on a convnet -----------------------------------------------------------------


def _convnet():
    rng = np.random.default_rng(0)
    params = {
        "k": rng.normal(size=(3, 3, 16, 32)) / 12,  # 4,608 entries over 2·8·8 positions
        "bk": 0.1 * rng.normal(size=32),
        "w": rng.normal(size=(32, 4)) / 6,
        "b": 0.1 * rng.normal(size=4),
    }
    x = rng.normal(size=(2, 8, 8, 16))

    def loss(p, x):
        h = lax.conv_general_dilated(
            x, p["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jnp.tanh(h + p["bk"]).mean((1, 2))
        return jnp.sum(jnp.sin(h @ p["w"] + p["b"]))

    return loss, params, x


@pytest.mark.slow
def test_the_plan_splits_a_big_conv_kernel_and_groups_the_small_leaves(fresh_executables):
    loss, params, x = _convnet()
    report = gradlab.check(loss, params, x)
    assert report.ok, report
    # leaves in key order: b, bk, k, w. Evaluated densely, a row costs ~2.4e6 FLOPs: the
    # kernel's 4,608 rows (~11 s at KERNEL_COST's rate) outweigh a compile, and get a kernel
    # of their own, carried as slices; the others' 164 rows (~0.4 s) share one.
    kinds = sorted((kind, which) for which, kind, _ in _fd_kernels())
    assert kinds == [("entry", 2), ("group", (0, 1, 3))], kinds


@pytest.mark.slow
def test_the_planned_check_equals_dense_evaluation(fresh_executables, monkeypatch):
    """The plan changes the cost, not the numbers: with compiles made free every leaf gets a
    kernel of its own, carried as slices; each leaf's relative error equals dense
    evaluation's within its noise floor."""
    loss, params, x = _convnet()
    params = {**params, "k": params["k"][:, :, :4, :8], "bk": params["bk"][:8]}
    params["w"] = params["w"][:8]
    x = x[:, :, :, :4]  # a smaller conv: dense evaluation of every entry stays fast
    monkeypatch.setattr(_plan, "KERNEL_COST", {"cpu": (0.0, 0.0, 1e9)})
    planned = gradlab.check(loss, params, x)
    assert sorted(kind for _, kind, _ in _fd_kernels()) == ["entry"] * 4
    dense = gradlab.check(loss, params, x, execution=gradlab.Execution(slices=False))
    assert planned.ok and dense.ok
    for a, b in zip(planned.leaves, dense.leaves, strict=True):
        assert a.path == b.path and a.status == b.status
        noise = a.noise_floor / (2 * a.grad_norm)  # the floor as a relative error
        assert abs(a.relative_error - b.relative_error) < max(noise, 0.2 * b.relative_error)


# --- the cheap compile tier ----------------------------------------------------------------


def test_a_small_check_compiles_cheaply_and_a_second_compiles_nothing(fresh_executables):
    def layer(p, x):
        return jnp.mean(jnp.tanh(x @ p["w"] + p["b"]) ** 2)

    rng = np.random.default_rng(1)
    params = {"w": rng.normal(size=(6, 8)) / 3, "b": 0.1 * rng.normal(size=8)}
    x = rng.normal(size=(4, 6))
    assert gradlab.check(layer, params, x).ok
    first = dict(_runner._EXECUTABLES)
    # the gradient and one group kernel, both at the cheap tier on the CPU
    assert [k[0] for k in first] == [_kernels.value_and_vjp, _kernels.fd_chunk]
    assert all(e.cheap for e in first.values()) == (jax.devices()[0].platform == "cpu")
    assert gradlab.check(layer, {"w": params["w"] * 1.1, "b": params["b"]}, x).ok
    assert dict(_runner._EXECUTABLES) == first


@pytest.mark.slow
def test_a_cheap_kernel_is_compiled_again_when_its_remaining_calls_pay_for_it():
    low = jax.jit(lambda v: jnp.tanh(v) @ v.T).lower(jnp.ones((4, 4)))
    cheap = [_tier.Tier.CHEAP]
    (exe,) = _runner.compile_tiered([("test", 1)], [lambda: low], cheap)
    assert exe.cheap and exe.lowered is not None
    # 100 more runs of a run as long as its compile: more than 3 compiles' worth
    assert exe.upgrade_if_it_pays(exe.seconds, calls_left=100, factor=3.0, to=_tier.Tier.QUICK)
    assert exe.tier is _tier.Tier.QUICK and exe.lowered is None
    np.testing.assert_allclose(exe.compiled(jnp.eye(4)), jnp.tanh(jnp.eye(4)))
    (again,) = _runner.compile_tiered([("test", 2)], [lambda: low], cheap)
    assert not again.upgrade_if_it_pays(again.seconds / 1e3, calls_left=1, factor=3.0)
    assert again.cheap and again.timed
    # by default no timing decides anything: the numbers must not depend on the load
    (third,) = _runner.compile_tiered([("test", 3)], [lambda: low], cheap)
    assert _runner.UPGRADE is None
    assert not third.upgrade_if_it_pays(third.seconds, calls_left=10**6)
    assert third.cheap


def test_numpy_leaves_keep_their_dtype_and_are_checked_in_float64():
    params = {"w": np.ones((2, 3), np.float32), "n": np.arange(3)}
    with precise(x64=True):
        problem = build_problem(lambda p: jnp.sum(p["w"]), (params,), 0, False)
    assert [(leaf.path, str(leaf.dtype)) for leaf in problem.leaves] == [
        ("n", "int64"),
        ("w", "float32"),
    ]
    assert problem.checked_leaves[0].dtype == jnp.float64
    assert problem.fixed_leaves[0].dtype == jnp.int64
