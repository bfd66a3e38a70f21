"""What a check compiles: a kernel per leaf the plan gives its own, one per group of the
others, and nothing at all when the same function is checked again on arrays of the same
shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab
from gradlab.gradcheck.evaluation import _base, _kernels, _sweep
from gradlab.gradcheck.programs import _runner, _tier

# w_mid (BIG, BIG) has 32x the entries of w_in: on a batch of 16 its rows evaluated densely
# cost ~6x the compile of another kernel (KERNEL_COST), w_in's ~0.2x: the plan gives w_mid
# a kernel of its own, grouping the others, with a wide margin either way.
BIG = 96


def _model(width: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(width)
    big = BIG
    params = {
        "w_in": rng.normal(size=(3, big)) / 2,
        "b_in": rng.normal(size=big) / 10,
        "w_mid": rng.normal(size=(big, big)) / big,
        "b_mid": rng.normal(size=big) / 10,
        "w_out": rng.normal(size=(big, width)) / big,
        "scale": np.asarray(1.3),
    }
    return params, rng.normal(size=(16, 3))


def _loss(p, x, scale=lambda s, v: s * v):
    h = jnp.tanh(x @ p["w_in"] + p["b_in"])
    h = jnp.tanh(h @ p["w_mid"] + p["b_mid"])
    return scale(p["scale"], jnp.sum(jnp.sin(h @ p["w_out"])))


def _fd_kernels() -> list[tuple[object, ...]]:
    """The static arguments ``(spec, which, kind, sparse)`` of every fd kernel compiled."""
    return [key[1] for key in _runner._EXECUTABLES if key[0] is _kernels.fd_chunk]


@pytest.mark.slow
def test_small_leaves_share_a_kernel_and_a_second_check_compiles_nothing(monkeypatch):
    monkeypatch.setattr(_runner, "_EXECUTABLES", type(_runner._EXECUTABLES)())
    params, x = _model(width=2)
    report = gradlab.check(_loss, params, x)
    assert report.ok
    # the planner gives w_mid (index 4 in key order) its own kernel; the five others share one
    kernels = _fd_kernels()
    assert sorted((kind, which) for _, which, kind, _ in kernels) == [
        ("entry", 4),
        ("group", (0, 1, 2, 3, 5)),
    ], kernels
    params2 = jax.tree_util.tree_map(lambda a: a * 1.01, params)
    again = gradlab.check(_loss, params2, x)
    assert again.ok
    assert _fd_kernels() == kernels


@pytest.mark.slow
def test_each_small_leaf_is_judged_on_its_own():
    """A bug confined to one grouped leaf shows in that leaf's row only."""
    params, x = _model(width=3)

    @jax.custom_vjp
    def scale(s, v):
        return s * v

    scale.defvjp(lambda s, v: (s * v, (s, v)), lambda r, g: (1.01 * r[1] * g, r[0] * g))
    report = gradlab.check(lambda p, x: _loss(p, x, scale), params, x)
    status = {leaf.path: leaf.status for leaf in report.leaves}
    assert status.pop("scale") == "wrong"
    assert set(status.values()) == {"verified"}, report


@pytest.mark.slow
def test_a_kernel_over_the_memory_budget_gets_a_smaller_chunk(monkeypatch, capsys):
    """Chunks are planned from f's forward memory; XLA's analysis of each compiled kernel has
    the last word. Here every kernel counts as over budget, so each chunk shrinks, is
    compiled again, and the check's numbers change by rounding only: XLA rounds a batch of
    another size differently, by far less than the noise floor (the rounding error of the
    differences that the analysis allows for)."""
    params, x = _model(width=2)
    want = gradlab.check(_loss, params, x)
    monkeypatch.setattr(_sweep, "OVER_BUDGET", 1e-6)
    got = gradlab.check(_loss, params, x, execution=gradlab.Execution(verbose=True))
    err = capsys.readouterr().err
    assert "over the memory budget" in err and "w_mid: chunk" in err, err
    for a, b in zip(got.leaves, want.leaves, strict=True):
        assert a.status == b.status
        noise = a.noise_floor / (2 * a.grad_norm)  # the floor as a relative error
        assert abs(a.relative_error - b.relative_error) < noise


@pytest.mark.slow
def test_a_cold_check_compiles_each_program_once_the_first_kernels_beside_the_gradient(
    monkeypatch,
):
    # the plan is made from shapes and costs before f runs, so the sweep's first kernels
    # compile in the same batch as the gradient program; the plan made after f ran must be
    # the same, or its kernels would compile a second time
    monkeypatch.setattr(_runner, "_EXECUTABLES", type(_runner._EXECUTABLES)())
    batches = []
    real = _runner.compile_tiered

    def spy(keys, *args, **kwargs):
        out = real(keys, *args, **kwargs)
        batches.append([k[0] for k in keys])
        return out

    monkeypatch.setattr(_sweep, "compile_tiered", spy)
    monkeypatch.setattr(_base, "compile_tiered", spy)  # f at θ compiles there
    params, x = _model(width=3)
    report = gradlab.check(
        lambda p, x: _loss(p, x) * 1.5,
        params,
        x,
        execution=gradlab.Execution(compilation_cache=False),
    )
    assert report.ok
    first = batches[0]
    assert first.count(_kernels.value_and_vjp) == 1 and first.count(_kernels.fd_chunk) == 2
    compiled = [k for batch in batches for k in batch]
    # later batches (the sweep's compile step) find every kernel already compiled
    assert len(_fd_kernels()) == 2 and compiled.count(_kernels.value_and_vjp) == 1


