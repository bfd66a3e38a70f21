"""Every mode held to the same bars: sampled slices, coverage in the headline, kinks, audit.

The three corpora of correct and buggy functions (``test_bugs``, ``test_trust``,
``test_correct``) are also run in ``Sample`` and ``Directional`` modes here: every test
of theirs that takes no fixture runs with ``gradlab.check`` defaulting to that mode.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gradlab
from gradlab.gradcheck.planning._plan import SMALL_AXIS, structural_entries

# ----------------------------------------------------------------- sampled slices


@pytest.mark.parametrize("shape", [(500, 10), (7, 40, 3), (1000,), (64, 64)])
def test_a_sample_includes_every_structurally_distinct_slice(shape):
    idx = np.unravel_index(structural_entries(shape, np.random.default_rng(3)), shape)
    for axis, size in enumerate(shape):
        seen = set(idx[axis].tolist())
        assert {0, size - 1} <= seen
        if size <= SMALL_AXIS:
            assert seen == set(range(size))


def _embedding(drop_last):
    """A lookup whose backward drops the last row's gradient (when ``drop_last``)."""

    @jax.custom_vjp
    def take(table, ids):
        return table[ids]

    def bwd(res, g):
        ids, shape = res
        grad = jnp.zeros(shape, g.dtype).at[ids].add(g)
        return (grad.at[-1].set(0.0) if drop_last else grad, None)

    take.defvjp(lambda table, ids: (table[ids], (ids, table.shape)), bwd)
    ids = jnp.arange(500)
    table = jax.random.normal(jax.random.key(0), (500, 10))
    return (lambda table: jnp.sum(jnp.sin(take(table, ids)))), table


@pytest.mark.slow
@pytest.mark.parametrize("drop_last", [True, False])
def test_an_embedding_whose_last_row_is_dropped_fails_under_sample_32(drop_last):
    f, table = _embedding(drop_last)
    report = gradlab.check(f, table, entries=gradlab.Sample(32))
    assert report.outcome == ("failed" if drop_last else "passed"), report
    assert report.leaves[0].n_checked == 32
    verb = "checked" if drop_last else "passed"
    assert f"{verb} on 32 of 5,000 entries of ." in report.summary()


@pytest.mark.slow
def test_full_mode_headline_is_unchanged_and_directional_says_it_screens():
    f = lambda w: jnp.sum(jnp.tanh(w))
    assert "8 entries in 1 leaf" in gradlab.check(f, jnp.ones(8)).summary()
    report = gradlab.check(f, jnp.ones((30, 30)), entries=gradlab.Directional(4))
    assert report.ok and "passed along 4 random directions per leaf, 900 entries" in (
        report.summary()
    )


# ----------------------------------------------------------------- kinks and ties, every mode

MODES = [gradlab.Full(), gradlab.Sample(6), gradlab.Directional(4)]


class _PoolNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 2, (3, 3), padding="SAME", rngs=rngs)
        self.out = nnx.Linear(2 * 4 * 4, 1, rngs=rngs)

    def __call__(self, x):
        h = nnx.max_pool(self.conv(x), (2, 2), strides=(2, 2))
        return jnp.mean(self.out(h.reshape(h.shape[0], -1)) ** 2)


def _pool_case():
    x = np.zeros((2, 8, 8, 1), np.float32)  # exact-zero background: 4-way ties
    x[:, 2:5, 2:5, 0] = np.random.default_rng(1).normal(size=(2, 3, 3))
    graphdef, state = nnx.split(_PoolNet(nnx.Rngs(0)))
    return (lambda s, x: nnx.merge(graphdef, s)(x)), state, jnp.asarray(x)


KINKS = {
    "relu at 0": lambda: (
        lambda w: jnp.sum(jax.nn.relu(w) * jnp.arange(8.0).reshape(2, 4)),
        (jnp.array([[0.0, 1.0, -1.0, 0.0], [0.5, 0.0, 0.0, 2.0]]),),
    ),
    "sort ties": lambda: (
        lambda w: jnp.sum(jnp.sort(w) * jnp.arange(8.0)),
        (jnp.array([1.0, 1.0, 2.0, 2.0, 3.0, 0.0, 0.0, 5.0]),),
    ),
    "max-pool ties": lambda: (lambda f, s, x: (f, (s, x)))(*_pool_case()),
}


@pytest.mark.slow
@pytest.mark.parametrize("entries", MODES, ids=["full", "sample", "directional"])
@pytest.mark.parametrize("name", sorted(KINKS))
def test_kinks_and_ties_raise_no_false_alarm_in_any_mode(name, entries):
    f, args = KINKS[name]()
    report = gradlab.check(f, *args, entries=entries)
    assert report.outcome == "passed", report


