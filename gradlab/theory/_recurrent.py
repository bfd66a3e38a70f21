"""Gradients through time: a vanilla RNN's mean-field profile and the LSTM's cell path."""

from __future__ import annotations

import math

import numpy as np

from gradlab._errors import InputError
from gradlab.theory._gaussian import gaussian_expectation
from gradlab.theory._profile import mean_field_profile
from gradlab.theory._results import CellPath, LogNormRatio


def rnn_mean_field_profile(
    steps: int,
    recurrent_variance: float = 1.0,
    input_variance: float = 1.0,
    activation: str = "tanh",
    *,
    width: int | None = None,
    orthogonal: bool = True,
) -> LogNormRatio:
    """Predicted ``ln(‖∂L/∂a_t‖²/‖∂L/∂a_T‖²)`` for ``t = 1..T`` in a vanilla RNN (mean field).

    ``a_t = φ(z_t)``, ``z_t = x_t W + a_{t−1} U`` with ``a_0 = 0``: the pre-activation variance
    follows ``q_1 = s_x²``, ``q_t = s_x² + σ_U² E[φ(√q_{t−1} z)²]`` (``s_x²`` is
    ``input_variance``, the variance of ``x_t W``), and each step back multiplies ``E‖∂L/∂a‖²``
    by ``σ_U² E[φ'(√q_t z)²]`` — exactly :func:`mean_field_profile` with the input playing the
    part of a bias. Approximate (mean field; the input-driven ``q*`` keeps ``χ < 1`` for tanh
    even with an orthogonal ``U``, which is why vanilla RNN gradients vanish through time).

    Args:
        steps: ``T``.
        recurrent_variance: ``σ_U²`` (``gain²`` for a scaled orthogonal ``U``).
        input_variance: variance of each entry of ``x_t W``.
        activation: one of :data:`MEAN_FIELD_ACTIVATIONS`.
        width: hidden size, for the ``1/width`` correction.
        orthogonal: ``U`` is scaled orthogonal (default, as in :class:`gradlab.nn.RNN`).

    Returns:
        A :class:`LogNormRatio` with arrays of length ``T`` (index ``t − 1``; last entry 0).

    >>> r = rnn_mean_field_profile(100, 1.0, 1.0)
    >>> round(float(r.log10_norm_mean[0]), 1)  # ~0.2 decades lost per step
    -19.8
    """
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps!r}; pass e.g. 100.")
    return mean_field_profile(
        steps - 1,
        recurrent_variance,
        input_variance,
        activation,
        input_q=input_variance,
        width=width,
        orthogonal=orthogonal,
    )


def lstm_cell_path(
    steps: int, forget_bias: float = 1.0, preactivation_std: float = 0.0
) -> CellPath:
    """Gradient along the LSTM's cell path: ``∂c_T/∂c_0 = Π_{t=1}^T f_t`` (elementwise).

    With ``c_t = u_t ⊙ c̃_t + f_t ⊙ c_{t−1}``, the direct path from ``c_0`` to ``c_T`` multiplies
    by the forget gates ``f_t = σ(z_t)``. If the forget pre-activations sit at the bias,
    ``z_t = b_f``, this is ``σ(b_f)^T`` exactly — 0.731^T for ``b_f = 1``, 0.5^T for ``b_f = 0``.
    If ``z_t ~ N(b_f, s²)`` independently across steps, the typical product is
    ``exp(T·E[ln σ(z)])`` (smaller: ``ln σ`` is concave) and the mean is ``(E σ(z))^T``.
    The full ``∂c_T/∂c_0`` also has paths through ``a_t`` and the gates; this is the path the
    LSTM was designed to keep open.

    Args:
        steps: ``T``.
        forget_bias: ``b_f``.
        preactivation_std: ``s``, the standard deviation of the forget pre-activations.

    Returns:
        A :class:`CellPath`.

    >>> p = lstm_cell_path(100, forget_bias=1.0)
    >>> p.typical  # sigmoid(1)**100
    2.5e-14
    >>> round(lstm_cell_path(100, forget_bias=5.0).typical, 3)
    0.511
    """
    if steps < 0:
        raise InputError(f"steps must be >= 0, got {steps!r}; pass e.g. 100.")
    if preactivation_std < 0:
        raise InputError(
            f"preactivation_std must be >= 0, got {preactivation_std!r}; pass e.g. 0.0."
        )
    b, s = float(forget_bias), float(preactivation_std)
    log_sig = lambda u: -np.logaddexp(0.0, -(u + b))
    sig = lambda u: np.exp(log_sig(u))
    per_step_log = float(gaussian_expectation(log_sig, s * s))
    mean_gate = float(gaussian_expectation(sig, s * s))
    return CellPath(
        typical=math.exp(steps * per_step_log),
        mean=mean_gate**steps,
        per_step_log=per_step_log,
    )
