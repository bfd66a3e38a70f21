"""``Execution(max_seconds=...)``: a check estimated far over the limit says so before its sweep.

The estimate is taken before the sweep's kernels are compiled: from one timed run of ``f``
and its gradient at θ and the FLOPs of the sweep's kernels, traced (nothing compiled). The
proofs of "before" count what was compiled and which kernels were lowered or run, never the
wall clock. A check under the limit must be unaffected: the same numbers as with no limit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import monitoring

import gradlab
from gradlab.gradcheck.pipeline import _budget
from gradlab.gradcheck.programs._cache import ENV_VAR
from gradlab.gradcheck.programs._runner import Runner
from gradlab.gradcheck.report._progress import too_long


@contextlib.contextmanager
def _spied(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Counts XLA compiles, and records every kernel lowered or run through the runner."""
    seen: dict[str, Any] = {"compiled": [], "kernels": []}

    def count(name: str, secs: float, **kw: object) -> None:
        if name.endswith("backend_compile_duration"):
            seen["compiled"].append(str(kw.get("fun_name", "")))

    def spy(method: Any) -> Any:
        return lambda s, k, *a: (seen["kernels"].append(k), method(s, k, *a))[1]

    monkeypatch.setattr(Runner, "lower", spy(Runner.lower))
    monkeypatch.setattr(Runner, "run", spy(Runner.run))
    monitoring.register_event_duration_secs_listener(count)
    try:
        yield seen
    finally:
        monitoring.unregister_event_duration_listener(count)


def _model() -> tuple[Any, Any, Any]:
    """A two-layer tanh network, 8,320 parameters, 256 inputs."""
    k = jax.random.split(jax.random.key(0), 3)
    p = {"w1": jax.random.normal(k[0], (64, 128)) / 8, "w2": jax.random.normal(k[1], (128, 1)) / 11}
    x = jax.random.normal(k[2], (256, 64))
    f = lambda p, x: jnp.mean(jnp.tanh(jnp.tanh(x @ p["w1"]) @ p["w2"]) ** 2)
    return f, p, x


def _equinox_model() -> tuple[Any, Any, Any]:
    mlp = eqx.nn.MLP(32, 1, 64, 2, activation=jnp.tanh, key=jax.random.key(1))
    params, static = eqx.partition(mlp, eqx.is_inexact_array)
    x = jax.random.normal(jax.random.key(2), (128, 32))
    f = lambda p, x: jnp.mean(jax.vmap(eqx.combine(p, static))(x) ** 2)
    return f, params, x


MODELS = {"mlp": _model, "equinox": _equinox_model}


CASES = {"mlp": ("mlp", {}), "equinox": ("equinox", {}), "eps_auto": ("mlp", {"eps": "auto"})}


@pytest.mark.parametrize(
    "case", ["mlp", *(pytest.param(c, marks=pytest.mark.slow) for c in ("equinox", "eps_auto"))]
)
def test_a_check_far_over_the_limit_stops_before_its_sweep_is_compiled(case, monkeypatch):
    """Also before ``eps="auto"`` probes anything: its probes compile and run kernels."""
    model, options = CASES[case]
    monkeypatch.setenv(ENV_VAR, "0")  # nothing loaded from disk: every program compiles here
    jax.clear_caches()  # nor kept in this process
    f, p, x = MODELS[model]()
    tiny = gradlab.Execution(max_seconds=1e-3)
    with _spied(monkeypatch) as seen, pytest.raises(gradlab.CheckInputError) as info:
        gradlab.check(f, p, x, execution=tiny, **options)
    assert seen["kernels"] == []  # no difference kernel lowered or run through the runner
    programs = [name for name in seen["compiled"] if "convert_element_type" not in name]
    assert programs == ["jit(value_and_vjp)"]  # the gradient program alone: no sweep kernel
    message = str(info.value)
    assert "estimated before compiling its sweep" in message and "max_seconds=0.001" in message
    assert "entries=gradlab.Sample(64)" in message and "entries=gradlab.Directional(4)" in message
    assert "execution=gradlab.Execution(max_seconds=None)" in message
    # with the limit lifted, the same check runs to its verdict
    assert gradlab.check(f, p, x, execution=gradlab.Execution(max_seconds=None)).ok


def test_a_check_under_the_limit_is_unaffected():
    f, p, x = _model()
    limited = gradlab.check(f, p, x)  # the default limit, 60 s
    assert limited.ok and limited.n_evaluations >= 2 * 8_320  # every entry, both sides
    free = gradlab.check(f, p, x, execution=gradlab.Execution(max_seconds=None))
    assert [r.relative_error for r in limited.leaves] == [r.relative_error for r in free.leaves]
    assert limited.n_evaluations == free.n_evaluations


def test_a_sweep_of_one_call_is_never_stopped():
    """Nothing is left to save when the whole sweep is one call (as after a first batch)."""
    f = lambda w: jnp.sum(jnp.sin(w) * jnp.arange(w.size))
    assert gradlab.check(f, jnp.ones(4), execution=gradlab.Execution(max_seconds=1e-12)).ok


def test_the_first_batch_remains_the_second_line(monkeypatch):
    """Where the estimate before the sweep lets a check start, its first batch can stop it."""
    monkeypatch.setattr(_budget, "BEFORE_SWEEP_MARGIN", float("inf"))
    f = lambda w: jnp.sum(jnp.sin(w) * jnp.arange(w.size))
    slow = gradlab.Execution(max_seconds=1e-12, chunk_size=4)
    with pytest.raises(gradlab.CheckInputError, match="its first 4 perturbations took"):
        gradlab.check(f, jnp.linspace(0.1, 1.0, 200), execution=slow)


def test_the_estimate_is_given_in_hours_and_days():
    days = too_long(3 * 86_400 + 7_200, 60.0, 5_000_000, 3 * 86_400.0, [5_000_000], "full",
                    basis="estimated before compiling its sweep")  # fmt: skip
    assert days.startswith("gradlab.check would take about 3 days 2 h (estimated before")
    assert "Execution(max_seconds=60)" in days and "max_seconds=None" in days


def test_the_estimate_scales_the_timed_gradient_by_the_sweeps_flops():
    """The arithmetic of the estimate: the sweep's FLOPs at the rate of the timed run."""
    from gradlab.gradcheck.planning._estimate import dense_seconds, seconds_at_measured_rate
    from gradlab.gradcheck.planning._plan import Base, LeafPlan

    base = Base(np.zeros(1), np.zeros(1), [], "float64", 0, 0, flops_per_eval=1e6,
                grad_seconds=3e-3)  # fmt: skip
    plan = LeafPlan(0, None, "entry", np.arange(10_000), ("",), 100, 1e-6, None, 2e6)
    assert dense_seconds([plan], base, 1, False) == pytest.approx(20.0)  # 1e4 rows × 2 ms
    assert dense_seconds([plan], base, 4, True) == pytest.approx(10.0)
    assert seconds_at_measured_rate(1e9, base, 1, False) == pytest.approx(1.0)
