"""The precision audit of a float32 model: traced every check, compiled once per fingerprint.

A float32 model's check ends with the precision audit: ``jax.grad`` at the parameters' own
dtype against the verified float64 gradient. Its program is traced at every check (the float32
path as it is now) and compiled only when the strict fingerprint of that trace is new. This
script times, in one process and on the same model:

* ``reused`` — the audit as a check runs it now (trace, fingerprint, executable found);
* ``fresh`` — the audit traced, lowered and compiled at every check (what it did before its
  program was reused): ``jax.jit`` of a new function object, plus the trace that finds the
  narrowest dtype f computes in;
* the whole warm ``gradlab.check`` of the model, and its cold first check.

Each warm figure is the median of ``--repeat`` runs (the machine is shared: medians, and the
load is recorded). Writes ``benchmarks/results/audit_<platform>.json`` and prints a table.

    python benchmarks/bench_audit.py               # float32 MLPs 32-64-64-1 and 64-256-256-1
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import finish_machine_info, machine_info, median, print_table, write_json

import gradlab
from gradlab.gradcheck.judging import _audit

RESULTS = Path(__file__).resolve().parent / "results"


def mlp(widths: list[int], batch: int) -> tuple[Any, Any, Any]:
    """A float32 tanh MLP with a mean-squared output, its parameters and inputs."""
    keys = jax.random.split(jax.random.key(0), len(widths))
    params = {
        f"w{i}": jax.random.normal(keys[i], (a, b), jnp.float32) / np.sqrt(a)
        for i, (a, b) in enumerate(itertools.pairwise(widths))
    }
    x = jax.random.normal(keys[-1], (batch, widths[0]), jnp.float32)

    def f(p: Any, x: Any) -> Any:
        h = x
        for i in range(len(widths) - 1):
            h = jnp.tanh(h @ p[f"w{i}"])
        return jnp.mean(h**2)

    return f, params, x


def _fresh_audit(f: Any, primals: tuple[Any, ...]) -> None:
    """The audit's work when it traced, lowered and compiled its program at every check."""
    flat, tree = jax.tree_util.tree_flatten(list(primals))
    is_array = tuple(True for _ in flat)
    spec = _audit._AuditSpec(f, (0,), tree, is_array, _audit._Static((None,) * len(flat)))
    arrays = tuple(flat)
    with jax.default_matmul_precision("highest"):
        fresh = jax.jit(lambda a, c: _audit._gradients(spec, a, c))
        jax.block_until_ready(fresh(arrays, None))
        closed = jax.make_jaxpr(lambda a, c: _audit._gradients(spec, a, c))(arrays, None)
    _audit._narrowest(closed)


def _reused_audit(f: Any, primals: tuple[Any, ...], reference: list[np.ndarray]) -> None:
    leaves = jax.tree_util.tree_leaves(primals[0])
    paths = [f"w{i}" for i in range(len(leaves))]
    _audit.audit(f, primals, (0,), None, paths, [True] * len(leaves), reference)


def _median_time(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times)


def bench(widths: list[int], batch: int, repeat: int) -> dict[str, Any]:
    """Cold and warm audit and check times of one float32 MLP."""
    f, p, x = mlp(widths, batch)
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
        grads = jax.grad(f)(p64, np.asarray(x, np.float64))
    reference = [np.asarray(g) for g in jax.tree_util.tree_leaves(grads)]
    start = time.perf_counter()
    report = gradlab.check(f, p, x)
    cold_check = time.perf_counter() - start
    assert report.ok, report
    reused = _median_time(lambda: _reused_audit(f, (p, x), reference), repeat)
    fresh = _median_time(lambda: _fresh_audit(f, (p, x)), repeat)
    warm_check = _median_time(lambda: gradlab.check(f, p, x), repeat)
    n_params = sum(int(np.size(v)) for v in jax.tree_util.tree_leaves(p))
    return {
        "model": "-".join(map(str, widths)) + f" (batch {batch})",
        "params": n_params,
        "cold_check_s": cold_check,
        "warm_check_s": warm_check,
        "audit_fresh_s": fresh,
        "audit_reused_s": reused,
        "speedup": fresh / reused,
    }


def main() -> None:
    """Runs the models and writes the JSON and the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7, help="warm runs per figure (median)")
    args = ap.parse_args()
    info = machine_info()
    rows = [bench([32, 64, 64, 1], 64, args.repeat), bench([64, 256, 256, 1], 64, args.repeat)]
    data = {"machine": finish_machine_info(info), "repeat": args.repeat, "models": rows}
    platform = jax.devices()[0].platform
    write_json(RESULTS / f"audit_{platform}.json", data)
    table = [
        [r["model"], f"{r['params']:,}", f"{r['audit_fresh_s'] * 1e3:.0f} ms",
         f"{r['audit_reused_s'] * 1e3:.1f} ms", f"{r['speedup']:.1f}x",
         f"{r['warm_check_s'] * 1e3:.0f} ms", f"{r['cold_check_s'] * 1e3:.0f} ms"]
        for r in rows
    ]  # fmt: skip
    print_table(
        f"precision audit of a float32 MLP, warm (median of {args.repeat})",
        ["model", "params", "audit fresh", "audit reused", "ratio", "warm check", "cold check"],
        table,
        caption=f"load average at start {info['load_average_at_start']}",
    )


if __name__ == "__main__":
    main()
