"""The new modes run sharded over several devices and give the same numbers as one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json
import jax, jax.numpy as jnp
import gradlab

f = lambda p: jnp.sin(p["a"]) * p["b"][:, None] + jnp.sum(p["b"] ** 3)
params = {"a": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.5, -2.0])}
out = {}
for name, check, opts in [
    ("directional", gradlab.check, dict(entries=gradlab.Directional(3), autodiff="both")),
    ("order2", gradlab.check_second_order, dict(entries=gradlab.Directional(2))),
]:
    one = check(f, params, execution=gradlab.Execution(jax.devices()[:1], chunk_size=2), **opts)
    all_ = check(f, params, execution=gradlab.Execution(jax.devices(), chunk_size=8), **opts)
    out[name] = [
        len(jax.devices()),
        one.ok and all_.ok,
        [l.relative_error for l in one.leaves],
        [l.relative_error for l in all_.leaves],
    ]
print(json.dumps(out))
"""


def test_directional_and_second_order_sharded_over_four_devices_match_one():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_ENABLE_X64"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for n_devices, ok, one, every in got.values():
        assert n_devices == 4 and ok
        # tree rows are padded per device but each row is the same computation: close numbers
        for a, b in zip(one, every, strict=True):
            assert abs(a - b) <= 1e-9
