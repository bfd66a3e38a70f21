"""Compile and step times of gradlab.nn models: scan over layers vs a Python loop, and gradlab's
LSTM vs ``flax.nnx.RNN(flax.nnx.LSTMCell)``.

A *step* is the forward and backward pass of a scalar loss (``jax.value_and_grad``), jitted;
it is timed after a warm-up call with ``block_until_ready``; the median and the minimum of the
repeats are reported. *Compile* is the time of ``jax.jit(step).lower(...).compile()`` (tracing,
lowering and XLA compilation), the minimum over ``--compile-repeats`` fresh functions. Repeats
run round-robin over the models, so that a change in the machine's load hits all of them.

Run by hand (not in CI)::

    python benchmarks/bench_models.py            # full sizes
    python benchmarks/bench_models.py --quick    # small sizes, few repeats

Prints a table and writes ``benchmarks/results/models_<backend>.json``. The bars: the scanned
stack's compile time at depth 150 is at most 1.5x that at depth 10, and gradlab's LSTM step is
no slower than Flax's.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from rich.console import Console
from rich.table import Table

from gradlab.nn import LSTM, ResidualStack, pure
from gradlab.nn._common import resolve_hoist

RESULTS = Path(__file__).parent / "results"


def _time_compiles(
    cases: list[tuple[Callable[[], Callable[..., Any]], tuple]], repeats: int
) -> list[float]:
    """Best-of-``repeats`` time of ``jax.jit(make()).lower(*args).compile()`` per case, a fresh
    function each time (no cache hit), round-robin so that load changes hit every case alike."""
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        for i, (make_step, args) in enumerate(cases):
            step = jax.jit(make_step())
            gc.collect()  # not inside the timing: collecting a big unrolled program takes a while
            start = time.perf_counter()
            step.lower(*args).compile()
            times[i].append(time.perf_counter() - start)
    return [min(t) for t in times]


def _time_steps(cases: list[tuple[Callable[..., Any], tuple]], repeats: int) -> list[dict]:
    """Times jitted steps round-robin (one call of each per round), so that a change in the
    machine's load hits every case alike; returns the median and the minimum per case."""
    for step, args in cases:
        jax.block_until_ready(step(*args))  # warm-up (and compile)
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        for i, (step, args) in enumerate(cases):
            start = time.perf_counter()
            jax.block_until_ready(step(*args))
            times[i].append(time.perf_counter() - start)
    return [{"step_s": statistics.median(t), "step_min_s": min(t)} for t in times]


def _measure(
    rows: list[dict[str, Any]],
    cases: list[tuple[Callable[[], Callable[..., Any]], tuple]],
    repeats: int,
    compile_repeats: int,
) -> list[dict[str, Any]]:
    compiles = _time_compiles(cases, compile_repeats)
    steps = _time_steps([(jax.jit(make()), args) for make, args in cases], repeats)
    for row, compile_s, timing in zip(rows, compiles, steps, strict=True):
        row.update(compile_s=compile_s, **timing)
    return rows


