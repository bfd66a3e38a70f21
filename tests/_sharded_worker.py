"""Run by tests in a subprocess: a check on several (host) devices or processes.

Usage: python _sharded_worker.py OUT.json [PROCESS_ID NUM_PROCESSES PORT]
The device count comes from XLA_FLAGS, set by the caller before JAX starts.
"""

from __future__ import annotations

import json
import sys

import jax

if len(sys.argv) > 2:
    pid, nproc, port = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid
    )

import jax.numpy as jnp
from conftest import mlp_bce, mlp_params

import gradlab


def main() -> None:
    with jax.enable_x64(True):
        params = mlp_params(jax.random.PRNGKey(0), [5, 8, 6, 1])
        x = jax.random.normal(jax.random.PRNGKey(1), (16, 5), dtype=jnp.float64)
        y = (jax.random.uniform(jax.random.PRNGKey(2), (16,)) > 0.5).astype(jnp.float64)
    out = {"n_devices": len(jax.devices()), "n_processes": jax.process_count()}
    # Same per-device batch (3 entries) on one device and on all: XLA then runs the same
    # computation per entry, so the numbers must be identical, not merely close.
    n = len(jax.devices())
    runs = [("one", {"devices": jax.local_devices()[:1], "chunk_size": 3})]
    runs.append(("all", {"chunk_size": 3 * n}))
    if jax.process_count() == 1:
        runs[1][1]["devices"] = jax.devices()
    for name, kwargs in runs:
        report = gradlab.check(mlp_bce, params, x, y, max_worst=1000, **kwargs)
        out[name] = report.to_dict()
    with open(sys.argv[1], "w") as fh:
        json.dump(out, fh)
    if jax.process_count() > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
