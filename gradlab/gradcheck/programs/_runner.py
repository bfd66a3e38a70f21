"""Where the perturbation batches run: one device, all local devices, or several processes.

Entries are sharded over a 1-D mesh of devices (axis ``"entries"``); the function's arguments
are replicated. With several JAX processes (``jax.distributed``), the mesh spans every
process's devices and each process computes the shard on its own devices; the results are
gathered so that every process builds the full report.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gradlab import _jax_compat
from gradlab._errors import CheckInputError
from gradlab.gradcheck.programs import _stored
from gradlab.gradcheck.programs._cache import jax_cache_off
from gradlab.gradcheck.programs._scope import forgets
from gradlab.gradcheck.programs._tier import TIER_OPTIONS, Tier

__all__ = [
    "CHEAP_FLOPS",
    "UPGRADE",
    "Executable",
    "Items",
    "Runner",
    "compile_fresh",
    "compile_tier",
    "compile_tiered",
    "executable_key",
    "lookup",
]


#: A program whose run is estimated below this many FLOPs (all its calls together) compiles
#: at the ``CHEAP`` tier, per platform: 2e7 FLOPs run in 0.04–0.5 s there (dense layers about
#: 0.5 GFLOP/s, convolutions 0.04). Other platforms were not measured: they always compile
#: optimised.
CHEAP_FLOPS = {"cpu": 2e7}
#: A cheaply compiled kernel may be compiled again optimised when its calls still to run,
#: timed by the first one, would take more than this many times its cheap compile time
#: (the optimised compile costs about twice the cheap one and runs ≥ 3× faster). None (the
#: default): never. A decision taken on a timing makes the check's numbers depend on the
#: machine's load in their last bits (the two programs round differently), and the same
#: check on one device and on several must give identical numbers
#: (``tests/gradcheck/test_devices.py``); with :data:`CHEAP_FLOPS` keeping cheap kernels under
#: ~0.5 s of run, the upgrade would rarely pay anyway.
UPGRADE: float | None = None
_MAX_EXECUTABLES = 256


class Runner:
    """Runs the perturbation kernels (:mod:`~gradlab.gradcheck.evaluation._kernels`) on devices."""

    def __init__(self, devices: Sequence[jax.Device] | None) -> None:
        if devices is None:
            devices = jax.devices() if jax.process_count() > 1 else jax.local_devices()[:1]
        devices = list(devices)
        if not devices:
            raise CheckInputError("devices is empty; pass None or a list of jax devices.")
        if len({d.platform for d in devices}) > 1:
            raise CheckInputError(
                "devices mixes platforms "
                f"({sorted({d.platform for d in devices})}); pass devices of one kind."
            )
        self.devices = devices
        self.multiprocess = len({d.process_index for d in devices}) > 1
        self.mesh = Mesh(np.array(devices), ("entries",)) if len(devices) > 1 else None

    @property
    def n_devices(self) -> int:
        """How many devices share the perturbations (chunks are a multiple of this)."""
        return len(self.devices)

    def _put(self, x: Any, spec: PartitionSpec) -> jax.Array:
        assert self.mesh is not None
        sharding = NamedSharding(self.mesh, spec)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    def replicate(self, tree: Any) -> Any:
        """Places every array of ``tree`` on all devices (a no-op on one device)."""
        if self.mesh is None:
            return tree
        return jax.tree_util.tree_map(lambda x: self._put(x, PartitionSpec()), tree)

    def shard(self, batch: Any) -> Any:
        """Places ``batch``'s arrays sharded on their first axis (a no-op on one device)."""
        if self.mesh is None:
            return batch
        return jax.tree_util.tree_map(lambda b: self._put(b, PartitionSpec("entries")), batch)

    def lower(
        self,
        kernel: Callable[..., Any],
        static: tuple[Any, ...],
        dyn: tuple[Any, ...],
        batch: tuple[Any, ...],
    ) -> Any:
        """``kernel`` lowered for these arguments, as :meth:`run` would call it."""
        return kernel.lower(*static, *dyn, *self.shard(batch))  # type: ignore[attr-defined]

    def run(
        self,
        kernel: Callable[..., Any],
        static: tuple[Any, ...],
        dyn: tuple[Any, ...],
        batch: tuple[Any, ...],
    ) -> Any:
        """``kernel(*static, *dyn, *batch)`` with ``batch``'s arrays sharded on their first axis.

        Returns the kernel's outputs as host arrays (gathered from every process).
        """
        out = kernel(*static, *dyn, *self.shard(batch))
        return self._gather(out)

    def run_compiled(self, compiled: Any, dyn: tuple[Any, ...], batch: tuple[Any, ...]) -> Any:
        """Like :meth:`run` for a compiled executable (its static arguments are bound)."""
        return self._gather(compiled(*dyn, *self.shard(batch)))

    def _gather(self, out: Any) -> Any:
        if self.multiprocess:
            out = multihost_utils.process_allgather(out, tiled=True)
        return jax.tree_util.tree_map(np.asarray, out)


