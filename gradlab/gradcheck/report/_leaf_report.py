"""One leaf's row of a check's report, and the entries it names."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from gradlab.gradcheck.report._bands import Verdict

__all__ = ["EntryMismatch", "LeafReport", "LeafStatus"]


LeafStatus = Literal["verified", "wrong", "unresolved"]


@dataclasses.dataclass(frozen=True)
class EntryMismatch:
    """One entry of a leaf where the numerical and analytical gradients differ.

    Attributes:
        index: The entry's index in the leaf (a tuple, one int per axis); in directional
            mode ``(j,)``, the direction's number.
        numerical: The centered difference ``(f(θ+h) − f(θ−h)) / 2h``.
        analytical: ``jax.grad``'s value (``jax.jvp``'s in forward mode; ``H·e_i``'s entry at
            order 2).
        abs_error: ``|numerical − analytical|``.
        kink: True at a confirmed kink: the one-sided slopes disagree and stay put when the
            step shrinks; such an entry is checked against ``one_sided`` instead.
        part: ``"real"`` or ``"imag"`` for complex leaves, ``"direction"`` in directional
            mode, ``"v{j}"`` for the cotangent of a vector-valued ``f``, ``"row {component}"``
            at order 2 (which gradient component); else ``""``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab
        >>> @jax.custom_vjp
        ... def cube(x):
        ...     return x**3
        >>> cube.defvjp(lambda x: (x**3, x), lambda x, g: (2 * x**2 * g,))  # should be 3x²
        >>> worst = gradlab.check(lambda p: jnp.sum(cube(p)), jnp.array([1.0, 2.0]))["."].worst[0]
        >>> worst.index, round(worst.numerical, 5), worst.analytical
        ((1,), 12.0, 8.0)
    """

    index: tuple[int, ...]
    numerical: float
    analytical: float
    abs_error: float
    kink: bool = False
    part: str = ""
    one_sided: tuple[float, float] | None = None

    def describe(self) -> str:
        """One line: index, both values, and at a kink the one-sided slopes."""
        part = f" {self.part}" if self.part else ""
        text = (
            f"{self.index}{part}: numerical {self.numerical:+.10e}  "
            f"analytical {self.analytical:+.10e}  |diff| {self.abs_error:.2e}"
        )
        if self.one_sided is not None:
            lo, hi = self.one_sided
            text += f"  [kink: one-sided slopes {lo:+.4e} (θ−h), {hi:+.4e} (θ+h)]"
        return text


@dataclasses.dataclass(frozen=True)
class LeafReport:
    """The check of one leaf of the parameters.

    Attributes:
        path: The leaf's pytree path, ``/``-separated (e.g. ``"layers/0/kernel"``).
        shape: The leaf's shape.
        dtype: The leaf's dtype as given (the check itself runs in float64).
        relative_error: ``||num − ana|| / (||num|| + ||ana||)`` over the entries not at
            confirmed kinks (those are checked one by one against their one-sided slopes).
        verdict: The lecture's band for ``relative_error``.
        status: ``"verified"`` (agreement established for every entry: within tolerance,
            confirmed kinks within their one-sided slopes), ``"wrong"`` (outside tolerance
            beyond what rounding explains, or a kink outside its one-sided slopes) or
            ``"unresolved"`` (rounding, or entries where ``f`` is not finite, leave it open;
            the check is then inconclusive).
        n_kinks: Confirmed kinks: entries whose one-sided slopes disagree at two steps; each
            was checked against its one-sided slopes (a subgradient check).
        n_nonfinite: Entries where ``f(θ ± h)`` was NaN or Inf at both steps (unverified).
        noise_floor: The relative error that rounding in ``f`` alone can cause at this eps.
        grad_norm: ``||ana||``, the analytical gradient's norm over the leaf.
        worst: The entries with the largest ``|num − ana|``, largest first.
        resolving_eps: For unresolved leaves, the step that would bring the noise floor under
            the tolerance, when that step is still small (at most 1e-3); else None.
        note: Why a leaf is unresolved or wrong, or which step verified it, in words.
        autodiff: Which derivative the row checks: ``"reverse"`` (``jax.grad``/``jax.vjp``) or
            ``"forward"`` (``jax.jvp``); at order 2, the outer derivative of the gradient.
        eps: The finite-difference step used for this leaf.
        estimated_error: With ``eps="auto"``: the relative error of the finite differences
            themselves estimated from steps ``h`` and ``2h`` (truncation plus rounding).
        n_restepped: Entries judged by their difference at the second step ``eps/10`` (not
            finite at ``eps``, or a kink within ``eps`` of θ).
        kinks: The first confirmed kinks (up to ``max_worst``), with their one-sided slopes.
        flat: Verified as flat: ``f`` does not move along any entry over a large step and
            ``jax.grad`` is zero to rounding (a gradient zero by symmetry, where no relative
            error between two roundings means anything).
        n_checked: In ``Sample`` mode the entries moved, in ``Directional`` mode the
            directions; None when every entry was moved.
        n_ties: Entries at a tie, verified nearby: confirmed kinks where many terms tie at
            once (max-pool windows of equal values, identical ensemble members) and the
            analytical value lies outside the one-sided slopes, re-checked at a nearby
            ``θ + δ`` where the check showed ``f`` smooth along them and found agreement
            there. What autodiff returns at the tie itself is an element of a conservative
            gradient that finite differences at ``θ`` cannot bound.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab
        >>> report = gradlab.check(lambda w: jnp.sum(jax.nn.relu(w)), jnp.array([-1.0, 0.0, 2.0]))
        >>> leaf = report["."]
        >>> leaf.status, leaf.n_kinks, leaf.shape
        ('verified', 1, (3,))
    """

    path: str
    shape: tuple[int, ...]
    dtype: str
    relative_error: float
    verdict: Verdict
    status: LeafStatus
    n_kinks: int
    n_nonfinite: int
    noise_floor: float
    grad_norm: float
    worst: tuple[EntryMismatch, ...]
    resolving_eps: float | None = None
    note: str = ""
    autodiff: str = "reverse"
    eps: float | None = None
    estimated_error: float | None = None
    n_restepped: int = 0
    kinks: tuple[EntryMismatch, ...] = ()
    flat: bool = False
    n_ties: int = 0
    n_checked: int | None = None

    @property
    def size(self) -> int:
        """Number of entries in the leaf."""
        return math.prod(self.shape)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this row."""
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["size"] = self.size
        d["worst"] = [{**dataclasses.asdict(w), "index": list(w.index)} for w in self.worst]
        d["kinks"] = [{**dataclasses.asdict(w), "index": list(w.index)} for w in self.kinks]
        return d
