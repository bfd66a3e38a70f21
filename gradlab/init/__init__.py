"""Pure-function weight initialisers, one name per distribution, and a registry of names.

Every initialiser here has the signature ``init(key, shape, dtype=jnp.float32) -> Array``, the
same as :mod:`jax.nn.initializers` and Flax's ``kernel_init``, so it can be passed to
``flax.nnx.Linear(..., kernel_init=gradlab.init.he_normal)`` as it is. The named ones are also
called like JAX's factories: ``gradlab.init.he_normal()`` (or ``he_normal(batch_axis=0)``,
``he_normal(in_axis=0, out_axis=1)``, ``he_normal(dtype=jnp.float64)``) returns the
initialiser, as ``jax.nn.initializers.he_normal()`` does.

Names shared with :mod:`jax.nn.initializers` draw with the same variance; where JAX's normal
ones are truncated at two standard deviations, gradlab's are not (see below). There is no
``normal``: JAX's ``normal(std)`` has a fixed std, which is :func:`gaussian` here, and the
fan-scaled ``N(0, K^2/fan_in)`` is :func:`fan_in_normal` (``gradlab.init.normal``, its former
name, raises an error saying so).

One name per distribution. Each distinct distribution has exactly one public name:
:func:`lecun_normal`, :func:`lecun_uniform`, :func:`he_normal`, :func:`he_uniform`,
:func:`glorot_normal`, :func:`glorot_uniform`, :func:`lecture_glorot` (the lecture's std
``2/sqrt(n_prev + n_cur)``), and the factories :func:`fan_in_normal` (``N(0, scale^2 /
fan_in)``, the lecture's ``K/sqrt(n_prev)`` with ``K = scale``), :func:`gaussian` (a fixed std),
:func:`orthogonal`, :func:`near_identity` and :func:`variance_scaling` (the general form).

What the theory needs. Every initialiser made here is an :class:`InitSpec`: callable like any
initialiser, and it carries what :mod:`gradlab.theory` needs to predict the gradient flow
(``family``, ``weight_variance`` ``σ²`` for a square layer, orthogonal ``gain``).
:func:`get` turns a name such as ``"orthogonal:1.1"`` (see :data:`NAMES`) into one; this is how
:mod:`gradlab.flow` and the command line take initialisers.

Fans and the shape convention
-----------------------------
The *fans* of a weight are computed by :func:`compute_fans`. With the default axes the rule is
the one of :mod:`jax.nn.initializers`:

* the last axis is the output axis and the second-to-last the input axis;
* every other axis is a receptive-field (spatial) axis of a convolution kernel, so a
  ``(3, 3, c_in, c_out)`` kernel has ``fan_in = 9 * c_in`` and a ``(width, c_in, c_out)`` kernel is
  a 1-D convolution;
* axes named in ``batch_axis`` index independent weight matrices (layers stacked for
  ``jax.lax.scan``, heads, ...) and are left out of the fans.

A rank-3 shape is therefore read as a 1-D convolution kernel unless told otherwise. Stacked dense
weights ``(layers, in, out)`` must say so, in one of two ways:

* ``batch_axis=0`` on any initialiser here (``he_normal(key, (L, n, n), batch_axis=0)`` or
  ``orthogonal(batch_axis=0)``). Entry-wise i.i.d. initialisers draw the whole array at once
  (the same draws as ``jax.nn.initializers.variance_scaling(..., batch_axis=0)``); structured
  ones (:func:`orthogonal`, :func:`near_identity`) build every slice separately.
* :func:`stacked` wraps any initialiser, yours included: it splits the key and ``vmap`` s the
  initialiser over the leading axes, so the wrapped initialiser only ever sees one layer's
  shape. This is what :mod:`gradlab.nn` does for its stacked layers.

Normal initialisers draw from an untruncated normal distribution (the Gaussian weights of the
theory, ``N(0, sigma^2 / n)``). :mod:`jax.nn.initializers` and Flax default to a normal truncated
at two standard deviations (and rescaled); use ``variance_scaling(..., "truncated_normal")`` to get
that.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from gradlab import init
    >>> w = init.he_normal(jax.random.key(0), (512, 256))
    >>> round(float(w.std() * jnp.sqrt(512 / 2)), 1)  # std is sqrt(2 / fan_in)
    1.0
    >>> init.he_normal.weight_variance, init.get("fan_in_normal:2").weight_variance
    (2.0, 4.0)
    >>> init.compute_fans((3, 3, 16, 32))
    (144, 288)
    >>> init.compute_fans((10, 64, 64), batch_axis=0)  # ten stacked 64x64 layers
    (64, 64)
"""

from __future__ import annotations

from gradlab.init._constants import constant, ones, zeros
from gradlab.init._fans import compute_fans
from gradlab.init._named import (
    glorot_normal,
    glorot_uniform,
    he_normal,
    he_uniform,
    lecture_glorot,
    lecun_normal,
    lecun_uniform,
)
from gradlab.init._names import NAMES, get
from gradlab.init._scaling import fan_in_normal, gaussian, variance_scaling
from gradlab.init._scaling import normal as normal  # the former name: raises, naming the new
from gradlab.init._spec import Initializer, InitSpec
from gradlab.init._structured import near_identity, orthogonal, stacked

__all__ = [
    "NAMES",
    "InitSpec",
    "Initializer",
    "compute_fans",
    "constant",
    "fan_in_normal",
    "gaussian",
    "get",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecture_glorot",
    "lecun_normal",
    "lecun_uniform",
    "near_identity",
    "ones",
    "orthogonal",
    "stacked",
    "variance_scaling",
    "zeros",
]
