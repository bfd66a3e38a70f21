"""What the judging stages of gradlab.check cost: second steps, retries, flatness, the audit.

The check establishes agreement for every leaf before it says OK; the stages beyond the
first sweep run only where a leaf needs them. This measures, warm (medians of ``--reps``
calls in one process, compilation excluded), the check of the reference MLP of
``bench_check.py`` and of variants that trigger each stage, with the evaluations per stage
from ``report.stages``:

* ``reference``: tanh MLP 32→64→64→64→1 + BCE, float64 (10,497 parameters): first step only;
* ``float32 params``: the same in float32: + the precision audit (jax.grad in float32);
* ``relu at zeros``: a ReLU MLP whose first-layer pre-activations are exactly 0 for some
  units (zero inputs and biases): + the second step (kinks confirmed and checked);
* ``large |f|``: the reference loss plus 1e4: rounding dominates at eps=1e-7, + second step
  and a retry at a larger step.

Run: ``python benchmarks/bench_trust.py [--reps 5]``; writes results/trust_cpu.json.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import machine_info, median, print_table, write_json

import gradlab
from gradlab.losses import binary_cross_entropy

jax.config.update("jax_enable_x64", True)
RESULTS = Path(__file__).resolve().parent / "results"


def mlp(sizes, key, act, dtype=jnp.float64):
    params = []
    for a, b in itertools.pairwise(sizes):
        key, kw = jax.random.split(key)
        params.append({"w": jax.random.normal(kw, (a, b), dtype) / np.sqrt(a),
                       "b": jnp.zeros(b, dtype)})  # fmt: skip

    def loss(params, x, y):
        h = x
        for layer in params[:-1]:
            h = act(h @ layer["w"] + layer["b"])
        logits = (h @ params[-1]["w"] + params[-1]["b"])[:, 0]
        return binary_cross_entropy(logits, y)

    return loss, params


def workloads():
    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (64, 32))
    y = (jax.random.uniform(jax.random.key(2), (64,)) > 0.5).astype(jnp.float64)
    loss, params = mlp([32, 64, 64, 64, 1], key, jnp.tanh)
    relu_loss, relu_params = mlp([32, 64, 64, 64, 1], key, jax.nn.relu)
    x_zero = x.at[:, :8].set(0.0)
    relu_params[0]["w"] = relu_params[0]["w"].at[:8].set(0.0)  # units 0.. see exact zeros
    relu_params[0]["w"] = relu_params[0]["w"].at[:, :4].set(0.0)
    f32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    big = lambda p, x, y: 1e4 + loss(p, x, y)
    return {
        "reference": (loss, params, (x, y)),
        "float32 params": (loss, f32, (x.astype(jnp.float32), y.astype(jnp.float32))),
        "relu at zeros": (relu_loss, relu_params, (x_zero, y)),
        "large |f|": (big, params, (x, y)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "trust_cpu.json")
    args = parser.parse_args()
    rows, results = [], {}
    for name, (f, params, data) in workloads().items():
        t0 = time.perf_counter()
        report = gradlab.check(f, params, *data)
        cold = time.perf_counter() - t0
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            report = gradlab.check(f, params, *data)
            times.append(time.perf_counter() - t0)
        stages = dict(report.stages)
        results[name] = {
            "outcome": report.outcome,
            "first_call_s": cold,
            "warm_s": median(times),
            "warm_all_s": times,
            "stages": stages,
            "n_evaluations": report.n_evaluations,
        }
        rows.append([name, report.outcome, f"{median(times):.3f}", f"{cold:.2f}",
                     ", ".join(f"{k}: {v:,}" for k, v in stages.items())])  # fmt: skip
    ref = results["reference"]["warm_s"]
    for name in results:
        results[name]["warm_vs_reference"] = results[name]["warm_s"] / ref
    print_table(
        "gradlab.check: cost of the judging stages (warm)",
        ["workload", "outcome", "warm s", "first call s", "evaluations per stage"],
        rows,
    )
    write_json(args.out, {"machine": machine_info(), "results": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
