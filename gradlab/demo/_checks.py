"""Section 5 of the demo: :func:`gradlab.check` on the built-in models and on a deliberate bug."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from rich.table import Table

from gradlab.demo._settings import DemoSettings, _Runner


def _check_problems(quick: bool) -> dict[str, Callable[[], tuple[Any, Any, tuple[Any, ...]]]]:
    """Small built-in models as ``(f, params, args)`` problems for :func:`gradlab.check`."""
    from flax import nnx

    from gradlab import losses, nn

    def bce_problem(model: Any, x: jax.Array, y: jax.Array, seq: bool = False) -> tuple:
        apply_fn, params = nn.pure(model)

        def f(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
            out = apply_fn(params, x)
            if seq:
                logits = jnp.sum(out[0][:, -1], axis=-1)
            else:
                logits = out[:, 0]
            return losses.binary_cross_entropy(logits, y)

        return f, params, (x, y)

    key = jax.random.key(0)
    kx, ky, ks = jax.random.split(key, 3)
    y = (jax.random.uniform(ky, (8,)) > 0.5).astype(jnp.float32)

    def mlp() -> tuple:
        m = nn.MLP(4, 1, width=8, depth=3, activation="tanh", rngs=nnx.Rngs(0))
        return bce_problem(m, jax.random.normal(kx, (8, 4)), y)

    def residual() -> tuple:
        m = nn.ResidualStack(
            4, 1, width=6, depth=3, activation="tanh", branch_scale="fixup", rngs=nnx.Rngs(1)
        )
        return bce_problem(m, jax.random.normal(kx, (8, 4)), y)

    def lstm() -> tuple:
        m = nn.LSTM(3, 5, rngs=nnx.Rngs(2))
        return bce_problem(m, jax.random.normal(ks, (8, 6, 3)), y, seq=True)

    def rnn() -> tuple:
        m = nn.RNN(3, 5, rngs=nnx.Rngs(3))
        return bce_problem(m, jax.random.normal(ks, (8, 6, 3)), y, seq=True)

    def buggy() -> tuple:
        @jax.custom_vjp
        def my_tanh(z: jax.Array) -> jax.Array:
            return jnp.tanh(z)

        def fwd(z: jax.Array) -> tuple[jax.Array, jax.Array]:
            return jnp.tanh(z), z

        def bwd(z: jax.Array, g: jax.Array) -> tuple[jax.Array]:
            return (g * (1.0 - jnp.tanh(z)),)  # bug: should be 1 - tanh(z)**2

        my_tanh.defvjp(fwd, bwd)
        w = 0.5 * jax.random.normal(kx, (4, 3))

        def f(w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
            return losses.binary_cross_entropy(jnp.sum(my_tanh(x @ w), axis=-1), y)

        return f, w, (jax.random.normal(ky, (8, 4)), y)

    problems = {
        "MLP (tanh, depth 3, width 8)": mlp,
        "buggy custom_vjp tanh (deliberate)": buggy,
    }
    if not quick:
        problems = {
            "MLP (tanh, depth 3, width 8)": mlp,
            "ResidualStack (tanh, depth 3, width 6)": residual,
            "LSTM (hidden 5, 6 steps)": lstm,
            "RNN (hidden 5, 6 steps)": rnn,
            "buggy custom_vjp tanh (deliberate)": buggy,
        }
    return problems


def _check_section(s: DemoSettings, r: _Runner) -> dict[str, Any]:
    import gradlab

    rows: list[dict[str, Any]] = []
    reports = {}
    for label, make in _check_problems(s.quick).items():
        f, params, args = make()
        rep = r.step(f"gradlab.check: {label}", functools.partial(gradlab.check, f, params, *args))
        reports[label] = rep
        rows.append(
            {
                "model": label,
                "ok": bool(rep.ok),
                "outcome": str(rep.outcome),
                "relative_error": float(rep.relative_error),
                "verdict": str(rep.verdict),
                "entries": int(rep.n_entries),
                "kinks": int(rep.n_kinks),
                "wrong_leaves": [leaf.path for leaf in rep.wrong],
                "seconds": float(rep.seconds),
            }
        )
    table = Table(
        title="5. gradlab.check on the built-in models (float64, eps=1e-7)", title_justify="left"
    )
    for col in ("model", "entries", "relative error", "verdict", "outcome", "wrong leaves", "time"):
        table.add_column(col, justify="right" if col in ("entries", "time") else "left")
    for row in rows:
        table.add_row(
            row["model"],
            f"{row['entries']:,}",
            f"{row['relative_error']:.2e}",
            row["verdict"],
            {"passed": "[green]passed[/]", "failed": "[bold red]failed[/]"}.get(
                row["outcome"], "[yellow]inconclusive[/]"
            ),
            ", ".join(row["wrong_leaves"]) or "—",
            f"{row['seconds']:.1f}s",
        )
    r.console.print(table)
    r.console.print(
        "   The deliberate bug (a tanh whose custom backward forgets to square) is caught; the "
        "real models agree with centered differences.\n"
    )
    return {"rows": rows}
