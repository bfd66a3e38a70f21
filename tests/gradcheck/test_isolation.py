"""The caller's process after a check is as it was before (programs._scope, programs._cache).

A user's suite holds float32 code that passes alone; it must still pass after a check in the
same process, whatever became of the check (returned, failed, raised, interrupted, run from
several threads at once), and JAX's settings and compilation-cache state must be as before.
The float32 code reads a module-level NumPy float64 array (a mask, a projection, data loaded
with NumPy): JAX keeps its conversion of such an array found by the array alone, so a
check's float64 trace could leave it float64 for the caller.
"""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import compilation_cache as jax_cache
from jax._src import config as jax_config

import gradlab
from gradlab._errors import CheckInputError
from gradlab.gradcheck.pipeline import _first_order as _pipeline
from gradlab.gradcheck.programs import _cache
from gradlab.gradcheck.programs._cache import ENV_VAR

SETTINGS = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
    "jax_enable_compilation_cache",
)


def _state() -> dict[str, object]:
    """JAX's settings (global and as seen in this thread) and its compilation-cache state."""
    out: dict[str, object] = {}
    for name in SETTINGS:
        state = getattr(jax_config, name.removeprefix("jax_"))
        out[name] = state.value
        out[name + " (global)"] = state.get_global()
    out["jax cache object"] = jax_cache._cache is not None
    out["jax cache initialized"] = jax_cache.is_initialized()
    out["checks in flight"] = _cache.in_flight()
    return out


def _fresh_projection() -> np.ndarray:
    # a new array for each test: JAX's conversion cache is found by the array
    return np.linspace(-1.0, 1.0, 12).reshape(4, 3) / 3


def _users_float32_code(proj: np.ndarray) -> np.ndarray:
    """What the caller's own suite runs: a float32 layer under jit, reading ``proj``."""
    layer = lambda w, x: jnp.tanh(x @ w @ proj)
    w = jnp.asarray(np.eye(4) * 0.5, jnp.float32)
    x = jnp.asarray(np.arange(8.0).reshape(2, 4) / 8, jnp.float32)
    out = jax.jit(layer)(w, x)
    assert out.dtype == jnp.float32
    assert jnp.asarray(proj).dtype == jnp.float32
    return np.asarray(out)


@pytest.fixture(params=[True, False], ids=["cache on", "cache off"])
def cache(request, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path) if request.param else "0")


def _loss(proj):
    return lambda w, x: jnp.sum(jnp.tanh(x @ w @ proj) ** 2)


def _wrong_rule(proj):
    @jax.custom_vjp
    def g(w, x):
        return jnp.sum(jnp.tanh(x @ w @ proj) ** 2)

    def bwd(res, ct):
        w, x = res
        return 3.0 * jax.grad(lambda v: jnp.sum(jnp.tanh(x @ v @ proj) ** 2))(w) * ct, None

    g.defvjp(lambda w, x: (g(w, x), (w, x)), bwd)
    return g


W = np.eye(4) * 0.5 + 0.01 * np.arange(16.0).reshape(4, 4)
X = np.arange(8.0).reshape(2, 4) / 8


def _returned(proj):
    assert gradlab.check(_loss(proj), W, X).outcome == "passed"


def _failed(proj):
    assert gradlab.check(_wrong_rule(proj), W, X).outcome == "failed"


def _raised(proj):
    bad = lambda w, x: jnp.sum(jnp.log(x @ w @ proj - 10.0))  # NaN at θ
    with pytest.raises(CheckInputError):
        gradlab.check(bad, W, X)


def _interrupted(proj, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_pipeline, "_sweep_and_judge", interrupt)
    with pytest.raises(KeyboardInterrupt):
        gradlab.check(_loss(proj), W, X)


def _float32_params(proj):
    w32 = W.astype(np.float32)
    gradlab.check(_loss(proj), w32, X.astype(np.float32))


def _threads(proj):
    errors: list[BaseException] = []
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        try:
            barrier.wait()
            f = _loss(proj) if i % 2 else _wrong_rule(proj)
            outcomes.append(gradlab.check(f, W + 0.01 * i, X).outcome)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(outcomes) == ["failed", "failed", "passed", "passed"]


KINDS = {
    "returned": _returned,
    "failed": _failed,
    "raised": _raised,
    "float32 params": _float32_params,
    "4 threads at once": _threads,
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("before", [True, False], ids=["ran before", "first after"])
def test_float32_code_that_passes_alone_passes_after_a_check(kind, before, cache):
    proj = _fresh_projection()
    alone = _users_float32_code(_fresh_projection())
    if before:
        assert np.array_equal(_users_float32_code(proj), alone)
    state = _state()
    KINDS[kind](proj)
    assert _state() == state
    assert np.array_equal(_users_float32_code(proj), alone)


@pytest.mark.slow
def test_an_interrupted_check_leaves_the_process_as_it_was(cache, monkeypatch):
    proj = _fresh_projection()
    alone = _users_float32_code(_fresh_projection())
    state = _state()
    _interrupted(proj, monkeypatch)
    assert _state() == state
    assert np.array_equal(_users_float32_code(proj), alone)


def test_settings_the_caller_changed_meanwhile_are_kept(cache, tmp_path):
    # a check in flight in another thread must not take the caller's own setting for its own
    started, release = threading.Event(), threading.Event()

    def slow(w):
        started.set()
        release.wait(timeout=60)
        return jnp.sum(jnp.sin(w))

    before = _state()
    worker = threading.Thread(target=lambda: gradlab.check(slow, np.ones(3)))
    worker.start()
    try:
        assert started.wait(timeout=120)
        assert jax.config.read("jax_enable_x64") == before["jax_enable_x64"]
    finally:
        release.set()
        worker.join()
    assert _state() == before


def test_jax_reproduction_of_the_constant_conversion_cache():
    # plain JAX, no gradlab: the behaviour the checker contains (see docs/check.md)
    proj = _fresh_projection()
    loss = lambda x: jnp.sum(jnp.tanh(x @ proj))
    with jax.enable_x64(True):
        jaxpr = jax.make_jaxpr(loss)(np.ones((2, 4)))
    leaked = jnp.asarray(proj).dtype
    del jaxpr, loss
    jax.clear_caches()
    assert jnp.asarray(proj).dtype == jnp.float32
    # if JAX fixes it, the containment in gradlab.gradcheck.programs._scope becomes a no-op
    assert leaked in (jnp.float64, jnp.float32)