def _loss_step(apply_fn: Callable[..., Any]) -> Callable[[], Callable[..., Any]]:
    def make() -> Callable[..., Any]:
        def loss(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
            out = apply_fn(params, x)
            out = out[0] if isinstance(out, tuple) else out
            return jnp.mean((out - y) ** 2)

        return jax.value_and_grad(loss)

    return make


def _warm_up() -> None:
    """Compiles small models once, so that one-time costs do not land on the first timing."""
    x = jnp.ones((2, 4))
    for model in (
        ResidualStack(4, 1, width=4, depth=2, rngs=nnx.Rngs(0)),
        ResidualStack(4, 1, width=4, depth=2, unroll=True, rngs=nnx.Rngs(0)),
    ):
        apply_fn, params = pure(model)
        jax.block_until_ready(jax.jit(_loss_step(apply_fn)())(params, x, jnp.ones((2, 1))))
    xs, ys = jnp.ones((2, 3, 4)), jnp.ones((2, 3, 4))
    for model in (
        LSTM(4, 4, rngs=nnx.Rngs(0)),
        nnx.RNN(nnx.LSTMCell(4, 4, rngs=nnx.Rngs(0))),
    ):
        apply_fn, params = pure(model)
        jax.block_until_ready(jax.jit(_loss_step(apply_fn)())(params, xs, ys))


def bench_residual(
    depths: list[int], width: int, batch: int, repeats: int, compile_repeats: int
) -> list[dict[str, Any]]:
    x = jax.random.normal(jax.random.key(0), (batch, width))
    y = jax.random.normal(jax.random.key(1), (batch, 1))
    rows, cases = [], []
    for depth in depths:
        for unroll in (False, True):
            model = ResidualStack(
                width,
                1,
                width=width,
                depth=depth,
                branch_scale=depth**-0.5,
                unroll=unroll,
                rngs=nnx.Rngs(0),
            )
            apply_fn, params = pure(model)
            make = _loss_step(apply_fn)
            rows.append(
                {
                    "model": "ResidualStack(dense)",
                    "variant": "unrolled loop" if unroll else "lax.scan",
                    "depth": depth,
                    "width": width,
                    "batch": batch,
                }
            )
            cases.append((make, (params, x, y)))
    return _measure(rows, cases, repeats, compile_repeats)


def bench_lstm(
    batch: int, steps: int, features: int, hidden: int, repeats: int, compile_repeats: int
) -> list[dict[str, Any]]:
    xs = jax.random.normal(jax.random.key(0), (batch, steps, features))
    ys = jax.random.normal(jax.random.key(1), (batch, steps, hidden))
    lstm = lambda variant, hoist: LSTM(
        features, hidden, variant=variant, hoist_input=hoist, rngs=nnx.Rngs(0)
    )
    default = "default (hoisted)" if resolve_hoist(None) else "default (per-step input)"
    models: list[tuple[str, str, nnx.Module]] = [
        ("gradlab LSTM (standard)", default, lstm("standard", None)),
        ("gradlab LSTM (standard)", "hoist_input=True", lstm("standard", True)),
        ("gradlab LSTM (standard)", "hoist_input=False", lstm("standard", False)),
        ("gradlab LSTM (slide)", default, lstm("slide", None)),
        ("nnx.RNN(nnx.LSTMCell)", "", nnx.RNN(nnx.LSTMCell(features, hidden, rngs=nnx.Rngs(0)))),
    ]
    rows, cases = [], []
    for name, variant, model in models:
        apply_fn, params = pure(model)
        make = _loss_step(apply_fn)
        rows.append(
            {
                "model": name,
                "variant": variant,
                "depth": steps,
                "width": hidden,
                "batch": batch,
            }
        )
        cases.append((make, (params, xs, ys)))
    return _measure(rows, cases, repeats, compile_repeats)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per model")
    parser.add_argument("--compile-repeats", type=int, default=None, help="compiles per model")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)

    quick = args.quick
    repeats = args.repeats or (5 if quick else 20)
    compile_repeats = args.compile_repeats or (2 if quick else 5)
    depths = [10, 50, 150]
    res_width, res_batch = (16, 16) if quick else (64, 64)
    lstm_sizes = (
        dict(batch=8, steps=50, features=16, hidden=32)
        if quick
        else dict(batch=32, steps=100, features=32, hidden=128)
    )

    console = Console(width=120)
    console.print(f"JAX {jax.__version__} on {jax.default_backend()} ({jax.devices()[0]})")
    _warm_up()
    rows = bench_residual(depths, res_width, res_batch, repeats, compile_repeats)
    rows += bench_lstm(**lstm_sizes, repeats=repeats, compile_repeats=compile_repeats)

    title = "gradlab.nn: value_and_grad of a scalar loss, jitted (step: median, min of repeats)"
    table = Table(title=title)
    columns = ("model", "variant", "depth / T", "width", "batch", "compile (s)", "step (ms)")
    for column in (*columns, "min (ms)"):
        table.add_column(column, justify="left" if column in ("model", "variant") else "right")
    for r in rows:
        table.add_row(
            r["model"],
            r["variant"],
            str(r["depth"]),
            str(r["width"]),
            str(r["batch"]),
            f"{r['compile_s']:.3f}",
            f"{1e3 * r['step_s']:.3f}",
            f"{1e3 * r['step_min_s']:.3f}",
        )
    console.print(table)

    scan = {r["depth"]: r for r in rows if r["variant"] == "lax.scan"}
    unrolled = {r["depth"]: r for r in rows if r["variant"] == "unrolled loop"}
    lstm = {(r["model"], r["variant"].split(" ")[0]): r for r in rows if "LSTM" in r["model"]}
    compile_ratio = scan[150]["compile_s"] / scan[10]["compile_s"]
    unrolled_ratio = unrolled[150]["compile_s"] / unrolled[10]["compile_s"]
    flax_step = lstm[("nnx.RNN(nnx.LSTMCell)", "")]["step_s"]
    lstm_ratio = lstm[("gradlab LSTM (standard)", "default")]["step_s"] / flax_step
    hoisted_ratio = lstm[("gradlab LSTM (standard)", "hoist_input=True")]["step_s"] / flax_step
    summary = {
        "scan_compile_ratio_150_over_10": compile_ratio,
        "unrolled_compile_ratio_150_over_10": unrolled_ratio,
        "scan_compile_ok": compile_ratio <= 1.5,
        "lstm_step_ratio_gradlab_over_flax": lstm_ratio,
        "lstm_ok": lstm_ratio <= 1.0,
        "lstm_hoisted_step_ratio_gradlab_over_flax": hoisted_ratio,
    }
    console.print(
        f"scan compile time, depth 150 / depth 10: {compile_ratio:.2f}x (bar: <= 1.5x) "
        f"\\[{'ok' if summary['scan_compile_ok'] else 'MISSED'}]; "
        f"unrolled: {unrolled_ratio:.1f}x"
    )
    console.print(
        f"LSTM step time, gradlab (default) / flax: {lstm_ratio:.2f}x (bar: <= 1.0x) "
        f"\\[{'ok' if summary['lstm_ok'] else 'MISSED'}]; "
        f"with hoist_input=True: {hoisted_ratio:.2f}x"
    )

    result = {
        "benchmark": "bench_models",
        "quick": quick,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "repeats": repeats,
        "compile_repeats": compile_repeats,
        "rows": rows,
        "summary": summary,
    }
    out = args.out or RESULTS / f"models_{jax.default_backend()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
