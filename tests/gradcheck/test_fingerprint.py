"""Fingerprints that cannot collide, or no reuse (gradlab.gradcheck.programs._fingerprint).

Pairs of functions that differ only where a printed jaxpr does not show it — a Pallas
kernel's block index map, a custom rule's body inside a loop — must get different
fingerprints, and whichever of the pair is checked first, in the same process or in a later
one sharing the disk cache, the buggy one must fail and the correct one pass. What the
fingerprint cannot see in full gives no fingerprint, and no reuse.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.extend import core as jex

import gradlab
from gradlab.gradcheck.programs._cache import ENV_VAR
from gradlab.gradcheck.programs._fingerprint import fingerprint

N, BLOCK = 8, 4


def _matmul(a, b, transposed: bool):
    """``a @ b`` by a Pallas kernel (interpret mode) over a 2×2 grid of output blocks.

    ``transposed``: the output block index map is ``(j, i)`` instead of ``(i, j)`` — a bug
    that only the grid mapping shows.
    """

    def kernel(a_ref, b_ref, o_ref):
        o_ref[...] = a_ref[...] @ b_ref[...]

    out = (lambda i, j: (j, i)) if transposed else (lambda i, j: (i, j))
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((N, N), a.dtype),
        grid=(N // BLOCK, N // BLOCK),
        in_specs=[
            pl.BlockSpec((BLOCK, N), lambda i, j: (i, 0)),
            pl.BlockSpec((N, BLOCK), lambda i, j: (0, j)),
        ],
        out_specs=pl.BlockSpec((BLOCK, BLOCK), out),
        interpret=True,
    )(a, b)


def pallas_layer(transposed: bool):
    """``sum(tanh(x @ w) · v)`` whose backward computes ``xᵀ @ g`` with a Pallas kernel."""
    rng = np.random.default_rng(0)
    x, v = rng.normal(size=(N, N)), rng.normal(size=(N, N))

    @jax.custom_vjp
    def dense(w):
        return jnp.tanh(x @ w)

    def fwd(w):
        y = jnp.tanh(x @ w)
        return y, y

    def bwd(y, g):
        return (_matmul(jnp.asarray(x).T, g * (1 - y**2), transposed),)

    dense.defvjp(fwd, bwd)
    return lambda w: jnp.sum(dense(w) * v)


def scan_rule_layer(scale: float):
    """A ``custom_jvp`` inside a ``scan`` body whose rule is ``scale`` × the true one."""

    @jax.custom_jvp
    def act(x):
        return jnp.sin(x)

    act.defjvp(lambda p, t: (jnp.sin(p[0]), scale * jnp.cos(p[0]) * t[0]))

    def f(w):
        def body(c, _):
            return act(c * w), None

        out, _ = jax.lax.scan(body, jnp.ones_like(w), None, length=3)
        return jnp.sum(out)

    return f


W = np.random.default_rng(1).normal(size=(N, N)) * 0.3


@pytest.mark.slow
def test_a_transposed_block_index_map_changes_the_fingerprint():
    trace = lambda t: jax.make_jaxpr(lambda a, b: _matmul(a, b, t))(jnp.ones((N, N)), jnp.eye(N))
    assert str(trace(True)) == str(trace(False))  # the printed jaxprs do not show it
    assert fingerprint(trace(True)) != fingerprint(trace(False))
    assert fingerprint(trace(True)) == fingerprint(trace(True)) is not None
    # the kernel computes something else (the bug is real)
    a = jnp.arange(N * N, dtype=jnp.float32).reshape(N, N)
    assert not np.allclose(_matmul(a, jnp.eye(N), True), a)
    assert np.allclose(_matmul(a, jnp.eye(N), False), a)


def test_rules_inside_loop_bodies_are_traced_into_the_fingerprint():
    trace = lambda s: jax.make_jaxpr(scan_rule_layer(s))(jnp.ones(3))
    assert str(trace(1.0)) == str(trace(3.0))
    assert fingerprint(trace(1.0)) != fingerprint(trace(3.0))
    assert fingerprint(trace(1.0)) == fingerprint(trace(1.0)) is not None


def test_an_opaque_parameter_means_no_fingerprint():
    opaque_p = jex.Primitive("gradlab_test_opaque")
    opaque_p.def_abstract_eval(lambda x, **_: x)

    class Hidden:  # its repr shows nothing of what it holds
        def __init__(self, scale: float) -> None:
            self.scale = scale

    closed = jax.make_jaxpr(lambda x: opaque_p.bind(x, how=Hidden(2.0)))(jnp.ones(3))
    assert fingerprint(closed) is None
    fn = jax.make_jaxpr(lambda x: opaque_p.bind(x, how=lambda y: 2 * y))(jnp.ones(3))
    assert fingerprint(fn) is None


@pytest.fixture(params=[True, False], ids=["cache on", "cache off"])
def cache(request, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path) if request.param else "0")


@pytest.mark.slow
@pytest.mark.parametrize("buggy_first", [True, False], ids=["buggy first", "correct first"])
def test_the_pallas_twins_are_judged_each_on_its_own_in_process(cache, buggy_first):
    order = [True, False] if buggy_first else [False, True]
    outcomes = {t: gradlab.check(pallas_layer(t), W).outcome for t in order}
    assert outcomes == {True: "failed", False: "passed"}


@pytest.mark.slow
@pytest.mark.parametrize("first", [1.0, 3.0])
def test_rules_in_loop_bodies_are_judged_each_on_its_own(cache, first):
    order = [first, 4.0 - first]
    outcomes = {s: gradlab.check(scan_rule_layer(s), np.linspace(0.2, 0.8, 3)).outcome
                for s in order}  # fmt: skip
    assert outcomes == {1.0: "passed", 3.0: "failed"}


_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import test_fingerprint as t
    import gradlab
    print(gradlab.check(t.pallas_layer(sys.argv[1] == "buggy"), t.W).outcome)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("order", [("buggy", "correct"), ("correct", "buggy")])
def test_the_pallas_twins_across_processes(tmp_path, order):
    env = {**os.environ, ENV_VAR: str(tmp_path), "JAX_PLATFORMS": "cpu"}
    script = _SCRIPT.format(tests=os.path.dirname(__file__))
    outcomes = []
    for which in (*order, *order):  # each twin twice: the second run may load from disk
        run = subprocess.run([sys.executable, "-c", script, which], env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        outcomes.append(run.stdout.strip().splitlines()[-1])
    want = {"buggy": "failed", "correct": "passed"}
    assert outcomes == [want[w] for w in (*order, *order)]
