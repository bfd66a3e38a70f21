"""Where the perturbation batches run: one device, all local devices, or several processes.

Entries are sharded over a 1-D mesh of devices (axis ``"entries"``); the function's arguments
are replicated. With several JAX processes (``jax.distributed``), the mesh spans every
process's devices and each process computes the shard on its own devices; the results are
gathered so that every process builds the full report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gradlab.gradcheck.errors import CheckInputError

__all__ = ["Runner", "compile_concurrently"]


class Runner:
    """Runs the perturbation kernels of :mod:`~gradlab.gradcheck._kernels` over devices."""

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
        if self.multiprocess:
            out = multihost_utils.process_allgather(out, tiled=True)
        return jax.tree_util.tree_map(np.asarray, out)


def compile_concurrently(lowered: Sequence[Any]) -> list[Any]:
    """Compiles lowered computations on a thread per core.

    XLA compiles a computation on one thread and releases the GIL meanwhile, so the kernels
    of a check (one per leaf) compile side by side. Each compiled executable lands in JAX's
    compilation cache, where the ordinary jitted calls of the check find it.
    """
    if len(lowered) <= 1:
        return [low.compile() for low in lowered]
    workers = min(len(lowered), os.cpu_count() or 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="gradlab-compile") as pool:
        return list(pool.map(lambda low: low.compile(), lowered))
