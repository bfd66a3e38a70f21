"""Programs kept on disk before tracing (gradlab.gradcheck.programs._stored, ._fingerprint).

The adversarial question for a cache keyed before tracing: can a program kept for one
function stand in for another? Each test here changes something a stale program would hide
(a custom rule, a closed-over constant, a literal) and asserts the check sees it. Programs
are dropped from memory between checks (``jax.clear_caches()``), so the second check reads
the disk as a fresh process would.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import monitoring

import gradlab
from gradlab.gradcheck.programs import _program_key, _stored
from gradlab.gradcheck.programs._cache import ENV_VAR, PROGRAMS
from gradlab.gradcheck.programs._fingerprint import fingerprint
from gradlab.gradcheck.programs._tier import Tier


def _kept(folder: Path) -> set[str]:
    return (
        {p.name for p in folder.glob("*") if not p.name.startswith(".")}
        if folder.exists()
        else set()
    )


@contextlib.contextmanager
def _events() -> Iterator[dict[str, int]]:
    """Counts JAX's lowerings and XLA compiles inside the block."""
    seen: dict[str, int] = {}

    def count(name: str, secs: float, **kw: object) -> None:
        key = name.rsplit("/", 1)[-1]
        seen[key] = seen.get(key, 0) + 1

    monitoring.register_event_duration_secs_listener(count)
    try:
        yield seen
    finally:
        monitoring.unregister_event_duration_listener(count)


def _scaled_rule(scale: float):
    """sum(sin(x)) with a custom_vjp whose backward is ``scale`` × the true one."""

    @jax.custom_vjp
    def g(x):
        return jnp.sum(jnp.sin(x))

    g.defvjp(lambda x: (g(x), x), lambda x, ct: (scale * ct * jnp.cos(x),))
    return g


THETA = np.linspace(-1.0, 1.0, 7)


# --------------------------------------------------------------------------- fingerprints


def test_the_fingerprint_sees_constants_literals_and_shapes():
    def trace(c, k, n=5):
        return jax.make_jaxpr(lambda x: jnp.sum(jnp.tanh(x * c) + k))(jnp.ones(n))

    base = fingerprint(trace(np.arange(5.0), 2.0))
    assert base == fingerprint(trace(np.arange(5.0), 2.0))
    # changes float32 resolves (the tests run without x64): a constant, a literal, a shape
    changed = [trace(np.arange(5.0) + 1e-3, 2.0), trace(np.arange(5.0), 2.0 + 1e-3),
               trace(np.arange(6.0), 2.0, 6)]  # fmt: skip
    assert all(fingerprint(c) != base for c in changed)


def test_a_custom_rule_is_part_of_the_fingerprint_of_f_itself():
    # the forward jaxprs print the same; the rules' bodies, traced, tell them apart
    forward = lambda s: jax.make_jaxpr(_scaled_rule(s))(jnp.ones(3))
    gradient = lambda s: jax.jit(jax.grad(_scaled_rule(s))).trace(jnp.ones(3)).jaxpr
    assert str(forward(1.0)) == str(forward(2.0))
    assert fingerprint(forward(1.0)) == fingerprint(forward(1.0)) is not None
    assert fingerprint(forward(1.0)) != fingerprint(forward(2.0)) is not None
    assert fingerprint(forward(1.0), strict=False) == fingerprint(forward(2.0), strict=False)
    assert fingerprint(gradient(1.0)) != fingerprint(gradient(2.0))
    assert fingerprint(gradient(1.0)) is not None


def test_host_callbacks_are_never_fingerprinted():
    f = lambda x: jnp.sum(jax.pure_callback(np.sin, jax.ShapeDtypeStruct((3,), x.dtype), x))
    closed = jax.make_jaxpr(f)(jnp.ones(3))
    assert fingerprint(closed) is None
    assert fingerprint(closed, strict=False) is not None  # comparable, not a key


# ------------------------------------------------------------------ programs on disk


