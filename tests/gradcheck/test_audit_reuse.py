"""The precision audit's program reused by what f traces to now, never by f's identity.

The audit traces ``jax.grad`` of ``f`` at the parameters' own dtype (float32) at every check
and compiles it only when that trace's strict fingerprint is new. The adversarial question:
can a program compiled for one float32 path stand in for another? Each test changes ONLY the
float32 path (the float64 check sees the same function either way, so only the audit can
tell) and asserts the audit judges the path as it is at the call, in both orders.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import monitoring

import gradlab
from gradlab.gradcheck.judging._audit import audit


@contextlib.contextmanager
def _compiles() -> Iterator[dict[str, int]]:
    """Counts XLA compiles inside the block (``n``), and the audit's own (``audit``)."""
    seen = {"n": 0, "audit": 0}

    def count(name: str, secs: float, **kw: object) -> None:
        if name.endswith("backend_compile_duration"):
            seen["n"] += 1
            seen["audit"] += "precision_audit" in str(kw.get("fun_name", ""))

    monitoring.register_event_duration_secs_listener(count)
    try:
        yield seen
    finally:
        monitoring.unregister_event_duration_listener(count)


def _mlp() -> tuple[dict[str, jax.Array], jax.Array]:
    k = jax.random.split(jax.random.key(3), 3)
    p = {
        "w1": jax.random.normal(k[0], (4, 6), jnp.float32) * 0.5,
        "w2": jax.random.normal(k[1], (6, 1), jnp.float32) * 0.5,
    }
    return p, jax.random.normal(k[2], (5, 4), jnp.float32)


def _net(act: Callable[[Any], Any]) -> Callable[..., Any]:
    return lambda p, x: jnp.sum(act(x @ p["w1"]) @ p["w2"])


def _float32_scaled(scale: Callable[[], Any]) -> Callable[[Any], Any]:
    """sin whose backward multiplies by ``scale()`` on the float32 path only (read at trace)."""

    @jax.custom_vjp
    def act(x):
        return jnp.sin(x)

    def bwd(x, g):
        slope = jnp.cos(x)
        if x.dtype == jnp.float32:
            slope = slope * scale()
        return (g * slope,)

    act.defvjp(lambda x: (jnp.sin(x), x), bwd)
    return act


# --------------------------------------------------------------------------- reuse


def test_a_second_audit_of_the_same_float32_f_compiles_nothing():
    p, x = _mlp()
    f = _net(jnp.tanh)
    leaves = jax.tree_util.tree_leaves(p)
    reference = [np.asarray(g, np.float64) for g in jax.tree_util.tree_leaves(jax.grad(f)(p, x))]
    args = (f, (p, x), (0,), None, ["w1", "w2"], [True, True], reference)
    with _compiles() as first:
        rows = audit(*args)
    with _compiles() as second:
        again = audit(*args)
    assert first["n"] >= 1  # the audit compiled its program once ...
    assert second["n"] == 0  # ... and found it compiled under the same fingerprint
    assert [r.dtype for r in rows] == [str(x.dtype) for x in leaves] == ["float32"] * 2
    assert rows == again and all(r.ok for r in rows)


def test_a_second_check_of_a_float32_model_compiles_nothing():
    p, x = _mlp()
    f = _net(jnp.tanh)
    assert gradlab.check(f, p, x).outcome == "passed"
    with _compiles() as seen:
        report = gradlab.check(f, p, x)
    assert report.outcome == "passed" and seen["n"] == 0


def test_the_audit_program_is_kept_on_disk_and_never_stands_in_for_a_changed_path(store):
    """As a new process would: programs dropped from memory between checks."""
    p, x = _mlp()
    f, switch = _redefined_rule()
    switch(True)
    with _compiles() as first:
        assert gradlab.check(f, p, x).outcome == "passed"
    jax.clear_caches()
    with _compiles() as second:
        assert gradlab.check(f, p, x).outcome == "passed"
    assert first["audit"] == 1 and second["audit"] == 0  # loaded from disk
    switch(False)  # the float32 rule made wrong: its program is another
    jax.clear_caches()
    with _compiles() as third:
        assert gradlab.check(f, p, x).outcome == "failed"
    assert third["audit"] == 1
    switch(True)
    jax.clear_caches()
    assert gradlab.check(f, p, x).outcome == "passed"


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64:UserWarning")
def test_an_audit_closing_over_float64_data_runs_again_from_a_new_process(store):
    """float64 data closed over, parameters float32, x64 off: JAX hoists the data into the
    audit program's arguments, and a program kept with them would narrow them at its next
    call. Each check, the first and one as a new process would run it, must run and pass."""
    with jax.enable_x64():
        a = jax.random.normal(jax.random.key(0), (40, 6), jnp.float64)
        y = a @ jax.random.normal(jax.random.key(1), (6,), jnp.float64)
    f = lambda p: jnp.sum((a @ p - y) ** 2)
    p = jnp.linspace(0.5, 1.5, 6, dtype=jnp.float32)
    with _compiles() as first:
        assert gradlab.check(f, p).ok
    assert first["audit"] == 1  # the audit ran
    jax.clear_caches()
    report = gradlab.check(f, p)
    assert report.ok, report


