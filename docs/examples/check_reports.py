"""The worked-example reports of docs/check.md.

``python docs/examples/check_reports.py`` prints them; ``--write docs/check.md`` also puts each
report into the page, in the text block after its bold title.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gradlab

#: title -> the report printed under it (filled by ``show``).
REPORTS: dict[str, str] = {}


def scaled_rule(fn, scale):
    """``fn`` with a custom_vjp whose backward is ``scale`` × the true one."""

    @jax.custom_vjp
    def g(x):
        return fn(x)

    g.defvjp(lambda x: (fn(x), x), lambda x, ct: (scale * jax.vjp(fn, x)[1](ct)[0],))
    return g


def least_squares(scale):
    with jax.enable_x64():
        a = jax.random.normal(jax.random.key(0), (40, 6), jnp.float64)
        x = jax.random.normal(jax.random.key(1), (6,), jnp.float64)
        y, p = a @ x, x + 1e-6
    sq = scaled_rule(lambda r: jnp.sum(r**2), scale)
    return (lambda p: sq(a @ p - y)), p


def show(title, report):
    REPORTS[title] = "\n".join(line.rstrip() for line in str(report).splitlines())
    print(f"### {title}\n")
    print(report)
    print()


def write(page: Path) -> None:
    """Replaces the text block after each ``**title**`` of ``page`` with its report."""
    text = page.read_text()
    for title, report in REPORTS.items():
        pattern = re.compile(r"(\*\*" + re.escape(title) + r"\*\*\n\n```text\n).*?(\n```)", re.S)
        text, n = pattern.subn(lambda m, r=report: m.group(1) + r + m.group(2), text)
        if n != 1:
            raise SystemExit(f"{page}: no text block after **{title}**")
    page.write_text(text)


if __name__ == "__main__":
    f, p = least_squares(2.0)
    show("A converged least-squares fit whose rule doubles the gradient", gradlab.check(f, p))

    def mixed(params, x):
        h = jnp.tanh(x @ params["w"]).astype(jnp.float32)
        z = jax.nn.softmax(h @ params["v"].astype(jnp.float32), axis=-1)
        return jnp.sum(z.astype(params["w"].dtype) * jnp.arange(3))

    params = {"w": jax.random.normal(jax.random.key(3), (4, 5)) * 0.5,
              "v": jax.random.normal(jax.random.key(5), (5, 3))}  # fmt: skip
    show("float32 inside f, promoted", gradlab.check(mixed, params, jnp.ones((6, 4))))

    rng = np.random.default_rng(0)

    def random_mask(p):
        return jnp.sum(jnp.tanh(p * jnp.asarray(rng.random(p.shape) > 0.5)) ** 2)

    show("Host randomness at trace time", gradlab.check(random_mask, jnp.linspace(-1, 1, 12)))
    show("Kinks: relu at exactly 0",
         gradlab.check(lambda t: jnp.sum(jax.nn.relu(t) * jnp.arange(1.0, 5.0)),
                       jnp.array([0.0, 1.0, 0.0, -2.0])))  # fmt: skip
    f = lambda p: 1e2 + jnp.sum(1e-2 * jnp.sin(p["small"])) + jnp.sum(p["big"] ** 2)
    show("Rounding at eps=1e-7, retried",
         gradlab.check(f, {"small": jnp.linspace(0.1, 1.0, 8), "big": jnp.array([1.0, 2.0])}))
    f = lambda p: 1e8 + 1e-12 * jnp.sum(jnp.sin(p))
    show("A gradient no step can resolve", gradlab.check(f, jnp.linspace(0.1, 1.0, 5)))
    if "--write" in sys.argv:
        write(Path(sys.argv[sys.argv.index("--write") + 1]))