@pytest.mark.slow
def test_a_second_check_loads_instead_of_lowering_and_compiling(store):
    f = lambda p, x: jnp.mean(jnp.tanh(x @ p["w"] + p["b"]))
    rng = np.random.default_rng(0)
    p, x = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}, rng.normal(size=(5, 4))
    with _events() as first:
        assert gradlab.check(f, p, x).ok
    assert first.get("backend_compile_duration", 0) >= 2 and len(_kept(store)) >= 2
    jax.clear_caches()
    with _events() as second:
        report = gradlab.check(f, p, x)
    assert report.ok
    assert second.get("backend_compile_duration", 0) == 0
    assert second.get("jaxpr_to_mlir_module_duration", 0) == 0


@pytest.mark.slow
@pytest.mark.parametrize("order", [(1.0, 2.0), (2.0, 1.0)])
def test_a_kept_program_never_stands_in_for_a_changed_custom_rule(store, order):
    # the same forward pass (the difference kernel is shared and loaded), another backward
    outcomes = []
    for scale in order:
        jax.clear_caches()
        outcomes.append(gradlab.check(_scaled_rule(scale), THETA).outcome)
    want = {1.0: "passed", 2.0: "failed"}
    assert outcomes == [want[s] for s in order]


@pytest.mark.slow
def test_a_changed_constant_gets_programs_of_its_own(store):
    def layer(c):
        @jax.custom_vjp
        def f(x):
            return jnp.sum(jnp.sin(x * c))

        # the rule is written for c = 1.5: right there, wrong for any other c
        f.defvjp(lambda x: (f(x), x), lambda x, ct: (ct * 1.5 * jnp.cos(x * c),))
        return f

    assert gradlab.check(layer(np.full(7, 1.5)), THETA).ok
    kept = _kept(store)
    jax.clear_caches()
    report = gradlab.check(layer(np.full(7, 1.25)), THETA)
    assert report.outcome == "failed"
    assert np.isclose(report.value, np.sum(np.sin(THETA * 1.25)))
    assert _kept(store) > kept


def test_an_unreadable_entry_is_compiled_again(store):
    f = lambda w: jnp.sum(jnp.cos(w) ** 2)
    assert gradlab.check(f, THETA).ok
    for entry in store.iterdir():
        entry.write_bytes(entry.read_bytes()[:100])  # truncated
    jax.clear_caches()
    with _events() as seen:
        assert gradlab.check(f, THETA).ok
    assert seen.get("backend_compile_duration", 0) >= 2
    jax.clear_caches()
    with _events() as again:  # rewritten whole
        assert gradlab.check(f, THETA).ok
    assert again.get("backend_compile_duration", 0) == 0


def test_callbacks_run_but_are_not_kept(store):
    seen = []

    def f(w):
        jax.debug.callback(lambda v: seen.append(1), w)  # an effect: its program calls back
        return jnp.sum(jnp.sin(w) ** 2)

    assert gradlab.check(f, THETA).ok and seen
    assert not _kept(store)


def test_nothing_is_kept_when_the_cache_is_off(store, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "0")
    assert gradlab.check(lambda w: jnp.sum(w**3), THETA).ok
    assert not store.exists()


def test_an_unwritable_folder_keeps_nothing_and_checks_anyway(store, monkeypatch):
    store.parent.mkdir(parents=True)
    store.write_text("a file where the folder should be")
    assert gradlab.check(lambda w: jnp.sum(jnp.exp(w)), THETA).ok
    assert store.is_file()


def test_the_key_holds_the_device_settings_compile_tier_and_processor(monkeypatch):
    device = jax.devices()[0]
    keys = {_program_key.environment(device, tier) for tier in Tier}
    assert len(keys) == len(Tier)
    with jax.default_matmul_precision("float32"):
        other = _program_key.environment(device, Tier.CHEAP)
    assert other != _program_key.environment(device, Tier.CHEAP)
    here = _program_key.environment(device, Tier.CHEAP)
    monkeypatch.setattr(_program_key, "_host", lambda: "another processor's instruction set")
    assert _program_key.environment(device, Tier.CHEAP) != here


