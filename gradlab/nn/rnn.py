"""A vanilla (Elman) recurrent network run over time with ``lax.scan``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from gradlab import init
from gradlab.nn._common import (
    Activation,
    check_sequence,
    check_state,
    get_activation,
    promote,
    resolve_hoist,
    value,
)

Array = jax.Array

_ORTHOGONAL = init.orthogonal()


class RNN(nnx.Module):
    """``a(t) = act(x(t) W + a(t-1) U + b)``: the recurrence whose gradients vanish or explode.

    Through time, ``da(T)/da(t)`` is a product of ``T - t`` factors ``diag(act') U^T``: the
    lecture's chain of weights along the time axis. The input part ``x W + b`` of every step is
    one matrix product hoisted out of the scan (see ``hoist_input``).

    Parameters: ``kernel (in, H)``, ``recurrent_kernel (H, H)``, ``bias (H,)``.

    Args:
        in_features: input features per step.
        hidden_features: ``H``.
        activation: name or callable, see :func:`gradlab.nn.get_activation`.
        kernel_init: initialiser of ``kernel``.
        recurrent_init: initialiser of ``recurrent_kernel`` (orthogonal by default).
        bias_init: initialiser of ``bias``.
        hoist_input: compute ``x W + b`` for all steps with one matmul before the scan (True)
            or inside each step (False); None hoists except on CPU, as in :class:`LSTM`.
        rngs: random streams.
        dtype: computation dtype; None promotes inputs and parameters.
        param_dtype: dtype of the parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> rnn = RNN(3, 8, rngs=nnx.Rngs(0))
        >>> outputs, a_T = rnn(jnp.ones((2, 5, 3)))
        >>> outputs.shape, a_T.shape
        ((2, 5, 8), (2, 8))
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        activation: str | Activation = "tanh",
        kernel_init: init.Initializer = init.lecun_normal,
        recurrent_init: init.Initializer = _ORTHOGONAL,
        bias_init: init.Initializer = init.zeros,
        hoist_input: bool | None = None,
        rngs: nnx.Rngs,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
    ) -> None:
        if in_features < 1 or hidden_features < 1:
            raise ValueError(
                "RNN: in_features and hidden_features must be >= 1, got "
                f"{in_features} and {hidden_features}."
            )
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.activation = get_activation(activation)
        self.hoist_input = hoist_input
        self.dtype = dtype
        self.param_dtype = param_dtype
        h = hidden_features
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, h), param_dtype))
        self.recurrent_kernel = nnx.Param(recurrent_init(rngs.params(), (h, h), param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (h,), param_dtype))

    def __call__(
        self,
        xs: Array,
        *,
        initial_state: Array | None = None,
        probes: Array | None = None,
    ) -> tuple[Array, Array]:
        """Runs the RNN over a batch of sequences.

        Args:
            xs: inputs ``(batch, T, in_features)``.
            initial_state: ``a_0`` of shape ``(batch, H)``; zeros by default.
            probes: optional ``(batch, T, H)`` array added to ``a(t)`` right after each step;
                the gradient with respect to zero probes is ``dL/da(t)``.

        Returns:
            ``(outputs, a_T)`` with ``outputs (batch, T, H)`` every ``a(t)``.
        """
        check_sequence(xs, self.in_features, "RNN")
        batch, steps, _ = xs.shape
        h = self.hidden_features
        if probes is not None:
            check_state(probes, (batch, steps, h), "RNN", "probes")
        if initial_state is not None:
            check_state(initial_state, (batch, h), "RNN", "initial_state")
        xs, probes, a0, kernel, rec, bias = promote(
            [
                xs,
                probes,
                initial_state,
                value(self.kernel),
                value(self.recurrent_kernel),
                value(self.bias),
            ],
            self.dtype,
        )
        a0 = jnp.zeros((batch, h), kernel.dtype) if a0 is None else a0
        probes_t = None if probes is None else jnp.swapaxes(probes, 0, 1)
        hoist = resolve_hoist(self.hoist_input)
        xs_t = jnp.swapaxes(xs, 0, 1)  # time-major (T, batch, in)
        seq = xs_t @ kernel + bias if hoist else xs_t  # hoisted: (T, batch, H), one matmul
        act = self.activation

        def step(a_prev: Array, inputs: tuple[Array, Array | None]) -> tuple[Array, Array]:
            z, probe = inputs
            if not hoist:
                z = z @ kernel + bias
            a = act(z + a_prev @ rec)
            if probe is not None:
                a = a + probe
            return a, a

        a_last, outputs = jax.lax.scan(step, a0, (seq, probes_t))
        return jnp.swapaxes(outputs, 0, 1), a_last
