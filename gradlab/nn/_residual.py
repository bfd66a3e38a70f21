"""Deep residual stacks (He et al. 2016) with the blocks stacked and run with ``lax.scan``."""

from __future__ import annotations

import math
from typing import Any, Literal

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
    layer_norm,
    value,
)

Array = jax.Array
Block = Literal["dense", "conv"]
BranchScale = None | float | Literal["rezero", "fixup"]

_CONV_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv(h: Array, kernel: Array) -> Array:
    return jax.lax.conv_general_dilated(
        h, kernel, window_strides=(1, 1), padding="SAME", dimension_numbers=_CONV_DIMS
    )


class ResidualStack(nnx.Module):
    """``depth`` residual blocks ``h_l = h_{l-1} + alpha * F(h_{l-1})`` between two projections.

    ::

        h_0 = x W_in + b_in                          # input projection (no activation)
        F(h) = W_2 act(W_1 LN(h) + b_1) + b_2        # dense block; LN only if layer_norm
        F(h) = K_2 * act(K_1 * LN(h) + b_1) + b_2    # conv block: 3x3 'SAME' convolutions
        h_l = h_{l-1} + alpha_l F_l(h_{l-1}),  l = 1..depth
        y   = h_depth W_out + b_out                  # conv: global average pool over H, W first

    The skip path is the identity with no activation after the addition (the "identity
    mapping" form of He et al. 2016b), so ``dh_depth/dh_0`` is ``I`` plus the branch terms. The
    conv block works on NHWC images ``(batch, H, W, in_features)`` with ``width`` channels; its
    input projection is a 3x3 convolution. The optional LayerNorm (pre-norm, inside the branch,
    over the channel axis) has a learnable scale (init 1) and bias (init 0).

    ``branch_scale`` sets alpha:

    * ``None``: ``alpha = 1``.
    * a float: a fixed, not learned, ``alpha`` (e.g. ``depth ** -0.5``).
    * ``"rezero"`` (Bachlechner et al. 2020): a learnable scalar ``alpha_l`` per block, parameter
      ``alpha`` of shape ``(depth,)``, initialised at 0, so at init every block is the identity.
    * ``"fixup"``: ``alpha = 1`` and, at init, the second layer of every branch (``kernel2``) is
      multiplied by ``depth ** -0.5``; nothing else. Fixup proper (Zhang et al. 2019) instead
      zero-initialises the last layer of each branch, scales the other branch layers by
      ``depth ** (-1 / (2m - 2))`` (``depth ** -0.5`` for ``m = 2`` layers per branch) and adds
      scalar biases and a multiplier; this keeps only its ``1/sqrt(depth)`` variance budget: the
      sum of ``depth`` branch variances stays O(1).

    The blocks' parameters are stacked along a leading ``depth`` axis (``kernel1``, ``bias1``,
    ``kernel2``, ``bias2``; ``ln_scale``, ``ln_bias`` with ``layer_norm``; ``alpha`` with
    ``"rezero"``) and run with :func:`jax.lax.scan`, so compile time does not grow with depth;
    ``unroll=True`` runs a Python loop instead (same numbers, for comparing compile times).
    ``kernel_init`` receives each block's own kernel shape. The projections are ``in_kernel``,
    ``in_bias``, ``out_kernel``, ``out_bias``.

    Args:
        in_features: input features (dense) or channels (conv).
        out_features: output features.
        width: features / channels of the residual stream.
        depth: number of residual blocks (>= 0).
        block: ``"dense"`` or ``"conv"``.
        activation: name or callable, see :func:`gradlab.nn.get_activation`.
        kernel_init: initialiser of every kernel.
        bias_init: initialiser of every bias.
        branch_scale: ``None``, a float, ``"rezero"`` or ``"fixup"``, see above.
        layer_norm: pre-LayerNorm inside every branch.
        unroll: Python loop over blocks instead of ``lax.scan``.
        rngs: random streams.
        dtype: computation dtype; None promotes inputs and parameters.
        param_dtype: dtype of the parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = ResidualStack(3, 1, width=4, depth=150, branch_scale="rezero",
        ...                       rngs=nnx.Rngs(0))
        >>> model(jnp.ones((2, 3))).shape
        (2, 1)
    """

    in_features: int
    out_features: int
    width: int
    depth: int
    block: Block
    activation: Activation
    branch_scale: BranchScale
    layer_norm: bool
    unroll: bool
    dtype: DTypeLike | None
    param_dtype: DTypeLike
    in_kernel: nnx.Param[Array]
    in_bias: nnx.Param[Array]
    kernel1: nnx.Param[Array]
    bias1: nnx.Param[Array]
    kernel2: nnx.Param[Array]
    bias2: nnx.Param[Array]
    ln_scale: nnx.Param[Array] | None
    ln_bias: nnx.Param[Array] | None
    alpha: nnx.Param[Array] | None
    out_kernel: nnx.Param[Array]
    out_bias: nnx.Param[Array]

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        width: int,
        depth: int,
        block: Block = "dense",
        activation: str | Activation = "relu",
        kernel_init: init.Initializer = init.he_normal,
        bias_init: init.Initializer = init.zeros,
        branch_scale: BranchScale = None,
        layer_norm: bool = False,
        unroll: bool = False,
        rngs: nnx.Rngs,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
    ) -> None:
        if block not in ("dense", "conv"):
            raise InputError(
                f"ResidualStack: block must be 'dense' or 'conv', got {block!r}. Pass "
                "block='dense' for (batch, features) inputs or 'conv' for NHWC images."
            )
        if depth < 0 or width < 1 or in_features < 1 or out_features < 1:
            raise InputError(
                "ResidualStack: need depth >= 0 and width, in_features, out_features >= 1; got "
                f"depth={depth}, width={width}, in_features={in_features}, "
                f"out_features={out_features}. Pass sizes in those ranges."
            )
        if isinstance(branch_scale, str):
            if branch_scale not in ("rezero", "fixup"):
                raise InputError(
                    "ResidualStack: branch_scale must be None, a float, 'rezero' or 'fixup'; "
                    f"got {branch_scale!r}. Use 'rezero' (learned, 0 at init) or a float."
                )
        elif branch_scale is not None and (
            isinstance(branch_scale, bool)
            or not isinstance(branch_scale, int | float)
            or not math.isfinite(branch_scale)
        ):
            raise InputError(
                "ResidualStack: branch_scale must be None, a finite float, 'rezero' or "
                f"'fixup'; got {branch_scale!r}. Pass e.g. depth ** -0.5."
            )
        self.in_features = in_features
        self.out_features = out_features
        self.width = width
        self.depth = depth
        self.block = block
        self.activation = get_activation(activation)
        self.branch_scale = branch_scale
        self.layer_norm = layer_norm
        self.unroll = unroll
        self.dtype = dtype
        self.param_dtype = param_dtype

        spatial = (3, 3) if block == "conv" else ()
        pd = param_dtype
        stacked_kernel = init.stacked(kernel_init)
        stacked_bias = init.stacked(bias_init)
        self.in_kernel = nnx.Param(kernel_init(rngs.params(), (*spatial, in_features, width), pd))
        self.in_bias = nnx.Param(bias_init(rngs.params(), (width,), pd))
        self.kernel1 = nnx.Param(stacked_kernel(rngs.params(), (depth, *spatial, width, width), pd))
        self.bias1 = nnx.Param(stacked_bias(rngs.params(), (depth, width), pd))
        kernel2 = stacked_kernel(rngs.params(), (depth, *spatial, width, width), pd)
        if branch_scale == "fixup" and depth > 0:
            kernel2 = kernel2 * jnp.asarray(depth**-0.5, pd)
        self.kernel2 = nnx.Param(kernel2)
        self.bias2 = nnx.Param(stacked_bias(rngs.params(), (depth, width), pd))
        if layer_norm:
            self.ln_scale = nnx.Param(jnp.ones((depth, width), pd))
            self.ln_bias = nnx.Param(jnp.zeros((depth, width), pd))
        else:
            self.ln_scale = self.ln_bias = None
        self.alpha = nnx.Param(jnp.zeros((depth,), pd)) if branch_scale == "rezero" else None
        self.out_kernel = nnx.Param(kernel_init(rngs.params(), (width, out_features), pd))
        self.out_bias = nnx.Param(bias_init(rngs.params(), (out_features,), pd))

    def _check_input(self, x: Array) -> None:
        if self.block == "conv":
            if x.ndim != 4 or x.shape[-1] != self.in_features:
                raise InputError(
                    "ResidualStack(block='conv'): x must be NHWC images of shape "
                    f"(batch, H, W, {self.in_features}), got {x.shape}. Add the channel "
                    "axis last (x[..., None] for one channel) or use block='dense'."
                )
        else:
            check_features(x, self.in_features, "ResidualStack")

    def __call__(self, x: Array, *, probes: Array | None = None) -> Array:
        """Runs the stack.

        Args:
            x: ``(batch, in_features)`` for dense blocks, ``(batch, H, W, in_features)`` for conv.
            probes: optional ``(depth + 1, *h.shape)`` array added to ``h_0 .. h_depth`` right
                after each is computed (``h.shape`` is ``(batch, width)`` or
                ``(batch, H, W, width)``); the gradient with respect to zero probes is
                ``dL/dh_l``.

        Returns:
            ``y`` of shape ``(batch, out_features)``; :meth:`with_hiddens` also returns
            ``h_0 .. h_depth``.
        """
        return self._forward(x, probes, keep=False)[0]

    def with_hiddens(self, x: Array, *, probes: Array | None = None) -> tuple[Array, Array]:
        """Runs the stack and also returns ``h_0 .. h_depth``.

        Args:
            x: ``(batch, in_features)`` for dense blocks, ``(batch, H, W, in_features)`` for conv.
            probes: optional ``(depth + 1, *h.shape)`` array, as in ``__call__``.

        Returns:
            ``(y, hiddens)``: ``y`` of shape ``(batch, out_features)`` and ``hiddens`` of shape
            ``(depth + 1, *h.shape)`` (probes included).

        Example:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> model = ResidualStack(3, 1, width=4, depth=150, branch_scale="rezero",
            ...                       rngs=nnx.Rngs(0))
            >>> y, hiddens = model.with_hiddens(jnp.ones((2, 3)))
            >>> hiddens.shape
            (151, 2, 4)
            >>> bool(jnp.allclose(hiddens[-1], hiddens[0]))  # rezero: identity at init
            True
        """
        y, hiddens = self._forward(x, probes, keep=True)
        assert hiddens is not None
        return y, hiddens

    def _forward(self, x: Array, probes: Array | None, *, keep: bool) -> tuple[Array, Any]:
        self._check_input(x)
        check_probes(probes, (self.depth + 1, *x.shape[:-1], self.width), "ResidualStack")
        names = ("kernel1", "bias1", "kernel2", "bias2", "ln_scale", "ln_bias", "alpha")
        head = [value(v) for v in (self.in_kernel, self.in_bias, self.out_kernel, self.out_bias)]
        blocks = [value(getattr(self, n)) for n in names]
        dtype = compute_dtype(self.dtype, x, probes, *head, *blocks)
        in_k, in_b, out_k, out_b = (cast(a, dtype) for a in head if a is not None)
        block_params = {n: cast_optional(a, dtype) for n, a in zip(names, blocks, strict=True)}
        x, probes = cast(x, dtype), cast_optional(probes, dtype)
        conv = self.block == "conv"
        act = self.activation
        fixed_alpha = self.branch_scale if isinstance(self.branch_scale, int | float) else None

        def branch(p: dict[str, Any], h: Array) -> Array:
            if p["ln_scale"] is not None:
                h = layer_norm(h, p["ln_scale"], p["ln_bias"])
            h = (_conv(h, p["kernel1"]) if conv else h @ p["kernel1"]) + p["bias1"]
            h = act(h)
            h = (_conv(h, p["kernel2"]) if conv else h @ p["kernel2"]) + p["bias2"]
            if p["alpha"] is not None:
                h = p["alpha"] * h
            elif fixed_alpha is not None:
                h = jnp.asarray(fixed_alpha, h.dtype) * h
            return h

        def step(h: Array, inputs: tuple[dict[str, Any], Array | None]) -> tuple[Array, Any]:
            p, probe = inputs
            h = h + branch(p, h)
            if probe is not None:
                h = h + probe
            return h, (h if keep else None)

        h0 = (_conv(x, in_k) if conv else x @ in_k) + in_b
        if probes is not None:
            h0 = h0 + probes[0]
        rest = None if probes is None else probes[1:]
        if self.unroll:
            h, hs_list = h0, []
            for layer in range(self.depth):
                p_l = jax.tree.map(lambda a, i=layer: a[i], block_params)
                h, _ = step(h, (p_l, None if rest is None else rest[layer]))
                hs_list.append(h)
            h_last = h
            hs = jnp.stack(hs_list) if hs_list else jnp.zeros((0, *h0.shape), h0.dtype)
        else:
            h_last, hs = jax.lax.scan(step, h0, (block_params, rest))
        pooled = jnp.mean(h_last, axis=(1, 2)) if conv else h_last
        y = pooled @ out_k + out_b
        return y, (jnp.concatenate([h0[None], hs], axis=0) if keep else None)
