"""Forward mode: checking ``jax.jvp`` (and ``custom_jvp`` rules) against finite differences.

``autodiff="reverse"`` compares the differences with ``jax.vjp``/``jax.grad``,
``autodiff="forward"`` with ``jax.jvp`` along each perturbation's tangent, ``autodiff="both"``
with both (one report row per leaf and mode; the finite differences are shared).

* Order 1, entries: ``jax.jvp(F, θ, e_i)`` per entry ``i`` (``1j·e_i`` for imaginary parts),
  vmapped over the entries of a leaf and chunked like the differences: ``n`` JVPs.
* Order 1, directions: ``jax.jvp`` along each direction's actual move ``δ / 2h``.
* Order 2: the outer derivative of the gradient: ``"forward"`` is ``jax.jvp(jax.grad(F))``
  (forward-over-reverse, the default at order 2), ``"reverse"`` is ``jax.grad`` of
  ``<jax.grad(F), t>`` (reverse-over-reverse, which yields ``Hᵀt``; see
  :mod:`gradlab.gradcheck.pipeline._second_order`).

A function that uses a ``jax.custom_vjp`` has no forward mode; checking it with
``autodiff="forward"`` raises a :class:`~gradlab.CheckInputError` that says so.
"""

from __future__ import annotations

from gradlab._errors import CheckInputError

__all__ = ["AD_CHOICES", "resolve_ad"]

AD_CHOICES = ("reverse", "forward", "both")


def resolve_ad(ad: str | None, order: int) -> tuple[str, tuple[str, ...]]:
    """The ``autodiff`` option as the report states it, and the modes to check, in row order.

    Example:
        >>> resolve_ad(None, 1), resolve_ad(None, 2), resolve_ad("both", 1)
        (('reverse', ('reverse',)), ('forward', ('forward',)), ('both', ('reverse', 'forward')))
    """
    if ad is None:
        ad = "reverse" if order == 1 else "forward"
    if ad not in AD_CHOICES:
        raise CheckInputError(
            f"autodiff must be 'reverse' (jax.vjp), 'forward' (jax.jvp) or 'both', got {ad!r}."
        )
    return ad, ("reverse", "forward") if ad == "both" else (ad,)
