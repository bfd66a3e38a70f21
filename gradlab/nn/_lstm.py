"""The LSTM of slide 7, standard and literal variants, one step and a whole sequence.

:class:`LSTMCell` does one step; :class:`LSTM` runs the same step with the shared time scan.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from gradlab import init
from gradlab._errors import InputError
from gradlab.nn._common import (
    cast,
    cast_optional,
    check_features,
    check_sequence,
    check_sizes,
    check_state,
    compute_dtype,
    resolve_hoist,
)
from gradlab.nn._scan import scan_over_time

Array = jax.Array
Variant = Literal["standard", "slide"]
Carry = tuple[Array, Array]
GateArrays = tuple[Array, Array, Array, Array]

GATES = ("update", "forget", "candidate", "output")
"""Gate names, in the order of the packed ``4 * hidden`` axis of the kernels and bias.

Example:
    >>> from flax import nnx
    >>> from gradlab.nn import GATES, LSTM
    >>> GATES
    ('update', 'forget', 'candidate', 'output')
    >>> lstm = LSTM(2, 3, rngs=nnx.Rngs(0))
    >>> forget_bias = lstm.bias[GATES.index("forget") * 3 : (GATES.index("forget") + 1) * 3]
    >>> forget_bias.tolist()  # forget_bias=1.0 at init
    [1.0, 1.0, 1.0]
