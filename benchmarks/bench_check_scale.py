"""A full gradlab.check of a model with about 1,000,000 parameters, on this machine.

Reports wall time (and the part spent compiling), evaluations of f, and the process's peak
resident memory. Run by hand (not in CI):

    python benchmarks/bench_check_scale.py                     # MLP 4 x (500x500): 1,002,501
    python benchmarks/bench_check_scale.py --model moe         # 100 stacked experts: 1,010,201
    python benchmarks/bench_check_scale.py --model experts --layers 10   # experts as 10 leaves

A full check costs two evaluations of f per parameter. gradlab carries each move through f as
the slice it changes (``sparse=True``), so an evaluation costs what lies downstream of the
moved entry's layer, past a rank-one update of the next layer: for the MLP, the first layers'
entries pay for two or three 500x500 matmuls of a batch of 2, the last layers' almost nothing.

Each large leaf compiles a kernel of its own that contains all of f, so compile time grows
with (number of leaves) x (size of f): ``--model experts`` with 100 separate expert leaves
compiles 100 copies of a 100-expert graph (minutes), while ``--model moe``, the same
parameters stacked in one leaf as mixture-of-experts layers store them, compiles one.
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
from jax import monitoring

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


def build_moe(experts: int, width: int, batch: int, seed: int = 0):
    """`experts` tanh experts stacked in one (experts, width, width) leaf, summed."""
    rng = np.random.default_rng(seed)
    params = {
        "w": rng.normal(size=(experts, width, width)) / np.sqrt(width),
        "b": 0.1 * rng.normal(size=(experts, width)),
        "v": rng.normal(size=(width,)) / np.sqrt(width * experts),
        "c": np.zeros(1),
    }
    x = rng.normal(size=(experts, batch, width))
    y = (rng.uniform(size=batch) > 0.5).astype(np.float64)

    def loss(params, x, y):
        h = jnp.tanh(jnp.einsum("ebk,ekn->ebn", x, params["w"]) + params["b"][:, None, :])
        z = jnp.einsum("ebn,n->b", h, params["v"]) + params["c"][0]
        return jnp.mean(jax.nn.softplus(z) - y * z)

    return loss, params, x, y


BUILDERS = {
    "mlp": (build, 4, 500),
    "moe": (build_moe, 100, 100),
    "experts": (build_experts, 100, 100),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(BUILDERS), default="mlp")
    parser.add_argument("--layers", type=int, help="layers or experts (mlp 4, others 100)")
    parser.add_argument("--width", type=int, help="width (mlp 500, others 100)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dense", action="store_true", help="sparse=False (for comparison)")
    parser.add_argument(
        "--out", type=Path, help="JSON path (default results/check_scale_<model>_<platform>.json)"
    )
    args = parser.parse_args()

    builder, layers, width = BUILDERS[args.model]
    layers, width = args.layers or layers, args.width or width
    name = f"check_scale_{args.model}_{jax.default_backend()}.json"
    out = args.out or Path(__file__).parent / "results" / name
    loss, params, x, y = builder(layers, width, args.batch)
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(params))
    n_leaves = len(jax.tree_util.tree_leaves(params))
    kind = {"mlp": "MLP layers", "moe": "stacked experts", "experts": "expert leaves"}[args.model]
    print(f"model: {layers} {kind} of {width}x{width}, {n_params:,} params in {n_leaves} leaves")
    compile_s = []
    monitoring.register_event_duration_secs_listener(
        lambda event, secs, **kw: (
            compile_s.append(secs)
            if event == "/jax/core/compile/backend_compile_duration"
            else None
        )
    )
    t0 = time.perf_counter()
    execution = gradlab.Execution(
        progress=True, verbose=True, slices=not args.dense, max_seconds=None
    )
    report = gradlab.check(loss, params, x, y, execution=execution)
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(report.summary())
    result = {
        "n_params": n_params,
        "n_leaves": n_leaves,
        "model": args.model,
        "layers": layers,
        "width": width,
        "batch": args.batch,
        "sparse": not args.dense,
        "seconds": seconds,
        "compile_seconds_summed_over_threads": sum(compile_s),
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
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "versions": {"jax": jax.__version__, "gradlab": gradlab.__version__},
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
