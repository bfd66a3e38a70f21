"""Tests of gradlab.train: the loop, History, per-layer norms and the synthetic tasks."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from gradlab import InputError, losses, nn
from gradlab.train import (
    History,
    TrainOptions,
    layer_grad_norms,
    stack_trees,
    tasks,
    train,
    train_many,
)
from gradlab.train._loop import _progress

DATA = functools.partial(tasks.gaussian_mixture, batch=16, dim=3)


def _mlp(seed: int, depth: int = 3):
    model = nn.MLP(3, 1, width=8, depth=depth, activation="relu", rngs=nnx.Rngs(seed))
    return nn.pure(model)


APPLY, _ = _mlp(0)


def _bce(params, batch):
    x, y = batch
    logits = APPLY(params, x)[:, 0]
    return losses.binary_cross_entropy(logits, y), {"accuracy": jnp.mean((logits > 0) == y)}


MOMENTUM = optax.sgd(0.05, momentum=0.9)
# fast_compile: the lowest XLA optimisation level, same numbers, several times faster to build
OPTS = TrainOptions(
    chunk=4, layer_steps=(0, 9), stacked=("w_hidden", "b_hidden"), fast_compile=True
)
STEPS = 10  # three chunks of 4, the last one partial (two masked steps)
SEEDS = (0, 1, 2)
KEYS = jax.random.split(jax.random.key(7), len(SEEDS))


@pytest.fixture(scope="module")
def one_by_one():
    """Each seed trained on its own: ``[(init_params, final_params, history)]``."""
    runs = []
    for i, s in enumerate(SEEDS):
        p = _mlp(s)[1]
        runs.append((p, *train(_bce, p, DATA, MOMENTUM, STEPS, KEYS[i], options=OPTS)))
    return runs


@pytest.mark.slow
def test_vmapped_seeds_equal_one_by_one(one_by_one):
    params = stack_trees([p for p, _, _ in one_by_one])
    batch_p, batch_h = train_many(_bce, params, DATA, MOMENTUM, STEPS, KEYS, options=OPTS)
    chex.assert_shape([batch_h.loss, batch_h.grad_norm, batch_h.update_norm], (len(SEEDS), STEPS))
    chex.assert_shape(batch_h.layer_norms, (len(SEEDS), 2, len(batch_h.layer_names)))
    # float32 sums in a batched matmul may be ordered differently: agree to rounding.
    close = functools.partial(chex.assert_trees_all_close, rtol=2e-5, atol=1e-6)
    for i, (_, p_i, h_i) in enumerate(one_by_one):
        close(jax.tree.map(lambda a, i=i: a[i], batch_p), p_i)
        close(jax.tree.map(lambda a, i=i: a[i], batch_h), h_i)
    # the runs differ from each other, so equality above is not trivial
    assert not np.allclose(batch_h.loss[0], batch_h.loss[1])


@pytest.mark.slow
def test_train_equals_the_textbook_loop(one_by_one):
    params, final, hist = one_by_one[0]
    opt_state = MOMENTUM.init(params)

    @jax.jit
    def step(p, s, batch):
        (loss, _), g = jax.value_and_grad(_bce, has_aux=True)(p, batch)
        updates, s = MOMENTUM.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    p, losses_ = params, []
    for t in range(STEPS):
        p, opt_state, loss = step(p, opt_state, DATA(jax.random.fold_in(KEYS[0], t)))
        losses_.append(loss)
    chex.assert_trees_all_close(hist.loss, jnp.stack(losses_), rtol=1e-5)
    chex.assert_trees_all_close(final, p, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_vmapped_hyperparameters():
    _, p = _mlp(0)
    lrs = jnp.array([0.0, 0.1])
    opt = lambda lr: optax.sgd(lr)
    keys = jnp.stack([jax.random.key(0)] * 2)
    options = dataclasses.replace(OPTS, layer_steps=())
    final, hist = train_many(
        _bce, stack_trees([p, p]), DATA, opt, 5, keys, hparams=lrs, options=options
    )
    np.testing.assert_array_equal(final["w_in"][0], p["w_in"])  # lr 0 leaves params unchanged
    assert not np.allclose(final["w_in"][1], p["w_in"])
    np.testing.assert_allclose(hist.update_norm[0], 0.0)
    np.testing.assert_allclose(hist.update_norm[1], 0.1 * hist.grad_norm[1], rtol=1e-5)


@pytest.mark.slow
def test_clipping_bounds_the_update_norm():
    _, p = _mlp(0)
    lr, clip = 1.0, 0.05
    sgd = optax.sgd(lr)
    _, free = train(_bce, p, DATA, sgd, STEPS, jax.random.key(0), options=OPTS)
    assert float(jnp.max(free.update_norm)) > 2 * lr * clip  # clipping has work to do
    opts = dataclasses.replace(OPTS, clip_norm=clip)
    _, clipped = train(_bce, p, DATA, sgd, STEPS, jax.random.key(0), options=opts)
    assert float(jnp.max(clipped.update_norm)) <= lr * clip * (1 + 1e-5)
    # grad_norm logs the norm before clipping; the update is the clipped gradient times lr
    big = clipped.grad_norm > clip
    assert bool(big.any())
    np.testing.assert_allclose(clipped.update_norm[big], lr * clip, rtol=1e-5)


@pytest.mark.slow
def test_a_step_compiles_once():
    traces = []

    def loss_fn(params, batch):
        traces.append(1)  # runs only while jax traces the function
        return _bce(params, batch)

    _, p = _mlp(0)
    _, hist = train(loss_fn, p, DATA, MOMENTUM, STEPS, jax.random.key(0), options=OPTS)
    assert hist.loss.shape == (STEPS,)
    assert len(traces) == 1  # three chunks, one trace
    train(loss_fn, p, DATA, MOMENTUM, 13, jax.random.key(1), options=OPTS)  # other steps, key
    assert len(traces) == 1


@pytest.mark.slow
def test_layer_norms_logged_at_chosen_steps(one_by_one):
    params, _, hist = one_by_one[0]
    assert hist.layer_norms.shape == (2, len(hist.layer_names))
    assert "w_hidden[2]" in hist.layer_names and "w_in" in hist.layer_names
    batch = DATA(jax.random.fold_in(KEYS[0], 0))
    grads = jax.grad(lambda q: _bce(q, batch)[0])(params)
    expected = np.sqrt(np.sum(np.square(grads["w_hidden"]), axis=(1, 2)))
    got = np.array([hist.layer(f"w_hidden[{i}]")[0] for i in range(3)])
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # the whole-gradient norm is the root sum of squares of the layer norms, at both steps
    np.testing.assert_allclose(
        np.sqrt(np.sum(np.square(hist.layer_norms), axis=1)),
        np.asarray(hist.grad_norm)[[0, 9]],
        rtol=1e-5,
    )
    assert not np.allclose(hist.layer_norms[0], hist.layer_norms[1])


def test_layer_grad_norms_groups():
    g = {"a": {"x": jnp.ones((2, 2)), "y": jnp.ones(2)}, "s": jnp.arange(6.0).reshape(3, 2)}
    names, norms = layer_grad_norms(g, stacked={"s"})
    assert names == ("a", "s[0]", "s[1]", "s[2]")
    np.testing.assert_allclose(norms, [math.sqrt(6), 1.0, math.sqrt(13), math.sqrt(41)])
    with pytest.raises(InputError, match="same leading"):
        layer_grad_norms({"s": {"a": jnp.ones((3, 2)), "b": jnp.ones(2)}}, stacked={"s"})


def test_history_to_dict_is_json():
    h = History(
        jnp.array([1.0, jnp.nan]),
        jnp.array([1.0, jnp.inf]),
        jnp.zeros(2),
        {"accuracy": jnp.array([0.5, 1.0])},
        jnp.array([0]),
        jnp.ones((1, 2)),
        ("a", "b"),
    )
    d = json.loads(json.dumps(h.to_dict(), allow_nan=False))
    assert d["loss"] == [1.0, None] and d["grad_norm"] == [1.0, None]
    assert d["layer_names"] == ["a", "b"] and d["metrics"]["accuracy"] == [0.5, 1.0]
    with pytest.raises(InputError, match="logged layers"):
        h.layer("c")


@pytest.mark.slow
def test_bad_input_errors():
    _, p = _mlp(0)
    key = jax.random.key(0)
    with pytest.raises(InputError, match="steps must be"):
        train(_bce, p, DATA, MOMENTUM, 0, key)
    with pytest.raises(InputError, match="layer_steps"):
        train(_bce, p, DATA, MOMENTUM, 3, key, options=TrainOptions(layer_steps=(5,)))
    with pytest.raises(InputError, match="scalar"):
        train(lambda q, b: APPLY(q, b[0]), p, DATA, MOMENTUM, 2, key)
    with pytest.raises(InputError, match="GradientTransformation"):
        train(_bce, p, DATA, lambda h: 0.1, 2, key, hparams=jnp.array(0.1))
    with pytest.raises(InputError, match="function of the hparams"):
        train(_bce, p, DATA, MOMENTUM, 2, key, hparams=jnp.array(0.1))
    with pytest.raises(InputError, match="floating-point"):
        train(_bce, {"w": jnp.arange(3)}, DATA, MOMENTUM, 2, key)
    with pytest.raises(InputError, match="leading run axis"):
        train_many(_bce, stack_trees([p, p]), DATA, MOMENTUM, 2, jax.random.split(key, 3))
    with pytest.raises(InputError, match="clip_norm"):
        TrainOptions(clip_norm=-1.0)
    with pytest.raises(InputError, match="increasing"):
        TrainOptions(layer_steps=(3, 1))
    with pytest.raises(InputError, match="stacked"):
        TrainOptions(stacked="w_hidden")
    with pytest.raises(InputError, match="at least one tree"):
        stack_trees([])


def test_progress_bar_off_when_not_a_terminal():
    assert _progress(None, 10, "x").disable  # pytest captures stdout: not a terminal
    assert not _progress(True, 10, "x").disable


# ----------------------------------------------------------------- tasks and their baselines
N = 20_000


@pytest.mark.slow
def test_adding_baseline_is_one_sixth():
    x, y = tasks.adding_problem(jax.random.key(0), batch=N, length=20)
    chex.assert_shape([x, y], [(N, 20, 2), (N, 1)])
    marks = np.asarray(x[..., 1])
    assert (marks[:, :10].sum(1) == 1).all() and (marks[:, 10:].sum(1) == 1).all()
    mse = float(losses.mse(jnp.ones_like(y), y))
    # (s - 1)^2 for s a sum of two U[0,1]: mean 1/6, variance E[u^4] - 1/36 = 1/15 - 1/36;
    # allow 5 standard errors of the mean over N samples.
    tol = 5 * math.sqrt((1 / 15 - 1 / 36) / N)
    assert abs(mse - tasks.ADDING_BASELINE) < tol


@pytest.mark.slow
def test_copy_baseline_is_the_memoryless_loss():
    T, c = 12, 10
    x, y = tasks.copy_task(jax.random.key(0), batch=64, length=T)
    chex.assert_shape([x, y], [(64, T + 2 * c, 10), (64, T + 2 * c)])
    np.testing.assert_array_equal(y[:, -c:], x[:, :c].argmax(-1))
    assert (x[:, T + c - 1].argmax(-1) == 9).all()  # the delimiter
    # memoryless strategy: certain blank for T + c steps, uniform over the 8 symbols after
    blank = jnp.array([0.0] + [-1e4] * 9)
    guess = jnp.array([-1e4] + [0.0] * 8 + [-1e4])
    logits = jnp.concatenate([jnp.tile(blank, (64, T + c, 1)), jnp.tile(guess, (64, c, 1))], 1)
    np.testing.assert_allclose(tasks.copy_loss(logits, y), tasks.copy_baseline(T), rtol=1e-5)
    assert tasks.copy_baseline(100) == pytest.approx(10 * math.log(8) / 120)


@pytest.mark.slow
def test_gaussian_mixture_bayes_accuracy_and_baseline():
    sep = 2.0
    x, y = tasks.gaussian_mixture(jax.random.key(1), batch=N, dim=5, separation=sep)
    acc = float(jnp.mean((x.sum(-1) > 0) == y))  # the Bayes classifier: sign(x . m)
    p = tasks.gaussian_mixture_bayes_accuracy(sep)
    assert abs(acc - p) < 5 * math.sqrt(p * (1 - p) / N)  # 5 binomial standard errors
    assert abs(float(jnp.mean(y)) - 0.5) < 5 * math.sqrt(0.25 / N)
    half = losses.binary_cross_entropy(jnp.zeros_like(y), y)
    assert float(half) == pytest.approx(tasks.BCE_BASELINE, rel=1e-6)


@pytest.mark.slow
def test_two_spirals_classes_are_interleaved():
    x, y = tasks.two_spirals(jax.random.key(0), batch=2000, noise=0.0)
    r = np.linalg.norm(np.asarray(x), axis=1)
    assert r.max() <= 1.0 + 1e-6
    # rotating a class-0 point by pi lands on class 1's spiral: the classes' mean points are
    # opposite, and no half-plane separates them (a linear probe stays near chance)
    w, *_ = np.linalg.lstsq(np.c_[np.asarray(x), np.ones(2000)], 2 * np.asarray(y) - 1)
    lin_acc = np.mean((np.c_[np.asarray(x), np.ones(2000)] @ w > 0) == np.asarray(y))
    assert lin_acc < 0.75


def test_task_argument_errors():
    with pytest.raises(InputError, match="length must be"):
        tasks.adding_problem(jax.random.key(0), batch=2, length=1)
    with pytest.raises(InputError, match="batch must be"):
        tasks.copy_task(jax.random.key(0), batch=0, length=3)


@pytest.mark.slow
@pytest.mark.parametrize("module", ["gradlab.train._loop", "gradlab.train._tasks"])
def test_constant_docstring_examples_run(module):
    """The examples of documented constants and type aliases (doctest does not collect them)."""
    import ast
    import doctest
    import importlib

    mod = importlib.import_module(module)
    tree = ast.parse(Path(mod.__file__).read_text())
    ran = 0
    for stmt, nxt in zip(tree.body, tree.body[1:], strict=False):
        doc = getattr(nxt, "value", None)
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(doc, ast.Constant)):
            continue
        test = doctest.DocTestParser().get_doctest(
            str(doc.value), dict(vars(mod)), ast.unparse(stmt.target), mod.__file__, 0
        )
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert runner.failures == 0, f"{test.name}: its example fails"
        ran += bool(test.examples)
    assert ran >= 2  # LossFn, DataStream, Optimizer; BCE_BASELINE, ADDING_BASELINE
