"""The key a stored program is kept under.

Its fingerprint and arguments, gradlab's checker source (every file of the checker and what
it imports), the host's processor, the device and the JAX settings that change how a
program lowers.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jaxlib

if TYPE_CHECKING:
    from gradlab.gradcheck.programs._tier import Tier

__all__ = ["environment", "program_key", "source_files"]


#: JAX settings that change how a traced program lowers or compiles.
_SETTINGS = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_numpy_rank_promotion",
    "jax_numpy_dtype_promotion",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
    "jax_debug_nans",
    "jax_debug_infs",
    "jax_enable_checks",
    "jax_use_shardy_partitioner",
)


_IMPORT = re.compile(
    r"^\s*(?:from\s+(gradlab(?:\.\w+)*)\s+import\s+([\w, ()]+)|import\s+(gradlab(?:\.\w+)+))",
    re.MULTILINE,
)


def source_files() -> list[Path]:
    """Every source file that shapes a stored program: the checker and what it imports.

    Example:
        >>> names = {p.name for p in source_files()}
        >>> {"_kernels.py", "_jax_compat.py"} <= names
        True
    """
    package = Path(__file__).resolve().parents[2]  # gradlab/
    todo = sorted((package / "gradcheck").rglob("*.py"))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for match in _IMPORT.finditer(path.read_text(encoding="utf-8")):
            module = match.group(1) or match.group(3)
            names = [n.strip(" ()") for n in (match.group(2) or "").split(",")]
            candidates = [module] + [f"{module}.{n}" for n in names if n]
            for dotted in candidates:
                if dotted == "gradlab":  # the package's __init__ imports everything
                    continue
                rel = Path(*dotted.split(".")[1:])
                for found in (package / rel.with_suffix(".py"), package / rel / "__init__.py"):
                    if found.is_file() and found not in seen:
                        todo.append(found)
    return sorted(seen)


@functools.cache
def _source_digest() -> str:
    """The sources that shape a program: a changed kernel or rule never meets an old one."""
    package = Path(__file__).resolve().parents[2]  # gradlab/
    h = hashlib.sha256()
    for path in source_files():
        h.update(str(path.relative_to(package)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


#: /proc/cpuinfo fields that name what a processor can run (x86 and aarch64).
_CPU_FIELDS = ("vendor_id", "model name", "flags", "cpu family", "model", "Features",
               "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "isa")  # fmt: skip


@functools.cache
def _host() -> str:
    """The host processor: XLA:CPU compiles for its instruction set (AVX-512, AMX, SVE, ...).

    A home folder shared by machines of different processors (a cluster's network home) must
    never hand one an executable compiled for another: it would stop on an illegal
    instruction. Every core's fields count (a big.LITTLE machine has two kinds of core).
    """
    return hashlib.sha256(_cpu_text(_read_cpuinfo()).encode()).hexdigest()


def _read_cpuinfo() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/cpuinfo").read_text()
    return ""


def _cpu_text(cpuinfo: str) -> str:
    r"""The lines of ``cpuinfo`` that name the instruction set, each kind once.

    Example:
        >>> a = "processor : 0\nCPU part : 0xd0c\nFeatures : fp asimd sve\n"
        >>> same = lambda b: _cpu_text(a) == _cpu_text(b)
        >>> same(a.replace(" sve", "")), same(a.replace("0xd0c", "0xd40")), same(a)
        (False, False, True)
    """
    keep = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in _CPU_FIELDS:
            keep.add(f"{name.strip()}: {' '.join(value.split())}")
    return "\n".join(sorted(keep)) or f"{platform.machine()} {platform.processor()}"


def environment(device: jax.Device, tier: Tier) -> str:
    """Everything outside a program's jaxpr that its executable depends on.

    ``tier``: how it is compiled (:class:`~gradlab.gradcheck.programs._tier.Tier`).

    Example:
        >>> import jax
        >>> from gradlab.gradcheck.programs._tier import Tier
        >>> cpu = jax.devices()[0]
        >>> environment(cpu, Tier.CHEAP) == environment(cpu, Tier.QUICK)
        False
    """
    settings = tuple((name, str(getattr(jax.config, name, None))) for name in _SETTINGS)
    parts = (
        jax.__version__,
        jaxlib.__version__,
        device.platform,
        device.client.platform_version,
        device.device_kind,
        device.id,
        _host() if device.platform == "cpu" else "",
        tier.value,
        os.environ.get("XLA_FLAGS", ""),
        settings,
        _source_digest(),
    )
    return repr(parts)


def _types(tree: Any) -> str:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return repr((treedef, [(tuple(x.shape), str(x.dtype)) for x in leaves]))


def program_key(name: str, fingerprint: str, static: Any, args: Any, env: str) -> str:
    """The file name a program is kept under.

    Args:
        name: Which program (a kernel's name).
        fingerprint: The fingerprint of the jaxpr it is built from.
        static: Its static arguments other than the function (a repr-able tuple).
        args: Its dynamic arguments (types and structure count, not values).
        env: :func:`environment`.

    Example:
        >>> import jax.numpy as jnp
        >>> key = lambda x: program_key("k", "f", (0,), (x,), "env")
        >>> key(jnp.ones(3)) == key(jnp.zeros(3)), key(jnp.ones(3)) == key(jnp.ones(4))
        (True, False)
    """
    text = repr((name, fingerprint, static, _types(args), env))
    return hashlib.sha256(text.encode()).hexdigest()
