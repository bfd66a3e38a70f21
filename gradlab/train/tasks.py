"""Synthetic tasks generated on the fly from a random key, and the baselines they must beat.

Each task is a pure function ``task(key, *, batch, ...) -> (inputs, targets)``, so
``functools.partial(task, batch=64, ...)`` is a data stream for :func:`gradlab.train.train`.

| task | loss | baseline (what a model that learned nothing scores) |
|---|---|---|
| :func:`gaussian_mixture` | binary cross-entropy | ``ln 2`` (:data:`BCE_BASELINE`); best possible accuracy :func:`gaussian_mixture_bayes_accuracy` |
| :func:`shells` | binary cross-entropy | ``ln 2``, which is also the best *linear* model's loss; Bayes floor :func:`shells_bayes_loss` |
| :func:`two_spirals` | binary cross-entropy | ``ln 2``, accuracy 1/2 |
| :func:`adding_problem` | MSE | ``1/6`` (:data:`ADDING_BASELINE`): always predict 1 |
| :func:`copy_task` | cross-entropy per step (:func:`copy_loss`) | :func:`copy_baseline` ``= 10 ln 8 / (T + 20)`` |

Example:
    >>> import functools, jax
    >>> from gradlab.train import tasks
    >>> data = functools.partial(tasks.gaussian_mixture, batch=8, dim=2)
    >>> x, y = data(jax.random.key(0))
    >>> x.shape, y.shape, round(tasks.BCE_BASELINE, 4)
    ((8, 2), (8,), 0.6931)
"""  # noqa: E501

from gradlab.train._tasks import (
    ADDING_BASELINE,
    BCE_BASELINE,
    adding_problem,
    copy_baseline,
    copy_loss,
    copy_task,
    gaussian_mixture,
    gaussian_mixture_bayes_accuracy,
    shells,
    shells_bayes_loss,
    two_spirals,
)

__all__ = [
    "ADDING_BASELINE",
    "BCE_BASELINE",
    "adding_problem",
    "copy_baseline",
    "copy_loss",
    "copy_task",
    "gaussian_mixture",
    "gaussian_mixture_bayes_accuracy",
    "shells",
    "shells_bayes_loss",
    "two_spirals",
]
