"""The notebook loop: the same ``f`` object checked again after what it computes has changed.

A researcher checks a layer, finds the gradient wrong, fixes the rule and checks the same
function again (or breaks it while refactoring). Every check must judge ``f`` as it is at the
call, whatever was compiled for it before: for each way a function can change without being
a new object, a right rule made wrong must FAIL and a wrong rule made right must PASS, in
the same process (programs kept in memory) and across processes (programs kept on disk).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab
from gradlab.gradcheck.programs._cache import ENV_VAR

THETA = np.linspace(-1.0, 1.0, 7)


def _value(w: Any) -> Any:
    return jnp.sum(jnp.sin(w) * w)


def _true_grad(w: Any) -> Any:
    return jnp.cos(w) * w + jnp.sin(w)


# Each case builds ONE function object and a switch that makes its gradient right or wrong
# (its value stays the same: a stale program would give the old verdict on the same value).


def _redefined_rule() -> tuple[Callable[..., Any], Callable[[bool], None]]:
    @jax.custom_vjp
    def g(w):
        return _value(w)

    def switch(right: bool) -> None:
        scale = 1.0 if right else 3.0
        g.defvjp(lambda w: (_value(w), w), lambda w, ct: (scale * ct * _true_grad(w),))

    return (lambda w: g(w)), switch


_SCALE = {"value": 1.0}
SCALE = 1.0


def _global_in_backward() -> tuple[Callable[..., Any], Callable[[bool], None]]:
    @jax.custom_vjp
    def g(w):
        return _value(w)

    # the backward pass reads a module-level global when it is traced
    g.defvjp(lambda w: (_value(w), w), lambda w, ct: (SCALE * ct * _true_grad(w),))

    def switch(right: bool) -> None:
        global SCALE
        SCALE = 1.0 if right else 3.0

    return (lambda w: g(w)), switch


def _closure_cell() -> tuple[Callable[..., Any], Callable[[bool], None]]:
    scale = 1.0

    @jax.custom_vjp
    def g(w):
        return _value(w)

    g.defvjp(lambda w: (_value(w), w), lambda w, ct: (scale * ct * _true_grad(w),))

    def switch(right: bool) -> None:
        nonlocal scale
        scale = 1.0 if right else 3.0

    return (lambda w: g(w)), switch


@dataclasses.dataclass(eq=False)  # hashed by identity, as modules of several libraries are
class _Layer:
    detach: bool = False

    def __call__(self, w: Any) -> Any:
        inner = jax.lax.stop_gradient(w) if self.detach else w
        return jnp.sum(jnp.sin(w) * inner)


def _dataclass_field() -> tuple[Callable[..., Any], Callable[[bool], None]]:
    layer = _Layer()

    def switch(right: bool) -> None:
        layer.detach = not right

    return layer, switch


class _Model:
    def __init__(self) -> None:
        self.detach = False

    def loss(self, w: Any) -> Any:
        inner = jax.lax.stop_gradient(w) if self.detach else w
        return jnp.sum(jnp.sin(w) * inner)


def _bound_method() -> tuple[Callable[..., Any], Callable[[bool], None]]:
    model = _Model()

    def switch(right: bool) -> None:
        model.detach = not right

    return model.loss, switch


def _partial_over_list() -> tuple[Callable[..., Any], Callable[[bool], None]]:
    flags = [False]

    def loss(flags: list[bool], w: Any) -> Any:
        inner = jax.lax.stop_gradient(w) if flags[0] else w
        return jnp.sum(jnp.sin(w) * inner)

    def switch(right: bool) -> None:
        flags[0] = not right

    return functools.partial(loss, flags), switch


CASES = {
    "defvjp re-defined": _redefined_rule,
    "global read by the backward pass": _global_in_backward,
    "closure cell": _closure_cell,
    "dataclass field switching stop_gradient": _dataclass_field,
    "attribute behind a bound method": _bound_method,
    "functools.partial over a mutated list": _partial_over_list,
}


@pytest.fixture(params=[True, False], ids=["cache on", "cache off"])
def cache(request, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path) if request.param else "0")
    yield
    global SCALE
    SCALE = 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("first", [True, False], ids=["right then wrong", "wrong then right"])
def test_the_same_f_is_judged_as_it_is_at_each_call(name, first, cache):
    f, switch = CASES[name]()
    want = {True: "passed", False: "failed"}
    for right in (first, not first, first):
        switch(right)
        report = gradlab.check(f, THETA)
        assert report.outcome == want[right], (name, right, str(report))
        assert np.isclose(report.value, float(_value(THETA)))


def test_a_changed_value_is_reported_as_it_is_now(cache):
    # what f computes changes with the attribute: the report shows f as it is now
    model = _Model()
    f = lambda w: model.loss(w) * model.scale
    for scale in (1.0, 2.0, 1.0):
        model.scale = scale
        report = gradlab.check(f, THETA)
        assert report.ok
        assert np.isclose(report.value, scale * float(_value(THETA)))


_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np, gradlab

    SCALE = float(sys.argv[1])

    @jax.custom_vjp
    def g(w):
        return jnp.sum(jnp.sin(w) * w)

    g.defvjp(lambda w: (g(w), w),
             lambda w, ct: (SCALE * ct * (jnp.cos(w) * w + jnp.sin(w)),))
    print(gradlab.check(lambda w: g(w), np.linspace(-1.0, 1.0, 7)).outcome)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("order", [(1.0, 3.0, 1.0), (3.0, 1.0, 3.0)])
def test_programs_kept_on_disk_follow_the_rule_across_processes(tmp_path, order):
    env = {**os.environ, ENV_VAR: str(tmp_path), "JAX_PLATFORMS": "cpu"}
    outcomes = []
    for scale in order:
        run = subprocess.run(
            [sys.executable, "-c", _SCRIPT, str(scale)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        outcomes.append(run.stdout.strip().splitlines()[-1])
    assert outcomes == ["passed" if s == 1.0 else "failed" for s in order]
    assert any((tmp_path / f"jax-{jax.__version__}").rglob("*")), "nothing was kept on disk"
