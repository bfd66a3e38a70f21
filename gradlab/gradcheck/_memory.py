"""How many perturbations to evaluate at once: a chunk size from a memory budget."""

from __future__ import annotations

import os

import jax

__all__ = ["default_budget", "plan_chunk"]

_CPU_BUDGET = 24 << 20


def _host_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_budget(device: jax.Device | None = None) -> int:
    """A memory budget for the perturbation batches of one device, in bytes.

    Half of what an accelerator reports it can hold. On a CPU, 24 MiB: XLA:CPU allocates a
    kernel's temporary buffer on every call, and above glibc's largest mmap threshold
    (32 MiB) each call maps and zero-fills fresh pages — 0.4–2.6 million page faults and
    2–2.5× the time of a check (``docs/benchmarks.md``, "Chunk size and memory budget";
    budgets of 24–32 MiB were fastest at every width measured).

    Example:
        >>> default_budget() > 0
        True
    """
    device = device or jax.local_devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # some backends do not implement memory_stats
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0)) // 2
    avail = _host_available_bytes()
    cpu_budget = _CPU_BUDGET if avail is None else min(_CPU_BUDGET, avail // 4)
    return max(cpu_budget, 1 << 20)


def plan_chunk(
    n_entries: int,
    bytes_per_evaluation: int,
    budget: int,
    max_chunk: int,
    multiple_of: int = 1,
) -> int:
    """The number of entries per chunk (each entry costs two evaluations, ``+h`` and ``-h``).

    Args:
        n_entries: Entries in the leaf.
        bytes_per_evaluation: Memory one evaluation of ``f`` needs, from XLA's analysis.
        budget: Bytes one chunk may use.
        max_chunk: Upper bound on the chunk (diminishing returns beyond it).
        multiple_of: Round the chunk to a multiple of this (the number of devices).

    The chunks of a leaf are balanced (``ceil(n / ceil(n / c))``) so that padding the last
    one wastes less than one entry per chunk.

    Returns:
        A chunk size in ``[multiple_of, max(n_entries, multiple_of)]``.

    Example:
        >>> plan_chunk(10_000, bytes_per_evaluation=1 << 20, budget=256 << 20, max_chunk=4096)
        127
        >>> plan_chunk(10, bytes_per_evaluation=1, budget=1 << 30, max_chunk=4096)
        10
    """
    per_entry = 2 * max(1, bytes_per_evaluation)
    chunk = max(1, min(budget // per_entry, max_chunk, n_entries))
    n_chunks = -(-n_entries // chunk) if n_entries else 1
    chunk = max(1, -(-n_entries // n_chunks))
    if multiple_of > 1:
        chunk = max(multiple_of, (chunk // multiple_of) * multiple_of)
    return int(chunk)
