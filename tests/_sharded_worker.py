"""Run by tests in a subprocess: checks on several (host) devices or processes.

Usage: python _sharded_worker.py OUT.json [PROCESS_ID NUM_PROCESSES PORT]
The device count comes from XLA_FLAGS, set by the caller before JAX starts.

Writes, per check mode of :data:`CASES`, the report on one device (``"one"``) and on all
devices of all processes (``"all"``), so that the tests can compare them.
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

#: Perturbations per device and kernel call, the same on one device and on all.
PER_DEVICE = 3


def mlp_logits(params, x):
    """The MLP of :func:`mlp_bce` returning its per-example logits ``(n,)``: a vector ``f``."""
    h = x
    for p in params[:-1]:
        h = jnp.tanh(h @ p["w"] + p["b"])
    return (h @ params[-1]["w"] + params[-1]["b"])[:, 0]


#: (name, f, which of (x, y) f takes, options of gradlab.check). The MLP's leaves have
#: 40, 8, 48, 6, 6 and 1 entries; at order 1 outside directional mode they share one
#: grouped kernel, in directional mode all 6·3 direction rows run together: either way a call
#: of 3·n_devices rows gives each device 3, as on one device. Order 2 runs entries leaf by
#: leaf (chunks of min(chunk_size, m) rows: per-device batches would differ between 1 and 4
#: devices for the small leaves), so it is checked along 3 directions per leaf instead; its
#: sums are taken per call segment, and 3 directions per leaf keep the segments the same.
CASES = [
    ("full", mlp_bce, 2, {}),
    ("sample", mlp_bce, 2, {"entries": gradlab.Sample(5), "seed": 1}),
    ("directional", mlp_bce, 2, {"entries": gradlab.Directional(3)}),
    ("both", mlp_bce, 2, {"autodiff": "both"}),
    ("order2", mlp_bce, 2, {"order": 2, "entries": gradlab.Directional(3), "autodiff": "both"}),
    ("vector", mlp_logits, 1, {"projections": 2}),
]


def main() -> None:
    with jax.enable_x64(True):
        params = mlp_params(jax.random.PRNGKey(0), [5, 8, 6, 1])
        x = jax.random.normal(jax.random.PRNGKey(1), (16, 5), dtype=jnp.float64)
        y = (jax.random.uniform(jax.random.PRNGKey(2), (16,)) > 0.5).astype(jnp.float64)
    out = {"n_devices": len(jax.devices()), "n_processes": jax.process_count(), "cases": {}}
    # Same per-device batch (PER_DEVICE entries) on one device and on all: XLA then runs the
    # same computation per entry, so the numbers must be identical, not merely close.
    n = len(jax.devices())
    runs = [("one", gradlab.Execution(devices=jax.local_devices()[:1], chunk_size=PER_DEVICE))]
    everywhere = jax.devices() if jax.process_count() == 1 else None
    runs.append(("all", gradlab.Execution(devices=everywhere, chunk_size=PER_DEVICE * n)))
    worst = gradlab.Criteria(worst_entries=1000)
    for case, f, n_args, options in CASES:
        options = dict(options)
        check = gradlab.check_second_order if options.pop("order", 1) == 2 else gradlab.check
        out["cases"][case] = {
            name: check(
                f, params, *(x, y)[:n_args], criteria=worst, execution=execution, **options
            ).to_dict()
            for name, execution in runs
        }
    with open(sys.argv[1], "w") as fh:
        json.dump(out, fh)
    if jax.process_count() > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
