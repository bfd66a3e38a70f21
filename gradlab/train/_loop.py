"""The training loop: a jit-compiled optax step, run as a chunked ``lax.scan`` over steps."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradlab._errors import InputError
from gradlab.train._history import History
from gradlab.train._norms import layer_grad_norms, layer_names
from gradlab.train._options import TrainOptions

__all__ = ["DataStream", "LossFn", "Optimizer", "stack_trees", "train", "train_many"]

Array = jax.Array

LossFn: TypeAlias = Callable[[Any, Any], Any]
"""``loss_fn(params, batch) -> loss`` or ``-> (loss, {name: scalar})``.

The loss is a scalar; the optional dict (for example ``{"accuracy": acc}``) holds scalars
logged at every step in :attr:`History.metrics`.

Example:
    >>> import jax.numpy as jnp
    >>> def loss_fn(params, batch):
    ...     x, y = batch
    ...     err = x @ params["w"] - y
    ...     return jnp.mean(err**2), {"max_error": jnp.max(jnp.abs(err))}
    >>> loss, metrics = loss_fn({"w": jnp.ones(2)}, (jnp.ones((3, 2)), jnp.zeros(3)))
    >>> float(loss), sorted(metrics)
    (4.0, ['max_error'])
"""

DataStream: TypeAlias = Callable[[jax.Array], Any]
"""``data_stream(key) -> batch``: a pure function drawing one batch from a random key.

Step ``t`` of :func:`train` calls it with ``jax.random.fold_in(key, t)``; the tasks of
:mod:`gradlab.train.tasks` become data streams with :func:`functools.partial`.

Example:
    >>> import functools, jax
    >>> from gradlab.train import tasks
    >>> data = functools.partial(tasks.adding_problem, batch=4, length=10)
    >>> x, y = data(jax.random.key(0))
    >>> x.shape, y.shape
    ((4, 10, 2), (4, 1))
"""

Optimizer: TypeAlias = optax.GradientTransformation | Callable[[Any], optax.GradientTransformation]
"""An optax transformation, or ``hparams -> transformation`` when ``hparams`` are given.

The second form lets :func:`train_many` vary a setting across runs inside one program: the
hyper-parameters are traced values, one per run.

Example:
    >>> import optax
    >>> fixed = optax.sgd(0.1)               # train(..., fixed, ...)
    >>> by_rate = lambda lr: optax.sgd(lr)   # train_many(..., by_rate, ..., hparams=rates)
    >>> isinstance(by_rate(0.1), optax.GradientTransformation)
    True
