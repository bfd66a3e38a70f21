"""The best linear model on a task, measured: the baseline a "trains" claim must beat.

How a new experiment uses it: ``linear_baseline(dim, batch, steps, seeds)`` returns the
training-loss curves of logistic regression (Adam, lr 0.01) on
:func:`gradlab.train.tasks.shells` for every seed; its final loss is the control of a claim
that a network "trains" (on ``shells`` it stays at ``ln 2``, the constant prediction's loss).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradlab import losses
from gradlab.train import TrainOptions, tasks, train_many

__all__ = ["linear_baseline"]


def linear_baseline(dim: int, batch: int, steps: int, seeds: tuple[int, ...]) -> np.ndarray:
    """Logistic regression's training loss on ``shells``, ``(seeds, steps)``.

    Example:
        >>> loss = linear_baseline(4, 64, 200, (0, 1))
        >>> loss.shape, bool(abs(loss[:, -20:].mean() - tasks.BCE_BASELINE) < 0.05)
        ((2, 200), True)
    """

    def loss_fn(p: Any, b: Any) -> Any:
        x, y = b
        return losses.binary_cross_entropy(x @ p["w"] + p["b"], y)

    params = {"w": jnp.zeros((len(seeds), dim)), "b": jnp.zeros(len(seeds))}
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    data = functools.partial(tasks.shells, batch=batch, dim=dim)
    options = TrainOptions(chunk=max(1, steps // 5), layer_steps=(), progress=False)
    _, hist = train_many(loss_fn, params, data, optax.adam(0.01), steps, keys, options=options)
    return np.asarray(hist.loss)
