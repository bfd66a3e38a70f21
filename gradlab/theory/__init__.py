"""Closed-form predictions for gradient norms through depth and time, at initialisation.

Every function here is a pure function of the architecture's numbers (depth, width, weight
variance, bias variance, forget bias); none touches a network. :mod:`gradlab.flow` measures
the same quantities on real :mod:`gradlab.nn` models, and the tests compare the two.

Conventions. ``g_l = ∂L/∂h_l`` is the gradient with respect to the ``l``-th hidden state of a
network with ``depth`` hidden ``width × width`` layers; a weight "variance ``σ²``" means the
entries are drawn from ``N(0, σ²/fan_in)`` (``σ² = 1`` is LeCun, ``σ² = 2`` is He). The
random quantity most statements are about is the log of a squared-norm ratio,

    ``R = ln(‖g_0‖² / ‖g_depth‖²)``  (backward), or ``ln(‖h_depth‖² / ‖h_0‖²)`` (forward),

returned as a :class:`LogNormRatio` (mean and variance of ``R``, and whether they are exact).
See ``docs/theory.md`` for the derivations and references.

What is exact and what is not:

* :func:`chain`, :func:`orthogonal_linear` — exact (a product of numbers / isometries).
* :func:`gaussian_linear` — exact at every finite width: each layer multiplies the squared norm
  by an independent ``σ²/n · χ²_n``.
* :func:`relu_gaussian` — exact at every finite width, forward and backward, for zero biases:
  each layer multiplies by ``σ²/n · χ²_K`` with ``K ~ Binomial(n, 1/2)`` active units.
* :func:`relu_large_width` — the log-normal limit ``N(-5β/2, 5β)`` (β = Σ 1/n_l) of the above
  (Hanin 2018; Hanin & Nica 2019): approximate, to leading order in ``1/n``.
* The mean-field functions (:func:`q_star`, :func:`chi1`, :func:`critical_weight_variance`,
  :func:`gradient_depth_scale`, :func:`mean_field_profile`; Poole et al. 2016, Schoenholz et
  al. 2017) are exact statements about the infinite-width limit; as predictions for a finite
  network they are approximations (they also assume the backward weights are independent of
  the forward ones, the "gradient independence" assumption); :func:`rnn_mean_field_profile`
  applies the same recursion to a vanilla RNN through time.
* :func:`residual_stack` — the mean square through a dense ReLU / linear residual stack at
  infinite width (Hanin & Rolnick 2018): approximate, the log of the mean square.
* :func:`lstm_cell_path` — exact for the cell path alone (``∂c_T/∂c_0`` through the forget gates)
  when the gate pre-activations are as stated; the full LSTM Jacobian has other paths too.
"""

from __future__ import annotations

from gradlab.theory._chains import (
    beta,
    chain,
    gaussian_linear,
    orthogonal_linear,
    relu_gaussian,
    relu_large_width,
)
from gradlab.theory._gaussian import MEAN_FIELD_ACTIVATIONS, gaussian_expectation
from gradlab.theory._mean_field import (
    chi1,
    correlation_depth_scale,
    critical_weight_variance,
    gradient_depth_scale,
    q_map,
    q_star,
)
from gradlab.theory._profile import mean_field_profile
from gradlab.theory._recurrent import lstm_cell_path, rnn_mean_field_profile
from gradlab.theory._residual import residual_stack
from gradlab.theory._results import CellPath, LogNormRatio

__all__ = [
    "MEAN_FIELD_ACTIVATIONS",
    "CellPath",
    "LogNormRatio",
    "beta",
    "chain",
    "chi1",
    "correlation_depth_scale",
    "critical_weight_variance",
    "gaussian_expectation",
    "gaussian_linear",
    "gradient_depth_scale",
    "lstm_cell_path",
    "mean_field_profile",
    "orthogonal_linear",
    "q_map",
    "q_star",
    "relu_gaussian",
    "relu_large_width",
    "residual_stack",
    "rnn_mean_field_profile",
]
