"""lstm-adding's batched training: every arm and seed in one program, one compile per length.

The experiment trains the four forget-gate variants and all seeds of a length as the runs of
one ``vmap`` ped program. A run's losses must be those of training that run alone (else the
batching would change the experiment), and a second call with the same arguments must reuse
the compiled program (else every call pays the compile again).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from gradlab.experiments import _lstm_adding
from gradlab.train import TrainOptions, train

CFG = dataclasses.replace(_lstm_adding.CONFIGS["tiny"], hidden=8)
T = 12
SEEDS = (1000, 1001)

# The batched and the single-run programs are compiled separately and may order float32
# reductions differently: one rounding (2**-24 relative) per reduction, carried through the
# 20 Adam steps. Measured: at most 6e-7 relative (5 ulps). 1e-5 (about 80 ulps) bounds that
# and is a thousand times below the differences between seeds or arms (1e-2 and more).
RTOL = 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("family", ["lstm", "rnn"])
def test_batched_losses_match_each_run_trained_alone(family):
    models = _lstm_adding.FORGET if family == "lstm" else ("rnn",)
    batched = _lstm_adding._train(CFG, family, T, SEEDS)
    _, loss_fn, data, optimizer = _lstm_adding._programs(CFG, family, T)
    options = TrainOptions(
        clip_norm=CFG.clip_norm, layer_steps=(), fast_compile=True, progress=False
    )
    steps = _lstm_adding.steps_for(CFG, T)
    for model in models:
        for i, seed in enumerate(SEEDS):
            params = _lstm_adding._params(CFG, model, T, seed)
            _, alone = train(
                loss_fn, params, data, optimizer, steps, jax.random.key(seed), options=options
            )
            alone_loss = np.asarray(alone.loss)
            np.testing.assert_allclose(batched[model]["loss"][i], alone_loss, rtol=RTOL)
            # the tolerance can fail: the other seed's run is far outside it
            other = batched[model]["loss"][1 - i]
            assert not np.allclose(other, alone_loss, rtol=RTOL)
    # a run does not depend on which other runs share its batch: one seed batched alone
    # (a program of another batch shape, so within RTOL, not bit for bit: XLA may order a
    # reduction differently for another batch size, as seen with jaxlib 0.10.0)
    single = _lstm_adding._train(CFG, family, T, SEEDS[1:])
    for model in models:
        np.testing.assert_allclose(single[model]["loss"][0], batched[model]["loss"][1], rtol=RTOL)


@pytest.mark.slow
def test_second_call_reuses_the_compiled_program(monkeypatch):
    traces = []
    real_loss = _lstm_adding._loss

    def counting_loss(*args):
        traces.append(1)  # runs only while JAX traces the loss, never when the program runs
        return real_loss(*args)

    monkeypatch.setattr(_lstm_adding, "_loss", counting_loss)
    _lstm_adding._programs.cache_clear()
    cfg = dataclasses.replace(CFG, batch=5)  # shapes no other test compiled
    try:
        first = _lstm_adding._train(cfg, "rnn", T, SEEDS)
        traced = len(traces)
        assert traced >= 1
        again = _lstm_adding._train(cfg, "rnn", T, SEEDS)
        assert len(traces) == traced  # no new trace, so no new compile
        np.testing.assert_array_equal(first["rnn"]["loss"], again["rnn"]["loss"])
        _lstm_adding._train(cfg, "rnn", T + 2, SEEDS)  # another length is another program
        assert len(traces) > traced
    finally:
        _lstm_adding._programs.cache_clear()