@pytest.mark.slow
def test_a_program_calling_a_library_is_not_kept_and_a_fresh_process_runs_it(tmp_path):
    # eigh lowers to a LAPACK custom call whose handler JAX registers while lowering; a kept
    # program would skip that and crash the next process (it did, before this rule)
    script = textwrap.dedent(
        """
        import jax.numpy as jnp, gradlab
        f = lambda p: jnp.sum(jnp.linalg.eigh(p.reshape(3, 3))[0] * jnp.arange(1.0, 4.0))
        p = jnp.array([2.0, 0.3, -0.1, 0.3, 1.0, 0.2, -0.1, 0.2, 3.0])
        print(gradlab.check(f, p).outcome)
        """
    )
    env = {**os.environ, ENV_VAR: str(tmp_path), "JAX_PLATFORMS": "cpu"}
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.strip().splitlines()[-1] == "passed"
    kept = tmp_path / f"jax-{jax.__version__}" / PROGRAMS
    assert not _kept(kept), "a program with a custom call was kept"


# ------------------------------------------------------------ stored programs you can trust

_CHECK_SCRIPT = textwrap.dedent(
    """
    import jax.numpy as jnp, numpy as np, gradlab
    f = lambda p, x: jnp.mean(jnp.tanh(x @ p["w"] + p["b"]))
    rng = np.random.default_rng(0)
    p, x = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}, rng.normal(size=(5, 4))
    print(gradlab.check(f, p, x).outcome)
    """
)


