"""Measuring a model: flatten ``(params, args)``, trace once, run one compiled program.

The program is ``vmap`` over initialisations (when an ``init`` function is given) and over
batches, so every measurement of a model is one call of one compiled function.
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab._diagnose._probe import Interpreter, measure_fn
from gradlab._diagnose._program import Program, analyse
from gradlab._errors import InputError

# The program runs once per diagnosis, so its compile time is what counts: XLA's backend
# optimisation level 0 compiles it faster (as gradlab.flow does for its ``make`` program).
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


@dataclasses.dataclass(frozen=True)
class Split:
    """A pytree split into traced array leaves and fixed leaves (functions, ints, keys)."""

    treedef: Any
    paths: tuple[Any, ...]
    traced: tuple[int, ...]  # positions of the traced leaves
    fixed: tuple[Any, ...]  # all leaves, traced ones replaced by None

    def rebuild(self, values: Sequence[Any]) -> Any:
        leaves = list(self.fixed)
        for i, v in zip(self.traced, values, strict=True):
            leaves[i] = v
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def split(tree: Any, floats_only: bool) -> tuple[Split, list[Any]]:
    """Splits ``tree``; traced leaves are float arrays (params) or any arrays (args)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    traced: list[int] = []
    fixed: list[Any] = []
    values: list[jax.Array] = []
    for i, (_, leaf) in enumerate(flat):
        is_array = isinstance(leaf, jax.Array | np.ndarray) and not jax.dtypes.issubdtype(
            leaf.dtype, jax.dtypes.prng_key
        )
        keep = is_array and (not floats_only or jnp.issubdtype(leaf.dtype, jnp.floating))
        if keep:
            traced.append(i)
            values.append(jnp.asarray(leaf))
            fixed.append(None)
        else:
            fixed.append(leaf)
    paths = tuple(flat[i][0] for i in traced)
    return Split(treedef, paths, tuple(traced), tuple(fixed)), values


@dataclasses.dataclass
class Measured:
    """Raw measurements: every array has leading axes ``(inits, batches)``.

    Attributes:
        program: the sites found in the traced program.
        param_split: how params were flattened (``paths`` name the leaves).
        values: the params leaves measured, each with a leading ``inits`` axis.
        raw: ``{"g", "h", "act", "forget", "w", "loss"}`` as numpy arrays.
        seconds: wall time (tracing, compilation and the run).
        prepared: the traced model (reused by re-measurements).
        first_args: the first batch's argument leaves.
    """

    program: Program
    param_split: Split
    values: list[np.ndarray]
    raw: dict[str, Any]
    seconds: float
    prepared: Prepared
    first_args: list[Any]

    @property
    def interp(self) -> Interpreter:
        """The interpreter of the traced program."""
        return self.prepared.interp


def _stacked_leaves(program: Program) -> frozenset[int]:
    out = set()
    for s in program.sites:
        for k in s.kernels:
            if k.stacked and any(kind == "layers" for _, kind in s.scans):
                out.add(k.leaf)
                if k.bias is not None:
                    out.add(k.bias)
    return frozenset(out)


def _compiled(one: Callable[..., Any], inits: int, batches: int) -> Callable[..., Any]:
    """One jitted program over ``(inits, batches)``; ``vmap`` only over axes longer than 1.

    Tracing under ``vmap`` costs about 3x per axis on a deep unrolled model (50 dense layers:
    1.4 s plain, 4.0 s under two ``vmap`` s), so a single init or batch is not ``vmap`` ped.
    """
    fn = one
    if batches > 1:
        fn = jax.vmap(fn, in_axes=(None, 0))
    else:
        fn = _lift(fn, in_axes=(None, 0))
    if inits > 1:
        fn = jax.vmap(fn, in_axes=(0, None))
    else:
        fn = _lift(fn, in_axes=(0, None))
    return jax.jit(fn, compiler_options=_FAST_COMPILE)


def _lift(fn: Callable[..., Any], in_axes: tuple[int | None, int | None]) -> Callable[..., Any]:
    """``fn`` on a length-1 axis without ``vmap``: index it away, add it back to the outputs."""

    def lifted(p: Any, a: Any) -> Any:
        p = p if in_axes[0] is None else [v[0] for v in p]
        a = a if in_axes[1] is None else [v[0] for v in a]
        return jax.tree.map(lambda o: o[None], fn(p, a))

    return lifted


def _check_scalar(closed: Any) -> None:
    outs = closed.out_avals
    if len(outs) != 1 or outs[0].shape != () or not jnp.issubdtype(outs[0].dtype, jnp.floating):
        got = ", ".join(f"{a.dtype}{list(a.shape)}" for a in outs)
        raise InputError(
            f"diagnose: f(params, *args) must return one float scalar (the loss), got ({got}). "
            "Wrap it: lambda p, *a: my_loss(p, *a)[0] for (loss, aux), or reduce with jnp.sum."
        )


