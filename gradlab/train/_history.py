"""What a training run logs: :class:`History`, a pytree of arrays."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from gradlab._errors import InputError

__all__ = ["History"]

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class History:
    """The log of one training run, or of a batch of runs.

    For a batch of runs (:func:`~gradlab.train.train_many`) every array gains a leading run
    axis.

    Attributes:
        loss: ``(steps,)`` the training loss at every step, before that step's update.
        grad_norm: ``(steps,)`` the global norm of the gradient (before any clipping).
        update_norm: ``(steps,)`` the global norm of the parameter update actually applied.
        metrics: ``{name: (steps,)}`` the auxiliary values the loss returned (e.g. accuracy).
        layer_steps: ``(k,)`` the steps at which per-layer gradient norms were logged.
        layer_norms: ``(k, layers)`` the per-layer gradient norms at those steps.
        layer_names: the layer names (static, not a leaf), see
            :func:`gradlab.train.layer_grad_norms`.

    Example:
        >>> import jax.numpy as jnp
        >>> h = History(jnp.ones(3), jnp.ones(3), jnp.ones(3), {}, jnp.zeros(1, int),
        ...             jnp.ones((1, 2)), ("a", "b"))
        >>> sorted(h.to_dict())[:3]
        ['grad_norm', 'layer_names', 'layer_norms']
        >>> len(jax.tree.leaves(h))  # layer_names is not a leaf
        5
    """

    loss: Array
    grad_norm: Array
    update_norm: Array
    metrics: dict[str, Array]
    layer_steps: Array
    layer_norms: Array
    layer_names: tuple[str, ...] = dataclasses.field(metadata={"static": True}, default=())

    def to_dict(self) -> dict[str, Any]:
        """Plain Python lists and floats (JSON-ready; non-finite values become None).

        Example:
            >>> import jax.numpy as jnp
            >>> h = History(jnp.array([1.0, jnp.inf]), jnp.ones(2), jnp.ones(2), {},
            ...             jnp.zeros(0, int), jnp.ones((0, 1)), ("w",))
            >>> h.to_dict()["loss"]
            [1.0, None]
        """

        def plain(a: Any) -> Any:
            a = np.asarray(a)
            return _json_floats(a) if a.dtype.kind == "f" else a.tolist()

        return {
            "loss": plain(self.loss),
            "grad_norm": plain(self.grad_norm),
            "update_norm": plain(self.update_norm),
            "metrics": {k: plain(v) for k, v in self.metrics.items()},
            "layer_steps": plain(self.layer_steps),
            "layer_norms": plain(self.layer_norms),
            "layer_names": list(self.layer_names),
        }

    def layer(self, name: str) -> Array:
        """The logged norms of one layer: ``(..., k)`` over :attr:`layer_steps`.

        Raises:
            InputError: if no layer has this name (the message lists the logged layers).

        Example:
            >>> import jax.numpy as jnp
            >>> h = History(jnp.ones(3), jnp.ones(3), jnp.ones(3), {}, jnp.array([0, 2]),
            ...             jnp.array([[1.0, 2.0], [3.0, 4.0]]), ("a", "b"))
            >>> h.layer("b").tolist()  # at steps 0 and 2
            [2.0, 4.0]
        """
        if name not in self.layer_names:
            raise InputError(
                f"History.layer: no layer {name!r}; logged layers: {list(self.layer_names)}. "
                "Pass one of these names."
            )
        return self.layer_norms[..., self.layer_names.index(name)]


def _json_floats(a: np.ndarray) -> Any:
    """Nested lists of floats with NaN/Inf as None."""
    if a.ndim == 0:
        x = float(a)
        return x if np.isfinite(x) else None
    return [_json_floats(x) for x in a]
