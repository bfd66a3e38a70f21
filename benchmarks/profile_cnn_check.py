"""Where the CNN check's time goes: per kernel, its leaves, rows per chunk, compile and run.

Checks ``bench_architectures.py``'s ``cnn`` twice in one process with the persistent
compilation cache OFF (the first check is cold, the second warm) and records

* the plan: per checked leaf, its rows, chunk and whether it shares a group kernel;
* every program JAX compiles, with its time (``jax_log_compiles``);
* every kernel call (leaf or group, rows) with its run time (CPU: less sensitive to the load
  of a shared machine than wall time), cold and warm.

Run by hand (the numbers depend on the machine's load, which is printed)::

    python benchmarks/profile_cnn_check.py
    python benchmarks/profile_cnn_check.py --dense   # slices off: every leaf evaluated densely
"""

from __future__ import annotations

import argparse
import collections
import functools
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADLAB_COMPILATION_CACHE", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_small_check import _Programs


def _wrap_run(sweep: Any, sink: list[tuple[str, int, float]], names: list[str]) -> None:
    """Times every :meth:`Context.run` call (CPU time, synchronised on its outputs)."""
    import jax

    run = sweep.Context.run

    @functools.wraps(run)
    def timed(self: Any, kernel: Any, static: tuple[Any, ...], *batch: Any, **kw: Any) -> Any:
        start = time.process_time()
        out = jax.block_until_ready(run(self, kernel, static, *batch, **kw))
        k = static[0]
        label = "+".join(names[j] for j in k) if isinstance(k, tuple) else names[k]
        sink.append((f"{kernel.__name__}[{label}]", len(batch[-1]), time.process_time() - start))
        return out

    sweep.Context.run = timed


def profile(dense: bool) -> dict[str, Any]:
    """Runs the CNN check cold then warm; returns the plan, compiles and calls of each."""
    import jax
    from bench_architectures import _cnn, _jax_fn

    import gradlab
    from gradlab.gradcheck.evaluation import _sweep
    from gradlab.gradcheck.pipeline import _first_order as _pipeline

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_default_matmul_precision", "highest")
    (c,) = _cnn()
    fn = _jax_fn(c)
    names = sorted(c.params)  # the checked leaves, in pytree order
    plans: list[Any] = []
    make = _pipeline.make_plans

    def recorded(*a: Any, **kw: Any) -> Any:
        plans[:] = make(*a, **kw)
        return plans

    _pipeline.make_plans = recorded
    calls: list[tuple[str, int, float]] = []
    _wrap_run(_sweep, calls, names)
    handler = _Programs()
    logging.getLogger("jax").addHandler(handler)
    logging.getLogger("jax").propagate = False
    jax.config.update("jax_log_compiles", True)
    execution = gradlab.Execution(slices=not dense)
    out: dict[str, Any] = {}
    for phase in ("cold", "warm"):
        calls.clear()
        handler.rows.clear()
        start, cpu = time.perf_counter(), time.process_time()
        ok = gradlab.check(fn, c.params, *c.args, execution=execution).ok
        out[phase] = {
            "seconds": time.perf_counter() - start,
            "cpu": time.process_time() - cpu,
            "ok": ok,
            "calls": list(calls),
            "programs": list(handler.rows),
        }
    out["plans"] = [
        (names[p.k], p.m, p.chunk, p.group and "+".join(names[j] for j in p.group), p.flops_per_row)
        for p in plans
    ]
    return out


def main() -> None:
    """Prints the plan, the compiles and the kernel calls, cold and warm."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dense", action="store_true", help="Execution(slices=False)")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    out = profile(args.dense)
    print("\nleaf   rows  chunk  group                  MFLOP/row")
    for name, m, chunk, group, flops in out["plans"]:
        print(f"  {name:4s} {m:5d} {chunk:6d}  {group or '-':22s} {flops / 1e6:8.2f}")
    for phase in ("cold", "warm"):
        o = out[phase]
        print(f"\n{phase}: {o['seconds']:.3f} s wall, {o['cpu']:.3f} s CPU, ok={o['ok']}")
        by: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        for kind, prog, t in o["programs"]:
            by[(kind, prog)].append(t)
        for (kind, prog), ts in sorted(by.items(), key=lambda kv: -sum(kv[1])):
            print(f"  {kind:7s} {prog:28s} {len(ts):3d} {sum(ts) * 1e3:7.0f} ms")
        per: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
        for name, rows, t in o["calls"]:
            per[name].append((rows, t))
        print("  kernel calls                            n   rows/call  CPU ms")
        for name, rs in per.items():
            total = sum(t for _, t in rs)
            print(f"    {name:36s} {len(rs):3d} {rs[0][0]:8d}  {total * 1e3:8.0f}")


if __name__ == "__main__":
    main()
