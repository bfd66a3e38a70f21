"""Losses: the lecture's binary cross-entropy (stable and literal forms) and mean squared error.

Each loss returns the mean over every entry, a scalar, so ``f(params, x, y) = loss(model(x), y)``
can go straight to :func:`jax.grad` and :func:`gradlab.check`.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from gradlab import losses
    >>> z, y = jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0])
    >>> jax.grad(losses.binary_cross_entropy)(z, y)  # (sigmoid(z) - y) / m
    Array([-0.25     ,  0.4403985], dtype=float32)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradlab._errors import InputError

__all__ = ["binary_cross_entropy", "binary_cross_entropy_from_probs", "mse"]

Array = jax.Array


def _pair(
    a: ArrayLike, b: ArrayLike, name: str, a_name: str, b_name: str = "labels"
) -> tuple[Array, Array]:
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape:
        raise InputError(
            f"{name}: {a_name} and {b_name} must have the same shape, got {a.shape} and "
            f"{b.shape}. Reshape one of them (e.g. {b_name}.reshape({a_name}.shape)): "
            "broadcasting (m, 1) against (m,) would silently average m * m wrong terms."
        )
    if a.size == 0:
        raise InputError(
            f"{name}: {a_name} is empty; the mean over zero entries is undefined. Pass at "
            "least one entry."
        )
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    return a, b.astype(a.dtype)


def binary_cross_entropy(logits: ArrayLike, labels: ArrayLike) -> Array:
    """Binary cross-entropy from logits, the lecture's ``J``, computed stably.

    ``J = -1/m sum_i [y_i log y^_i + (1 - y_i) log(1 - y^_i)]`` with ``y^ = sigmoid(z)`` and
    ``m`` the number of entries. Written with ``log sigmoid(z) = -softplus(-z)`` and
    ``log(1 - sigmoid(z)) = -softplus(z)``, so it is finite and exact for any finite logit
    (``z = 100`` with ``y = 0`` gives 100, where ``log(1 - sigmoid(100))`` is ``log 0``), and
    its gradient is ``(sigmoid(z) - y) / m`` to rounding.

    Args:
        logits: ``z``, any shape.
        labels: ``y`` in [0, 1] (soft labels allowed), the same shape as ``logits``.

    Returns:
        The scalar mean loss.

    Raises:
        InputError: if the shapes differ or the input is empty.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradlab.losses import binary_cross_entropy
        >>> binary_cross_entropy(jnp.array([0.0, 100.0]), jnp.array([1.0, 0.0]))
        Array(50.34657, dtype=float32)
    """
    z, y = _pair(logits, labels, "binary_cross_entropy", "logits")
    return -jnp.mean(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))


def binary_cross_entropy_from_probs(
    probs: ArrayLike, labels: ArrayLike, eps: float | None = None
) -> Array:
    """Binary cross-entropy from probabilities, the lecture's literal formula with clipping.

    ``J = -1/m sum_i [y_i log p_i + (1 - y_i) log(1 - p_i)]`` after clipping ``p`` to
    ``[eps, 1 - eps]`` so that neither log sees 0. The clipping bounds each term by
    ``-log(eps)`` (about 15.9 for float32's default ``eps``), so the loss is wrong for
    confidently wrong predictions, and the gradient with respect to a clipped ``p`` is 0.
    Probabilities also lose everything below float precision before they get here
    (``sigmoid(40.0)`` is exactly 1 in float32). Prefer :func:`binary_cross_entropy` on logits;
    this form is for comparison with the lecture and for models that output probabilities.

    Args:
        probs: ``p = y^`` in [0, 1].
        labels: ``y`` in [0, 1], the same shape as ``probs``.
        eps: clipping margin; default ``jnp.finfo(dtype).eps`` of the probabilities' dtype
            (1.2e-7 for float32, 2.2e-16 for float64), the smallest margin for which ``1 - eps``
            is below 1.

    Returns:
        The scalar mean loss.

    Raises:
        InputError: if the shapes differ, the input is empty or ``eps`` is not in (0, 0.5).

    Example:
        >>> import jax.numpy as jnp
        >>> from gradlab.losses import binary_cross_entropy_from_probs
        >>> binary_cross_entropy_from_probs(jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0]))
        Array(0.6931472, dtype=float32)
    """
    p, y = _pair(probs, labels, "binary_cross_entropy_from_probs", "probs")
    if eps is None:
        eps = float(jnp.finfo(p.dtype).eps)
    if not 0 < eps < 0.5:
        raise InputError(
            f"binary_cross_entropy_from_probs: eps must be in (0, 0.5), got {eps}. Pass a small "
            "margin such as 1e-7, or None for the dtype's machine epsilon."
        )
    p = jnp.clip(p, eps, 1 - eps)
    return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))


def mse(predictions: ArrayLike, targets: ArrayLike) -> Array:
    """Mean squared error ``1/m sum_i (p_i - t_i)^2`` over every entry (no factor 1/2).

    Args:
        predictions: ``p``, any shape.
        targets: ``t``, the same shape as ``predictions``.

    Returns:
        The scalar mean loss; its gradient with respect to ``p`` is ``2 (p - t) / m``.

    Raises:
        InputError: if the shapes differ or the input is empty.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradlab.losses import mse
        >>> mse(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0]))
        Array(2.5, dtype=float32)
    """
    p, t = _pair(predictions, targets, "mse", "predictions", "targets")
    return jnp.mean(jnp.square(p - t))