"""

# Packed index of each gate; the same order (i, f, g, o) as flax.nnx.LSTMCell.
_U, _F, _G, _O = range(4)

_ORTHOGONAL = init.orthogonal()


def _packed(
    initializer: init.Initializer, key: Array, shape: tuple[int, int], dtype: DTypeLike
) -> Array:
    """Initialises a ``(rows, 4 * cols)`` kernel gate by gate, each as its own (rows, cols)."""
    rows, cols = shape
    blocks = init.stacked(initializer)(key, (4, rows, cols), dtype)  # (4, rows, cols)
    return jnp.transpose(blocks, (1, 0, 2)).reshape(rows, 4 * cols)


def _halves(w: Array) -> tuple[Array, Array]:
    """The first and second half of the last axis."""
    half = w.shape[-1] // 2
    return w[..., :half], w[..., half:]


class _Step:
    """One LSTM step in pure form, from the weights cast and permuted (see ``_step``).

    Two ``(H, 2H)`` recurrent products per step: the slide variant needs them (one reads
    ``a(t-1)``, the other ``C(t-1)``), and for the standard one XLA:CPU runs two half-width
    products faster than one ``(H, 4H)`` product (benchmarks/bench_models.py). The halves are
    sliced once, here, not in every step of the scan.
    """

    def __init__(
        self, kernel: Array, recurrent_kernel: Array, bias: Array, *, slide: bool, gates: bool
    ) -> None:
        self.slide, self.gates = slide, gates
        self.kernel, self.bias = kernel, bias  # packed, for the hoisted projection
        self.kernel_halves, self.bias_halves = _halves(kernel), _halves(bias)
        self.recurrent = _halves(recurrent_kernel)

    def project(self, x: Array) -> tuple[Array, Array]:
        """The input part ``x W + b`` of one step, two ``(in, 2H)`` products."""
        (k_1, k_2), (b_1, b_2) = self.kernel_halves, self.bias_halves
        return x @ k_1 + b_1, x @ k_2 + b_2

    def project_all(self, xs: Array) -> tuple[Array, Array]:
        """The input part ``x W + b`` of every step at once, one ``(in, 4H)`` product."""
        return _halves(xs @ self.kernel + self.bias)

    def __call__(
        self, carry: Carry, z: tuple[Array, Array], probe: Array | None
    ) -> tuple[Carry, tuple[Array, GateArrays | tuple[()]]]:
        c_prev, a_prev = carry
        z_1 = z[0] + a_prev @ self.recurrent[0]
        z_2 = z[1] + (c_prev if self.slide else a_prev) @ self.recurrent[1]
        if self.slide:
            (zu, zg), (zf, zo) = jnp.split(z_1, 2, axis=-1), jnp.split(z_2, 2, axis=-1)
        else:
            (zu, zf), (zg, zo) = jnp.split(z_1, 2, axis=-1), jnp.split(z_2, 2, axis=-1)
        update, forget = jax.nn.sigmoid(zu), jax.nn.sigmoid(zf)
        candidate, output = jnp.tanh(zg), jax.nn.sigmoid(zo)
        c = update * candidate + forget * c_prev
        a = output * jnp.tanh(c)
        if probe is not None:
            a = a + probe
        gates = (update, forget, candidate, output) if self.gates else ()
        return (c, a), (a, gates)


class _LSTMParameters(nnx.Module):
    """The parameters of an LSTM cell and the step they define, shared by both modules."""

    in_features: int
    hidden_features: int
    variant: Variant
    forget_bias: float
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
        variant: Variant,
        forget_bias: float,
        kernel_init: init.Initializer,
        recurrent_init: init.Initializer,
        bias_init: init.Initializer,
        rngs: nnx.Rngs,
        dtype: DTypeLike | None,
        param_dtype: DTypeLike,
    ) -> None:
        name = type(self).__name__
        if variant not in ("standard", "slide"):
            raise InputError(
                f"{name}: variant must be 'standard' (gates read a(t-1)) or 'slide' (forget and "
                f"output gates read C(t-1), as on slide 7); got {variant!r}."
            )
        check_sizes(name, in_features=in_features, hidden_features=hidden_features)
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.variant = variant
        self.forget_bias = forget_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        h = hidden_features
        self.kernel = nnx.Param(_packed(kernel_init, rngs.params(), (in_features, h), param_dtype))
        self.recurrent_kernel = nnx.Param(
            _packed(recurrent_init, rngs.params(), (h, h), param_dtype)
        )
        bias = bias_init(rngs.params(), (4 * h,), param_dtype)
        bias = bias.at[_F * h : (_F + 1) * h].add(jnp.asarray(forget_bias, param_dtype))
        self.bias = nnx.Param(bias)

    @property
    def _name(self) -> str:
        return f"{type(self).__name__}(variant={self.variant!r})"

    def _step(self, dtype: DTypeLike, *, gates: bool) -> _Step:
        """The step in ``dtype``; gates permuted so that each half is one recurrent product."""
        h = self.hidden_features
        kernel, rec, bias = (
            cast(v[...], dtype) for v in (self.kernel, self.recurrent_kernel, self.bias)
        )
        slide = self.variant == "slide"
        if slide:  # gates reading a(t-1) first, those reading C(t-1) last (permuted once, here)
            order = (_U, _G, _F, _O)
            blocks = lambda w: jnp.concatenate([w[..., g * h : (g + 1) * h] for g in order], -1)
            kernel, rec, bias = blocks(kernel), blocks(rec), blocks(bias)
        return _Step(kernel, rec, bias, slide=slide, gates=gates)


def _gate_dict(gates: GateArrays) -> dict[str, Array]:
    return dict(zip(GATES, gates, strict=True))


class LSTMCell(_LSTMParameters):
    """One step of the LSTM of slide 7: ``((c, a), x(t)) -> ((c, a), a(t))``.

    The cell that :class:`LSTM` runs over time (same parameters, same step, same
    initialisation: built from the same ``rngs`` they hold the same weights), for loops
    written by hand, ``nnx.RNN``, or any other scan. The equations and variants are those of
    :class:`LSTM`; the carry is ``(c, a)`` as in ``flax.nnx.LSTMCell``.

    Args:
        in_features: input features per step.
        hidden_features: ``H``, the size of ``a`` and ``c``.
        variant: ``"standard"`` or ``"slide"``, see :class:`LSTM`.
        forget_bias: added to the forget gate's bias at init.
        kernel_init: initialiser of each gate's ``(in, H)`` input kernel.
        recurrent_init: initialiser of each gate's ``(H, H)`` recurrent kernel.
        bias_init: initialiser of the ``(4H,)`` bias, before ``forget_bias`` is added.
        rngs: random streams.
        dtype: computation dtype; None promotes inputs and parameters.
        param_dtype: dtype of the parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> cell = LSTMCell(3, 8, variant="slide", rngs=nnx.Rngs(0))
        >>> x = jnp.ones((2, 3))
        >>> (c, a), y = cell(cell.initialize_carry(x.shape), x)
        >>> c.shape, bool(jnp.all(y == a))
        ((2, 8), True)
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        variant: Variant = "standard",
        forget_bias: float = 1.0,
        kernel_init: init.Initializer = init.glorot_uniform,
        recurrent_init: init.Initializer = _ORTHOGONAL,
        bias_init: init.Initializer = init.zeros,
        rngs: nnx.Rngs,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
    ) -> None:
        super().__init__(
            in_features,
            hidden_features,
            variant=variant,
            forget_bias=forget_bias,
            kernel_init=kernel_init,
            recurrent_init=recurrent_init,
            bias_init=bias_init,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
        )

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: object = None) -> Carry:
        """Zeros ``(c_0, a_0)`` for inputs of shape ``input_shape``, as ``flax.nnx.LSTMCell``.

        With this method and :attr:`num_feature_axes` the cell also runs in ``flax.nnx.RNN``.

        Args:
            input_shape: the shape of one step's input, ``(*batch, in_features)``.
            rngs: ignored (the carry is zeros); accepted for ``flax.nnx.RNN``.

        Returns:
            ``(c_0, a_0)``, each ``(*batch, H)``, in the computation dtype (``dtype``, or
            ``param_dtype`` if None).

        Example:
            >>> from flax import nnx
            >>> c0, a0 = LSTMCell(3, 4, rngs=nnx.Rngs(0)).initialize_carry((2, 3))
            >>> c0.shape, float(a0.sum())
            ((2, 4), 0.0)
        """
        dtype = compute_dtype(self.dtype, self.kernel[...])
        zeros = jnp.zeros((*input_shape[:-1], self.hidden_features), dtype)
        return zeros, zeros

    @property
    def num_feature_axes(self) -> int:
        """Trailing feature axes of one step's input: 1 (read by ``flax.nnx.RNN``)."""
        return 1

    def __call__(self, carry: Carry, x: Array) -> tuple[Carry, Array]:
        """One step.

        Args:
            carry: ``(c(t-1), a(t-1))``, each ``(*batch, H)``.
            x: ``x(t)`` of shape ``(*batch, in_features)``.

        Returns:
            ``((c(t), a(t)), a(t))``.
        """
        carry, (a, _) = self._one_step(carry, x, gates=False)
        return carry, a

    def with_gates(self, carry: Carry, x: Array) -> tuple[Carry, Array, dict[str, Array]]:
        """One step, also returning the gate activations.

        Args:
            carry: ``(c(t-1), a(t-1))``, each ``(*batch, H)``.
            x: ``x(t)`` of shape ``(*batch, in_features)``.

        Returns:
            ``((c(t), a(t)), a(t), gates)`` with ``gates`` mapping each name in :data:`GATES`
            to a ``(*batch, H)`` array.

        Example:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> cell = LSTMCell(3, 4, rngs=nnx.Rngs(0))
            >>> _, _, gates = cell.with_gates(cell.initialize_carry((2, 3)), jnp.zeros((2, 3)))
            >>> round(float(gates["forget"][0, 0]), 4)  # sigmoid(forget_bias = 1)
            0.7311
        """
        carry, (a, gates) = self._one_step(carry, x, gates=True)
        assert gates  # a 4-tuple when gates=True
        return carry, a, _gate_dict(gates)

    def _one_step(
        self, carry: Carry, x: Array, *, gates: bool
    ) -> tuple[Carry, tuple[Array, GateArrays | tuple[()]]]:
        check_features(x, self.in_features, self._name)
        c, a = carry
        shape = (*x.shape[:-1], self.hidden_features)
        check_state(c, shape, self._name, "carry[0] (c)")
        check_state(a, shape, self._name, "carry[1] (a)")
        dtype = compute_dtype(self.dtype, x, c, a, self.kernel[...])
        step = self._step(dtype, gates=gates)
        return step((cast(c, dtype), cast(a, dtype)), step.project(cast(x, dtype)), None)


