"""The checker's persistent compilation cache (gradlab.gradcheck.programs._cache).

Whether a process traced, lowered or compiled a program is read from JAX's own monitoring
events (``/jax/core/compile/backend_compile_duration`` for an XLA compile,
``jaxpr_to_mlir_module_duration`` for a lowering, ``/jax/compilation_cache/cache_misses`` when
JAX writes to its cache), in fresh subprocesses: in-memory caches would otherwise hide the
persistent ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import config as jax_config

from gradlab.gradcheck.programs import _cache
from gradlab.gradcheck.programs._cache import (
    ENV_VAR,
    PROGRAMS,
    cache_dir,
    compilation_cache,
    resolve_enabled,
)

SETTINGS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)

# A fresh process checks a small layer inside the cache's block and prints what JAX's cache
# did, and the settings after the block.
WORKER = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax import monitoring
    events = {}
    def count(name, **kw):
        events[name.rsplit("/", 1)[-1]] = events.get(name.rsplit("/", 1)[-1], 0) + 1
    monitoring.register_event_listener(count)
    monitoring.register_event_duration_secs_listener(lambda name, secs, **kw: count(name))
    import gradlab
    from gradlab.gradcheck.programs._cache import compilation_cache
    rng = np.random.default_rng(0)
    p = {"w": rng.normal(size=(4, 5)), "b": rng.normal(size=5), "v": rng.normal(size=5)}
    x = rng.normal(size=(6, 4))
    f = lambda p, x: jnp.mean(jnp.tanh(x @ p["w"] + p["b"]) @ p["v"])
    with compilation_cache() as path:
        ok = bool(gradlab.check(f, p, x).ok)
    inside = dict(events)
    jax.jit(lambda v: jnp.sin(v) * 3.0)(jnp.ones(7)).block_until_ready()  # after the block
    names = json.loads(sys.argv[1])
    from gradlab.gradcheck.programs._runner import _UNKNOWN_OPTIONS
    print(json.dumps({"path": path, "ok": ok, "inside": inside, "all": events,
                      "after": {n: getattr(jax.config, n) for n in names},
                      "refused": sorted(_UNKNOWN_OPTIONS)}))
    """
)


