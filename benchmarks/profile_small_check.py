"""Where the milliseconds of a small cold ``gradlab.check`` go: stages and programs.

Runs the ten layers of ``bench_architectures.py``'s ``suite`` (or the ones named) once each
in a fresh process with the persistent compilation cache OFF, and records

* the wall time of each stage of the check (problem, promotion pass, output shape, f and its
  gradient at θ, plan, sweep and judging, consistency, audit, report), by wrapping the
  functions ``gradlab.gradcheck.api._check`` calls;
* every program JAX traces, lowers and compiles, with its time (JAX's own
  ``jax_log_compiles`` records), and how many XLA compiles ran.

Run by hand (the numbers depend on the machine's load, which is printed)::

    python benchmarks/profile_small_check.py                 # all ten layers, per stage
    python benchmarks/profile_small_check.py --layers dense_tanh --programs
"""

from __future__ import annotations

import argparse
import collections
import functools
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADLAB_COMPILATION_CACHE", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = (
    "build_problem",
    "_promotion",
    "_output",
    "evaluate",
    "_steps",
    "make_plans",
    "_sweep_and_judge",
    "consistency",
    "_audit",
    "_report",
)
_LINE = re.compile(
    r"Finished (tracing|jaxpr to MLIR module conversion|XLA compilation of) "
    r"(?:jit\()?([\w<>.]+)\)?.* in ([0-9.e-]+) sec"
)


class _Programs(logging.Handler):
    """Collects JAX's compile log: (phase, program, seconds)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.rows: list[tuple[str, str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = _LINE.search(record.getMessage())
        if m:
            phase = {"tracing": "trace", "jaxpr": "lower", "XLA": "compile"}[m.group(1).split()[0]]
            self.rows.append((phase, m.group(2), float(m.group(3))))


def _timed(module: Any, name: str, sink: dict[str, float]) -> None:
    fn = getattr(module, name)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink[name] += time.perf_counter() - start

    setattr(module, name, wrapper)


def profile(layers: list[str]) -> dict[str, Any]:
    """Checks each layer once (cold) and returns the stage and program times."""
    import jax
    from bench_architectures import _jax_fn, _suite

    import gradlab
    from gradlab.gradcheck.pipeline import _first_order as api  # the checker's stages

    stages: dict[str, float] = collections.defaultdict(float)
    for name in STAGES:
        if hasattr(api, name):
            _timed(api, name, stages)
    handler = _Programs()
    logging.getLogger("jax").addHandler(handler)
    logging.getLogger("jax").propagate = False
    jax.config.update("jax_log_compiles", True)
    checks = [c for c in _suite() if not layers or c.name in layers]
    per_layer = {}
    for c in checks:
        start = time.perf_counter()
        ok = gradlab.check(_jax_fn(c), c.params, *c.args).ok
        per_layer[c.name] = (time.perf_counter() - start, ok)
    return {"stages": dict(stages), "programs": handler.rows, "layers": per_layer}


def main() -> None:
    """Prints the tables (stages, programs) for the layers asked for."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", default="", help="comma-separated suite layers (default: all)")
    ap.add_argument("--programs", action="store_true", help="list every program")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    out = profile([x for x in args.layers.split(",") if x])
    total = sum(t for t, _ in out["layers"].values())
    print(f"load average {load:.2f}; {len(out['layers'])} layers, {total * 1e3:.0f} ms in all")
    for name, (t, ok) in out["layers"].items():
        print(f"  {name:24s} {t * 1e3:7.0f} ms  ok={ok}")
    print("\nstage                      ms   share")
    for name in STAGES:
        t = out["stages"].get(name, 0.0)
        print(f"  {name:22s} {t * 1e3:7.0f}  {t / total:5.1%}")
    by: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for phase, prog, t in out["programs"]:
        by[(phase, prog)].append(t)
    print("\nphase    program                       n     ms")
    for (phase, prog), ts in sorted(by.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {phase:7s} {prog:28s} {len(ts):3d} {sum(ts) * 1e3:7.0f}")
    if args.programs:
        for row in out["programs"]:
            print(*row)


if __name__ == "__main__":
    main()