class LSTM(_LSTMParameters):
    """Long short-term memory over a whole sequence (slide 7), in two variants.

    With ``[u, v]`` the concatenation and ``sigma`` the logistic function::

        C~(t)  = tanh(W_c [a(t-1), x(t)] + b_c)        # candidate
        G_u    = sigma(W_u [a(t-1), x(t)] + b_u)       # update (input) gate
        G_f    = sigma(W_f [s(t-1), x(t)] + b_f)       # forget gate
        G_o    = sigma(W_o [s(t-1), x(t)] + b_o)       # output gate
        C(t)   = G_u * C~(t) + G_f * C(t-1)
        a(t)   = G_o * tanh(C(t))

    ``variant="standard"``: ``s = a``, every gate reads ``[a(t-1), x(t)]`` (Hochreiter &
    Schmidhuber 1997 with a forget gate, Gers et al. 2000; the same cell as
    ``flax.nnx.LSTMCell``). ``variant="slide"``: ``s = C``, the forget and output gates read the
    previous *cell* state ``[C(t-1), x(t)]`` as slide 7 literally writes, while the candidate
    and the update gate read ``[a(t-1), x(t)]``. See ``docs/models.md`` for how this relates to
    the peephole LSTM.

    The module is :class:`LSTMCell`'s step run over time by the scan it shares with
    :class:`RNN`. Parameters, packed by gate in the order :data:`GATES` (update, forget,
    candidate, output): ``kernel (in, 4H)`` multiplies ``x(t)``; ``recurrent_kernel (H, 4H)``
    multiplies ``a(t-1)`` (in the slide variant its forget and output columns multiply
    ``C(t-1)``); ``bias (4H,)``. Each step does two ``(H, 2H)`` recurrent products (in the slide
    variant the second one multiplies ``C(t-1)``). ``kernel_init`` and ``recurrent_init`` are
    applied gate by gate, to ``(in, H)`` and ``(H, H)`` blocks, so every gate's recurrent block
    is orthogonal with the default. ``forget_bias`` is added to ``b_f`` at init.

    Args:
        in_features: input features per step.
        hidden_features: ``H``, the size of ``a`` and ``C``.
        variant: ``"standard"`` or ``"slide"``.
        forget_bias: added to the forget gate's bias at init (1.0, Jozefowicz et al. 2015).
        kernel_init: initialiser of each gate's ``(in, H)`` input kernel (Glorot uniform, as
            in Keras).
        recurrent_init: initialiser of each gate's ``(H, H)`` recurrent kernel.
        bias_init: initialiser of the ``(4H,)`` bias, before ``forget_bias`` is added.
        hoist_input: compute ``x W + b`` for all steps before the scan (True) or inside each
            step (False); None (default) hoists except on CPU. Same numbers either way, up to
            summation order. See ``docs/models.md``: on XLA:CPU streaming the
            ``(T, batch, 4H)`` product through the loop costs more than the per-step matmul it
            saves; on GPU/TPU one large matmul wins.
        rngs: random streams.
        dtype: computation dtype; None promotes inputs and parameters.
        param_dtype: dtype of the parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> lstm = LSTM(3, 8, variant="slide", rngs=nnx.Rngs(0))
        >>> outputs, (c_T, a_T) = lstm(jnp.ones((2, 5, 3)))
        >>> outputs.shape, c_T.shape
        ((2, 5, 8), (2, 8))
    """

    hoist_input: bool | None

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        variant: Variant = "standard",
        forget_bias: float = 1.0,
        kernel_init: init.Initializer = init.glorot_uniform,
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
            variant=variant,
            forget_bias=forget_bias,
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
        initial_state: Carry | None = None,
        probes: Array | None = None,
    ) -> tuple[Array, Carry]:
        """Runs the LSTM over a batch of sequences.

        Args:
            xs: inputs ``(batch, T, in_features)``.
            initial_state: ``(c_0, a_0)``, each ``(batch, H)``; zeros by default.
            probes: optional ``(batch, T, H)`` array added to ``a(t)`` right after each step
                (before it feeds step ``t + 1``); the gradient with respect to zero probes is
                ``dL/da(t)``.

        Returns:
            ``(outputs, (c_T, a_T))`` with ``outputs (batch, T, H)`` every ``a(t)``;
            :meth:`with_gates` also returns the gates.
        """
        carry, (outputs, _) = self._run(xs, initial_state, probes, gates=False)
        return outputs, carry

    def with_gates(
        self,
        xs: Array,
        *,
        initial_state: Carry | None = None,
        probes: Array | None = None,
    ) -> tuple[Array, Carry, dict[str, Array]]:
        """Runs the LSTM like ``__call__`` and also returns every gate at every step.

        Args:
            xs: inputs ``(batch, T, in_features)``.
            initial_state: ``(c_0, a_0)``, each ``(batch, H)``; zeros by default.
            probes: optional ``(batch, T, H)`` array added to ``a(t)`` after each step.

        Returns:
            ``(outputs, (c_T, a_T), gates)`` where ``gates`` maps each name in :data:`GATES`
            to a ``(batch, T, H)`` array.

        Example:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> lstm = LSTM(3, 8, rngs=nnx.Rngs(0))
            >>> outputs, (c_T, a_T), gates = lstm.with_gates(jnp.ones((2, 5, 3)))
            >>> sorted(gates), gates["forget"].shape
            (['candidate', 'forget', 'output', 'update'], (2, 5, 8))
        """
        carry, (outputs, gates) = self._run(xs, initial_state, probes, gates=True)
        return outputs, carry, _gate_dict(gates)

    def _run(
        self, xs: Array, initial_state: Carry | None, probes: Array | None, *, gates: bool
    ) -> tuple[Carry, tuple[Array, GateArrays]]:
        name = self._name
        check_sequence(xs, self.in_features, name)
        batch, steps, _ = xs.shape
        h = self.hidden_features
        if probes is not None:
            check_state(probes, (batch, steps, h), name, "probes")
        c0 = a0 = None
        if initial_state is not None:
            c0, a0 = initial_state
            check_state(c0, (batch, h), name, "initial_state[0] (c_0)")
            check_state(a0, (batch, h), name, "initial_state[1] (a_0)")
        dtype = compute_dtype(self.dtype, xs, probes, c0, a0, self.kernel[...])
        zeros = jnp.zeros((batch, h), dtype)
        carry = (zeros if c0 is None else cast(c0, dtype), zeros if a0 is None else cast(a0, dtype))
        step = self._step(dtype, gates=gates)
        return scan_over_time(
            step,
            step.project,
            carry,
            cast(xs, dtype),
            cast_optional(probes, dtype),
            project_all=step.project_all if resolve_hoist(self.hoist_input) else None,
        )
