"""A full gradlab.check of a model with about 1,000,000 parameters, on this machine.

Reports wall time, evaluations of f, and the process's peak resident memory. Run by hand
(not in CI):

    python benchmarks/bench_check_scale.py                  # 100 experts: 1,010,101 params
    python benchmarks/bench_check_scale.py --model mlp --layers 2   # a deep-ish MLP

A full check costs two evaluations of f per parameter, and each evaluation reads the whole
perturbed leaf and runs everything downstream of it. The default model keeps both small per
evaluation: 100 independent tanh experts of 100x100 weights on their own inputs, summed into a
logit (a mixture-of-experts layer), so 1,000,000 parameters fit a full check on 2 CPU cores.
A 1M-parameter deep MLP needs about N x (downstream cost) and is a job for a GPU or for
``mode="sample"``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gradlab


def build(layers: int, width: int, batch: int, seed: int = 0):
    """A tanh MLP of `layers` width x width layers (separate leaves) and a BCE loss."""
    rng = np.random.default_rng(seed)
    params = [
        {
            "w": rng.normal(size=(width, width)) / np.sqrt(width),
            "b": 0.1 * rng.normal(size=width),
        }
        for _ in range(layers)
    ]
    params.append({"w": rng.normal(size=(width, 1)) / np.sqrt(width), "b": np.zeros(1)})
    x = rng.normal(size=(batch, width))
    y = (rng.uniform(size=batch) > 0.5).astype(np.float64)

    def loss(params, x, y):
        h = x
        for p in params[:-1]:
            h = jnp.tanh(h @ p["w"] + p["b"])
        z = (h @ params[-1]["w"] + params[-1]["b"])[:, 0]
        return jnp.mean(jax.nn.softplus(z) - y * z)

    return loss, params, x, y


def build_experts(experts: int, width: int, batch: int, seed: int = 0):
    """`experts` independent tanh layers (width x width), each on its own input, summed."""
    rng = np.random.default_rng(seed)
    params = [
        {
            "w": rng.normal(size=(width, width)) / np.sqrt(width),
            "b": 0.1 * rng.normal(size=width),
        }
        for _ in range(experts)
    ]
    params.append({"v": rng.normal(size=(width,)) / np.sqrt(width * experts), "c": np.zeros(1)})
    x = rng.normal(size=(experts, batch, width))
    y = (rng.uniform(size=batch) > 0.5).astype(np.float64)

    def loss(params, x, y):
        z = params[-1]["c"][0]
        for e, p in enumerate(params[:-1]):
            z = z + jnp.tanh(x[e] @ p["w"] + p["b"]) @ params[-1]["v"]
        return jnp.mean(jax.nn.softplus(z) - y * z)

    return loss, params, x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["experts", "mlp"], default="experts")
    parser.add_argument("--layers", type=int, default=100, help="layers or experts")
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "check_scale_cpu.json"
    )
    args = parser.parse_args()

    builder = build_experts if args.model == "experts" else build
    loss, params, x, y = builder(args.layers, args.width, args.batch)
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(params))
    kind = "experts" if args.model == "experts" else "MLP layers"
    print(f"model: {args.layers} {kind} of {args.width}x{args.width}, {n_params:,} params")
    t0 = time.perf_counter()
    report = gradlab.check(loss, params, x, y, progress=True)
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(report.summary())
    result = {
        "n_params": n_params,
        "model": args.model,
        "layers": args.layers,
        "width": args.width,
        "batch": args.batch,
        "seconds": seconds,
        "evaluations": report.n_evaluations,
        "evaluations_per_second": report.n_evaluations / seconds,
        "peak_rss_mib": peak_mib,
        "ok": report.ok,
        "verdict": report.verdict,
        "relative_error": report.relative_error,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "device": str(jax.devices()[0]),
            "load_average": os.getloadavg(),
        },
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
