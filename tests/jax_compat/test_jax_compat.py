"""Every private or experimental JAX API gradlab uses still works, on this JAX.

CI runs this on the oldest and the newest supported JAX: when a release moves one of these,
the failure names it here rather than somewhere deep inside a check.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jex

from gradlab import _jax_compat as compat


def test_scan_counts_reads_constants_and_carries():
    def f(a, b, xs):
        body = lambda carry, x: ((carry[0] * a + x, carry[1] + b), x)
        return jax.lax.scan(body, (0.0, 1.0), xs)

    eqn = jax.make_jaxpr(f)(1.0, 2.0, jnp.ones(3)).jaxpr.eqns[-1]
    assert eqn.primitive.name == "scan"
    assert compat.scan_counts(eqn.params) == (2, 2)


@pytest.mark.slow
def test_register_cache_is_cleared_by_jax_clear_caches():
    cleared = []

    class Cache:
        def cache_clear(self):
            cleared.append(True)

    cache = Cache()
    compat.register_cache(cache, "gradlab test cache")
    jax.clear_caches()
    assert cleared


def test_user_frame_names_this_file():
    def f(x):
        return jnp.sin(x) * 2.0

    eqns = jax.make_jaxpr(f)(1.0).jaxpr.eqns
    frame = compat.user_frame(eqns[0].source_info.traceback)
    assert frame is not None
    assert frame.file_name.endswith("test_jax_compat.py")
    assert frame.start_line > 0


def test_cache_settings_are_scoped_states(tmp_path):
    settings = compat.cache_settings()
    for state in settings:
        assert isinstance(state.name, str) and state.name.startswith("jax_")
        state.get_global()  # readable process-wide
    before = settings.directory.value
    with settings.directory(str(tmp_path)):
        assert jax.config.jax_compilation_cache_dir == str(tmp_path)
    assert settings.directory.value == before
    assert settings.enabled.name == "jax_enable_compilation_cache"
    compat.reset_compilation_cache()  # callable without a cache object


def test_executables_serialise_and_load_back():
    device = jax.devices("cpu")[0]
    compiled = jax.jit(lambda x: jnp.tanh(x) * 3.0).lower(jnp.arange(4.0)).compile()
    payload, in_tree, out_tree = compat.serialize_executable(compiled)
    assert isinstance(payload, bytes) and payload
    loaded = compat.deserialize_executable(payload, in_tree, out_tree, device, [device])
    x = jnp.linspace(-1.0, 1.0, 4)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(compiled(x)))


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64:UserWarning")
def test_a_program_kept_on_disk_runs_as_compiled_or_is_not_kept():
    # a float64 constant closed over and compiled without x64: JAX hoists it into an argument
    # of the program (from 0.11), pickles it as NumPy, and a loaded program narrows it at its
    # call; such a program is refused, never kept to fail later
    device = jax.devices("cpu")[0]
    with jax.enable_x64():
        a = jax.random.normal(jax.random.key(0), (40, 6), jnp.float64)
        y = a @ jnp.ones(6, jnp.float64)
    closed = jax.make_jaxpr(jax.grad(lambda p: jnp.sum((a @ p - y) ** 2)))(jnp.ones(6))
    run = jex.jaxpr_as_fun(closed)
    p = jnp.linspace(0.5, 1.5, 6, dtype=jnp.float32)
    compiled = jax.jit(lambda p: run(p)).lower(p).compile()
    try:
        payload, in_tree, out_tree = compat.serialize_executable(compiled)
    except (ValueError, NotImplementedError):
        return  # not kept
    loaded = compat.deserialize_executable(payload, in_tree, out_tree, device, [device])
    np.testing.assert_array_equal(np.asarray(loaded(p)[0]), np.asarray(compiled(p)[0]))


def test_a_custom_jvp_rule_can_be_replaced_by_a_transformed_jaxpr():
    # the contract gradlab promotes JAX's own rules through: the rule parameter of a
    # custom_jvp_call gives (jaxpr, consts, out_zeros); a transform of that jaxpr is what JAX
    # then differentiates with
    x = jnp.linspace(-1.0, 1.0, 5)
    closed = jax.make_jaxpr(jax.nn.relu)(x)
    (eqn,) = [e for e in closed.jaxpr.eqns if e.primitive.name == "custom_jvp_call"]
    seen = []

    def doubled(jaxpr, consts):
        seen.append(len(jaxpr.invars))
        traced = jax.make_jaxpr(lambda *a: [2 * y for y in jex.jaxpr_as_fun(
            jex.ClosedJaxpr(jaxpr, consts))(*a)])(*[v.aval for v in jaxpr.invars])  # fmt: skip
        return traced.jaxpr, list(traced.consts)

    rule = compat.map_jvp_rule(eqn.params["jvp_jaxpr_fun"], doubled)
    params = dict(eqn.params, jvp_jaxpr_fun=rule)
    bound = lambda v: eqn.primitive.bind(*[v], **eqn.primitive.get_bind_params(params))[0]
    _, tangent = jax.jvp(bound, (x,), (jnp.ones_like(x),))
    assert seen  # the transform ran
    np.testing.assert_allclose(np.asarray(tangent), 2 * np.asarray(x > 0, float))


def test_no_private_jax_import_outside_the_compat_module():
    import pathlib
    import re

    root = pathlib.Path(compat.__file__).parent
    pattern = re.compile(r"^\s*(from|import)\s+(jax\._src|jaxlib\._|jax\.experimental\.serialize)")
    offenders = [
        f"{path.relative_to(root.parent)}:{number}"
        for path in root.rglob("*.py")
        if path.name != "_jax_compat.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.match(line)
    ]
    assert not offenders, f"private JAX imports outside gradlab/_jax_compat.py: {offenders}"


def test_programs_are_kept_on_cpu_only_where_loading_them_is_quiet(monkeypatch):
    cpu = jax.devices("cpu")[0]
    for version, quiet in [("0.10.0", False), ("0.10.1", False), ("0.10.2", True),
                           ("0.12.0.1", True), ("1.0.0", True)]:  # fmt: skip
        monkeypatch.setattr(compat.jaxlib, "__version__", version)
        assert compat.keeps_programs_quietly(cpu) is quiet, version


@pytest.mark.slow
def test_a_kept_program_loads_without_a_word_on_stderr_where_it_is_kept(tmp_path):
    """Two processes check the same f with gradlab's cache at its default place (under
    ``tmp_path``): the second loads what the first kept, or, on a jaxlib that would log at
    each load, nothing is kept unless the cache is asked for by name."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import gradlab

    code = (
        "import jax.numpy as jnp, gradlab\n"
        "r = gradlab.check(lambda p: jnp.sum(jnp.sin(p['w']) ** 2), {'w': jnp.ones((2, 3))})\n"
        "assert r.ok\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(gradlab.__file__).parents[1]),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),  # platformdirs' user cache folder
    }
    env.pop("GRADLAB_COMPILATION_CACHE", None)
    for run in range(2):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
        )
        assert done.returncode == 0, done.stderr
        assert "cpu_aot_loader" not in done.stderr and "SIGILL" not in done.stderr, run
    kept = list((tmp_path / "cache").rglob("*"))
    assert bool([p for p in kept if p.is_file()]) == compat.keeps_programs_quietly(
        jax.devices("cpu")[0]
    )
