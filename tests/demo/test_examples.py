"""The demo's deliberately broken Flax model (gradlab.demo._examples), diagnosed and fixed."""

from __future__ import annotations

import pytest
from rich.console import Console

from gradlab import theory
from gradlab.demo._examples import broken_flax_model, demo_broken_model


@pytest.mark.slow
def test_demo_broken_model():
    # 40 tanh layers of width 64 at sigma_w^2 = 4: +2.6 decades, flagged over the 2 (see
    # tests/diagnose/test_diagnose.py); LeCun, the suggested fix, is not flagged
    before, after = demo_broken_model(Console(quiet=True), depth=40, width=64)
    assert [f.kind for f in before.flags] == ["exploding"] and after.ok


def test_broken_flax_model_loss_is_scalar():
    f, v, args = broken_flax_model(depth=2, width=4, batch=2)
    assert f(v, *args).shape == ()
    assert theory.chi1(4.0, 0.0, "tanh") > 1  # the lecture's 2/sqrt(n) is chaotic for tanh