def compile_tier(platform: str, flops: float, *, convolutions: int = 0, loops: int = 0) -> Tier:
    """The :class:`Tier` of a program estimated at ``flops`` (all its runs) on ``platform``.

    ``convolutions`` and ``loops``: how many the checked function holds (so every program
    of a check is judged by the same ones). A program with a convolution never compiles ``CHEAP``
    (unoptimised, XLA:CPU runs convolutions 26× slower); one with a loop compiles ``FULL``
    unless it is cheap (XLA:CPU's fusion emitters run loops faster).

    Example:
        >>> compile_tier("cpu", 1e5), compile_tier("cpu", 1e12), compile_tier("gpu", 1e5)
        (<Tier.CHEAP: 'cheap'>, <Tier.QUICK: 'quick'>, <Tier.FULL: 'full'>)
        >>> compile_tier("cpu", 1e5, convolutions=1), compile_tier("cpu", 1e12, loops=1)
        (<Tier.QUICK: 'quick'>, <Tier.FULL: 'full'>)
    """
    limit = CHEAP_FLOPS.get(platform)
    if limit is None:
        return Tier.FULL
    if flops < limit and not convolutions:
        return Tier.CHEAP
    return Tier.FULL if loops else Tier.QUICK


def _compile(low: Any, tier: Tier) -> tuple[Any, float]:
    start = time.perf_counter()
    out = _compile_with(low, TIER_OPTIONS[tier])
    return out, time.perf_counter() - start


#: Options of :data:`TIER_OPTIONS` that this jaxlib's XLA rejected (dropped from then on).
_UNKNOWN_OPTIONS: set[str] = set()
_UNKNOWN_OPTION = re.compile(r"No such compile option: '([A-Za-z0-9_]+)'")


def _compile_with(low: Any, wanted: dict[str, Any]) -> Any:
    """``low`` compiled with the options of ``wanted`` this XLA knows.

    XLA removes debug options between releases (jaxlib 0.11 has no
    ``xla_cpu_use_fusion_emitters``) and rejects an unknown one; such an option is dropped
    and the compile retried.
    """
    options = {k: v for k, v in wanted.items() if k not in _UNKNOWN_OPTIONS}
    while True:
        try:
            return low.compile(options) if options else low.compile()
        except jax.errors.JaxRuntimeError as err:
            match = _UNKNOWN_OPTION.search(str(err))
            if match is None or match.group(1) not in options:
                raise
            _UNKNOWN_OPTIONS.add(match.group(1))
            del options[match.group(1)]


def compile_fresh(lower: Callable[[], Any], tier: Tier) -> Any:
    """What ``lower`` lowers, compiled at ``tier`` and kept nowhere (a program without a key)."""
    return _compile(lower(), tier)[0]


def _lower_and_compile(
    todo: Sequence[int], lowerers: Sequence[Callable[[], Any]], tiers: Sequence[Tier]
) -> dict[int, tuple[Any, Any, float]]:
    """Lowers the programs ``todo`` in turn, each compiled on a worker thread meanwhile.

    XLA compiles a program on one thread and releases the GIL, so the programs of a check
    compile side by side, on a thread per core, while this thread traces and lowers the
    next (Python, under the GIL). Returns ``{i: (lowered, compiled, compile seconds)}``.
    """
    if len(todo) <= 1:  # nothing to overlap
        done = {}
        for i in todo:
            low = lowerers[i]()
            done[i] = (low, *_compile(low, tiers[i]))
        return done
    workers = min(len(todo), os.cpu_count() or 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="gradlab-compile") as pool:
        pending = {}
        for i in todo:
            low = lowerers[i]()
            pending[i] = (low, pool.submit(_compile, low, tiers[i]))
        return {i: (low, *job.result()) for i, (low, job) in pending.items()}


@dataclasses.dataclass
class Executable:
    """A compiled kernel of a check and how it was compiled.

    Attributes:
        compiled: The executable (called with the dynamic arguments only).
        lowered: What it was compiled from, kept while it may be compiled again optimised.
        tier: How it was compiled (:class:`Tier`).
        seconds: How long compiling it took.
        timed: Its first run was timed (whether to compile it optimised is decided).
        loaded: Loaded from disk (:mod:`._stored`).
    """

    compiled: Any
    lowered: Any | None
    tier: Tier
    seconds: float
    timed: bool = False
    loaded: bool = False

    @property
    def cheap(self) -> bool:
        """Compiled at the ``CHEAP`` tier."""
        return self.tier is Tier.CHEAP

    def upgrade_if_it_pays(
        self,
        run_seconds: float,
        calls_left: int,
        factor: float | None = None,
        to: Tier = Tier.FULL,
    ) -> bool:
        """Compiles at tier ``to`` if the calls still to run would outweigh the compile.

        Only a ``CHEAP`` executable, and only when ``calls_left`` runs of ``run_seconds``
        cost more than ``factor`` (default :data:`UPGRADE`; None: never) times its compile.
        Returns whether it compiled.
        """
        factor = UPGRADE if factor is None else factor
        self.timed = True
        lowered, self.lowered = self.lowered, None
        if not self.cheap or lowered is None or factor is None:
            return False
        if calls_left * run_seconds <= factor * self.seconds:
            return False
        self.compiled, self.seconds = _compile(lowered, to)
        self.tier = to
        return True


