"""gradlab.check against every other way to check the gradient of the same model today.

One model, the same weights and data, float64, eps = 1e-7, checked by:

* ``gradlab.check`` — every entry, centered differences run in parallel (jit + vmap per leaf,
  chunked); cold (first call: tracing and XLA compilation) and warm (second call: cached).
* ``loop (slide 13)`` — the lecture's procedure: θ as one vector, ``J`` jitted once, a Python
  loop computing ``J(θ + eps·e_i)`` and ``J(θ − eps·e_i)`` for every entry, plus ``jax.grad``.
* ``torch gradcheck slow`` — ``torch.autograd.gradcheck(fast_mode=False)`` on the same model
  written in torch (same weights and data, float64).
* ``jax check_grads`` — ``jax.test_util.check_grads(order=1, modes=["rev"])``: ONE random
  direction, for reference (cheap, but not a per-entry check).

Reference model: tanh MLP 32→64→64→64→1, sigmoid + binary cross-entropy in logit form, 64
samples (10,497 parameters), then a sweep over the width (same depth) up to ~140k parameters.
Past ``--time-cap`` seconds the loop and torch are timed on a random subsample of entries and
extrapolated (marked "est." in the table). Also measured: the float64 matmul peak, and the
fraction of it the check reaches under the FLOP model of :func:`eval_flops`.

Run by hand (not in CI); see benchmarks/README.md:

    python benchmarks/bench_check.py --quick          # reference model + width 128, ~2 min
    python benchmarks/bench_check.py                  # widths 64,128,192,256, ~15 min
    python benchmarks/bench_check.py --chunk-sweep    # chunk_size / memory_budget experiment
    python benchmarks/bench_check.py --device gpu     # JAX GPU backend (torch on CUDA)
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from _common import (
    finish_machine_info,
    machine_info,
    median,
    print_table,
    timed,
    write_json,
)
from jax.flatten_util import ravel_pytree

import gradlab
from gradlab.gradcheck.planning._memory import program_cost
from gradlab.gradcheck.planning._plan import shares_kernel
from gradlab.losses import binary_cross_entropy

jax.config.update("jax_enable_x64", True)

RESULTS = Path(__file__).resolve().parent / "results"
EPS = 1e-7
#: gradlab's default tolerance; the loop and check_grads "pass" under the same bound.
TOLERANCE = 1e-6
D_IN, DEPTH, BATCH = 32, 3, 64
REFERENCE_WIDTH = 64
#: Entries timed to predict how long the loop and torch take for a whole model.
CALIBRATION_ENTRIES = 64

CHECKS = {
    "gradlab.check": "all entries, in parallel",
    "loop (slide 13)": "all entries, 1 by 1",
    "torch gradcheck slow": "all entries, 1 by 1",
    "jax check_grads": "1 random direction",
}


# --------------------------------------------------------------------------------------------
# The model, in JAX and in torch, and its FLOP model
# --------------------------------------------------------------------------------------------


@dataclass
class Model:
    """A tanh MLP ``D_IN → width ×DEPTH → 1`` with BCE-from-logits loss, and its data."""

    width: int
    dims: tuple[int, ...]
    params: dict[str, np.ndarray]  # W1, b1, ..., W{L}, b{L}; float64
    x: np.ndarray
    y: np.ndarray
    jax_params: dict[str, jax.Array] = field(default_factory=dict)
    jax_x: jax.Array | None = None
    jax_y: jax.Array | None = None

    @property
    def n_layers(self) -> int:
        return len(self.dims) - 1

    @property
    def n_params(self) -> int:
        return sum(v.size for v in self.params.values())

    @property
    def leaf_names(self) -> list[str]:
        return [f"{kind}{layer}" for layer in range(1, self.n_layers + 1) for kind in "Wb"]

    @property
    def name(self) -> str:
        hidden = "→".join([str(self.width)] * DEPTH)
        return f"{self.dims[0]}→{hidden}→1"


def make_model(width: int, seed: int = 0) -> Model:
    """LeCun-normal weights, small random biases, Gaussian inputs, balanced 0/1 labels."""
    rng = np.random.default_rng(seed)
    dims = (D_IN, *([width] * DEPTH), 1)
    params: dict[str, np.ndarray] = {}
    for layer, (n_in, n_out) in enumerate(itertools.pairwise(dims), start=1):
        params[f"W{layer}"] = rng.normal(size=(n_in, n_out)) / math.sqrt(n_in)
        params[f"b{layer}"] = 0.1 * rng.normal(size=(n_out,))
    x = rng.normal(size=(BATCH, D_IN))
    y = (rng.uniform(size=BATCH) < 0.5).astype(np.float64)
    model = Model(width, dims, params, x, y)
    model.jax_params = {k: jnp.asarray(v) for k, v in params.items()}
    model.jax_x, model.jax_y = jnp.asarray(x), jnp.asarray(y)
    return model


def jax_loss(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    """J(θ): tanh hidden layers, a linear logit, mean binary cross-entropy from logits."""
    n_layers = len(params) // 2
    h = x
    for layer in range(1, n_layers):
        h = jnp.tanh(h @ params[f"W{layer}"] + params[f"b{layer}"])
    z = (h @ params[f"W{n_layers}"] + params[f"b{n_layers}"])[:, 0]
    return binary_cross_entropy(z, y)


def layer_flops(model: Model, layer: int) -> int:
    """FLOPs of layer ``layer`` (1-based) on the batch: the matmul (a multiply-add counts 2)
    plus the bias add. tanh and the loss are not counted (they are not matmul work)."""
    n_in, n_out = model.dims[layer - 1], model.dims[layer]
    return 2 * BATCH * n_in * n_out + BATCH * n_out


def _grouped_leaves(model: Model) -> list[str]:
    """The leaves gradlab groups into one kernel, as its planner decides.

    The planner (``gradlab.gradcheck.planning._plan.shares_kernel``) is asked with the inputs it
    gets in a check: each leaf's rows, FLOPs of ``f`` at ``+h`` and ``−h`` and the size of ``f``'s
    program, both estimated from ``f``'s jaxpr (``program_cost``), on this platform. A group
    needs two leaves at least.
    """
    with jax.enable_x64(True):
        cost = program_cost(jax.make_jaxpr(jax_loss)(model.params, model.x, model.y))
    platform = jax.devices()[0].platform
    shared = [
        name
        for name in model.leaf_names
        if shares_kernel(model.params[name].size, 2 * cost.flops, platform, cost.eqns)
    ]
    return shared if len(shared) > 1 else []


def eval_flops(model: Model, leaf: str, sparse: bool = True) -> int:
    """FLOPs of ONE evaluation of f with an entry of ``leaf`` perturbed, as gradlab runs it.

    gradlab vmaps over the entries of one leaf with the other leaves unbatched, so XLA
    computes everything upstream of the perturbed leaf once per chunk and repeats only what
    lies downstream of it. With ``sparse`` (gradlab's default) a large weight ``W_l``'s entry
    moves one column of layer ``l`` (a multiply-add and an add per example), then layer
    ``l+1`` by a rank-one update (``2·B·n_{l+1}`` and its add), then layers ``l+2 .. L`` in
    full. Small leaves (biases, the narrow output layer) share one kernel that moves them
    densely: each of their rows repeats everything downstream of the group's first leaf
    (``b_1``'s add, then layers ``2 .. L``). ``sparse=False``: a weight ``W_l`` repeats layers
    ``l .. L``, a bias its add and layers ``l+1 .. L``.
    """
    kind, layer = leaf[0], int(leaf[1:])
    group = _grouped_leaves(model)

    def full(first: int) -> int:
        return sum(layer_flops(model, j) for j in range(first, model.n_layers + 1))

    if sparse and leaf in group:
        # the group's first leaf in the forward pass: a weight W_l repeats layers l .. L, a
        # bias b_l its add and layers l+1 .. L
        first = min((int(name[1:]), name[0] == "b") for name in group)
        if first[1]:
            return BATCH * model.dims[first[0]] + full(first[0] + 1)
        return full(first[0])
    if sparse and kind == "W":
        rank_one = 3 * BATCH * model.dims[layer + 1] if layer < model.n_layers else 0
        return 3 * BATCH + rank_one + full(layer + 2)
    if kind == "W":
        return full(layer)
    return BATCH * model.dims[layer] + full(layer + 1)


def check_flops(model: Model, entries: dict[str, int] | None = None, sparse: bool = True) -> int:
    """The floating-point work of a check: Σ over leaves of 2·n_leaf·eval_flops(leaf).

    ``entries`` overrides n_leaf per leaf (for checks of a subsample). Padding of the last
    chunk is wasted work and is not counted.
    """
    total = 0
    for leaf in model.leaf_names:
        n = model.params[leaf].size if entries is None else entries[leaf]
        total += 2 * n * eval_flops(model, leaf, sparse)
    return total


def forward_flops(model: Model) -> int:
    """FLOPs of one full evaluation of f (what the loop and torch pay per perturbation)."""
    return sum(layer_flops(model, j) for j in range(1, model.n_layers + 1))


# --------------------------------------------------------------------------------------------
# The methods
# --------------------------------------------------------------------------------------------


def run_gradlab(model: Model, **options: Any) -> dict[str, Any]:
    """One ``gradlab.check`` call on the model (``options``: fields of ``gradlab.Execution``)."""
    t = timed(
        lambda: gradlab.check(
            jax_loss,
            model.jax_params,
            model.jax_x,
            model.jax_y,
            eps=EPS,
            tolerance=TOLERANCE,
            execution=gradlab.Execution(progress=False, **options),
        )
    )
    report = t.value
    return {
        "seconds": t.seconds,
        "minor_faults": t.minor_faults,
        "passed": bool(report.ok),
        "verdict": report.verdict,
        "relative_error": float(report.relative_error),
        "n_evaluations": int(report.n_evaluations),
    }


def run_loop(model: Model, entries: np.ndarray | None) -> dict[str, Any]:
    """The lecture's slide 13: θ as one vector, J jitted once, a Python loop over entries.

    ``entries`` (flat indices into θ) times a subsample; None checks every entry. Returns
    the compile time separately so that cold (with it) and warm (without) can be reported.
    """
    flat, unravel = ravel_pytree(model.jax_params)
    x, y = model.jax_x, model.jax_y
    t_start = time.perf_counter()
    cost = jax.jit(lambda theta: jax_loss(unravel(theta), x, y))
    grad = jax.jit(jax.grad(lambda theta: jax_loss(unravel(theta), x, y)))
    theta = np.array(flat, dtype=np.float64)
    float(cost(theta))  # compile J
    grad(theta).block_until_ready()  # compile the gradient
    t_compiled = time.perf_counter()
    indices = np.arange(theta.size) if entries is None else entries
    numerical = np.empty(indices.size)
    work = theta.copy()  # "make a copy of θ"; entry i is restored after each use
    for k, i in enumerate(indices):
        work[i] = theta[i] + EPS
        j_plus = float(cost(work))
        work[i] = theta[i] - EPS
        j_minus = float(cost(work))
        work[i] = theta[i]
        numerical[k] = (j_plus - j_minus) / (2 * EPS)
    t_loop = time.perf_counter()
    analytical = np.asarray(grad(theta))[indices]
    t_end = time.perf_counter()
    rel = float(
        np.linalg.norm(numerical - analytical)
        / (np.linalg.norm(numerical) + np.linalg.norm(analytical))
    )
    return {
        "compile_seconds": t_compiled - t_start,
        "loop_seconds": t_loop - t_compiled,
        "grad_seconds": t_end - t_loop,
        "entries": int(indices.size),
        "relative_error": rel,
        "verdict": gradlab.verdict(rel),
        "passed": rel <= TOLERANCE,
    }


class TorchTwin:
    """The same model in torch (same weights and data, float64), for ``gradcheck``."""

    def __init__(self, model: Model, device: str) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.leaves = [
            torch.tensor(model.params[name], dtype=torch.float64, device=device)
            for name in model.leaf_names
        ]
        self.x = torch.tensor(model.x, dtype=torch.float64, device=device)
        self.y = torch.tensor(model.y, dtype=torch.float64, device=device)
        self.n = sum(t.numel() for t in self.leaves)

    def loss(self, leaves: tuple[Any, ...]) -> Any:
        torch = self.torch
        h = self.x
        pairs = list(zip(leaves[0::2], leaves[1::2], strict=True))
        for w, b in pairs[:-1]:
            h = torch.tanh(h @ w + b)
        w, b = pairs[-1]
        z = (h @ w + b)[:, 0]
        return torch.nn.functional.binary_cross_entropy_with_logits(z, self.y)

    def gradcheck(self, entries: np.ndarray | None) -> dict[str, Any]:
        """``torch.autograd.gradcheck`` slow mode on every entry, or on ``entries`` only.

        For a subsample, the checked input is a vector of the chosen entries, scattered into
        the other (constant) parameters inside the function: gradcheck perturbs only inputs
        that require grad, so it then perturbs exactly those entries.
        """
        torch = self.torch
        if entries is None:
            inputs = tuple(t.clone().requires_grad_(True) for t in self.leaves)
            fn = lambda *leaves: self.loss(leaves)
        else:
            base = torch.cat([t.reshape(-1) for t in self.leaves])
            idx = torch.as_tensor(entries, device=self.device)
            inputs = (base[idx].clone().requires_grad_(True),)
            shapes = [t.shape for t in self.leaves]
            sizes = [t.numel() for t in self.leaves]

            def fn(sub: Any) -> Any:
                full = base.index_put((idx,), sub)
                parts = torch.split(full, sizes)
                return self.loss(tuple(p.reshape(s) for p, s in zip(parts, shapes, strict=True)))

        t0 = time.perf_counter()
        error = ""
        try:
            passed = bool(torch.autograd.gradcheck(fn, inputs, eps=EPS, fast_mode=False))
        except Exception as e:  # gradcheck raises GradcheckError when the check fails
            passed = False
            error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        seconds = time.perf_counter() - t0
        n = self.n if entries is None else int(entries.size)
        return {"seconds": seconds, "entries": n, "passed": passed, "error": error}


def run_check_grads(model: Model) -> dict[str, Any]:
    """``jax.test_util.check_grads(f, (params,), order=1, modes=["rev"], eps=1e-7)``."""
    from jax.test_util import check_grads

    x, y = model.jax_x, model.jax_y
    t0 = time.perf_counter()
    error = ""
    try:
        check_grads(lambda p: jax_loss(p, x, y), (model.jax_params,), 1, modes=["rev"], eps=EPS)
        passed = True
    except AssertionError as e:
        passed = False
        error = str(e).splitlines()[0] if str(e) else "AssertionError"
    return {"seconds": time.perf_counter() - t0, "passed": passed, "error": error}


def matmul_peak(n: int, reps: int) -> dict[str, Any]:
    """The float64 matmul throughput of the default device: best of ``reps`` n×n products."""
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.standard_normal((n, n)))
    b = jnp.asarray(rng.standard_normal((n, n)))
    matmul = jax.jit(lambda a, b: jnp.matmul(a, b, precision="highest"))
    matmul(a, b).block_until_ready()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        matmul(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"n": n, "dtype": "float64", "seconds": times, "gflops": 2 * n**3 / best / 1e9}


# --------------------------------------------------------------------------------------------
# One model, every method, repeated and interleaved
# --------------------------------------------------------------------------------------------


def subsample_plan(
    n: int, per_entry: float, cap: float, rng: np.random.Generator
) -> tuple[np.ndarray | None, float]:
    """All entries when the predicted time fits ``cap``; else a sorted random subsample."""
    predicted = per_entry * n
    if predicted <= cap:
        return None, predicted
    k = int(min(n, max(256, cap / 4 / max(per_entry, 1e-9))))
    return np.sort(rng.choice(n, size=k, replace=False)), predicted


def torch_method(threads: int) -> str:
    """The table's name for torch gradcheck run with ``threads`` intra-op threads."""
    return f"torch slow mode, {threads} thr"


def bench_model(
    model: Model,
    reps: int,
    cap: float,
    twin: TorchTwin | None,
    torch_threads: list[int],
    rng: np.random.Generator,
    stop_early: bool,
) -> dict[str, Any]:
    """Every method on one model; per repetition: gradlab cold + warm, loop, torch, check_grads.

    The methods are interleaved within each repetition, so a ratio compares times taken under
    the same load. With ``stop_early``, repetitions stop once the model has taken 2×cap.
    """
    torch_mod = twin.torch if twin is not None else None
    n = model.n_params
    print(f"\n[{model.name}] {n:,} parameters", flush=True)
    methods_here = ["gradlab.check", "loop (slide 13)"]
    methods_here += [torch_method(t) for t in torch_threads] if twin is not None else []
    methods_here += ["jax check_grads"]

    # Calibrate: predict the loop's and torch's time from a few entries; subsample past cap.
    calib = np.sort(rng.choice(n, size=min(n, CALIBRATION_ENTRIES), replace=False))
    plans: dict[str, tuple[np.ndarray | None, float]] = {}
    c_loop = run_loop(model, calib)
    plans["loop (slide 13)"] = subsample_plan(n, c_loop["loop_seconds"] / calib.size, cap, rng)
    if twin is not None and torch_mod is not None:
        for t in torch_threads:
            torch_mod.set_num_threads(t)
            c_torch = twin.gradcheck(calib)
            plans[torch_method(t)] = subsample_plan(n, c_torch["seconds"] / calib.size, cap, rng)
    for label, (entries, pred) in plans.items():
        if entries is not None:
            print(
                f"  {label}: predicted {pred:.0f} s > cap {cap:.0f} s; timing {entries.size:,} "
                "random entries and extrapolating",
                flush=True,
            )

    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in methods_here}
    t_model = time.perf_counter()
    for rep in range(reps):
        jax.clear_caches()
        cold = run_gradlab(model)
        warm = run_gradlab(model)
        samples["gradlab.check"].append(
            {
                "cold_s": cold["seconds"],
                "warm_s": warm["seconds"],
                **{k: v for k, v in warm.items() if k != "seconds"},
                "minor_faults_cold": cold["minor_faults"],
            }
        )

        jax.clear_caches()
        lp = run_loop(model, plans["loop (slide 13)"][0])
        warm_s = lp["loop_seconds"] * n / lp["entries"] + lp["grad_seconds"]
        samples["loop (slide 13)"].append(
            {"cold_s": warm_s + lp["compile_seconds"], "warm_s": warm_s, **lp}
        )

        if twin is not None and torch_mod is not None:
            for t in torch_threads:
                torch_mod.set_num_threads(t)
                tc = twin.gradcheck(plans[torch_method(t)][0])
                est = tc["seconds"] * n / tc["entries"]
                samples[torch_method(t)].append({"cold_s": est, "warm_s": est, **tc})

        jax.clear_caches()
        cg_cold = run_check_grads(model)
        cg_warm = run_check_grads(model)
        samples["jax check_grads"].append(
            {"cold_s": cg_cold["seconds"], "warm_s": cg_warm["seconds"], **cg_warm}
        )
        load = list(os.getloadavg())
        samples["gradlab.check"][-1]["load_average"] = load
        elapsed = time.perf_counter() - t_model
        print(
            f"  rep {rep + 1}/{reps}: "
            + " | ".join(
                f"{m} {samples[m][-1]['cold_s']:.2f}/{samples[m][-1]['warm_s']:.2f} s"
                for m in methods_here
            )
            + f" | load {load[0]:.1f}",
            flush=True,
        )
        if stop_early and rep + 1 < reps and elapsed > 2 * cap:
            print(f"  stopping after {rep + 1} repetition(s): {elapsed:.0f} s > 2×cap", flush=True)
            break

    methods: dict[str, Any] = {}
    g_runs = samples["gradlab.check"]
    for m in methods_here:
        runs = samples[m]
        entries = runs[0].get("entries", n)
        ratios = {}
        if m != "gradlab.check":
            for phase in ("cold", "warm"):
                ratios[f"over_gradlab_{phase}"] = median(
                    [r[f"{phase}_s"] / g[f"{phase}_s"] for r, g in zip(runs, g_runs, strict=False)]
                )
        methods[m] = {
            "checks": CHECKS.get(m, CHECKS["torch gradcheck slow"]),
            "cold_s": median([r["cold_s"] for r in runs]),
            "warm_s": median([r["warm_s"] for r in runs]),
            **ratios,
            "passed": all(r["passed"] for r in runs),
            "verdict": runs[-1].get("verdict", "pass" if runs[-1]["passed"] else "fail"),
            "relative_error": runs[-1].get("relative_error"),
            "estimated": m != "jax check_grads" and entries < n,
            "entries_timed": entries if m != "jax check_grads" else None,
            "predicted_full_s": plans[m][1] if m in plans else None,
            "runs": runs,
        }

    flops = check_flops(model)
    return {
        "width": model.width,
        "name": model.name,
        "n_params": n,
        "leaves": {name: int(model.params[name].size) for name in model.leaf_names},
        "check_gflop": flops / 1e9,
        "forward_mflop": forward_flops(model) / 1e6,
        "loop_gflop": 2 * n * forward_flops(model) / 1e9,
        "repetitions": len(g_runs),
        "methods": methods,
    }


# --------------------------------------------------------------------------------------------
# chunk_size / memory_budget experiment
# --------------------------------------------------------------------------------------------


def chunk_sweep(
    widths: list[int],
    chunks: list[int],
    budgets_mib: list[float],
    reps: int,
    full_limit_gflop: float,
    peak: float,
) -> list[dict[str, Any]]:
    """Warm ``gradlab.check`` time per chunk_size / memory_budget setting, per model.

    Every setting is compiled first; then ``reps`` rounds run each setting once, in a rotated
    order, so that load from other processes spreads over all settings. The best (minimum)
    time of a setting is what it can do; the median is reported too.

    A model whose check does more than ``full_limit_gflop`` GFLOP is measured in
    ``mode="sample"`` (the same compiled chunk shapes, fewer chunks): the rate in useful
    GFLOP/s is what compares across settings there.
    """
    has_sample = "mode" in inspect.signature(gradlab.check).parameters
    out = []
    for width in widths:
        model = make_model(width)
        jax.clear_caches()
        sample = has_sample and check_flops(model) > full_limit_gflop * 1e9
        print(
            f"\n[chunk sweep {model.name}] {model.n_params:,} params, "
            f"{check_flops(model) / 1e9:.0f} GFLOP per check: {'sample' if sample else 'full'}"
            " mode",
            flush=True,
        )
        labelled: list[tuple[str, dict[str, Any]]] = [("default", {})]
        labelled += [(f"chunk_size={c}", {"chunk_size": c}) for c in chunks]
        labelled += [
            (f"memory_budget={b:g} MiB", {"memory_budget": int(b * 2**20)}) for b in budgets_mib
        ]
        settings = []
        for label, opts in labelled:
            entries = None
            if sample:
                c = opts.get("chunk_size", 256)
                n_samples = -(-max(2 * c, 1024) // c) * c
                opts = {**opts, "mode": "sample", "samples": n_samples}
                entries = {k: min(n_samples, v.size) for k, v in model.params.items()}
            n_checked = sum(entries.values()) if entries else model.n_params
            cold = run_gradlab(model, **opts)  # compiles this setting's kernels
            settings.append(
                {
                    "label": label,
                    "opts": opts,
                    "flops": check_flops(model, entries),
                    "n_checked": n_checked,
                    "cold": cold,
                    "runs": [],
                }
            )
        n_reps = reps if not sample else max(2, reps - 2)
        for r in range(n_reps):
            k = (r * len(settings)) // n_reps
            for st in settings[k:] + settings[:k]:
                st["runs"].append(run_gradlab(model, **st["opts"]))
            print(f"  round {r + 1}/{n_reps} done; load {os.getloadavg()[0]:.1f}", flush=True)
        rows = []
        for st in settings:
            times = [w["seconds"] for w in st["runs"]]
            best = min(times)
            last = st["runs"][-1]
            row = {
                "setting": st["label"],
                "options": dict(st["opts"]),
                "cold_s": st["cold"]["seconds"],
                "best_s": best,
                "median_s": median(times),
                "runs_s": times,
                "useful_gflop": st["flops"] / 1e9,
                "gflops": st["flops"] / best / 1e9,
                "gflops_median": st["flops"] / median(times) / 1e9,
                "fraction_of_peak": st["flops"] / best / 1e9 / peak,
                "minor_faults_per_run": int(median([w["minor_faults"] for w in st["runs"]])),
                "n_evaluations": last["n_evaluations"],
                "padding": last["n_evaluations"] / (2 * st["n_checked"]) - 1,
                "passed": all(w["passed"] for w in st["runs"]),
            }
            rows.append(row)
            print(
                f"  {row['setting']:26s} best {best:7.3f} s  median {row['median_s']:7.3f} s  "
                f"{row['gflops']:6.1f} GFLOP/s ({100 * row['fraction_of_peak']:4.1f}% of peak)  "
                f"faults/check {row['minor_faults_per_run']:>8,}  padding "
                f"{100 * row['padding']:4.1f}%",
                flush=True,
            )
        out.append(
            {
                "width": width,
                "n_params": model.n_params,
                "mode": "sample" if sample else "full",
                "rows": rows,
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _fmt_s(s: float | None, estimated: bool = False) -> str:
    if s is None or s != s:
        return "—"
    text = f"{s:.3f}" if s < 10 else f"{s:.1f}"
    return f"{text} est." if estimated else text


def _fmt_x(x: float | None) -> str:
    if x is None or x != x:
        return "—"
    return f"{x:.1f}×" if x >= 0.1 else f"{x:.3f}×"


def print_results(models: list[dict[str, Any]], peak: dict[str, Any]) -> None:
    rows, sections = [], []
    for mr in models:
        for i, (m, r) in enumerate(mr["methods"].items()):
            rel = r["relative_error"]
            est = r.get("estimated", False)
            rows.append(
                [
                    f"{mr['name']} ({mr['n_params']:,})" if i == 0 else "",
                    m,
                    r["checks"] + (f" ({r['entries_timed']:,} timed)" if est else ""),
                    _fmt_s(r["cold_s"], est),
                    _fmt_s(r["warm_s"], est),
                    _fmt_x(r.get("over_gradlab_cold")) if i else "1",
                    _fmt_x(r.get("over_gradlab_warm")) if i else "1",
                    ("pass" if r["passed"] else "FAIL")
                    + (f" ({r['verdict']})" if r["verdict"] not in ("pass", "fail") else ""),
                    "—" if rel is None else f"{rel:.1e}",
                ]
            )
        sections.append(len(rows) - 1)
    print_table(
        "Gradient check of the same model, float64, eps=1e-7 (median over repetitions)",
        [
            "model (params)",
            "method",
            "checks",
            "cold s",
            "warm s",
            "÷ gradlab cold",
            "÷ gradlab warm",
            "verdict",
            "rel. error",
        ],
        rows,
        left=3,
        caption="cold: first call, compilation included; warm: compiled. ÷ gradlab: the "
        "method's time over gradlab.check's, per repetition, median. est.: timed on a random "
        "subsample of entries and extrapolated to all.",
        sections=sections,
    )
    trows = []
    for mr in models:
        g = mr["methods"]["gradlab.check"]
        tp = mr["throughput"]
        trows.append(
            [
                f"{mr['name']}",
                f"{mr['n_params']:,}",
                f"{mr['check_gflop']:.1f}",
                f"{mr['loop_gflop']:.1f}",
                _fmt_s(g["cold_s"]),
                _fmt_s(g["warm_s"]),
                f"{tp['gflops_warm']:.1f}",
                f"{100 * tp['fraction_of_peak_warm']:.1f}%",
                f"{100 * tp['fraction_of_peak_cold']:.1f}%",
            ]
        )
    print_table(
        f"gradlab.check throughput vs float64 matmul peak ({peak['gflops']:.1f} GFLOP/s, "
        f"{peak['n']}² jnp.matmul, best of {len(peak['seconds'])} at start and end)",
        [
            "model",
            "params",
            "check GFLOP",
            "loop GFLOP",
            "cold s",
            "warm s",
            "GFLOP/s warm",
            "% peak warm",
            "% peak cold",
        ],
        trows,
        caption="check GFLOP: useful work of the check (FLOP model in eval_flops); loop GFLOP: "
        "what the loop/torch do (2n full forward passes).",
    )


def evaluate_bars(ref: dict[str, Any]) -> dict[str, Any]:
    """The issue's bars on the reference model: ≥10× torch slow mode, ≥3× the loop.

    Judged against the FASTEST torch configuration measured (the most conservative ratio).
    """
    methods = ref["methods"]
    torch_ms = [m for m in methods if m.startswith("torch")]
    per_entry = ["gradlab.check", "loop (slide 13)", *torch_ms]
    passes = {m: methods[m]["passed"] for m in methods}
    same = len({passes[m] for m in per_entry}) == 1
    bars: dict[str, Any] = {"same_verdict": same, "passed": passes}
    for phase in ("cold", "warm"):
        key = f"over_gradlab_{phase}"
        torch_x = min((methods[m][key] for m in torch_ms), default=None)
        torch_best = min(torch_ms, key=lambda m: methods[m][key]) if torch_ms else None
        loop_x = methods["loop (slide 13)"][key]
        bars[phase] = {
            "torch_over_gradlab": torch_x,
            "torch_config": torch_best,
            "torch_bar_10x": None if torch_x is None else bool(torch_x >= 10),
            "loop_over_gradlab": loop_x,
            "loop_bar_3x": bool(loop_x >= 3),
            "met": bool(same and (torch_x or 0) >= 10 and loop_x >= 3),
        }
    return bars


def markdown(data: dict[str, Any]) -> str:
    """The result file's tables as markdown (for docs/benchmarks.md)."""
    lines = []
    for key, value in data.items():
        if isinstance(value, dict) and "models" in value and "bars_reference" in value:
            lines += [f"### run stored under {key!r}: `{value['command']}`", ""]
            lines += [markdown({**value, "device_name": data.get("device_name")}), ""]
    if "models" in data:
        peak = data["peak"]
        m0 = data["machine"]
        lines += [
            f"Device: {data['device_name']}; load average at start {m0['load_average_at_start']},"
            f" at end {m0['load_average_at_end']}; float64 matmul peak {peak['gflops']:.1f} "
            f"GFLOP/s.",
            "",
            "| model (params) | method | checks | cold s | warm s | ÷ gradlab cold "
            "| ÷ gradlab warm | verdict | rel. error |",
            "|---|---|---|--:|--:|--:|--:|---|--:|",
        ]
        for mr in data["models"]:
            for i, (m, r) in enumerate(mr["methods"].items()):
                est = r.get("estimated", False)
                rel = r["relative_error"]
                verdict = ("pass" if r["passed"] else "FAIL") + (
                    f" ({r['verdict']})" if r["verdict"] not in ("pass", "fail") else ""
                )
                lines.append(
                    "| "
                    + " | ".join(
                        [
                            f"{mr['name']} ({mr['n_params']:,})" if i == 0 else "",
                            m,
                            r["checks"] + (f" ({r['entries_timed']:,} timed)" if est else ""),
                            _fmt_s(r["cold_s"], est),
                            _fmt_s(r["warm_s"], est),
                            _fmt_x(r.get("over_gradlab_cold")) if i else "1",
                            _fmt_x(r.get("over_gradlab_warm")) if i else "1",
                            verdict,
                            "—" if rel is None else f"{rel:.1e}",
                        ]
                    )
                    + " |"
                )
        lines += [
            "",
            "| model | params | check GFLOP | loop GFLOP | gradlab cold s | gradlab warm s "
            "| GFLOP/s warm | % peak warm | % peak cold |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for mr in data["models"]:
            g, tp = mr["methods"]["gradlab.check"], mr["throughput"]
            lines.append(
                f"| {mr['name']} | {mr['n_params']:,} | {mr['check_gflop']:.1f} | "
                f"{mr['loop_gflop']:.1f} | {_fmt_s(g['cold_s'])} | {_fmt_s(g['warm_s'])} | "
                f"{tp['gflops_warm']:.1f} | {100 * tp['fraction_of_peak_warm']:.1f}% | "
                f"{100 * tp['fraction_of_peak_cold']:.1f}% |"
            )
    sweep = data.get("chunk_sweep")
    if sweep:
        lines += [
            "",
            f"Chunk sweep: load at start {sweep['machine']['load_average_at_start']}, at end "
            f"{sweep['machine']['load_average_at_end']}; peak {sweep['peak']['gflops']:.1f} "
            "GFLOP/s.",
        ]
        for ms in sweep["models"]:
            lines += [
                "",
                f"width {ms['width']} ({ms['n_params']:,} params, {ms['mode']} mode):",
                "",
                "| setting | best s | median s | GFLOP/s (best) | % peak | minor faults / check "
                "| padding |",
                "|---|--:|--:|--:|--:|--:|--:|",
            ]
            for r in ms["rows"]:
                lines.append(
                    f"| {r['setting']} | {r['best_s']:.3f} | {r['median_s']:.3f} | "
                    f"{r['gflops']:.1f} | "
                    f"{100 * r['fraction_of_peak']:.1f}% | {r['minor_faults_per_run']:,} | "
                    f"{100 * r['padding']:.1f}% |"
                )
    return "\n".join(lines)


def _merge_out(path: Path, device: str) -> dict[str, Any]:
    """The existing result file's content (to keep the part this run does not redo)."""
    import json

    if path.exists():
        try:
            data = json.loads(path.read_text())
            if data.get("device") == device:
                return data
        except ValueError:
            pass
    return {}


def select_device(kind: str) -> tuple[str, str]:
    """(jax device name, torch device) for ``--device``; exits with a clear error if no GPU."""
    if kind == "gpu":
        try:
            gpus = jax.devices("gpu")
        except RuntimeError as e:
            sys.exit(
                "error: --device gpu, but JAX has no GPU backend here "
                f"({str(e).splitlines()[0]}). Install a CUDA build of jaxlib "
                '(pip install "jax[cuda12]") on a machine with an NVIDIA GPU, or use --device cpu.'
            )
        jax.config.update("jax_default_device", gpus[0])
        torch_device = "cpu"
        try:
            import torch

            if torch.cuda.is_available():
                torch_device = "cuda"
        except ImportError:
            pass
        return gpus[0].device_kind, torch_device
    cpu = jax.devices("cpu")[0]
    jax.config.update("jax_default_device", cpu)
    return f"{cpu.device_kind} ({os.cpu_count()} cores)", "cpu"


def gradlab_source() -> dict[str, str]:
    """Which gradlab was imported: its folder and a hash of the checker's sources.

    The working tree may differ from the commit (``+dirty``); the hash identifies the exact
    checker that was timed (e.g. a ``git archive`` export put first on PYTHONPATH).
    """
    import hashlib

    folder = Path(gradlab.__file__).resolve().parent
    digest = hashlib.sha256()
    for f in sorted((folder / "gradcheck").glob("*.py")):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return {"path": str(folder), "gradcheck_sha256": digest.hexdigest()[:16]}


def _jaxlib_version() -> str | None:
    try:
        import jaxlib

        return jaxlib.__version__
    except (ImportError, AttributeError):
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reference + width 128, 2 reps")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma-separated hidden widths (depth 3); default 64,128,192,256 (quick: 64,128)",
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5; quick 2)")
    parser.add_argument(
        "--time-cap",
        type=float,
        default=None,
        help="seconds a loop/torch check may take before it is subsampled (default 60; quick 10)",
    )
    parser.add_argument(
        "--chunk-sweep",
        action="store_true",
        help="only run the chunk_size/memory_budget experiment (stored under chunk_sweep)",
    )
    parser.add_argument("--chunks", default="4,8,16,32,64,128,256,512,1024")
    parser.add_argument("--budgets", default="4,8,16,24,32,48,64,128,256", help="MiB")
    parser.add_argument("--no-torch", action="store_true", help="skip torch gradcheck")
    parser.add_argument(
        "--torch-threads",
        default=None,
        help="comma-separated torch.set_num_threads values to time gradcheck with "
        "(default: the core count, then 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--markdown", action="store_true", help="print the --out file's tables as markdown; no run"
    )
    parser.add_argument(
        "--key",
        default=None,
        help="store this run under this key of the --out file instead of at its top level "
        "(e.g. a second reference-model run at a different load)",
    )
    args = parser.parse_args(argv)
    if args.markdown:
        import json

        path = args.out or RESULTS / f"check_{args.device}.json"
        print(markdown(json.loads(path.read_text())))
        return

    device_name, torch_device = select_device(args.device)
    out = args.out or RESULTS / f"check_{args.device}.json"
    widths = [
        int(w) for w in (args.sizes or ("64,128" if args.quick else "64,128,192,256")).split(",")
    ]
    reps = args.reps or (2 if args.quick else 5)
    cap = args.time_cap or (10.0 if args.quick else 60.0)
    rng = np.random.default_rng(args.seed)
    cores = os.cpu_count() or 1
    torch_threads = [int(t) for t in (args.torch_threads or f"{cores},1").split(",")]
    torch_threads = list(dict.fromkeys(torch_threads))  # drop repeats (1 core: just 1)
    machine = machine_info()
    print(f"device: {device_name}; load {machine['load_average_at_start']}", flush=True)

    peak = matmul_peak(8192 if args.device == "gpu" else 2048, reps=7)
    print(f"float64 matmul peak: {peak['gflops']:.1f} GFLOP/s", flush=True)

    data = _merge_out(out, args.device)
    data.update(
        {
            "benchmark": "bench_check",
            "device": args.device,
            "device_name": device_name,
        }
    )
    if args.chunk_sweep:
        sweep = chunk_sweep(
            widths,
            [int(c) for c in args.chunks.split(",")],
            [float(b) for b in args.budgets.split(",")],
            reps=3 if args.quick else 5,
            full_limit_gflop=50.0,
            peak=peak["gflops"],
        )
        data["chunk_sweep"] = {
            "command": " ".join(sys.argv),
            "machine": finish_machine_info(machine),
            "gradlab_source": gradlab_source(),
            "peak": peak,
            "models": sweep,
        }
        write_json(out, data)
        print(f"\nwrote {out}")
        return

    twin = None
    torch_version = None
    if not args.no_torch:
        try:
            import torch

            torch_version = torch.__version__
        except ImportError:
            print("torch is not installed (pip install -e '.[bench]'): skipping torch gradcheck")
    results = []
    for width in widths:
        model = make_model(width, seed=args.seed)
        if not args.no_torch and torch_version is not None:
            twin = TorchTwin(model, torch_device)
            if width == widths[0]:  # torch's one-off start-up, outside the measurement
                TorchTwin(make_model(4), torch_device).gradcheck(None)
        model_reps = reps if width == REFERENCE_WIDTH else min(reps, 3)
        mr = bench_model(
            model,
            model_reps,
            cap,
            twin,
            torch_threads,
            rng,
            stop_early=width != REFERENCE_WIDTH,
        )
        results.append(mr)

    peak_end = matmul_peak(2048 if args.device == "cpu" else 8192, reps=7)
    print(f"float64 matmul peak at the end: {peak_end['gflops']:.1f} GFLOP/s", flush=True)
    peak = {
        "n": peak["n"],
        "dtype": "float64",
        "seconds": peak["seconds"] + peak_end["seconds"],
        "gflops_start": peak["gflops"],
        "gflops_end": peak_end["gflops"],
        "gflops": max(peak["gflops"], peak_end["gflops"]),
    }
    for mr in results:
        g = mr["methods"]["gradlab.check"]
        flops = mr["check_gflop"] * 1e9
        mr["throughput"] = {
            "gflops_warm": flops / g["warm_s"] / 1e9,
            "gflops_cold": flops / g["cold_s"] / 1e9,
            "fraction_of_peak_warm": flops / g["warm_s"] / 1e9 / peak["gflops"],
            "fraction_of_peak_cold": flops / g["cold_s"] / 1e9 / peak["gflops"],
        }
    print_results(results, peak)
    ref = next((m for m in results if m["width"] == REFERENCE_WIDTH), None)
    bars = evaluate_bars(ref) if ref is not None else None
    if bars is not None:
        for phase in ("cold", "warm"):
            b = bars[phase]
            print(
                f"bars ({phase}): {b['torch_config']}/gradlab "
                f"{_fmt_x(b['torch_over_gradlab'])} (≥10×: {b['torch_bar_10x']}), "
                f"loop/gradlab {_fmt_x(b['loop_over_gradlab'])} (≥3×: {b['loop_bar_3x']}), "
                f"same verdict: {bars['same_verdict']} → "
                f"{'MET' if b['met'] else 'NOT MET'}"
            )
    run = {
        "command": " ".join(sys.argv),
        "quick": args.quick,
        "machine": finish_machine_info(machine),
        "versions": {
            "jax": jax.__version__,
            "jaxlib": _jaxlib_version(),
            "numpy": np.__version__,
            "torch": torch_version,
            "torch_device": torch_device if torch_version else None,
            "gradlab": gradlab.__version__,
            "gradlab_source": gradlab_source(),
        },
        "config": {
            "eps": EPS,
            "tolerance": TOLERANCE,
            "d_in": D_IN,
            "depth": DEPTH,
            "batch": BATCH,
            "widths": widths,
            "reps_reference": reps,
            "reps_sweep_max": min(reps, 3),
            "time_cap_s": cap,
            "torch_gradcheck": "fast_mode=False, eps=1e-7, atol=1e-5, rtol=1e-3 (defaults)",
            "torch_threads": torch_threads,
            "check_grads": "order=1, modes=['rev'], eps=1e-7, default atol/rtol",
        },
        "flop_model": inspect.getdoc(eval_flops) + "\n" + inspect.getdoc(layer_flops),
        "peak": peak,
        "models": results,
        "bars_reference": bars,
    }
    if args.key:
        data[args.key] = run
    else:
        data.update(run)
    write_json(out, data)
    print(f"\nwrote {out}" + (f" (under {args.key!r})" if args.key else ""))


if __name__ == "__main__":
    main()
