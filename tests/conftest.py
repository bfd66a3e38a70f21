"""Shared fixtures: small models in the lecture's setting (tanh MLP + binary cross-entropy)."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradlab._jax_compat import keeps_programs_quietly
from gradlab.gradcheck.programs._cache import ENV_VAR, PROGRAMS

# Helper scripts run in subprocesses, not test modules (and not doctest targets).
collect_ignore_glob = ["_*.py"]

#: Packages whose doctests build, train or compare whole networks: they run in the full suite,
#: not in the fast loop (``-m "not slow"``), which keeps every other package's doctests.
_SLOW_DOCTESTS = ("gradlab.nn", "gradlab.init", "gradlab.train")


#: The value of gradlab's cache variable before the run (restored after it).
_CALLERS_CACHE: dict[str, str | None] = {}


def pytest_configure(config):
    """Checks made by the run (tests, doctests, subprocesses) keep programs in a folder of the
    run's own: no test reads what an earlier run left in the user's cache, nor fills it.

    Only where gradlab keeps programs by default (a jaxlib whose kept CPU programs load
    quietly): naming a folder also turns the cache on where it is off by default, and the
    tests run as a user's checks run.
    """
    if not keeps_programs_quietly(types.SimpleNamespace(platform="cpu")):
        return  # off by default there: nothing is read or kept
    _CALLERS_CACHE["value"] = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = tempfile.mkdtemp(prefix="gradlab-tests-cache-")


def pytest_unconfigure(config):
    """Removes the run's cache folder and gives the variable back its value."""
    folder = os.environ.get(ENV_VAR)
    if "value" not in _CALLERS_CACHE:
        return
    before = _CALLERS_CACHE.pop("value")
    if before is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = before
    if folder and Path(folder).name.startswith("gradlab-tests-cache-"):
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Marks the doctests of :data:`_SLOW_DOCTESTS` slow."""
    for item in items:
        if type(item).__name__ == "DoctestItem" and item.name.startswith(_SLOW_DOCTESTS):
            item.add_marker(pytest.mark.slow)


def mlp_params(key, sizes, dtype=jnp.float64):
    params = []
    for a, b in itertools.pairwise(sizes):
        key, kw, kb = jax.random.split(key, 3)
        params.append(
            {
                "w": (jax.random.normal(kw, (a, b)) / np.sqrt(a)).astype(dtype),
                "b": (0.1 * jax.random.normal(kb, (b,))).astype(dtype),
            }
        )
    return params


def act_with_rule(fwd_fn, bwd_fn):
    """An activation whose backward pass is the given (possibly buggy) rule."""

    @jax.custom_vjp
    def act(z):
        return fwd_fn(z)

    act.defvjp(lambda z: (fwd_fn(z), z), lambda z, g: (bwd_fn(z, g),))
    return act


def small_mlp_data():
    """(params, x, y) of a 4-6-5-1 MLP on 12 examples, float64."""
    with jax.enable_x64(True):
        params = mlp_params(jax.random.PRNGKey(0), [4, 6, 5, 1])
        x = jax.random.normal(jax.random.PRNGKey(1), (12, 4), dtype=jnp.float64)
        y = (jax.random.uniform(jax.random.PRNGKey(2), (12,)) > 0.5).astype(jnp.float64)
    return params, x, y


def mlp_bce(params, x, y, act=jnp.tanh):
    """The lecture's J(W, b): sigmoid output, binary cross-entropy, in logit form."""
    h = x
    for p in params[:-1]:
        h = act(h @ p["w"] + p["b"])
    z = (h @ params[-1]["w"] + params[-1]["b"])[:, 0]
    return jnp.mean(jax.nn.softplus(z) - y * z)


@pytest.fixture
def mlp_problem():
    """A small tanh MLP with binary cross-entropy: (f, params, x, y)."""
    with jax.enable_x64(True):
        params = mlp_params(jax.random.PRNGKey(0), [5, 8, 6, 1])
        x = jax.random.normal(jax.random.PRNGKey(1), (16, 5), dtype=jnp.float64)
        y = (jax.random.uniform(jax.random.PRNGKey(2), (16,)) > 0.5).astype(jnp.float64)
    return mlp_bce, params, x, y


#: Global JAX settings no test (and nothing gradlab does) may leave changed.
_GLOBAL_SETTINGS = ("jax_enable_x64", "jax_default_matmul_precision", "jax_compilation_cache_dir")


@pytest.fixture(autouse=True)
def _jax_settings_unchanged():
    """Fails the test after which JAX's global settings differ from before it."""
    before = {name: getattr(jax.config, name) for name in _GLOBAL_SETTINGS}
    yield
    after = {name: getattr(jax.config, name) for name in _GLOBAL_SETTINGS}
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    for name, (value, _) in changed.items():  # restore, so that one leak fails one test
        jax.config.update(name, value)
    assert not changed, f"JAX settings left changed (before, after): {changed}"


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    """gradlab's cache under tmp_path, JAX's in-memory caches cleared around the test.

    Returns the folder where checks keep their compiled programs.
    """
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    jax.clear_caches()
    yield tmp_path / f"jax-{jax.__version__}" / PROGRAMS
    jax.clear_caches()
