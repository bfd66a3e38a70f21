"""Layer-by-layer mean-field gradient profile of a deep network: :func:`mean_field_profile`."""

from __future__ import annotations

import numpy as np

from gradlab.theory._checks import _check_width
from gradlab.theory._gaussian import _activation, gaussian_expectation
from gradlab.theory._mean_field import _chi_at, q_map
from gradlab.theory._results import LogNormRatio


def mean_field_profile(
    depth: int,
    weight_variance: float = 1.0,
    bias_variance: float = 0.0,
    activation: str = "tanh",
    *,
    input_q: float = 1.0,
    width: int | None = None,
    orthogonal: bool = False,
) -> LogNormRatio:
    """Predicted ``ln(‖∂L/∂h_l‖²/‖∂L/∂h_depth‖²)`` for ``l = 0..depth`` (mean field).

    The hidden states are ``h_0 = φ(z_0)``, ``h_l = φ(h_{l−1} W_l + b_l)``; ``input_q`` is the
    variance of ``z_0``'s entries. The length map gives ``q_l`` for ``l = 1..depth`` and the
    backward step through layer ``l`` multiplies ``E‖g‖²`` by ``χ(q_l) = σ_w² E[φ'(√q_l z)²]``
    (gradient independence), so the infinite-width mean of the log-ratio at layer ``l`` is
    ``Σ_{k=l+1}^{depth} ln χ(q_k)``. Unlike :func:`chi1` this follows the transient of ``q_l``:
    at ``σ_w² = 1, σ_b² = 0`` (LeCun + tanh), ``q_l ≈ 1/(2l)`` and gradients decay like a power
    law, ``‖g_l‖²/‖g_depth‖² ≈ l/depth``, not exponentially.

    With ``width=n`` a leading-order finite-width correction is added per layer: the squared
    norm is multiplied by ``σ²/n·χ²_n`` times ``Σ_j φ'(z_j)² ĝ_j²`` with ``ĝ`` uniform on the
    sphere, whose log has mean ``ln χ − (1 + 3κ/2)/n`` and variance ``(2 + 3κ)/n`` with
    ``κ = Var[φ'²]/E[φ'²]²`` (for ReLU ``κ = 1``, recovering ``−5/(2n)`` and ``5/n``). With
    ``orthogonal=True`` (scaled orthogonal weights, an exact isometry) the ``χ²_n`` part drops
    and what is left is mean ``ln χ − 3κ/(2n)``, variance ``3κ/n``. Approximate: it ignores the
    fluctuations of ``q_l`` at finite width.

    The same recursion describes a vanilla RNN ``a_t = φ(x_t W + a_{t−1} U)`` through time: the
    fresh input term acts as a bias of variance ``input_q`` at every step, so use
    ``bias_variance=input_q`` and ``depth=T−1`` (see :func:`rnn_mean_field_profile`).

    Args:
        depth: number of hidden layers.
        weight_variance: ``σ_w²`` of the hidden layers.
        bias_variance: ``σ_b²``.
        activation: one of :data:`MEAN_FIELD_ACTIVATIONS`.
        input_q: variance of the first pre-activation ``z_0``.
        width: if given, include the ``1/width`` correction to mean and variance.
        orthogonal: the weights are scaled orthogonal matrices (``weight_variance = gain²``).

    Returns:
        A :class:`LogNormRatio` whose arrays have length ``depth + 1`` (index ``l``; the last
        entry is 0).

    >>> r = mean_field_profile(100, 1.0, 0.0, "tanh", input_q=1.0)
    >>> round(float(np.exp(r.mean[50])), 2)  # ≈ 50/100: a power law, not exponential
    0.5
    """
    _, dphi = _activation(activation)
    sw, sb = float(weight_variance), float(bias_variance)
    depth = int(depth)
    qs = np.empty(depth)
    q = float(input_q)
    for i in range(depth):
        q = float(q_map(q, sw, sb, activation))
        qs[i] = q
    chis = _chi_at(qs, np.full_like(qs, sw), activation)
    with np.errstate(divide="ignore"):
        log_chi = np.log(chis)
    step_mean = log_chi
    step_var = np.zeros_like(qs)
    if width is not None:
        n = _check_width(width)
        if activation in ("relu",):
            kappa = np.ones_like(qs)
        elif activation == "linear":
            kappa = np.zeros_like(qs)
        else:
            e2 = gaussian_expectation(lambda u: dphi(u) ** 2, qs)
            e4 = gaussian_expectation(lambda u: dphi(u) ** 4, qs)
            kappa = e4 / e2**2 - 1.0
        chi2_part = 0.0 if orthogonal else 1.0
        step_mean = log_chi - (chi2_part + 1.5 * kappa) / n
        step_var = (2.0 * chi2_part + 3.0 * kappa) / n
    # entry l sums the steps through layers l+1..depth (qs[l:]).
    mean = np.concatenate([np.cumsum(step_mean[::-1])[::-1], [0.0]])
    var = np.concatenate([np.cumsum(step_var[::-1])[::-1], [0.0]])
    return LogNormRatio(
        mean=mean,
        variance=var,
        exact=False,
        note=(
            f"mean field, {activation}, {'orthogonal ' if orthogonal else ''}σ_w²={sw:g}, "
            f"σ_b²={sb:g}" + (f", 1/n correction at width {width}" if width else ", infinite width")
        ),
    )
