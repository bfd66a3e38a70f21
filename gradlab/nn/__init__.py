"""Flax NNX modules for studying gradient flow.

:class:`MLP`, :class:`ResidualStack`, :class:`LSTM` and :class:`RNN` (with their one-step
cells :class:`LSTMCell` and :class:`RNNCell`), and :func:`pure` to turn any of them into
``(apply_fn, params)``.

Every module takes explicit ``rngs: nnx.Rngs``, runs its depth (layers or time) with
``jax.lax.scan``, and accepts ``probes``: zeros added to every hidden state, whose gradient is
``dL/dh`` at every layer or step. ``__call__`` always returns the same type; the hidden states
and gates come from the methods ``with_hiddens`` and ``LSTM.with_gates``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from gradlab import nn
    >>> model = nn.MLP(4, 1, width=8, depth=10, rngs=nnx.Rngs(0))
    >>> apply_fn, params = nn.pure(model)
    >>> x = jnp.ones((2, 4))
    >>> probes = jnp.zeros((11, 2, 8))
    >>> loss = lambda probes: jnp.sum(apply_fn(params, x, probes=probes))
    >>> jax.grad(loss)(probes).shape  # dL/dh_l for l = 0..10
    (11, 2, 8)
"""

from gradlab.nn._common import ACTIVATIONS, get_activation
from gradlab.nn._lstm import GATES, LSTM, LSTMCell
from gradlab.nn._mlp import MLP
from gradlab.nn._pure import pure
from gradlab.nn._residual import ResidualStack
from gradlab.nn._rnn import RNN, RNNCell

__all__ = [
    "ACTIVATIONS",
    "GATES",
    "LSTM",
    "MLP",
    "RNN",
    "LSTMCell",
    "RNNCell",
    "ResidualStack",
    "get_activation",
    "pure",
]