def _tiers_compiled(monkeypatch) -> list[_tier.Tier]:
    """Every compile tier the checks of a test ask for (the executable cache emptied)."""
    monkeypatch.setattr(_runner, "_EXECUTABLES", type(_runner._EXECUTABLES)())
    tiers: list[_tier.Tier] = []
    real = _runner.compile_tiered

    def spy(keys, lowerers, asked, *args, **kwargs):
        tiers.extend(asked)
        return real(keys, lowerers, asked, *args, **kwargs)

    monkeypatch.setattr(_sweep, "compile_tiered", spy)
    monkeypatch.setattr(_base, "compile_tiered", spy)  # f at θ compiles there
    return tiers


NO_CACHE = gradlab.Execution(compilation_cache=False)


@pytest.mark.slow
@pytest.mark.skipif(jax.devices()[0].platform != "cpu", reason="the tiers are XLA:CPU's")
def test_a_function_with_a_convolution_never_compiles_at_the_cheap_tier(monkeypatch):
    # a few thousand FLOPs (far under the cheap tier's limit), but unoptimised XLA:CPU runs
    # convolutions 26x slower: neither the gradient program nor a kernel takes the cheap tier
    tiers = _tiers_compiled(monkeypatch)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 1, 5, 5))

    def f(k):
        return jnp.sum(jnp.tanh(jax.lax.conv(x, k, (1, 1), "SAME")) ** 2)

    assert gradlab.check(f, rng.normal(size=(1, 1, 3, 3)), execution=NO_CACHE).ok
    assert tiers and set(tiers) == {_tier.Tier.QUICK}
    # the same size of work without a convolution does take it
    tiers.clear()
    assert gradlab.check(lambda w: jnp.sum(jnp.tanh(w * 1.5) ** 2), x, execution=NO_CACHE).ok
    assert tiers and set(tiers) == {_tier.Tier.CHEAP}


@pytest.mark.slow
@pytest.mark.skipif(jax.devices()[0].platform != "cpu", reason="the tiers are XLA:CPU's")
def test_a_function_with_a_loop_compiles_at_xla_defaults_and_others_quickly(monkeypatch):
    # past the cheap tier's FLOPs, XLA:CPU's loop emitters compile faster and run as fast,
    # except loops, which its fusion emitters run faster: every program of a check with a
    # scan compiles FULL, every program of one without compiles QUICK
    monkeypatch.setitem(_runner.CHEAP_FLOPS, "cpu", 0.0)
    tiers = _tiers_compiled(monkeypatch)
    rng = np.random.default_rng(0)
    w, x = rng.normal(size=(6, 6)) / 3, rng.normal(size=(4, 6))

    def rnn(w):
        h, _ = jax.lax.scan(lambda h, _: (jnp.tanh(h @ w), None), x, None, length=5)
        return jnp.sum(h**2)

    assert gradlab.check(rnn, w, execution=NO_CACHE).ok
    assert tiers and set(tiers) == {_tier.Tier.FULL}
    tiers.clear()
    assert gradlab.check(lambda w: jnp.sum(jnp.tanh(x @ w) ** 2), w, execution=NO_CACHE).ok
    assert tiers and set(tiers) == {_tier.Tier.QUICK}


class _Lowered:
    """Stands for a lowered program: records the options each compile gets."""

    def __init__(self, refuse: str | None = None, fail: str | None = None) -> None:
        self.refuse, self.fail, self.asked = refuse, fail, []

    def compile(self, options=None):
        self.asked.append(dict(options or {}))
        if self.fail is not None:
            raise jax.errors.JaxRuntimeError(self.fail)
        if self.refuse is not None and self.refuse in (options or {}):
            raise jax.errors.JaxRuntimeError(f"No such compile option: '{self.refuse}'")
        return "compiled"


def test_each_tier_compiles_with_its_options_and_an_unknown_option_is_dropped(monkeypatch):
    monkeypatch.setattr(_runner, "_UNKNOWN_OPTIONS", set())
    for tier, options in _tier.TIER_OPTIONS.items():
        low = _Lowered()
        assert _runner._compile(low, tier)[0] == "compiled"
        assert low.asked == [options]
    assert _tier.TIER_OPTIONS[_tier.Tier.FULL] == {}
    # an XLA without the loop emitters' switch (jaxlib 0.11): dropped, compiled without it
    quick = _tier.TIER_OPTIONS[_tier.Tier.QUICK]
    low = _Lowered(refuse="xla_cpu_use_fusion_emitters")
    assert _runner._compile(low, _tier.Tier.QUICK)[0] == "compiled"
    rest = {k: v for k, v in quick.items() if k != "xla_cpu_use_fusion_emitters"}
    assert low.asked == [quick, rest] and quick["xla_cpu_use_fusion_emitters"] is False
    # and never asked for again
    again = _Lowered(refuse="xla_cpu_use_fusion_emitters")
    _runner._compile(again, _tier.Tier.CHEAP)
    (asked,) = again.asked
    assert "xla_cpu_use_fusion_emitters" not in asked
    assert asked["xla_backend_optimization_level"] == 0
    # any other error is the caller's, an unknown option not asked for included
    for fail in ("RESOURCE_EXHAUSTED: out of memory", "No such compile option: 'xla_other'"):
        with pytest.raises(jax.errors.JaxRuntimeError, match=fail.split(":")[0]):
            _runner._compile(_Lowered(fail=fail), _tier.Tier.CHEAP)
    assert _runner._UNKNOWN_OPTIONS == {"xla_cpu_use_fusion_emitters"}
