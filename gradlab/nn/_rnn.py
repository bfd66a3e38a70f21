"""A vanilla (Elman) recurrent network, one step and a whole sequence.

:class:`RNNCell` does one step; :class:`RNN` runs the same step with the shared time scan.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from gradlab import init
from gradlab.nn._common import (
    Activation,
    cast,
    cast_optional,
    check_features,
    check_sequence,
    check_sizes,
    check_state,
    compute_dtype,
    get_activation,
    resolve_hoist,
)
from gradlab.nn._scan import scan_over_time

Array = jax.Array

_ORTHOGONAL = init.orthogonal()


@dataclasses.dataclass(frozen=True)
class _Step:
    """One RNN step in pure form: ``a(t) = act(z(t) + a(t-1) U)`` with ``z = x W + b``."""

    kernel: Array
    recurrent: Array
    bias: Array
    activation: Activation

    def project(self, x: Array) -> Array:
        """The input part ``x W + b`` of the pre-activation."""
        return x @ self.kernel + self.bias

    def __call__(self, a_prev: Array, z: Array, probe: Array | None) -> tuple[Array, Array]:
        a = self.activation(z + a_prev @ self.recurrent)
        if probe is not None:
            a = a + probe
        return a, a


class _RNNParameters(nnx.Module):
    """The parameters of an RNN cell and the step they define, shared by both modules."""

    in_features: int
    hidden_features: int
    activation: Activation
    dtype: DTypeLike | None
    param_dtype: DTypeLike
    kernel: nnx.Param[Array]
    recurrent_kernel: nnx.Param[Array]
    bias: nnx.Param[Array]

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        activation: str | Activation,
        kernel_init: init.Initializer,
        recurrent_init: init.Initializer,
        bias_init: init.Initializer,
        rngs: nnx.Rngs,
        dtype: DTypeLike | None,
        param_dtype: DTypeLike,
    ) -> None:
        check_sizes(type(self).__name__, in_features=in_features, hidden_features=hidden_features)
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.activation = get_activation(activation)
        self.dtype = dtype
        self.param_dtype = param_dtype
        h = hidden_features
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, h), param_dtype))
        self.recurrent_kernel = nnx.Param(recurrent_init(rngs.params(), (h, h), param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (h,), param_dtype))

    def _step(self, dtype: DTypeLike) -> _Step:
        kernel, rec, bias = (
            cast(v[...], dtype) for v in (self.kernel, self.recurrent_kernel, self.bias)
        )
        return _Step(kernel, rec, bias, self.activation)


class RNNCell(_RNNParameters):
    """One step of the vanilla RNN: ``(a(t-1), x(t)) -> (a(t), a(t))``.

    The cell that :class:`RNN` runs over time (same parameters, step and initialisation), with
    ``a(t) = act(x(t) W + a(t-1) U + b)``; the same cell as ``flax.nnx.SimpleCell``.

    Args:
        in_features: input features per step.
        hidden_features: ``H``.
        activation: name or callable, see :func:`gradlab.nn.get_activation`.
        kernel_init: initialiser of ``kernel``.
        recurrent_init: initialiser of ``recurrent_kernel`` (orthogonal by default).
        bias_init: initialiser of ``bias``.
        rngs: random streams.
        dtype: computation dtype; None promotes inputs and parameters.
        param_dtype: dtype of the parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> cell = RNNCell(3, 8, rngs=nnx.Rngs(0))
        >>> x = jnp.ones((2, 3))
        >>> a, y = cell(cell.initialize_carry(x.shape), x)
        >>> a.shape, bool(jnp.all(a == y))
        ((2, 8), True)
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
        rngs: nnx.Rngs,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
    ) -> None:
        super().__init__(
            in_features,
            hidden_features,
            activation=activation,
            kernel_init=kernel_init,
            recurrent_init=recurrent_init,
            bias_init=bias_init,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
        )

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: object = None) -> Array:
        """Zeros ``a_0`` for inputs of shape ``input_shape``, as ``flax.nnx.SimpleCell``.

        With this method and :attr:`num_feature_axes` the cell also runs in ``flax.nnx.RNN``.

        Args:
            input_shape: the shape of one step's input, ``(*batch, in_features)``.
            rngs: ignored (the carry is zeros); accepted for ``flax.nnx.RNN``.

        Returns:
            ``a_0`` of shape ``(*batch, H)`` in the computation dtype.

        Example:
            >>> from flax import nnx
            >>> RNNCell(3, 4, rngs=nnx.Rngs(0)).initialize_carry((2, 3)).shape
            (2, 4)
        """
        dtype = compute_dtype(self.dtype, self.kernel[...])
        return jnp.zeros((*input_shape[:-1], self.hidden_features), dtype)

    @property
    def num_feature_axes(self) -> int:
        """Trailing feature axes of one step's input: 1 (read by ``flax.nnx.RNN``)."""
        return 1

    def __call__(self, carry: Array, x: Array) -> tuple[Array, Array]:
        """One step.

        Args:
            carry: ``a(t-1)`` of shape ``(*batch, H)``.
            x: ``x(t)`` of shape ``(*batch, in_features)``.

        Returns:
            ``(a(t), a(t))``.
        """
        check_features(x, self.in_features, "RNNCell")
        check_state(carry, (*x.shape[:-1], self.hidden_features), "RNNCell", "carry (a)")
        dtype = compute_dtype(self.dtype, x, carry, self.kernel[...])
        step = self._step(dtype)
        return step(cast(carry, dtype), step.project(cast(x, dtype)), None)


class RNN(_RNNParameters):
    """``a(t) = act(x(t) W + a(t-1) U + b)``: the recurrence whose gradients vanish or explode.

    Through time, ``da(T)/da(t)`` is a product of ``T - t`` factors ``diag(act') U^T``: the
    lecture's chain of weights along the time axis. The module is :class:`RNNCell`'s step run
    over time by the scan it shares with :class:`LSTM`; the input part ``x W + b`` of every
    step can be one matrix product hoisted out of the scan (see ``hoist_input``).

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

    hoist_input: bool | None

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
        super().__init__(
            in_features,
            hidden_features,
            activation=activation,
            kernel_init=kernel_init,
            recurrent_init=recurrent_init,
            bias_init=bias_init,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
        )
        self.hoist_input = hoist_input

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
        dtype = compute_dtype(self.dtype, xs, probes, initial_state, self.kernel[...])
        a0 = jnp.zeros((batch, h), dtype) if initial_state is None else cast(initial_state, dtype)
        step = self._step(dtype)
        a_last, outputs = scan_over_time(
            step,
            step.project,
            a0,
            cast(xs, dtype),
            cast_optional(probes, dtype),
            project_all=step.project if resolve_hoist(self.hoist_input) else None,
        )
        return outputs, a_last
