"""The judging stage on its own: kinks, curvature, rounding and established agreement.

Measurements are made here in NumPy float64 from known functions, so each rule of
``gradlab.gradcheck.judging._judge`` is tested against the case where it would hide a bug.
"""

from __future__ import annotations

import numpy as np

from gradlab.gradcheck.evaluation._measured import Measured
from gradlab.gradcheck.judging._judge import SECOND_STEP, Second, judge_leaf, judge_part
from gradlab.gradcheck.judging._slopes import slopes, suspects
from gradlab.gradcheck.planning._thresholds import Thresholds

TH = Thresholds(tolerance=1e-6, kink_tolerance=1e-4, noise_factor=8.0,
                unit_roundoff=2.2e-16, max_worst=5)  # fmt: skip
H = 1e-7


def measure(f, theta, h=H):
    """``Measured`` of a separable ``f(θ) = Σ f(θ_i)`` entry by entry."""
    theta = np.asarray(theta, float)
    total = np.sum(f(theta))
    m = theta.size
    plus, minus = theta + h, theta - h
    with np.errstate(invalid="ignore", divide="ignore"):  # f outside its domain: NaN, judged
        fp = total - f(theta) + f(plus)
        fm = total - f(theta) + f(minus)
    return Measured(np.full(m, total), fp, fm, plus - theta, minus - theta)


def judged(f, theta, ana, second=True, noise=None):
    theta = np.asarray(theta, float)
    first = measure(f, theta)
    extra = None
    if second:
        at = np.flatnonzero(suspects(slopes(first, TH), TH) | True)
        m2 = measure(f, theta[at], H / SECOND_STEP)
        m2 = Measured(np.full(at.size, first.f0[0]), m2.fp, m2.fm, m2.hp, m2.hm)
        extra = Second(at, m2, at)
    part = judge_part(theta.shape, np.arange(theta.size), np.asarray(ana, float), first, TH, extra)
    return part, judge_leaf("p", theta.shape, "float64", [part], H, TH)


def test_curvature_is_not_a_kink_and_a_doubled_gradient_near_a_minimum_fails():
    # f = (θ − c)² near c: gradients ~2e-5, one-sided slopes differ by f''·h = 2e-7
    c = np.array([1.0, -0.5, 2.0])
    theta = c + 1e-5
    f = lambda t: (t - c) ** 2
    assert suspects(slopes(measure(f, theta), TH), TH).all()  # all look odd at one step
    part, row = judged(f, theta, 2 * 2 * (theta - c))
    assert part.n_kinks == 0 and row.status == "wrong"
    _, row = judged(f, theta, 2 * (theta - c))
    assert row.status == "verified"


def test_a_kink_is_confirmed_and_checked_against_its_one_sided_slopes():
    theta = np.array([0.0, 1.0, -2.0])
    f = lambda t: 3 * np.abs(t)
    for ana, status in [([0.0, 3.0, -3.0], "verified"), ([3.0, 3.0, -3.0], "verified"),
                        ([4.0, 3.0, -3.0], "wrong")]:  # fmt: skip
        part, row = judged(f, theta, ana)
        assert part.n_kinks == 1 and row.status == status, (ana, row)
    assert "not a subgradient" in row.note


def test_without_a_second_step_nothing_is_excluded():
    theta = np.array([0.0, 1.0, -2.0])
    # 3 is a valid subgradient of 3|t| at 0, but only a second step can show it is a kink
    part, row = judged(lambda t: 3 * np.abs(t), theta, [3.0, 3.0, -3.0], second=False)
    assert part.n_kinks == 0 and row.status != "verified"


def test_a_kink_between_the_two_steps_is_judged_at_the_second():
    # relu with its kink 3e-8 from θ: inside h = 1e-7, outside h/10
    theta = np.array([3e-8, 1.0])
    part, row = judged(lambda t: np.maximum(t, 0.0), theta, [1.0, 1.0])
    assert part.n_kinks == 0 and part.n_restepped == 1 and row.status == "verified"
    _, row = judged(lambda t: np.maximum(t, 0.0), theta, [0.5, 1.0])
    assert row.status == "wrong"


def test_rounding_is_not_a_kink_and_is_measured_by_the_probes():
    rng = np.random.default_rng(0)
    theta = np.linspace(0.1, 1.0, 32)
    noisy = lambda t: 1e-3 * np.sin(t) + 1e-12 * rng.standard_normal(t.shape)  # noise >> u|f|
    part, row = judged(noisy, theta, 1e-3 * np.cos(theta))
    assert part.n_kinks == 0
    # the model sees u·|f| ~ 1e-19; the probes measured ~1e-12/h: the floor reflects them
    assert row.noise_floor > 1e-3 and row.status == "unresolved"


def test_zero_equals_zero_below_resolution_is_not_agreement():
    # f's change along θ is below its last bit: num = 0 exactly, ana = 0 (a dropped gradient)
    theta = np.array([0.5, 1.0])
    f = lambda t: 1e4 + 1e-14 * t
    _, row = judged(f, theta, [0.0, 0.0])
    assert row.relative_error == 0.0 and row.status == "unresolved"


def test_entries_never_finite_leave_the_leaf_unresolved():
    theta = np.array([1e-9, 1.0])
    part, row = judged(np.log, theta, 1 / theta)
    assert part.n_nonfinite == 1 and row.status == "unresolved"
