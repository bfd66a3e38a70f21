"""Small functional training loops on optax, and the synthetic tasks they learn.

:func:`train` trains any parameter pytree with a jit-compiled step run as a chunked
``lax.scan``; :func:`train_many` trains many seeds or settings at once with ``vmap``. Both
return a :class:`History` of the loss, metrics, global and per-layer gradient norms.
:mod:`gradlab.train.tasks` holds the tasks (binary classification, the adding problem, the copy
task) and their baselines.

Example:
    >>> import functools, jax, jax.numpy as jnp, optax
    >>> from gradlab import losses
    >>> from gradlab.train import tasks, train
    >>> data = functools.partial(tasks.gaussian_mixture, batch=32, dim=2)
    >>> def loss_fn(p, batch):
    ...     x, y = batch
    ...     logits = x @ p["w"] + p["b"]
    ...     return losses.binary_cross_entropy(logits, y), {"accuracy": jnp.mean((logits > 0) == y)}
    >>> params = {"w": jnp.zeros(2), "b": jnp.zeros(())}
    >>> params, hist = train(loss_fn, params, data, optax.sgd(0.5), 100, jax.random.key(0))
    >>> round(float(hist.loss[0]), 4)  # ln 2: the constant prediction 1/2
    0.6931
    >>> bool(hist.metrics["accuracy"][-20:].mean() > 0.8)
    True
"""

from gradlab.train import tasks
from gradlab.train._history import History
from gradlab.train._loop import DataStream, LossFn, Optimizer, stack_trees, train, train_many
from gradlab.train._norms import GroupBy, layer_grad_norms, layer_names, path_names
from gradlab.train._options import TrainOptions

__all__ = [
    "DataStream",
    "GroupBy",
    "History",
    "LossFn",
    "Optimizer",
    "TrainOptions",
    "layer_grad_norms",
    "layer_names",
    "path_names",
    "stack_trees",
    "tasks",
    "train",
    "train_many",
]