def _run_worker(env_value: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env |= {ENV_VAR: env_value, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-c", WORKER, json.dumps(SETTINGS)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _files(path: Path) -> set[str]:
    return {p.name for p in path.rglob("*-cache")}


def _programs(path: Path) -> set[str]:
    return {p.name for p in (path / PROGRAMS).glob("*") if not p.name.startswith(".")}


@pytest.mark.slow
def test_a_second_process_compiles_and_lowers_nothing(tmp_path):
    first = _run_worker(str(tmp_path))
    path = Path(first["path"])
    assert first["ok"] and path.parent == tmp_path and path.name == f"jax-{jax.__version__}"
    compiled = first["inside"].get("backend_compile_duration", 0)
    assert compiled >= 2 and first["inside"].get("cache_hits", 0) == 0
    # gradlab keeps every program it compiled itself (compiled afresh, not through JAX's
    # cache); an XLA that rejects a cheap-tier option records a compile for each refused
    # attempt too (jaxlib 0.11 has no xla_cpu_use_fusion_emitters)
    kept = len(_programs(path))
    assert kept >= 2
    assert kept == compiled if not first["refused"] else kept < compiled

    second = _run_worker(str(tmp_path))
    assert second["ok"] and second["path"] == first["path"]
    inside = second["inside"]
    assert inside.get("backend_compile_duration", 0) == 0, "the second process compiled"
    assert inside.get("jaxpr_to_mlir_module_duration", 0) == 0, "the second process lowered"
    assert inside.get("cache_misses", 0) == 0
    # after the block: JAX's settings are the defaults again and nothing more is written
    for run in (first, second):
        assert run["after"] == {n: getattr(jax_config, n[4:]).get_global() for n in SETTINGS}
        assert run["all"].get("cache_misses", 0) == run["inside"].get("cache_misses", 0)
    assert len(_programs(path)) == kept and not _files(path)


@pytest.mark.slow
def test_off_by_environment_variable_in_a_fresh_process(tmp_path):
    run = _run_worker("0")
    assert run["ok"] and run["path"] is None
    assert "cache_misses" not in run["all"] and "cache_hits" not in run["all"]


def _settings() -> dict[str, object]:
    return {n: getattr(jax.config, n) for n in SETTINGS}


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    """gradlab's cache under tmp_path, and no cache configured for JAX by the caller."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert jax.config.jax_compilation_cache_dir is None
    return tmp_path


@pytest.mark.slow
def test_settings_are_set_inside_and_restored_after(cache_root):
    before = _settings()
    with compilation_cache() as path:
        assert path == str(cache_root / f"jax-{jax.__version__}") and Path(path).is_dir()
        assert jax.config.jax_compilation_cache_dir == path
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
        # the worker threads that compile see the same (global) settings
        assert jax_config.compilation_cache_dir.get_global() == path
        jax.jit(lambda v: jnp.cos(v) + 1.25)(jnp.ones(3)).block_until_ready()
    assert _settings() == before
    written = _files(Path(path))
    assert written, "a program compiled inside the block is kept"
    jax.jit(lambda v: jnp.cos(v) - 4.5)(jnp.ones(3)).block_until_ready()
    assert _files(Path(path)) == written, "a program compiled after the block went to the cache"


def test_settings_are_restored_on_error(cache_root):
    before = _settings()
    with pytest.raises(RuntimeError, match="boom"), compilation_cache():
        raise RuntimeError("boom")
    assert _settings() == before


def test_a_thread_local_setting_of_the_caller_is_restored(cache_root):
    with jax_config.persistent_cache_min_compile_time_secs(7.0):
        with compilation_cache():
            assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 7.0
    assert jax_config.persistent_cache_min_compile_time_secs.get_global() == 1.0


def test_a_cache_the_user_configured_is_used_unchanged(cache_root, tmp_path):
    mine = str(tmp_path / "users-own")
    with jax_config.compilation_cache_dir(mine):
        before = _settings()
        for enabled in (None, True, False):
            with compilation_cache(enabled) as path:
                assert path == mine and _settings() == before
    assert not (cache_root / f"jax-{jax.__version__}").exists()


def test_nested_blocks_share_the_outer_cache(cache_root):
    with compilation_cache() as outer:
        with compilation_cache() as inner:
            assert inner == outer
        assert jax.config.jax_compilation_cache_dir == outer


def test_off_by_argument_or_environment(cache_root, monkeypatch):
    home = cache_root / "home"
    monkeypatch.setattr(_cache.platformdirs, "user_cache_dir", lambda name: str(home / name))
    before = _settings()
    with compilation_cache(False) as path:
        assert path is None and _settings() == before
    monkeypatch.setenv(ENV_VAR, "0")
    with compilation_cache() as path:
        assert path is None and _settings() == before
    with compilation_cache(True) as path:  # the argument wins over the variable
        assert path == str(home / "gradlab" / f"jax-{jax.__version__}")


def test_jax_caching_disabled_by_the_user_is_honoured(cache_root):
    with jax_config.enable_compilation_cache(False), compilation_cache() as path:
        assert path is None and jax.config.jax_compilation_cache_dir is None


def test_an_unusable_directory_runs_without_the_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(ENV_VAR, str(blocker / "cache"))
    before = _settings()
    with compilation_cache() as path:
        assert path is None and _settings() == before


@pytest.mark.parametrize(
    ("value", "want"),
    [("", True), ("1", True), ("on", True), ("0", False), ("False", False), ("off", False)],
)
def test_environment_values(monkeypatch, value, want):
    monkeypatch.setenv(ENV_VAR, value)
    assert resolve_enabled() is want
    assert resolve_enabled(not want) is (not want)


def test_bad_values_name_the_fix(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "maybe")
    with pytest.raises(ValueError, match=f"{ENV_VAR}='maybe'.*use 0"):
        resolve_enabled()
    with pytest.raises(ValueError, match="True, False or None"):
        resolve_enabled(np.int64(1))  # type: ignore[arg-type]


def test_default_directory_is_per_jax_version(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    path = cache_dir()
    assert path.name == f"jax-{jax.__version__}"
    assert path.parent == Path(_cache.platformdirs.user_cache_dir("gradlab"))