def test_a_program_without_a_fingerprint_is_compiled_again():
    """A host callback hides what runs: the audit recompiles it, and sees a changed rule."""
    box = {"scale": 1.0}
    act = _float32_scaled(lambda: box["scale"])

    def f(p, x):
        shape = jax.ShapeDtypeStruct(x.shape, x.dtype)  # x is data: never differentiated
        h = jax.pure_callback(np.asarray, shape, x, vmap_method="sequential")
        return jnp.sum(act(h @ p["w1"]) @ p["w2"])

    p, x = _mlp()
    reference = [np.asarray(g, np.float64) for g in jax.tree_util.tree_leaves(_ref_grad(f, p, x))]
    args = (f, (p, x), (0,), None, ["w1", "w2"], [True, True], reference)
    assert all(r.ok for r in audit(*args))
    box["scale"] = 1.5
    with _compiles() as seen:
        rows = audit(*args)
    assert seen["n"] >= 1 and not rows[0].ok


def _ref_grad(f: Callable[..., Any], p: Any, x: Any) -> Any:
    """The float64 gradient of ``f`` (its float32-only rule is not used there)."""
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
        return jax.tree_util.tree_map(np.asarray, jax.grad(f)(p64, np.asarray(x, np.float64)))


# --------------------------------------------------------------------------- the notebook loop
# ONE function object whose float32 path is switched right or wrong between two checks.


_GLOBAL_SCALE = 1.0


def _redefined_rule() -> tuple[Callable[..., Any], Callable[[bool], None]]:
    @jax.custom_vjp
    def act(x):
        return jnp.sin(x)

    def switch(right: bool) -> None:
        wrong32 = 1.0 if right else 1.5

        def bwd(x, g):
            slope = jnp.cos(x)
            return (g * (slope * wrong32 if x.dtype == jnp.float32 else slope),)

        act.defvjp(lambda x: (jnp.sin(x), x), bwd)

    return _net(act), switch


def _global_value() -> tuple[Callable[..., Any], Callable[[bool], None]]:
    act = _float32_scaled(lambda: _GLOBAL_SCALE)

    def switch(right: bool) -> None:
        global _GLOBAL_SCALE
        _GLOBAL_SCALE = 1.0 if right else 1.5

    return _net(act), switch


def _closed_over_value() -> tuple[Callable[..., Any], Callable[[bool], None]]:
    box = [1.0]
    act = _float32_scaled(lambda: box[0])

    def switch(right: bool) -> None:
        box[0] = 1.0 if right else 1.5

    return _net(act), switch


@dataclasses.dataclass
class _Layer:
    """A layer whose float32 backward reads a field (a mixed-precision switch)."""

    loss_scale: float = 1.0

    def __call__(self, p: Any, x: Any) -> Any:
        return _net(_float32_scaled(lambda: self.loss_scale))(p, x)


def _dataclass_field() -> tuple[Callable[..., Any], Callable[[bool], None]]:
    layer = _Layer()

    def switch(right: bool) -> None:
        layer.loss_scale = 1.0 if right else 1.5

    return layer.__call__, switch


CHANGES = {
    "redefined_rule": _redefined_rule,
    "global_value": _global_value,
    "closed_over_value": _closed_over_value,
    "dataclass_field": _dataclass_field,
}


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("first", [True, False], ids=["right_then_wrong", "wrong_then_right"])
def test_the_same_f_whose_float32_path_changed_is_audited_as_it_is_now(change, first):
    global _GLOBAL_SCALE
    p, x = _mlp()
    f, switch = CHANGES[change]()
    try:
        outcomes, reasons = [], []
        for right in (first, not first):
            switch(right)
            report = gradlab.check(f, p, x)
            assert not report.wrong, report  # the float64 check cannot tell: only the audit
            outcomes.append(report.outcome)
            reasons.append(" ".join(report.reasons))
    finally:
        _GLOBAL_SCALE = 1.0
    expected = ["passed" if right else "failed" for right in (first, not first)]
    assert outcomes == expected, reasons
    assert "float32 path" in reasons[expected.index("failed")]


# --------------------------------------------------------------------------- pairs of functions
# Two function objects that differ only where a key might be blind, checked in both orders.


def _constant_pair(right: bool) -> Callable[..., Any]:
    """The float32 backward multiplies by a constant array: ones, or 1.5 × ones."""
    c = np.full((5, 6), 1.0 if right else 1.5, np.float32)  # a fresh array each time
    return _net(_float32_scaled(lambda: jnp.asarray(c)))


def _rule_body_pair(right: bool) -> Callable[..., Any]:
    """Two rules with the same structure: the float32 backward is ``cos`` or ``cos + 0.5·cos``."""

    @jax.custom_vjp
    def act(x):
        return jnp.sin(x)

    if right:

        def bwd(x, g):
            return (g * jnp.cos(x),)
    else:

        def bwd(x, g):
            slope = jnp.cos(x)
            return (g * (slope + 0.5 * slope if x.dtype == jnp.float32 else slope),)

    act.defvjp(lambda x: (jnp.sin(x), x), bwd)
    return _net(act)


PAIRS = {"constant_value": _constant_pair, "rule_body": _rule_body_pair}


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("first", [True, False], ids=["right_first", "wrong_first"])
def test_two_functions_that_differ_only_on_the_float32_path(pair, first):
    p, x = _mlp()
    outcomes = [gradlab.check(PAIRS[pair](right), p, x).outcome for right in (first, not first)]
    assert outcomes == ["passed" if right else "failed" for right in (first, not first)]
