"""Tests of gradlab.theory: closed forms against independent computations and Monte Carlo.

Statistical tests are z-tests with fixed seeds: a sample mean must lie within Z = 4 standard
errors of the prediction (two-sided false-alarm rate 6e-5 per test), the standard error being
the predicted standard deviation over sqrt(N); a sample variance must lie within Z standard
errors of a sample variance, sqrt((m4 - s^4 (N-3)/(N-1)) / N), with m4 the sample fourth
central moment.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate as si
from scipy.special import digamma, expit, polygamma
from scipy.stats import binom

from gradlab import theory
from gradlab._errors import InputError

Z = 4.0


def assert_mean(samples: np.ndarray, mean: float, std: float, z: float = Z) -> None:
    n = samples.size
    se = std / math.sqrt(n)
    got = float(np.mean(samples))
    assert abs(got - mean) < z * se, f"mean {got:.5f} vs {mean:.5f} (SE {se:.2e}, N={n})"


def assert_variance(samples: np.ndarray, variance: float, z: float = Z) -> None:
    n = samples.size
    s2 = float(np.var(samples, ddof=1))
    m4 = float(np.mean((samples - samples.mean()) ** 4))
    se = math.sqrt(max(m4 - s2**2 * (n - 3) / (n - 1), 0.0) / n)
    assert abs(s2 - variance) < z * se, f"variance {s2:.5f} vs {variance:.5f} (SE {se:.2e})"


# --------------------------------------------------------------------------- the lecture


def test_chain_is_the_lecture_numbers():
    assert theory.chain(1.1, 150) == pytest.approx(1.6177178e6, rel=1e-6)
    assert theory.chain(0.9, 150) == pytest.approx(1.3689147e-7, rel=1e-6)
    np.testing.assert_allclose(theory.chain(2.0, np.arange(4)), [1, 2, 4, 8])


def test_orthogonal_linear_is_gain_to_the_depth():
    r = theory.orthogonal_linear(np.array([0, 10, 150]), gain=1.1)
    np.testing.assert_allclose(r.typical_norm_ratio, 1.1 ** np.array([0, 10, 150]), rtol=1e-12)
    assert r.exact and np.all(r.variance == 0)
    with pytest.raises(InputError, match="gain"):
        theory.orthogonal_linear(3, gain=0.0)


@pytest.mark.slow
def test_orthogonal_monte_carlo_is_exact_in_float64():
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(0), 150)
        q = jax.vmap(lambda k: jax.random.orthogonal(k, 16, dtype=jnp.float64))(keys)
        g = jax.random.normal(jax.random.key(1), (16,), jnp.float64)
        out = jax.lax.fori_loop(0, 150, lambda i, v: 1.1 * q[i].T @ v, g)
        ratio = float(jnp.linalg.norm(out) / jnp.linalg.norm(g))
    expected = float(theory.orthogonal_linear(150, 1.1).typical_norm_ratio)
    assert ratio == pytest.approx(expected, rel=1e-10)


# --------------------------------------------------------------------------- Gaussian linear


def test_gaussian_linear_matches_scipy_closed_form():
    for n, s2, depth in [(1, 1.0, 1), (16, 1.21, 150), (64, 0.81, 7)]:
        r = theory.gaussian_linear(depth, n, s2)
        mean = depth * (math.log(s2) + digamma(n / 2) + math.log(2 / n))
        assert float(r.mean) == pytest.approx(mean, rel=1e-12)
        assert float(r.variance) == pytest.approx(depth * polygamma(1, n / 2), rel=1e-12)
        assert r.exact


def _linear_chain_log_ratios(key, n_samples, depth, width, sigma, transpose):
    """ln ||W_L ... W_1 g||^2 / ||g||^2 for Gaussian N(0, sigma^2/width) layers."""

    def one(k):
        kg, kw = jax.random.split(k)
        g = jax.random.normal(kg, (width,))
        ws = sigma / math.sqrt(width) * jax.random.normal(kw, (depth, width, width))

        def step(v, w):
            return (w.T @ v if transpose else w @ v), None

        out, _ = jax.lax.scan(step, g, ws)
        return jnp.log(jnp.sum(out**2)) - jnp.log(jnp.sum(g**2))

    return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(key, n_samples)), np.float64)


@pytest.mark.slow
@pytest.mark.parametrize("transpose", [False, True], ids=["forward", "backward"])
def test_gaussian_linear_monte_carlo(transpose):
    depth, width, sigma, n = 10, 8, 1.1, 4000
    r = theory.gaussian_linear(depth, width, sigma**2)
    x = _linear_chain_log_ratios(jax.random.key(2), n, depth, width, sigma, transpose)
    assert_mean(x, float(r.mean), float(r.std))
    assert_variance(x, float(r.variance))


@pytest.mark.slow
def test_gaussian_mean_square_is_the_lecture_chain():
    """E[||out||^2/||in||^2] = sigma^(2L) exactly, although the typical value is smaller."""
    depth, width, sigma, n = 10, 8, 1.1, 4000
    x = _linear_chain_log_ratios(jax.random.key(3), n, depth, width, sigma, False)
    ratio = np.exp(x)
    assert_mean(ratio, sigma ** (2 * depth), float(np.std(ratio, ddof=1)))
    assert float(theory.gaussian_linear(depth, width, sigma**2).typical_norm_ratio) < sigma**depth


# --------------------------------------------------------------------------- ReLU


def test_relu_gaussian_matches_direct_binomial_sum():
    n, depth, s2 = 12, 7, 2.0
    k = np.arange(1, n + 1)
    p = binom.pmf(k, n, 0.5) / (1 - 0.5**n)
    layer = np.log(s2 / n) + np.log(2) + digamma(k / 2)
    m = np.sum(p * layer)
    v = np.sum(p * polygamma(1, k / 2)) + np.sum(p * (layer - m) ** 2)
    r = theory.relu_gaussian(depth, n, s2)
    assert float(r.mean) == pytest.approx(depth * m, rel=1e-12)
    assert float(r.variance) == pytest.approx(depth * v, rel=1e-12)
    assert float(r.p_zero) == pytest.approx(1 - (1 - 0.5**n) ** depth, rel=1e-12)


def _relu_log_ratios(key, n_samples, depth, width, backward):
    """ln of the squared-norm ratio through `depth` He-initialised ReLU layers (zero bias)."""

    def one(k):
        kx, kg, kw = jax.random.split(k, 3)
        ws = math.sqrt(2.0 / width) * jax.random.normal(kw, (depth, width, width))
        h0 = jax.random.normal(kx, (width,))

        def fwd(h, w):
            z = w @ h
            return jnp.maximum(z, 0.0), (z > 0)

        h, masks = jax.lax.scan(fwd, h0, ws)
        if not backward:
            return jnp.log(jnp.sum(h**2)) - jnp.log(jnp.sum(h0**2))
        g_top = jax.random.normal(kg, (width,))

        def bwd(g, wm):
            w, m = wm
            return w.T @ (g * m), None

        g, _ = jax.lax.scan(bwd, g_top, (ws, masks), reverse=True)
        return jnp.log(jnp.sum(g**2)) - jnp.log(jnp.sum(g_top**2))

    return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(key, n_samples)), np.float64)


@pytest.mark.slow
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_relu_gaussian_monte_carlo_exact_law(backward):
    """The exact finite-width law, forward and (for a random readout) backward."""
    depth, width, n = 10, 6, 20000
    r = theory.relu_gaussian(depth, width)
    x = _relu_log_ratios(jax.random.key(4 + backward), n, depth, width, backward)
    finite = x[np.isfinite(x)]
    # dead networks: binomial count, z-test on the proportion
    p0 = float(r.p_zero)
    dead = n - finite.size
    assert abs(dead - n * p0) < Z * math.sqrt(n * p0 * (1 - p0)), (dead, n * p0)
    assert_mean(finite, float(r.mean), float(r.std))
    assert_variance(finite, float(r.variance))


def test_relu_large_width_is_the_leading_order_of_the_exact_law():
    """exact - approximation shrinks like 1/n^2 per layer: doubling n divides it by ~4."""
    errs = []
    for n in (200, 400, 800):
        exact, approx = theory.relu_gaussian(1, n), theory.relu_large_width(1, n)
        errs.append((float(exact.mean - approx.mean), float(exact.variance - approx.variance)))
    for (m1, v1), (m2, v2) in itertools.pairwise(errs):
        assert 3.5 < m1 / m2 < 4.5
        assert 3.5 < v1 / v2 < 4.5


def test_beta():
    assert theory.beta(64, depth=150) == pytest.approx(150 / 64)
    assert theory.beta([10, 20]) == pytest.approx(0.15)
    r = theory.relu_large_width(0, [10, 20, 20])
    assert float(r.variance) == pytest.approx(1.0)
    with pytest.raises(InputError, match="depth"):
        theory.beta(64)


# --------------------------------------------------------------------------- mean field


def _quad(fn, q):
    f = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi) * fn(math.sqrt(q) * z)
    return si.quad(f, -12, 12, points=[0.0], limit=400, epsabs=1e-14, epsrel=1e-12)[0]


@pytest.mark.parametrize("q", [1e-3, 0.5, 3.0, 40.0])
def test_gaussian_expectation_matches_adaptive_quadrature(q):
    sech4 = lambda u: 1.0 / math.cosh(u) ** 4
    tanh2 = lambda u: math.tanh(u) ** 2
    for fn, vec in [(sech4, lambda u: 1 / np.cosh(u) ** 4), (tanh2, lambda u: np.tanh(u) ** 2)]:
        assert float(theory.gaussian_expectation(vec, q)) == pytest.approx(_quad(fn, q), rel=1e-10)


@pytest.mark.parametrize("sw,sb", [(0.5, 0.0), (1.5, 0.05), (4.0, 0.2), (2.5, 0.0)])
def test_q_star_is_the_limit_of_the_q_map(sw, sb):
    q_star = float(theory.q_star(sw, sb))
    assert float(theory.q_map(q_star, sw, sb)) == pytest.approx(q_star, abs=1e-12)
    q = 1.0
    for _ in range(2000):
        q = float(theory.q_map(q, sw, sb))
    assert q == pytest.approx(q_star, abs=1e-8)


def test_chi1_against_quadrature_and_closed_forms():
    sw, sb = 2.0, 0.1
    q = float(theory.q_star(sw, sb))
    expected = sw * _quad(lambda u: 1 / math.cosh(u) ** 4, q)
    assert float(theory.chi1(sw, sb, "tanh")) == pytest.approx(expected, rel=1e-10)
    assert float(theory.chi1(sw, 0.3, "relu")) == pytest.approx(sw / 2)
    assert float(theory.chi1(0.7, 0.0, "linear")) == pytest.approx(0.7)
    assert float(theory.chi1(1.0, 0.0, "tanh")) == pytest.approx(1.0)


def test_critical_line():
    sb = np.array([0.0, 0.01, 0.05, 0.1, 0.3])
    sw = theory.critical_weight_variance("tanh", sb)
    assert sw[0] == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(theory.chi1(sw, sb, "tanh"), 1.0, atol=1e-9)
    assert np.all(np.diff(sw) > 0)
    np.testing.assert_allclose(theory.critical_weight_variance("relu", sb), 2.0)
    np.testing.assert_allclose(theory.critical_weight_variance("linear", sb), 1.0)


def test_depth_scales():
    assert float(theory.gradient_depth_scale(0.9, 0.0, "linear")) == pytest.approx(
        -1 / math.log(0.9)
    )
    assert float(theory.gradient_depth_scale(3.0, 0.0, "relu")) < 0  # chaotic: explodes
    assert math.isinf(float(theory.gradient_depth_scale(1.0, 0.0, "tanh")))  # critical
    # ordered phase: the correlation scale equals the gradient scale
    assert theory.correlation_depth_scale(0.5, 0.0) == pytest.approx(
        float(theory.gradient_depth_scale(0.5, 0.0))
    )
    xi_c = theory.correlation_depth_scale(2.5, 0.1)
    assert 0 < xi_c < math.inf


def test_unsupported_activation_has_a_clear_error():
    with pytest.raises(InputError, match=r"Unsupported activation 'softsign'.*tanh"):
        theory.chi1(1.0, 0.0, "softsign")
    with pytest.raises(InputError, match="supports"):
        theory.correlation_depth_scale(1.0, 0.0, "relu")


def test_mean_field_profile_power_law_at_lecun():
    """LeCun + tanh, zero bias: q_l ~ 1/(2l), so ||g_l||^2/||g_L||^2 ~ l/L (not exponential)."""
    depth = 400
    r = theory.mean_field_profile(depth, 1.0, 0.0, "tanh", input_q=1.0)
    ratio = np.exp(r.mean)
    assert ratio[-1] == 1.0
    assert ratio[200] == pytest.approx(0.5, abs=0.02)
    assert ratio[100] == pytest.approx(0.25, abs=0.02)


def test_mean_field_relu_correction_is_the_exact_law_to_leading_order():
    width, depth = 256, 50
    r = theory.mean_field_profile(depth, 2.0, 0.0, "relu", input_q=1.0, width=width)
    exact = theory.relu_gaussian(depth, width)
    assert r.mean[0] == pytest.approx(float(exact.mean), rel=0.02)
    assert r.variance[0] == pytest.approx(float(exact.variance), rel=0.02)


@pytest.mark.slow
def test_chi1_monte_carlo_one_layer():
    """chi1 is E over a random layer of ||D W^T g||^2/||g||^2 at the fixed point (z-test)."""
    sw, sb, width, n = 1.8, 0.05, 32, 3000
    q = float(theory.q_star(sw, sb))
    chi = float(theory.chi1(sw, sb))

    def one(k):
        kz, kw, kg = jax.random.split(k, 3)
        z = math.sqrt(q) * jax.random.normal(kz, (width,))
        w = math.sqrt(sw / width) * jax.random.normal(kw, (width, width))
        g = jax.random.normal(kg, (width,))
        return jnp.sum((w.T @ (g * (1 - jnp.tanh(z) ** 2))) ** 2) / jnp.sum(g**2)

    x = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(7), n)), np.float64)
    assert_mean(x, chi, float(np.std(x, ddof=1)))


# --------------------------------------------------------------------------- residual


def test_residual_stack_closed_forms():
    he = theory.residual_stack(150, weight_variance=2.0, branch_scale=1.0)
    assert float(he.mean) == pytest.approx(150 * math.log(3.0), rel=1e-12)  # c = 2**2 / 2
    assert not he.exact and float(he.variance) == 0.0
    rezero = theory.residual_stack(150, branch_scale=0.0)
    assert rezero.exact and float(rezero.mean) == 0.0
    fixup = theory.residual_stack(150, branch_scale=150**-0.5)
    assert float(fixup.mean) == pytest.approx(150 * math.log1p(2.0 / 150), rel=1e-12)
    linear = theory.residual_stack(4, weight_variance=1.5, branch_scale=0.5, activation="linear")
    assert float(linear.mean) == pytest.approx(4 * math.log1p(0.25 * 1.5**2), rel=1e-12)
    with pytest.raises(InputError, match="activation='relu'"):
        theory.residual_stack(10, activation="tanh")
    with pytest.raises(InputError, match="weight_variance"):
        theory.residual_stack(10, weight_variance=-1.0)


def test_residual_stack_linear_monte_carlo():
    """Linear branches: E||g_(l-1)||^2 = (1 + a^2 s^4) ||g_l||^2 exactly at any width (the
    cross term has mean 0), so the mean of ||g_0||^2/||g_L||^2 is exp(mean) of the law.
    Z-test with the sample standard error of the ratio."""
    n, depth, alpha, s2, samples = 16, 3, 0.5, 1.2, 4000
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, depth, samples, n, n)) * math.sqrt(s2 / n)
    g = rng.standard_normal((samples, n))
    g_last = np.sum(g**2, axis=1)
    for layer in range(depth):  # g <- g (I + alpha W2^T W1^T)
        branch = np.einsum("si,sji,skj->sk", g, w[1, layer], w[0, layer])
        g = g + alpha * branch
    ratio = np.sum(g**2, axis=1) / g_last
    expected = math.exp(float(theory.residual_stack(depth, s2, alpha, "linear").mean))
    assert_mean(ratio, expected, float(np.std(ratio, ddof=1)))


# --------------------------------------------------------------------------- LSTM


def test_lstm_cell_path_closed_forms():
    p = theory.lstm_cell_path(100, forget_bias=1.0)
    assert p.typical == pytest.approx(expit(1.0) ** 100, rel=1e-12)
    assert p.mean == pytest.approx(expit(1.0) ** 100, rel=1e-12)
    q = theory.lstm_cell_path(50, forget_bias=2.0, preactivation_std=1.5)
    assert q.typical < q.mean  # Jensen
    assert q.typical < expit(2.0) ** 50  # Jensen again: ln sigmoid is concave
    rng = np.random.default_rng(0)
    z = 2.0 + 1.5 * rng.standard_normal(200_000)
    x = -np.logaddexp(0.0, -z)
    assert_mean(x, q.per_step_log, float(np.std(x)))


@pytest.mark.slow
def test_lstm_cell_path_on_gradlab_lstm():
    """dc_T/dc_0 is diag(prod_t f_t) when the gates do not read the state (zero recurrent
    kernel); with zero inputs the product is exactly sigmoid(b_f)^T, with Gaussian inputs
    each unit's E[ln f] is E[ln sigmoid(b_f + s_j z)], s_j the norm of its input weights."""
    from flax import nnx

    from gradlab import init, nn

    T, H, D, B = 30, 4, 5, 256
    lstm = nn.LSTM(D, H, forget_bias=1.5, recurrent_init=init.zeros, rngs=nnx.Rngs(0))
    apply_fn, params = nn.pure(lstm)
    with_gates, _ = nn.pure(lstm, method="with_gates")
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        c0 = jnp.zeros((1, H), jnp.float64)
        a0 = jnp.zeros((1, H), jnp.float64)
        zeros = jnp.zeros((1, T, D), jnp.float64)
        c_T = lambda c: apply_fn(params, zeros, initial_state=(c, a0))[1][0][0]
        jac = jax.jacfwd(c_T)(c0)[:, 0, :]
        np.testing.assert_allclose(
            jac, np.eye(H) * theory.lstm_cell_path(T, 1.5).typical, rtol=1e-12
        )
        xs = jax.random.normal(jax.random.key(0), (B, T, D), jnp.float64)
        _, _, gates = with_gates(params, xs)
        log_f = np.log(np.asarray(gates["forget"]))  # (B, T, H), independent over B and T
        kernel = np.asarray(params["kernel"][...])
        s = np.linalg.norm(kernel[:, H : 2 * H], axis=0)  # forget block is the second
    for j in range(H):
        pred = theory.lstm_cell_path(1, 1.5, float(s[j])).per_step_log
        assert_mean(log_f[:, :, j].ravel(), pred, float(np.std(log_f[:, :, j])))


def test_gradient_depth_scale_is_infinite_on_the_whole_critical_line():
    # chi1 at the bisected critical sigma_w^2 is 1 only up to round-off (|ln chi1| ~ 1e-16);
    # the depth scale there is infinite, and 1e-6 off the line it is finite and large
    # (|xi| ~ 1/(|d chi1/d sigma_w^2| * 1e-6) > 1e5 layers).
    sb = np.array([0.01, 0.05, 0.3])
    crit = theory.critical_weight_variance("tanh", sb)
    assert np.all(np.isinf(theory.gradient_depth_scale(crit, sb, "tanh")))
    near = theory.gradient_depth_scale(crit * (1 + 1e-6), sb, "tanh")
    assert np.all(np.isfinite(near)) and np.all(np.abs(near) > 1e5) and np.all(near < 0)