"""


def stack_trees(trees: Sequence[Any]) -> Any:
    """Stacks pytrees of one structure along a new leading axis (for :func:`train_many`).

    >>> import jax.numpy as jnp
    >>> stack_trees([{"w": jnp.zeros(2)}, {"w": jnp.ones(2)}])["w"].shape
    (2, 2)
    """
    if not trees:
        raise InputError(
            "stack_trees: need at least one tree; pass a non-empty list of pytrees of one "
            "structure, e.g. [params_seed0, params_seed1]."
        )
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _optimizer(optimizer: Optimizer, hparams: Any, clip: float | None) -> Any:
    """The optax transformation of one run, with clipping in front when ``clip`` is set."""
    if hparams is None:
        opt: Any = optimizer
    elif isinstance(optimizer, optax.GradientTransformation):
        raise InputError(
            "hparams were given but optimizer is already an optax.GradientTransformation; pass "
            "a function of the hparams instead, e.g. optimizer=lambda lr: optax.sgd(lr), or "
            "drop hparams."
        )
    else:
        opt = optimizer(hparams)
    if not isinstance(opt, optax.GradientTransformation):
        hint = "" if hparams is None else " (called with hparams)"
        raise InputError(
            f"optimizer{hint} must give an optax.GradientTransformation, got "
            f"{type(opt).__name__}; pass e.g. optax.sgd(0.1), or with hparams a function "
            "lambda h: optax.sgd(h['lr'])."
        )
    return opt if clip is None else optax.chain(optax.clip_by_global_norm(clip), opt)


def _split_loss(out: Any) -> tuple[Array, dict[str, Array]]:
    """``(loss, metrics)`` from what ``loss_fn`` returned; the loss must be a scalar."""
    loss, metrics = out if isinstance(out, tuple) else (out, {})
    loss = jnp.asarray(loss)
    try:
        chex.assert_shape(loss, ())
    except AssertionError as e:
        raise InputError(
            f"loss_fn must return a scalar (or (scalar, metrics)), got shape {loss.shape}; "
            "reduce it, e.g. with jnp.mean."
        ) from e
    return loss, dict(metrics)


@functools.partial(jax.jit, static_argnames=("optimizer", "options", "batched"))
def _init_state(
    params: Any, hparams: Any, *, optimizer: Any, options: TrainOptions, batched: bool
) -> Any:
    """The optimizer state of every run (one program, vmapped over runs when batched)."""
    init = lambda p, h: _optimizer(optimizer, h, options.clip_norm).init(p)
    if batched:
        init = jax.vmap(init, in_axes=(0, None if hparams is None else 0))
    return init(params, hparams)


def _run_chunk(
    carry: tuple[Any, Any, Array],
    key: Array,
    hparams: Any,
    start: Array,
    total: Array,
    *,
    loss_fn: LossFn,
    data_stream: DataStream,
    optimizer: Any,
    options: TrainOptions,
    batched: bool,
) -> tuple[tuple[Any, Any, Array], dict[str, Any]]:
    """Runs steps ``start .. start + chunk - 1``; steps >= ``total`` leave the state as it is."""
    layer_steps = jnp.asarray(options.layer_steps, jnp.int32)
    k = len(options.layer_steps)

    def one_run(carry: tuple[Any, Any, Array], key: Array, hparams: Any) -> Any:
        opt = _optimizer(optimizer, hparams, options.clip_norm)
        value_and_grad = jax.value_and_grad(lambda p, b: _split_loss(loss_fn(p, b)), has_aux=True)

        def step(carry: tuple[Any, Any, Array], t: Array) -> tuple[Any, dict[str, Any]]:
            params, opt_state, buf = carry
            batch = data_stream(jax.random.fold_in(key, t))
            (loss, metrics), grads = value_and_grad(params, batch)
            updates, new_opt_state = opt.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            if k:
                _, norms = layer_grad_norms(
                    grads, group_by=options.group_by, stacked=options.stacked
                )
                i = jnp.minimum(jnp.searchsorted(layer_steps, t), k - 1)
                hit = layer_steps[i] == t
                buf = jnp.where(hit, buf.at[i].set(norms.astype(buf.dtype)), buf)
            new = (new_params, new_opt_state, buf)
            active = t < total
            carry = jax.tree.map(lambda n, o: jnp.where(active, n, o), new, carry)
            logs = {
                "loss": loss,
                "grad_norm": optax.tree.norm(grads),
                "update_norm": optax.tree.norm(updates),
                "metrics": metrics,
            }
            return carry, logs

        return jax.lax.scan(step, carry, start + jnp.arange(options.chunk))

    if batched:
        one_run = jax.vmap(one_run, in_axes=(0, 0, None if hparams is None else 0))
    return one_run(carry, key, hparams)


_STATIC = ("loss_fn", "data_stream", "optimizer", "options", "batched")
_run_chunk_jit = jax.jit(_run_chunk, static_argnames=_STATIC)
_run_chunk_fast = jax.jit(
    _run_chunk, static_argnames=_STATIC, compiler_options={"xla_backend_optimization_level": 0}
)


def _progress(enabled: bool | None, chunks: int, description: str) -> Any:
    from rich.console import Console
    from rich.progress import Progress

    console = Console()
    if enabled is None:
        enabled = console.is_terminal and chunks > 1
    return Progress(console=console, disable=not enabled, transient=True)


def _check_inputs(params: Any, steps: int, options: TrainOptions) -> None:
    """Raises :class:`~gradlab.InputError` for a bad step count or non-float params."""
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise InputError(f"steps must be an integer >= 1, got {steps!r}; pass e.g. steps=100.")
    if options.layer_steps and options.layer_steps[-1] >= steps:
        raise InputError(
            f"TrainOptions.layer_steps {options.layer_steps} has steps >= steps={steps}; "
            f"log at steps 0..{steps - 1}."
        )
    leaves = jax.tree.leaves(params)
    try:
        chex.assert_type(leaves, float)
        floats = bool(leaves)
    except AssertionError:
        floats = False
    if not floats:
        raise InputError(
            "params must be a non-empty pytree of floating-point arrays; cast integer leaves "
            "with .astype(jnp.float32) or move them out of params."
        )


def _run_chunks(
    carry: Any, key: Array, hparams: Any, steps: int, static: dict[str, Any]
) -> tuple[Any, list[dict[str, Any]]]:
    """Calls the compiled chunk program until ``steps`` steps are done, moving a progress bar."""
    options: TrainOptions = static["options"]
    run_chunk = _run_chunk_fast if options.fast_compile else _run_chunk_jit
    chunks = -(-steps // options.chunk)
    logs = []
    with _progress(options.progress, chunks, options.description) as bar:
        task = bar.add_task(options.description, total=steps)
        for c in range(chunks):
            start = jnp.asarray(c * options.chunk, jnp.int32)
            carry, log = run_chunk(carry, key, hparams, start, jnp.asarray(steps), **static)
            logs.append(log)
            if not bar.disable:
                jax.block_until_ready(log["loss"])
                bar.update(task, completed=min((c + 1) * options.chunk, steps))
    return carry, logs


def _fit(
    loss_fn: LossFn,
    params: Any,
    data_stream: DataStream,
    optimizer: Optimizer,
    steps: int,
    key: Array,
    hparams: Any,
    options: TrainOptions,
    batched: bool,
) -> tuple[Any, History]:
    example = jax.tree.map(lambda x: x[0], params) if batched else params
    _check_inputs(example, steps, options)
    names = layer_names(example, group_by=options.group_by, stacked=options.stacked)
    runs = (jax.tree.leaves(params)[0].shape[0],) if batched else ()
    k = len(options.layer_steps)
    buf = jnp.zeros((*runs, k, len(names)), jnp.result_type(*jax.tree.leaves(example)))
    opt_state = _init_state(params, hparams, optimizer=optimizer, options=options, batched=batched)
    static = dict(loss_fn=loss_fn, data_stream=data_stream, optimizer=optimizer, options=options,
                  batched=batched)  # fmt: skip
    carry, logs = _run_chunks((params, opt_state, buf), key, hparams, steps, static)
    final_params, _, buf = carry
    axis = 1 if batched else 0
    log = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=axis)[..., :steps], *logs)
    history = History(
        loss=log["loss"],
        grad_norm=log["grad_norm"],
        update_norm=log["update_norm"],
        metrics=log["metrics"],
        layer_steps=jnp.broadcast_to(jnp.asarray(options.layer_steps, jnp.int32), (*runs, k)),
        layer_norms=buf,
        layer_names=names,
    )
    return final_params, history


def train(
    loss_fn: LossFn,
    params: Any,
    data_stream: DataStream,
    optimizer: Optimizer,
    steps: int,
    key: Array,
    *,
    hparams: Any = None,
    options: TrainOptions | None = None,
) -> tuple[Any, History]:
    """Trains ``params`` for ``steps`` optax steps; pure, on any pytree.

    Step ``t`` draws ``batch = data_stream(jax.random.fold_in(key, t))``, computes the loss
    and gradient of ``loss_fn(params, batch)``, and applies the optimizer's update. The steps
    run as a ``lax.scan`` inside one jit-compiled program of ``options.chunk`` steps, called
    once per chunk (so a progress bar can move); the program is compiled once and cached for
    the same ``loss_fn``, ``data_stream``, ``optimizer`` and ``options`` objects.

    Args:
        loss_fn: ``(params, batch) -> loss`` or ``-> (loss, {name: scalar})``.
        params: the initial parameters, any pytree of float arrays.
        data_stream: ``key -> batch``, a pure function (see :mod:`gradlab.train.tasks`).
        optimizer: an ``optax.GradientTransformation`` (schedules included), or, with
            ``hparams``, a function ``hparams -> GradientTransformation``.
        steps: number of steps.
        key: the random key of the data stream.
        hparams: a pytree passed to ``optimizer`` (traced, so :func:`train_many` can vary it).
        options: :class:`TrainOptions` (clipping, logging, progress).

    Returns:
        ``(final_params, history)``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> loss = lambda p, b: jnp.mean((b * p["w"] - 2 * b) ** 2)
        >>> data = lambda key: jax.random.normal(key, (8,))
        >>> p, h = train(loss, {"w": jnp.array(0.0)}, data, optax.sgd(0.1), 50,
        ...              jax.random.key(0))
        >>> round(float(p["w"]), 3), h.loss.shape
        (2.0, (50,))
    """
    return _fit(loss_fn, params, data_stream, optimizer, steps, key, hparams,
                options or TrainOptions(), batched=False)  # fmt: skip


def train_many(
    loss_fn: LossFn,
    params: Any,
    data_stream: DataStream,
    optimizer: Optimizer,
    steps: int,
    keys: Array,
    *,
    hparams: Any = None,
    options: TrainOptions | None = None,
) -> tuple[Any, History]:
    """:func:`train` for many runs at once, ``vmap`` ped: seeds, initialisations, settings.

    Every leaf of ``params`` and of ``hparams``, and ``keys``, has a leading run axis of the
    same size ``n``; run ``i`` is ``train(loss_fn, params[i], data_stream, optimizer, steps,
    keys[i], hparams=hparams[i])``. Returns the final parameters and a :class:`History`, both
    with the leading run axis.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> loss = lambda p, b: jnp.mean((b * p - 2 * b) ** 2)
        >>> data = lambda key: jax.random.normal(key, (8,))
        >>> lrs = jnp.array([0.0, 0.1])
        >>> p, h = train_many(loss, jnp.zeros(2), data, lambda lr: optax.sgd(lr), 50,
        ...                   jax.random.split(jax.random.key(0), 2), hparams=lrs)
        >>> [round(float(x), 3) for x in p], h.loss.shape
        ([0.0, 2.0], (2, 50))
    """
    leaves = jax.tree.leaves(params)
    if not leaves or any(jnp.ndim(x) == 0 for x in leaves):
        raise InputError(
            "train_many: every leaf of params needs a leading run axis; stack the runs' params "
            "with stack_trees([params_0, params_1, ...])."
        )
    try:
        chex.assert_equal_shape_prefix([*leaves, *jax.tree.leaves(hparams), keys], prefix_len=1)
    except AssertionError as e:
        sizes = sorted({jnp.shape(x)[:1] for x in [*leaves, *jax.tree.leaves(hparams), keys]})
        raise InputError(
            f"train_many: params, keys and hparams must share the leading run axis; got leading "
            f"axes {sizes}. Stack runs with stack_trees and split keys with "
            "jax.random.split(key, n)."
        ) from e
    return _fit(loss_fn, params, data_stream, optimizer, steps, keys, hparams,
                options or TrainOptions(), batched=True)  # fmt: skip
