"""Synthetic tasks generated on the fly from a random key, and the baselines they must beat."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from gradlab._errors import InputError

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

Array = jax.Array

BCE_BASELINE: float = math.log(2.0)
"""Binary cross-entropy of the constant prediction 1/2 on balanced labels: ``ln 2``.

A classifier that learned nothing scores it on :func:`gaussian_mixture` and
:func:`two_spirals`; the experiments call a run *trained* below half of it.

Example:
    >>> import jax.numpy as jnp
    >>> from gradlab import losses
    >>> labels = jnp.array([0.0, 1.0, 1.0, 0.0])
    >>> logits = jnp.zeros(4)  # predict 1/2 everywhere
    >>> round(float(losses.binary_cross_entropy(logits, labels)), 6) == round(BCE_BASELINE, 6)
    True
"""

ADDING_BASELINE: float = 1.0 / 6.0
"""MSE of the constant prediction 1 on :func:`adding_problem`: ``1/6``.

The target is a sum of two ``U[0, 1]`` values, with mean 1 and variance ``2 / 12``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> _, y = adding_problem(jax.random.key(0), batch=20_000, length=4)
    >>> abs(float(jnp.mean((y - 1.0) ** 2)) - ADDING_BASELINE) < 0.01
    True
"""


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(
            f"{name} must be an integer >= {minimum}, got {value!r}; pass a whole number "
            f"such as {max(minimum, 8)}."
        )


def gaussian_mixture(
    key: Array, *, batch: int, dim: int, separation: float = 3.0, dtype: DTypeLike = jnp.float32
) -> tuple[Array, Array]:
    """Two Gaussian classes in ``dim`` dimensions: ``x ~ N(±m, I)`` with ``‖m‖ = separation/2``.

    Labels are 0 or 1 with probability 1/2 each; ``m`` points along the all-ones diagonal.
    Constant predictions score ``ln 2``; the Bayes classifier's accuracy is
    :func:`gaussian_mixture_bayes_accuracy`.

    Returns:
        ``x (batch, dim)`` and float labels ``y (batch,)``.

    Example:
        >>> import jax
        >>> x, y = gaussian_mixture(jax.random.key(0), batch=4, dim=3)
        >>> x.shape, y.shape
        ((4, 3), (4,))
    """
    _positive("gaussian_mixture: batch", batch)
    _positive("gaussian_mixture: dim", dim)
    k_y, k_x = jax.random.split(key)
    y = jax.random.bernoulli(k_y, 0.5, (batch,)).astype(dtype)
    mean = jnp.full((dim,), 0.5 * separation / math.sqrt(dim), dtype)
    x = jax.random.normal(k_x, (batch, dim), dtype) + (2 * y - 1)[:, None] * mean
    return x, y


def gaussian_mixture_bayes_accuracy(separation: float) -> float:
    """The best accuracy any classifier reaches on :func:`gaussian_mixture`: ``Φ(separation/2)``.

    >>> round(gaussian_mixture_bayes_accuracy(3.0), 4)
    0.9332
    """
    return 0.5 * (1.0 + math.erf(0.5 * separation / math.sqrt(2.0)))


def _chi2_median(dim: int) -> float:
    """The median of a chi-square with ``dim`` degrees of freedom (Wilson-Hilferty).

    ``dim (1 - 2/(9 dim))^3``; its relative error is below 4e-3 from ``dim = 4``.

    >>> round(_chi2_median(16), 2)  # exact: 15.34
    15.34
    """
    return dim * (1.0 - 2.0 / (9.0 * dim)) ** 3


def shells(
    key: Array, *, batch: int, dim: int, noise: float = 0.0, dtype: DTypeLike = jnp.float32
) -> tuple[Array, Array]:
    """Inside or outside a sphere: ``x ~ N(0, I)``, label ``1[‖x‖² > median of χ²_dim]``.

    The two classes are concentric: the inner ball and the shell around it, half the mass each.
    The label distribution is the same at ``x`` and ``-x``, so the best *linear* classifier
    (logistic regression, ``w·x + b``) is the constant one: its loss is exactly ``ln 2``
    (:data:`BCE_BASELINE`) and its accuracy 1/2, while a network that learns ``‖x‖²`` can reach
    the Bayes floor :func:`shells_bayes_loss` (``0`` without label noise). With ``noise`` each
    label is flipped with that probability.

    Returns:
        ``x (batch, dim)`` and float labels ``y (batch,)``.

    Example:
        >>> import jax
        >>> x, y = shells(jax.random.key(0), batch=20_000, dim=16)
        >>> x.shape, abs(float(y.mean()) - 0.5) < 0.01  # balanced classes
        ((20000, 16), True)
    """
    _positive("shells: batch", batch)
    _positive("shells: dim", dim)
    if not 0.0 <= noise < 0.5:
        raise InputError(f"shells: noise must lie in [0, 0.5), got {noise!r}; pass e.g. 0.05.")
    k_x, k_n = jax.random.split(key)
    x = jax.random.normal(k_x, (batch, dim), dtype)
    y = jnp.sum(x * x, axis=-1) > _chi2_median(dim)
    flip = jax.random.bernoulli(k_n, noise, (batch,))
    return x, (y ^ flip).astype(dtype)


def shells_bayes_loss(noise: float) -> float:
    """The lowest binary cross-entropy any model reaches on :func:`shells`: ``H(noise)`` nats.

    >>> shells_bayes_loss(0.0), round(shells_bayes_loss(0.05), 4)
    (0.0, 0.1985)
    """
    if noise == 0.0:
        return 0.0
    return -(noise * math.log(noise) + (1 - noise) * math.log(1 - noise))


def two_spirals(
    key: Array,
    *,
    batch: int,
    turns: float = 1.5,
    noise: float = 0.05,
    dtype: DTypeLike = jnp.float32,
) -> tuple[Array, Array]:
    """Two interleaved spirals in the plane (Lang & Witbrock 1988), radius in (0, 1].

    A point of class ``y`` at ``t ~ U(0, 1)`` is ``t (cos θ, sin θ)`` with
    ``θ = 2π turns t + π y``, plus ``N(0, noise²)`` noise. Not linearly separable; constant
    predictions score ``ln 2`` and accuracy 1/2.

    Returns:
        ``x (batch, 2)`` and float labels ``y (batch,)``.

    Example:
        >>> import jax
        >>> x, y = two_spirals(jax.random.key(0), batch=5)
        >>> x.shape, y.shape
        ((5, 2), (5,))
    """
    _positive("two_spirals: batch", batch)
    k_y, k_t, k_n = jax.random.split(key, 3)
    y = jax.random.bernoulli(k_y, 0.5, (batch,)).astype(dtype)
    t = jax.random.uniform(k_t, (batch,), dtype, 0.02, 1.0)
    theta = 2 * math.pi * turns * t + math.pi * y
    x = t[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)
    return x + noise * jax.random.normal(k_n, x.shape, dtype), y


def adding_problem(
    key: Array, *, batch: int, length: int, dtype: DTypeLike = jnp.float32
) -> tuple[Array, Array]:
    """The adding problem (Hochreiter & Schmidhuber 1997), in the form of Arjovsky et al. 2016.

    Each step carries two numbers: a value ``U[0, 1]`` and a marker, 1 at exactly one step
    in the first half of the sequence and one step in the second half, 0 elsewhere. The
    target is the sum of the two marked values. Predicting 1 always gives MSE 1/6
    (:data:`ADDING_BASELINE`): to beat it a model must carry a value over ~``length/2`` steps.

    Returns:
        ``x (batch, length, 2)`` (value, marker) and ``y (batch, 1)``.

    Example:
        >>> import jax
        >>> x, y = adding_problem(jax.random.key(0), batch=3, length=10)
        >>> x.shape, y.shape, x[..., 1].sum(axis=1).tolist()
        ((3, 10, 2), (3, 1), [2.0, 2.0, 2.0])
    """
    _positive("adding_problem: batch", batch)
    _positive("adding_problem: length", length, 2)
    k_v, k_a, k_b = jax.random.split(key, 3)
    half = length // 2
    values = jax.random.uniform(k_v, (batch, length), dtype)
    first = jax.random.randint(k_a, (batch,), 0, half)
    second = jax.random.randint(k_b, (batch,), half, length)
    steps = jnp.arange(length)
    marks = ((steps == first[:, None]) | (steps == second[:, None])).astype(dtype)
    target = jnp.sum(values * marks, axis=1, keepdims=True)
    return jnp.stack([values, marks], axis=-1), target


def copy_task(
    key: Array, *, batch: int, length: int, symbols: int = 8, copies: int = 10
) -> tuple[Array, Array]:
    """The copy task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016's form).

    Inputs, ``length + 2 * copies`` steps: ``copies`` symbols drawn from ``1..symbols``, then
    ``length - 1`` blanks (0), a delimiter (``symbols + 1``), and ``copies`` blanks. Targets:
    blanks for ``length + copies`` steps, then the ``copies`` symbols. A memoryless model that
    predicts blanks and then guesses uniformly scores :func:`copy_baseline`.

    Returns:
        one-hot inputs ``(batch, length + 2 copies, symbols + 2)`` and integer targets
        ``(batch, length + 2 copies)`` in ``0..symbols``.

    Example:
        >>> import jax
        >>> x, y = copy_task(jax.random.key(0), batch=2, length=5, copies=3)
        >>> x.shape, y.shape, bool((y[:, -3:] == x[:, :3].argmax(-1)).all())
        ((2, 11, 10), (2, 11), True)
    """
    _positive("copy_task: batch", batch)
    _positive("copy_task: length", length)
    _positive("copy_task: symbols", symbols, 2)
    _positive("copy_task: copies", copies)
    seq = jax.random.randint(key, (batch, copies), 1, symbols + 1)
    blanks = lambda n: jnp.zeros((batch, n), seq.dtype)
    delim = jnp.full((batch, 1), symbols + 1, seq.dtype)
    tokens = jnp.concatenate([seq, blanks(length - 1), delim, blanks(copies)], axis=1)
    targets = jnp.concatenate([blanks(length + copies), seq], axis=1)
    return jax.nn.one_hot(tokens, symbols + 2), targets


def copy_baseline(length: int, symbols: int = 8, copies: int = 10) -> float:
    """Cross-entropy per step of the memoryless copy-task strategy.

    It is ``copies ln(symbols) / (length + 2 copies)``, ``10 ln 8 / (T + 20)`` with the
    defaults: predict blanks with certainty, then guess the symbols uniformly.

    >>> round(copy_baseline(100), 4)
    0.1733
    """
    return copies * math.log(symbols) / (length + 2 * copies)


def copy_loss(logits: Array, targets: Array) -> Array:
    """Mean softmax cross-entropy per step, ``logits (batch, steps, classes)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x, y = copy_task(jax.random.key(0), batch=2, length=5)
        >>> uniform = jnp.zeros((*y.shape, 10))  # 10 classes: blank, 8 symbols, delimiter
        >>> round(float(copy_loss(uniform, y)), 4)  # ln 10
        2.3026
    """
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets))
