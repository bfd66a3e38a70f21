"""What a check's programs cost: memory (a chunk size from a budget) and FLOPs from jaxprs."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax

__all__ = ["Cost", "default_budget", "plan_chunk", "program_cost"]

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


@dataclasses.dataclass(frozen=True)
class Cost:
    """What one evaluation of a program costs, estimated from its jaxpr (no compile).

    Attributes:
        flops: Floating-point operations: ``2·m·n·k`` per product, the window for a
            convolution, one per output entry for everything else, a loop's body times its
            length.
        bytes: Working memory: the two largest intermediate arrays (within a few tens of
            per cent of XLA's temporary plus output bytes of a forward pass, measured on the
            benchmark workloads: fused elementwise chains hold about two arrays at a time).
        eqns: Equations, sub-programs' included once: the size of the program, which its
            compile time grows with.
        convolutions: Convolutions among them (XLA:CPU runs them 26× slower unoptimised:
            a program with one never compiles at the cheap tier).
        loops: Loops (``scan``, ``while``) among them (XLA:CPU's fusion emitters run them
            faster: such a program compiles at XLA's defaults, see
            :func:`~gradlab.gradcheck.programs._runner.compile_tier`).
    """

    flops: float
    bytes: int
    eqns: int = 0
    convolutions: int = 0
    loops: int = 0


def _size(aval: Any) -> tuple[int, int]:
    shape = getattr(aval, "shape", None)
    if shape is None:
        return 0, 0
    n = math.prod(shape)
    return n, n * getattr(getattr(aval, "dtype", None), "itemsize", 8)


def _eqn_flops(eqn: Any) -> float:
    out = sum(_size(v.aval)[0] for v in eqn.outvars)
    name = eqn.primitive.name
    if name == "dot_general":
        (lc, _), _ = eqn.params["dimension_numbers"]
        shape = eqn.invars[0].aval.shape
        return 2.0 * out * math.prod(shape[d] for d in lc)
    if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, spatial…)
        window = math.prod(rhs[d] for d in spec[1:])
        return 2.0 * out * window
    return float(out)


def _inner(eqn: Any) -> list[tuple[Any, float]]:
    """The sub-programs of ``eqn`` with how many times each runs."""
    times = float(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else 1.0
    found = []
    for value in eqn.params.values():
        for v in value if isinstance(value, tuple | list) else (value,):
            inner = getattr(v, "jaxpr", v)
            if hasattr(inner, "eqns"):
                found.append((inner, times))
    return found


_LOOPS = frozenset({"scan", "while"})


def _walk(jaxpr: Any) -> tuple[float, list[int], int, int, int]:
    flops, sizes, eqns, convs, loops = 0.0, [], 0, 0, 0
    for eqn in jaxpr.eqns:
        eqns += 1
        convs += eqn.primitive.name == "conv_general_dilated"
        loops += eqn.primitive.name in _LOOPS
        inner = _inner(eqn)
        if inner:
            for sub, times in inner[:1] if eqn.primitive.name == "cond" else inner:
                f, s, n, c, w = _walk(sub)
                flops += times * f
                sizes += s
                eqns += n
                convs += c
                loops += w
        else:
            flops += _eqn_flops(eqn)
        sizes += [_size(v.aval)[1] for v in eqn.outvars]
    return flops, sizes, eqns, convs, loops


def program_cost(jaxpr: Any) -> Cost:
    """The estimated :class:`Cost` of one run of a (closed) jaxpr.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> jaxpr = jax.make_jaxpr(lambda w: jnp.tanh(jnp.ones((8, 4)) @ w).sum())(jnp.ones((4, 3)))
        >>> cost = program_cost(jaxpr)
        >>> cost.flops >= 2 * 8 * 4 * 3, cost.bytes > 0, cost.eqns
        (True, True, 4)
    """
    flops, sizes, eqns, convs, loops = _walk(getattr(jaxpr, "jaxpr", jaxpr))
    return Cost(flops, int(sum(sorted(sizes)[-2:])), eqns, convs, loops)
