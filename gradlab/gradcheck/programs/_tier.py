"""Compile tiers: how hard XLA optimises a program, and the options that say so."""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["TIER_OPTIONS", "Tier"]


class Tier(enum.Enum):
    """How hard XLA optimises a program: its compile time against its run time.

    * ``CHEAP``: LLVM at optimisation level 0 and XLA:CPU's loop emitters instead of its
      fusion emitters. Measured on a small layer's kernel (2 shared cores, load 7): compile
      0.30–0.39 s against 0.46–0.86 s at level 0 alone and 1.2–1.7 s by default; runs 3–7×
      slower (``docs/benchmarks.md``, "Cold cost").
    * ``QUICK``: optimised, with XLA:CPU's loop emitters. Compiles 1.5–2.3× faster than
      ``FULL`` and runs as fast, except loops (benchmark workloads, 2 cores: the CNN's
      programs 2.7 → 1.7 s of compile, its kernels as fast; the transformer block's first
      check 6.1–6.8 → 4.4–4.8 s; an LSTM's scans run 1.3× slower, so loops stay ``FULL``).
    * ``FULL``: XLA's defaults.

    ``CHEAP`` and ``QUICK`` also compile each program as one LLVM module: gradlab already
    compiles a check's programs side by side, one per core, and XLA:CPU's own split of a
    program into modules compiled in parallel only adds work then (CPU time of compiling,
    mean of 3: the ten-layer suite's 20 programs 1.47 → 1.08 s, the CNN's 5 programs
    2.38 → 1.96 s, the transformer's 7 programs 6.9 → 6.1 s).

    Other platforms than the CPU always compile ``FULL``; an option a jaxlib's XLA does not
    know (jaxlib 0.11 has no ``xla_cpu_use_fusion_emitters``) is dropped.
    """

    CHEAP = "cheap"
    QUICK = "quick"
    FULL = "full"


_ONE_MODULE = {"xla_cpu_parallel_codegen_split_count": 1}


#: The XLA options of each :class:`Tier`.
TIER_OPTIONS: dict[Tier, dict[str, Any]] = {
    Tier.CHEAP: {
        "xla_backend_optimization_level": 0,
        "xla_cpu_use_fusion_emitters": False,
        **_ONE_MODULE,
    },
    Tier.QUICK: {"xla_cpu_use_fusion_emitters": False, **_ONE_MODULE},
    Tier.FULL: {},
}