def _run_check(root: Path, script: str = _CHECK_SCRIPT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, ENV_VAR: str(root), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_damaged_entries_are_deleted_and_rebuilt_never_loaded(tmp_path):
    # the loading runs in a subprocess: a damaged executable could kill the process
    run = _run_check(tmp_path)
    assert run.returncode == 0 and run.stdout.split()[-1] == "passed", run.stderr[-2000:]
    folder = tmp_path / f"jax-{jax.__version__}" / PROGRAMS
    names = sorted(_kept(folder))
    assert len(names) >= 2
    rng = np.random.default_rng(0)
    for round_ in range(6):
        damaged = []
        for name in names:
            path = folder / name
            blob = bytearray(path.read_bytes())
            if round_ % 3 == 2:
                blob = blob[: int(rng.integers(1, len(blob)))]  # truncated
            else:
                for _ in range(int(rng.integers(1, 4))):  # one to three flipped bits
                    i = int(rng.integers(len(blob)))
                    blob[i] ^= 1 << int(rng.integers(8))
            path.write_bytes(bytes(blob))
            damaged.append(name)
        run = _run_check(tmp_path)
        assert run.returncode == 0, (round_, run.stderr[-2000:])
        assert run.stdout.split()[-1] == "passed", (round_, run.stdout)
        for name in damaged:  # rebuilt whole: every entry's digest holds again
            assert _stored._verified((folder / name).read_bytes()) is not None


_EVIL = textwrap.dedent(
    """
    import os, pickle, hashlib, sys
    from gradlab.gradcheck.programs import _stored
    class Evil:
        def __reduce__(self):
            return (open, (sys.argv[2], "w"))
    payload = pickle.dumps(Evil())
    blob = _stored._MAGIC + hashlib.sha256(payload).digest() + payload
    for name in os.listdir(sys.argv[1]):
        if not name.startswith("."):
            with open(os.path.join(sys.argv[1], name), "wb") as fh:
                fh.write(blob)
    """
)


@pytest.mark.slow
def test_nothing_is_loaded_or_stored_in_a_folder_others_can_write(tmp_path):
    run = _run_check(tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    folder = tmp_path / f"jax-{jax.__version__}" / PROGRAMS
    kept = _kept(folder)
    assert kept
    marker = tmp_path / "code-ran"
    # entries that run code when unpickled, with valid digests (written by someone else)
    planted = subprocess.run([sys.executable, "-c", _EVIL, str(folder), str(marker)],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert planted.returncode == 0, planted.stderr
    folder.chmod(0o777)  # the group and others may write there now
    try:
        run = _run_check(tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.split()[-1] == "passed"
        assert not marker.exists(), "an entry of a folder others can write was unpickled"
        assert _kept(folder) == kept  # nothing stored there either
    finally:
        folder.chmod(0o700)
    assert _stored.programs_folder(folder.parent) == folder


def test_a_folder_others_can_write_is_refused_with_a_reason(tmp_path):
    root = tmp_path / "cache"
    assert _stored.programs_folder(root) == root / PROGRAMS
    root.chmod(0o775)
    assert _stored.programs_folder(root) is None
    assert "writable by its group or by others" in _stored.unsafe_reason()
    root.chmod(0o700)
    assert _stored.programs_folder(root) is not None and _stored.unsafe_reason() == ""


def test_a_remote_or_configured_jax_cache_gets_no_programs(tmp_path, monkeypatch):
    from jax._src import config as jax_config

    from gradlab.gradcheck.programs._cache import compilation_cache

    monkeypatch.chdir(tmp_path)
    for configured in ("gs://bucket/jax-cache", str(tmp_path / "users-jax-cache")):
        with jax_config.compilation_cache_dir(configured), compilation_cache() as path:
            assert path == configured
            assert _stored.directory() is None
    assert not (tmp_path / "gs:").exists()
    assert not (tmp_path / "users-jax-cache" / PROGRAMS).exists()
    assert _stored.programs_folder(Path("gs://bucket/x")) is None
    assert not (tmp_path / "gs:").exists()


def test_the_least_recently_used_programs_are_evicted(tmp_path):
    folder = tmp_path / PROGRAMS
    folder.mkdir()
    for i in range(5):
        (folder / f"entry{i}").write_bytes(b"x" * 1000)
        os.utime(folder / f"entry{i}", (1000 + i, 1000 + i))
    os.utime(folder / "entry0", (5000, 5000))  # used most recently
    assert _stored.evict(folder, 2500) == 3
    assert _kept(folder) == {"entry0", "entry4"}


def test_a_check_keeps_the_folder_under_its_limit(store, monkeypatch):
    monkeypatch.setenv(_stored.MAX_ENV_VAR, "0.002")  # about 2 kB: less than one program
    assert gradlab.check(lambda w: jnp.sum(jnp.sin(w) ** 3), THETA).ok
    assert sum(p.stat().st_size for p in store.iterdir()) <= 0.002 * 2**20


def test_the_processor_key_holds_aarch64_features_and_the_cpu_part(monkeypatch):
    base = "processor : 0\nCPU implementer : 0x41\nCPU part : 0xd0c\nFeatures : fp asimd sve\n"
    keys = []
    for text in (base, base.replace(" sve", ""), base.replace("0xd0c", "0xd40"), base):
        monkeypatch.setattr(_program_key, "_read_cpuinfo", lambda text=text: text)
        _program_key._host.cache_clear()
        keys.append(_program_key.environment(jax.devices()[0], Tier.CHEAP))
    _program_key._host.cache_clear()
    assert len(set(keys[:3])) == 3 and keys[0] == keys[3]


def test_every_source_file_that_shapes_a_program_is_in_the_key():
    files = set(_program_key.source_files())
    checker = Path(gradlab.__file__).resolve().parent / "gradcheck"
    assert set(checker.rglob("*.py")) <= files  # every stage of the checker, however deep
    names = {str(p).replace(os.sep, "/").split("gradlab/")[-1] for p in files}
    assert {"_jax_compat.py", "gradcheck/evaluation/_kernels.py"} <= names
    assert "gradcheck/evaluation/_slices.py" in names and "gradcheck/planning/_problem.py" in names


def test_a_cache_folder_others_can_write_is_not_used_at_all(tmp_path, monkeypatch):
    from jax._src import config as jax_config

    from gradlab.gradcheck.programs._cache import compilation_cache

    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    folder = tmp_path / f"jax-{jax.__version__}"
    folder.mkdir()
    folder.chmod(0o777)  # JAX's executables there would be code others could plant
    before = jax_config.compilation_cache_dir.value
    try:
        with compilation_cache() as path:
            assert path is None and _stored.directory() is None
            assert jax_config.compilation_cache_dir.value == before
        assert gradlab.check(lambda w: jnp.sum(jnp.cos(w) ** 2), THETA).ok
        assert not any(folder.iterdir())
    finally:
        folder.chmod(0o700)