@pytest.mark.slow
@pytest.mark.parametrize("entries", MODES, ids=["full", "sample", "directional"])
def test_a_wrong_subgradient_at_a_kink_fails_in_every_mode(entries):
    @jax.custom_jvp
    def relu(x):
        return jnp.maximum(x, 0.0)

    relu.defjvps(lambda t, ans, x: t * jnp.where(x > 0, 1.0, jnp.where(x == 0, 3.0, 0.0)))
    w = jnp.array([0.0, 1.0, 0.0, -2.0, 0.0, 0.7])
    report = gradlab.check(lambda w: jnp.sum(relu(w) * jnp.arange(1.0, 7.0)), w, entries=entries)
    assert report.outcome == "failed", report


@pytest.mark.slow
@pytest.mark.parametrize("entries", MODES, ids=["full", "sample", "directional"])
def test_float32_far_from_the_origin_passes_in_every_mode(entries):
    p = (1e3 + jax.random.normal(jax.random.key(0), (40,))).astype(jnp.float32)
    f = lambda p: jnp.sum(jnp.sin(p) * p) + jnp.sum(p) ** 2 * 1e-3
    report = gradlab.check(f, p, entries=entries)
    assert report.outcome == "passed", report


# ----------------------------------------------------------------- a gradient that f stops


@pytest.mark.slow
@pytest.mark.parametrize("entries", MODES, ids=["full", "sample", "directional"])
def test_a_stopped_gradient_says_so(entries):
    f = lambda p: jnp.sum(jax.lax.stop_gradient(p["a"]) ** 2) + jnp.sum(p["b"] ** 2)
    report = gradlab.check(f, {"a": jnp.linspace(1.0, 2.0, 8), "b": jnp.ones(2)}, entries=entries)
    assert report.outcome == "failed"
    assert "analytical gradient is exactly 0 here while f changes" in report["a"].note
    assert "stop_gradient" in report.reasons[0]
    assert report["b"].status == "verified" and not report["b"].note


# ----------------------------------------------------------------- the corpora in every mode


#: Tests whose assertions count entries (kinks, entries outside f's domain): directional mode
#: counts directions instead. Their outcomes are checked in that mode below.
COUNTS_ENTRIES = {
    "test_relu_at_exactly_zero_is_a_kink_not_a_failure",
    "test_entries_outside_f_domain_are_never_verified_by_absence",
}


@pytest.mark.slow
def test_the_counting_tests_keep_their_outcome_in_directional_mode():
    relu = lambda t: jnp.sum(jax.nn.relu(t) * jnp.arange(1.0, 6.0))
    report = gradlab.check(relu, jnp.array([-1.0, 0.0, 0.5, 0.0, 2.0]), entries=MODES[2])
    assert report.ok and report.n_kinks > 0, report
    report = gradlab.check(lambda p: jnp.sum(jnp.log(p)), jnp.array([1e-9, 1.0, 2.0]),
                           entries=MODES[2])  # fmt: skip
    assert not report.ok and report.leaves[0].n_nonfinite > 0, report


def _plain_tests():
    import test_bugs
    import test_correct
    import test_trust

    out = []
    for module in (test_bugs, test_trust, test_correct):
        for name, fn in vars(module).items():
            if name.startswith("test_") and callable(fn):
                if not inspect.signature(fn).parameters and not hasattr(fn, "pytestmark"):
                    out.append(pytest.param(fn, id=f"{module.__name__}::{name}"))
    return out


def _runs():
    out = []
    for test in _plain_tests():
        fn = test.values[0]
        for mode, entries in (
            ("sample", gradlab.Sample(8)),
            ("directional", gradlab.Directional(4)),
        ):
            if mode == "directional" and fn.__name__ in COUNTS_ENTRIES:
                continue  # see test_the_counting_tests_keep_their_outcome_in_directional_mode
            out.append(pytest.param(fn, entries, id=f"{test.id}-{mode}"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("test", "entries"), _runs())
def test_the_corpora_in_every_mode(test, entries, monkeypatch):
    for name in ("check", "assert_check"):
        original = getattr(gradlab, name)

        @functools.wraps(original)
        def in_mode(*args, _original=original, **kwargs):
            kwargs.setdefault("entries", entries)
            return _original(*args, **kwargs)

        monkeypatch.setattr(gradlab, name, in_mode)
    test()
