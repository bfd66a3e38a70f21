"""Property tests: any pytree of float leaves, any dtype; a bug in any one leaf is found."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradlab

shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)
dtypes = st.sampled_from([np.float32, np.float64, np.float16])


@st.composite
def pytrees(draw):
    """Nested dicts/lists/tuples of float arrays, with their flat leaves."""
    n = draw(st.integers(1, 4))
    leaves = []
    for _ in range(n):
        shape = draw(shapes)
        dtype = draw(dtypes)
        seed = draw(st.integers(0, 2**16))
        leaves.append(np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(dtype))
    layout = draw(st.sampled_from(["dict", "list", "tuple", "nested"]))
    if layout == "dict":
        tree = {f"p{i}": a for i, a in enumerate(leaves)}
    elif layout == "list":
        tree = list(leaves)
    elif layout == "tuple":
        tree = tuple(leaves)
    else:
        tree = {"outer": [leaves[0], {"inner": tuple(leaves[1:])}]}
    return tree


def smooth(tree):
    """A smooth scalar that mixes every entry of every leaf, with distinct weights."""
    total = 0.0
    for k, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
        w = jnp.arange(1.0, leaf.size + 1.0).reshape(leaf.shape) / (k + 1)
        total = total + jnp.sum(jnp.sin(leaf * w)) + 0.5 * jnp.sum(leaf**2)
    return total


# Derandomized: CI replays the same examples on every run.
settings.register_profile(
    "gradlab",
    deadline=None,
    max_examples=25,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("gradlab")


@pytest.mark.slow
@given(pytrees())
def test_correct_gradients_pass_for_any_pytree(tree):
    report = gradlab.check(smooth, tree)
    assert report.ok, report
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    assert [leaf.shape for leaf in report.leaves] == [np.shape(x) for _, x in flat]
    assert [leaf.dtype for leaf in report.leaves] == [str(np.asarray(x).dtype) for _, x in flat]
    assert report.n_entries == sum(np.size(x) for _, x in flat)
    assert report.verdict == "happy"


@pytest.mark.slow
@given(pytrees(), st.data())
def test_a_bug_in_any_one_leaf_is_found_in_that_leaf_only(tree, data):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    bad = data.draw(st.integers(0, len(leaves) - 1))

    @jax.custom_vjp
    def tag(x):
        return x

    tag.defvjp(lambda x: (x, None), lambda _, g: (1.01 * g,))  # 1% off in one leaf

    def f(tree):
        ls = jax.tree_util.tree_leaves(tree)
        ls = [tag(x) if i == bad else x for i, x in enumerate(ls)]
        return smooth(jax.tree_util.tree_unflatten(treedef, ls))

    report = gradlab.check(f, tree)
    statuses = [leaf.status for leaf in report.leaves]
    assert statuses[bad] == "wrong"
    assert all(s == "verified" for i, s in enumerate(statuses) if i != bad), report
    assert not report.ok
