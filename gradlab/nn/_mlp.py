"""A deep fully connected network whose hidden layers are stacked and run with ``lax.scan``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from gradlab import init
from gradlab._errors import InputError
from gradlab.nn._common import (
    Activation,
    cast,
    cast_optional,
    check_features,
    check_probes,
    compute_dtype,
    get_activation,
    value,
)

Array = jax.Array


def _dense(h: Array, w: Array, b: Array | None) -> Array:
    z = h @ w
    return z if b is None else z + b


class MLP(nnx.Module):
    """A tanh/ReLU/... network of ``depth`` equal-width hidden layers, the lecture's chain.

    With ``width`` units per layer::

        h_0 = act(x W_in + b_in)                    # input projection, in_features -> width
        h_l = act(h_{l-1} W_l + b_l),  l = 1..depth  # the depth hidden layers
        y   = h_depth W_out + b_out                 # linear readout, width -> out_features

    The hidden weights are stored stacked, ``w_hidden`` of shape ``(depth, width, width)`` and
    ``b_hidden`` of shape ``(depth, width)``, and run with :func:`jax.lax.scan`, so the compile
    time does not grow with depth. ``kernel_init`` receives each layer's own shape
    ``(width, width)`` (it is ``vmap`` ped over split keys, see :func:`gradlab.init.stacked`), so
    fan-based initialisers see the right fans. ``depth=0`` is allowed.

    Parameters: ``w_in (in, width)``, ``b_in (width,)``, ``w_hidden (depth, width, width)``,
    ``b_hidden (depth, width)``, ``w_out (width, out)``, ``b_out (out,)``; the biases are absent
    (None) when ``use_bias=False``.

    Args:
        in_features: size of the input's last axis.
        out_features: size of the output's last axis.
        width: units per hidden layer.
        depth: number of hidden ``width -> width`` layers after the input projection.
        activation: ``"tanh"``, ``"relu"``, ``"linear"``, ``"sigmoid"``, ``"gelu"`` or a callable.
        kernel_init: initialiser of every kernel.
        bias_init: initialiser of every bias.
        use_bias: whether the layers have biases.
        rngs: random streams; ``rngs.params()`` is drawn from.
        dtype: computation dtype; None promotes inputs and parameters to a common dtype (so
            float64 parameters compute in float64).
        param_dtype: dtype of the parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = MLP(3, 2, width=16, depth=5, rngs=nnx.Rngs(0))
        >>> model(jnp.ones((4, 3))).shape
        (4, 2)
    """

    in_features: int
    out_features: int
    width: int
    depth: int
    activation: Activation
    use_bias: bool
    dtype: DTypeLike | None
    param_dtype: DTypeLike
    w_in: nnx.Param[Array]
    b_in: nnx.Param[Array] | None
    w_hidden: nnx.Param[Array]
    b_hidden: nnx.Param[Array] | None
    w_out: nnx.Param[Array]
    b_out: nnx.Param[Array] | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        width: int,
        depth: int,
        activation: str | Activation = "tanh",
        kernel_init: init.Initializer = init.lecun_normal,
        bias_init: init.Initializer = init.zeros,
        use_bias: bool = True,
        rngs: nnx.Rngs,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
    ) -> None:
        if depth < 0 or width < 1 or in_features < 1 or out_features < 1:
            raise InputError(
                "MLP: need depth >= 0 and width, in_features, out_features >= 1; got "
                f"depth={depth}, width={width}, in_features={in_features}, "
                f"out_features={out_features}. Pass sizes in those ranges."
            )
        self.in_features = in_features
        self.out_features = out_features
        self.width = width
        self.depth = depth
        self.activation = get_activation(activation)
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype

        def bias(shape: tuple[int, ...], *, stacked: bool) -> nnx.Param[Array] | None:
            if not use_bias:
                return None
            init_fn = init.stacked(bias_init) if stacked else bias_init
            return nnx.Param(init_fn(rngs.params(), shape, param_dtype))

        self.w_in = nnx.Param(kernel_init(rngs.params(), (in_features, width), param_dtype))
        self.b_in = bias((width,), stacked=False)
        self.w_hidden = nnx.Param(
            init.stacked(kernel_init)(rngs.params(), (depth, width, width), param_dtype)
        )
        self.b_hidden = bias((depth, width), stacked=True)
        self.w_out = nnx.Param(kernel_init(rngs.params(), (width, out_features), param_dtype))
        self.b_out = bias((out_features,), stacked=False)

    def __call__(self, x: Array, *, probes: Array | None = None) -> Array:
        """Runs the network.

        Args:
            x: inputs of shape ``(batch, in_features)`` (any number of leading axes works).
            probes: optional ``(depth + 1, batch, width)`` array added to each ``h_l`` right
                after it is computed; the gradient of a loss with respect to zero probes is
                ``dL/dh_l`` for every layer at once.

        Returns:
            ``y`` of shape ``(batch, out_features)``; :meth:`with_hiddens` also returns the
            hidden states.
        """
        return self._forward(x, probes, keep=False)[0]

    def with_hiddens(self, x: Array, *, probes: Array | None = None) -> tuple[Array, Array]:
        """Runs the network and also returns every hidden state.

        Args:
            x: inputs of shape ``(batch, in_features)`` (any number of leading axes works).
            probes: optional ``(depth + 1, batch, width)`` array, as in ``__call__``.

        Returns:
            ``(y, hiddens)``: ``y`` of shape ``(batch, out_features)`` and ``hiddens`` of shape
            ``(depth + 1, batch, width)``, ``h_0 .. h_depth`` (probes included).

        Example:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> model = MLP(3, 2, width=16, depth=5, rngs=nnx.Rngs(0))
            >>> y, hiddens = model.with_hiddens(jnp.ones((4, 3)))
            >>> y.shape, hiddens.shape
            ((4, 2), (6, 4, 16))
        """
        y, hiddens = self._forward(x, probes, keep=True)
        assert hiddens is not None
        return y, hiddens

    def _forward(self, x: Array, probes: Array | None, *, keep: bool) -> tuple[Array, Any]:
        check_features(x, self.in_features, "MLP")
        check_probes(probes, (self.depth + 1, *x.shape[:-1], self.width), "MLP")
        variables = (self.w_in, self.b_in, self.w_hidden, self.b_hidden, self.w_out, self.b_out)
        arrays = [value(v) for v in variables]
        dtype = compute_dtype(self.dtype, x, probes, *arrays)
        w_in, b_in, w_h, b_h, w_out, b_out = (cast_optional(a, dtype) for a in arrays)
        x, probes = cast(x, dtype), cast_optional(probes, dtype)
        assert w_in is not None and w_h is not None and w_out is not None
        act = self.activation

        h0 = act(_dense(x, w_in, b_in))
        if probes is not None:
            h0 = h0 + probes[0]

        def layer(h: Array, inputs: Any) -> tuple[Array, Array | None]:
            w, b, p = inputs
            h = act(_dense(h, w, b))
            if p is not None:
                h = h + p
            return h, (h if keep else None)

        rest = None if probes is None else probes[1:]
        h_last, hs = jax.lax.scan(layer, h0, (w_h, b_h, rest))
        y = _dense(h_last, w_out, b_out)
        return y, (None if hs is None else jnp.concatenate([h0[None], hs], axis=0))