#: Compiled kernels by (kernel, static arguments, argument types): a second check of the same
#: function in one process compiles nothing (JAX's own cache does not hold executables
#: compiled with options). ``jax.clear_caches()`` empties it, as it empties JAX's caches.
_EXECUTABLES: collections.OrderedDict[Any, Executable] = collections.OrderedDict()


class _Clearer:
    """What ``jax.clear_caches()`` calls to empty :data:`_EXECUTABLES`."""

    def cache_clear(self) -> None:
        """Forgets every executable kept."""
        _EXECUTABLES.clear()


@forgets
def clear_executables() -> None:
    """Forgets every executable kept in this process."""
    _EXECUTABLES.clear()


_CLEARER = _Clearer()
_jax_compat.register_cache(_CLEARER, "gradlab.gradcheck executables")


def _avals(tree: Any) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(
        (tuple(x.shape), str(x.dtype), getattr(x, "sharding", None)) for x in leaves
    )


def executable_key(kernel: Any, static: tuple[Any, ...], dyn: Any, batch: Any) -> Any:
    """The key of a kernel's executable for these arguments (hashable)."""
    return kernel, static, _avals(dyn), _avals(batch)


def lookup(key: Any) -> Executable | None:
    """The executable compiled for ``key``, or None."""
    try:
        hit = _EXECUTABLES.get(key)
    except TypeError:  # an unhashable static argument: no executable cache
        return None
    if hit is not None:
        _EXECUTABLES.move_to_end(key)
    return hit


def _keep(key: Any, made: Executable) -> None:
    try:
        _EXECUTABLES[key] = made
    except TypeError:  # an unhashable static argument
        return
    while len(_EXECUTABLES) > _MAX_EXECUTABLES:
        _EXECUTABLES.popitem(last=False)


def compile_tiered(
    keys: Sequence[Any],
    lowerers: Sequence[Callable[[], Any]],
    tiers: Sequence[Tier],
    stored: Sequence[str | None] | None = None,
    device: jax.Device | None = None,
) -> list[Executable]:
    """Compiles side by side what ``lowerers`` lower, each at its :class:`Tier`, by key.

    Executables already kept under their key in this process are reused: nothing is lowered
    or compiled. ``stored``: each program's key on disk (:mod:`._stored`; None: not kept
    there), on ``device``: a program found there is loaded instead of lowered and compiled,
    and a program compiled here is written there.
    """
    found = [lookup(k) for k in keys]
    on_disk = list(stored) if stored is not None else [None] * len(keys)
    for i, name in enumerate(on_disk):
        if found[i] is None and name is not None and device is not None:
            start = time.perf_counter()
            compiled = _stored.load(name, device)
            if compiled is not None:
                loaded = Executable(
                    compiled, None, tiers[i], time.perf_counter() - start, loaded=True
                )
                found[i] = loaded
                _keep(keys[i], loaded)
    todo = [i for i, e in enumerate(found) if e is None]
    kept = [i for i in todo if on_disk[i] is not None]
    done: dict[int, tuple[Any, Any, float]] = {}
    if kept:  # compiled afresh, never taken from JAX's cache (see jax_cache_off)
        with jax_cache_off():
            done.update(_lower_and_compile(kept, lowerers, tiers))
    done.update(_lower_and_compile([i for i in todo if on_disk[i] is None], lowerers, tiers))
    for i in todo:
        lowered, compiled, seconds = done[i]
        name = on_disk[i]
        if name is not None and not _stored.calls_out(lowered):
            _stored.store(name, compiled)
        cheap = tiers[i] is Tier.CHEAP
        made = Executable(compiled, lowered if cheap else None, tiers[i], seconds)
        found[i] = made
        _keep(keys[i], made)
    return [e for e in found if e is not None]


class Items(NamedTuple):
    """Programs to compile together: in-process keys, lowerers, tiers and disk keys."""

    keys: list[Any]
    lowerers: list[Callable[[], Any]]
    tiers: list[Tier]
    stored: list[str | None]

    def __add__(self, other: Any) -> Items:
        """Both lists of programs, to compile side by side."""
        return Items(*(a + b for a, b in zip(self, other, strict=True)))
