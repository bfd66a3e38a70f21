"""A deliberately broken Flax model, for the demo, the docs and the CLI example.

It is an example *for* the diagnosis, not a part of it: the demo and the documentation diagnose
it through the public :func:`gradlab.flow.diagnose` (``gradlab diagnose
gradlab.demo._examples:broken_flax_model`` on the command line), and nothing in the library
below the demo imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import flax.linen as lnn
import jax
import jax.numpy as jnp

from gradlab import losses

if TYPE_CHECKING:
    from gradlab.flow import Diagnosis


class TanhMLP(lnn.Module):
    """A Flax Linen tanh MLP whose kernels have std ``k/√fan_in`` (one logit out).

    Attributes:
        depth: number of hidden ``Dense`` layers.
        width: units per layer.
        k: the lecture's K in ``K/√n_prev`` (K = 2: the lecture's 2/√n_prev, variance 4/n).
    """

    depth: int = 50
    width: int = 64
    k: float = 2.0

    @lnn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = lnn.initializers.variance_scaling(self.k**2, "fan_in", "normal")
        for _ in range(self.depth):
            x = jnp.tanh(lnn.Dense(self.width, kernel_init=init)(x))
        return lnn.Dense(1, kernel_init=init)(x)[..., 0]


def broken_flax_model(
    depth: int = 50, width: int = 64, k: float = 2.0, batch: int = 32, key: int = 0
) -> tuple[Any, Any, tuple[jax.Array, jax.Array]]:
    """``(f, variables, (x, labels))``: a Linen tanh MLP at ``std = k/√n``, BCE loss.

    ``gradlab diagnose gradlab.demo._examples:broken_flax_model`` diagnoses it.

    >>> f, v, (x, t) = broken_flax_model(depth=3, width=8, batch=2)
    >>> f(v, x, t).shape
    ()
    """
    model = TanhMLP(depth=depth, width=width, k=k)
    kx, kt, kp = jax.random.split(jax.random.key(key), 3)
    x = jax.random.normal(kx, (batch, width))
    labels = jax.random.bernoulli(kt, 0.5, (batch,)).astype(jnp.float32)
    variables = model.init(kp, x)

    def f(variables: Any, x: jax.Array, labels: jax.Array) -> jax.Array:
        return losses.binary_cross_entropy(jnp.asarray(model.apply(variables, x)), labels)

    return f, variables, (x, labels)


def demo_broken_model(
    console: Any = None, *, depth: int = 50, width: int = 64
) -> tuple[Diagnosis, Diagnosis]:
    """Diagnoses a Flax model initialised with the lecture's 2/√n_prev, fixes it, shows both.

    Args:
        console: a :class:`rich.console.Console` (default: a new one).
        depth: hidden layers.
        width: units per layer.

    Returns:
        ``(before, after)``: the :class:`~gradlab.flow.Diagnosis` of the broken model and
        of the model with the suggested fix applied.

    Example:
        >>> from rich.console import Console
        >>> before, after = demo_broken_model(Console(quiet=True))  # doctest: +SKIP
        >>> [f.kind for f in before.flags], after.ok  # doctest: +SKIP
        (['exploding'], True)
    """
    from rich.console import Console

    from gradlab.flow import diagnose

    console = console or Console()
    f, variables, args = broken_flax_model(depth=depth, width=width)
    before = diagnose(f, variables, *args)
    console.rule("A Flax model initialised with the lecture's std 2/√n_prev")
    console.print(before)
    after = before.verify()
    console.rule("The same model with the suggested fix applied")
    console.print(after.summary())
    return before, after


def write_figures(out: str = "docs/figures") -> list[Any]:
    """Writes ``diagnose_broken.png/svg`` and ``diagnose_fixed.png/svg`` of the broken model.

    Run as ``python -m gradlab.demo._examples [OUT]`` (default ``docs/figures``).
    """
    from pathlib import Path

    from gradlab import plots
    from gradlab.flow import diagnose

    f, variables, args = broken_flax_model()
    before = diagnose(f, variables, *args)
    after = before.verify()
    paths = plots.save(before.figure(), Path(out) / "diagnose_broken")
    paths += plots.save(after.figure(), Path(out) / "diagnose_fixed")
    print(before)
    print(after.summary())
    return paths


if __name__ == "__main__":  # pragma: no cover
    import sys

    write_figures(*sys.argv[1:2])
