"""Gradient-flow measurements: per-layer and per-time-step gradient norms over many seeds.

Two entry points, one compiled function per configuration (cached: calling again with the same
configuration and a different ``key`` does not retrace):

* :func:`depth_profile` — an :class:`gradlab.nn.MLP` or :class:`gradlab.nn.ResidualStack` of any
  depth: per layer ``l``, the per-example norms of ``∂L/∂h_l`` (through zero probes), of the
  weight gradients ``∂L/∂W_l`` and of the hidden states ``h_l``.
* :func:`time_profile` — an :class:`gradlab.nn.LSTM` or :class:`gradlab.nn.RNN`: per time step
  ``t``, the norms of ``∂L/∂a^(t)``, ``∂L/∂x^(t)`` and ``a^(t)`` (and, for the LSTM, the product
  of forget gates along the cell path).

Every seed draws its own network (the model is built inside a compiled, ``vmap`` ped function
from the seed's key), its own inputs ``x ~ N(0, I)`` and its own random labels.

The loss. The network has one output ``y_i`` per example and the loss is the *sum* over the
batch of a per-example loss, so row ``i`` of ``∂L/∂h_l`` is example ``i``'s own gradient.
``loss="readout"`` (default) is ``ℓ_i = y_i``: a random linear readout of the last hidden
state (``y = h_depth·w_out + b_out`` with random ``w_out``), whose gradient there is exactly
``w_out``. ``loss="bce"`` is the lecture's binary cross-entropy of the logit ``y_i`` against a
random label ``t_i``: ``∂ℓ_i/∂h_depth = (σ(y_i) − t_i)·w_out``. Either way the loss only sets a
per-example scale, so the profile *relative to the last layer*,
``‖∂ℓ_i/∂h_l‖ / ‖∂ℓ_i/∂h_depth‖``, is a property of the network alone — that is the quantity
:mod:`gradlab.theory` predicts. (With BCE, an exploding network saturates the sigmoid:
``σ(y) − t`` underflows to exactly 0 and the example's gradient vanishes at *every* layer;
those samples are ``-inf`` and left out of the statistics, see ``finite_fraction``.)

All norms are stored as ``log10`` per seed and example (arrays ``(seeds, batch, n)``) in a
:class:`FlowProfile`; statistics pool seeds and examples, and ``sem`` is the standard error
of the mean across seeds.

Initialisers are taken from :mod:`gradlab.init`: a name of :data:`gradlab.init.NAMES`
(``"he_normal"``, ``"fan_in_normal:2"``, ``"orthogonal:1.1"``), a :mod:`gradlab.init`
initialiser, or any callable. The theory line is chosen from what the initialiser's
:class:`gradlab.init.InitSpec` says (family, ``σ²``, gain); a callable gradlab did not make is
measured with no theory line.

:func:`diagnose` (from :mod:`gradlab._diagnose`) does the same for *your* model: where its
gradients vanish or explode, and the fix.

Example:
    >>> from gradlab import flow
    >>> p = flow.depth_profile("mlp", depth=20, width=16, activation="linear",
    ...                        init="orthogonal:0.9", seeds=2, batch=2)
    >>> round(float(p["grad_h_rel"].mean[0]), 4)  # log10(0.9 ** 20)
    -0.9151
"""

from __future__ import annotations

from gradlab._diagnose import DiagnoseOptions, Diagnosis, diagnose
from gradlab.flow._depth import depth_profile
from gradlab.flow._programs import cache_info, clear_cache
from gradlab.flow._results import FlowProfile, Series, TheoryLine
from gradlab.flow._time import time_profile

__all__ = [
    "DiagnoseOptions",
    "Diagnosis",
    "FlowProfile",
    "Series",
    "TheoryLine",
    "cache_info",
    "clear_cache",
    "depth_profile",
    "diagnose",
    "time_profile",
]