@dataclasses.dataclass
class Prepared:
    """A traced model: its sites, interpreter and compiled programs, reusable for other params.

    The params are inputs of the traced program, so re-measuring with other values of the
    same structure (a fix applied, other initialisations) reuses the compiled program.
    """

    program: Program
    interp: Interpreter
    param_split: Split
    one: Callable[..., Any]
    programs: dict[tuple[Any, int], Callable[..., Any]] = dataclasses.field(default_factory=dict)

    def run(self, inits: int, batches: int) -> Callable[..., Any]:
        """The compiled program for ``(inits, batches)``."""
        k = (min(inits, 2), min(batches, 2))
        if k not in self.programs:
            self.programs[k] = _compiled(self.one, inits, batches)
        return self.programs[k]


def prepare(f: Callable[..., Any], params: Any, args: tuple[Any, ...]) -> Prepared:
    """Traces ``f(params, *args)`` and finds its sites."""
    psplit, pvals = split(params, floats_only=True)
    if not pvals:
        raise InputError(
            "diagnose: params has no floating-point array leaves; pass the model's weights "
            "(a dict, an NNX module or state, an equinox model) as the second argument."
        )
    asplit, avals = split(args, floats_only=False)
    n = len(pvals)

    def flat_f(*leaves: Any) -> Any:
        return f(psplit.rebuild(leaves[:n]), *asplit.rebuild(leaves[n:]))

    closed, program = analyse(flat_f, n, [*pvals, *avals])
    _check_scalar(closed)
    interp = Interpreter(closed, program)
    return Prepared(program, interp, psplit, measure_fn(interp, _stacked_leaves(program)))


_PREPARED: weakref.WeakKeyDictionary[Any, dict[Any, Prepared]] = weakref.WeakKeyDictionary()


def _signature(tree: Any) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(
        (tuple(x.shape), str(x.dtype)) if hasattr(x, "shape") else ("static", id(x)) for x in leaves
    )


def cached_prepare(f: Callable[..., Any], params: Any, args: tuple[Any, ...]) -> Prepared:
    """:func:`prepare`, cached per ``f`` (weakly) and the structure and shapes of its inputs.

    Diagnosing the same ``f`` again with other params of the same shapes (another
    initialisation, the model after some training) reuses the traced and compiled program.
    """
    try:
        per_f = _PREPARED.setdefault(f, {})
    except TypeError:  # f cannot be weakly referenced (a builtin): no cache
        return prepare(f, params, args)
    key = (_signature(params), _signature(args))
    if key not in per_f:
        per_f[key] = prepare(f, params, args)
    return per_f[key]


def _draw(init: Callable[[jax.Array], Any], seeds: int, key: int, like: list[Any]) -> list[Any]:
    keys = jax.random.split(jax.random.key(key), seeds)
    # lax.map, not vmap: the init runs once, so its compile time counts, and building a model
    # under vmap compiles several times slower (gradlab.flow's ``make`` does the same).
    one = lambda k: split(init(k), floats_only=True)[1]
    drawn = jax.jit(lambda ks: jax.lax.map(one, ks), compiler_options=_FAST_COMPILE)(keys)
    if len(drawn) != len(like) or any(
        d.shape[1:] != v.shape for d, v in zip(drawn, like, strict=True)
    ):
        raise InputError(
            "diagnose: init(key) must return params of the same structure and shapes as "
            "the params passed to diagnose; build both with the same model constructor."
        )
    return list(drawn)


def measure(
    f: Callable[..., Any],
    params: Any,
    batches: Sequence[tuple[Any, ...]],
    init: Callable[[jax.Array], Any] | None,
    seeds: int,
    key: int,
    prepared: Prepared | None = None,
    drawn: list[Any] | None = None,
) -> Measured:
    """Measures ``f`` on every init and batch (tracing it first unless ``prepared``).

    Args:
        f: ``f(params, *args) -> scalar``.
        params: params pytree (used for tracing, and measured when ``init`` is None).
        batches: argument tuples of the same structure and shapes.
        init: ``init(key) -> params`` or None.
        seeds: number of initialisations (with ``init``).
        key: seed of the initialisations.
        prepared: a :class:`Prepared` of the same ``f`` and params structure, to reuse.
        drawn: params leaves already stacked along a leading inits axis (replaces ``params``
            and ``init``).

    Returns:
        The :class:`Measured` values.
    """
    t0 = time.perf_counter()
    prep = prepared if prepared is not None else cached_prepare(f, params, batches[0])
    _, pvals = split(params, floats_only=True)
    if drawn is not None:
        stacked_p = [jnp.asarray(v) for v in drawn]
    elif init is None:
        stacked_p = [jnp.asarray(v)[None] for v in pvals]
    else:
        stacked_p = _draw(init, seeds, key, pvals)
    arg_sets = [split(b, floats_only=False)[1] for b in batches]
    stacked_a = [jnp.stack(xs) for xs in zip(*arg_sets, strict=True)]
    run = prep.run(stacked_p[0].shape[0], len(batches))
    raw = jax.device_get(run(stacked_p, stacked_a))
    raw = jax.tree.map(lambda a: np.asarray(a, dtype=np.float64), raw)
    values = [np.asarray(v) for v in stacked_p]
    seconds = time.perf_counter() - t0
    return Measured(prep.program, prep.param_split, values, raw, seconds, prep, arg_sets[0])
