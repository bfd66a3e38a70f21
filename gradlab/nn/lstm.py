"""The LSTM of slide 7, standard and literal variants, run over time with ``lax.scan``."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from gradlab import init
from gradlab.nn._common import check_sequence, check_state, promote, resolve_hoist, value

Array = jax.Array
Variant = Literal["standard", "slide"]

GATES = ("update", "forget", "candidate", "output")
"""Gate names, in the order of the packed ``4 * hidden`` axis of the kernels and bias."""

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


class LSTM(nnx.Module):
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

    Parameters, packed by gate in the order :data:`GATES` (update, forget, candidate, output):
    ``kernel (in, 4H)`` multiplies ``x(t)``; ``recurrent_kernel (H, 4H)`` multiplies ``a(t-1)``
    (in the slide variant its forget and output columns multiply ``C(t-1)``); ``bias (4H,)``.
    The input part ``x W + b`` of all time steps is one matrix product hoisted out of the scan
    (``hoist_input``: by default on GPU/TPU, per step on CPU where that is faster); each step
    does two ``(H, 2H)`` recurrent products (in the slide variant the second one multiplies
    ``C(t-1)``).
    ``kernel_init`` and ``recurrent_init`` are applied gate by gate, to ``(in, H)`` and
    ``(H, H)`` blocks, so every gate's recurrent block is orthogonal with the default.
    ``forget_bias`` is added to ``b_f`` at init.

    Args:
        in_features: input features per step.
        hidden_features: ``H``, the size of ``a`` and ``C``.
        variant: ``"standard"`` or ``"slide"``.
        forget_bias: added to the forget gate's bias at init (1.0, Jozefowicz et al. 2015).
        kernel_init: initialiser of each gate's ``(in, H)`` input kernel (Glorot uniform, as
            in Keras).
        recurrent_init: initialiser of each gate's ``(H, H)`` recurrent kernel.
        bias_init: initialiser of the ``(4H,)`` bias, before ``forget_bias`` is added.
        hoist_input: compute ``x W + b`` for all steps with one matmul before the scan
            (True) or inside each step (False); None (default) hoists except on CPU. Same
            numbers either way, up to summation order. See ``docs/models.md``: on XLA:CPU
            streaming the ``(T, batch, 4H)`` product through the loop costs more than the
            per-step ``(in, 4H)`` matmul it saves; on GPU/TPU one large matmul wins.
        rngs: random streams.
        dtype: computation dtype; None promotes inputs and parameters.
        param_dtype: dtype of the parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> lstm = LSTM(3, 8, variant="slide", rngs=nnx.Rngs(0))
        >>> outputs, (c_T, a_T), gates = lstm(jnp.ones((2, 5, 3)), return_gates=True)
        >>> outputs.shape, c_T.shape, gates["forget"].shape
        ((2, 5, 8), (2, 8), (2, 5, 8))
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
        hoist_input: bool | None = None,
        rngs: nnx.Rngs,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
    ) -> None:
        if variant not in ("standard", "slide"):
            raise ValueError(
                f"LSTM: variant must be 'standard' (gates read a(t-1)) or 'slide' (forget and "
                f"output gates read C(t-1), as on slide 7); got {variant!r}."
            )
        if in_features < 1 or hidden_features < 1:
            raise ValueError(
                "LSTM: in_features and hidden_features must be >= 1, got "
                f"{in_features} and {hidden_features}."
            )
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.variant = variant
        self.forget_bias = forget_bias
        self.hoist_input = hoist_input
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

    def __call__(
        self,
        xs: Array,
        *,
        initial_state: tuple[Array, Array] | None = None,
        probes: Array | None = None,
        return_gates: bool = False,
    ) -> tuple[Array, tuple[Array, Array]] | tuple[Array, tuple[Array, Array], dict[str, Array]]:
        """Runs the LSTM over a batch of sequences.

        Args:
            xs: inputs ``(batch, T, in_features)``.
            initial_state: ``(c_0, a_0)``, each ``(batch, H)``; zeros by default.
            probes: optional ``(batch, T, H)`` array added to ``a(t)`` right after each step
                (before it feeds step ``t + 1``); the gradient with respect to zero probes is
                ``dL/da(t)``.
            return_gates: also return the gate activations.

        Returns:
            ``(outputs, (c_T, a_T))`` with ``outputs (batch, T, H)`` every ``a(t)``; with
            ``return_gates``, ``(outputs, (c_T, a_T), gates)`` where ``gates`` maps
            ``"update"``, ``"forget"``, ``"output"``, ``"candidate"`` to ``(batch, T, H)``
            arrays.
        """
        name = f"LSTM(variant={self.variant!r})"
        check_sequence(xs, self.in_features, name)
        batch, steps, _ = xs.shape
        h = self.hidden_features
        if probes is not None:
            check_state(probes, (batch, steps, h), name, "probes")
        if initial_state is not None:
            c0, a0 = initial_state
            check_state(c0, (batch, h), name, "initial_state[0] (c_0)")
            check_state(a0, (batch, h), name, "initial_state[1] (a_0)")
        else:
            c0 = a0 = None
        xs, probes, c0, a0, kernel, rec, bias = promote(
            [
                xs,
                probes,
                c0,
                a0,
                value(self.kernel),
                value(self.recurrent_kernel),
                value(self.bias),
            ],
            self.dtype,
        )
        dtype = kernel.dtype
        c0 = jnp.zeros((batch, h), dtype) if c0 is None else c0
        a0 = jnp.zeros((batch, h), dtype) if a0 is None else a0
        probes_t = None if probes is None else jnp.swapaxes(probes, 0, 1)

        slide = self.variant == "slide"
        if slide:
            # Gates reading a(t-1) first, those reading C(t-1) last (permuted once, here).
            order = (_U, _G, _F, _O)
            blocks = lambda w: jnp.concatenate([w[..., g * h : (g + 1) * h] for g in order], -1)
            kernel, rec, bias = blocks(kernel), blocks(rec), blocks(bias)
        # Two (H, 2H) recurrent products per step: the slide variant needs them (one reads
        # a(t-1), the other C(t-1)), and for the standard one XLA:CPU runs two half-width
        # products faster than one (H, 4H) product (benchmarks/bench_models.py).
        halves = lambda w: (w[..., : 2 * h], w[..., 2 * h :])
        (rec_1, rec_2), (kernel_1, kernel_2), (bias_1, bias_2) = map(halves, (rec, kernel, bias))
        hoist = resolve_hoist(self.hoist_input)
        xs_t = jnp.swapaxes(xs, 0, 1)  # time-major (T, batch, in): the scan runs over axis 0
        # hoisted: one matmul for the input part of every step, (T, batch, 4H)
        seq = xs_t @ kernel + bias if hoist else xs_t

        def step(
            carry: tuple[Array, Array], inputs: tuple[Array, Array | None]
        ) -> tuple[tuple[Array, Array], tuple[Array, tuple[Array, ...]]]:
            c_prev, a_prev = carry
            x_or_z, probe = inputs
            if hoist:
                z_1, z_2 = halves(x_or_z)
            else:
                z_1, z_2 = x_or_z @ kernel_1 + bias_1, x_or_z @ kernel_2 + bias_2
            z_1 = z_1 + a_prev @ rec_1
            z_2 = z_2 + (c_prev if slide else a_prev) @ rec_2
            if slide:
                (zu, zg), (zf, zo) = jnp.split(z_1, 2, axis=-1), jnp.split(z_2, 2, axis=-1)
            else:
                (zu, zf), (zg, zo) = jnp.split(z_1, 2, axis=-1), jnp.split(z_2, 2, axis=-1)
            update, forget = jax.nn.sigmoid(zu), jax.nn.sigmoid(zf)
            output, candidate = jax.nn.sigmoid(zo), jnp.tanh(zg)
            c = update * candidate + forget * c_prev
            a = output * jnp.tanh(c)
            if probe is not None:
                a = a + probe
            gates = (update, forget, output, candidate) if return_gates else ()
            return (c, a), (a, gates)

        (c_last, a_last), (outputs, gates) = jax.lax.scan(step, (c0, a0), (seq, probes_t))
        outputs = jnp.swapaxes(outputs, 0, 1)
        if not return_gates:
            return outputs, (c_last, a_last)
        names = ("update", "forget", "output", "candidate")
        gate_dict = {n: jnp.swapaxes(g, 0, 1) for n, g in zip(names, gates, strict=True)}
        return outputs, (c_last, a_last), gate_dict
