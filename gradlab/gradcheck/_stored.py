"""Compiled programs kept on disk, found again BEFORE they are traced and lowered.

JAX's persistent compilation cache (:mod:`~gradlab.gradcheck._cache`) saves a second process
the XLA compile, but not the tracing and lowering JAX needs to compute its key: for the small
programs of a test suite's checks, those are most of what remains. gradlab therefore keeps
the executables of its own programs under a key it can compute before tracing them:

* a difference kernel (it evaluates ``f`` and never differentiates it) is keyed by the
  fingerprint of ``f``'s jaxpr — traced once per check anyway — with the kernel's static
  arguments and argument types;
* the gradient program (it differentiates ``f``, so ``f``'s custom derivative rules are part
  of it) is keyed by the fingerprint of its own traced jaxpr: only lowering is saved.

A program that calls a library through a custom call (LAPACK's ``eigh``, ...) is never kept
(:func:`calls_out`). Every key also holds :func:`environment`: the versions of JAX, jaxlib
and gradlab's checker source, the backend and device, the compile options and the JAX
settings that change how a program lowers. A program that
:func:`~gradlab.gradcheck._fingerprint.fingerprint` cannot see into (a host callback, a Python
callable in a parameter) is never stored.

The programs live in the subfolder ``gradlab-programs`` of the cache folder in use and are on
exactly when that cache is (:func:`~gradlab.gradcheck._cache.compilation_cache`). Loading an
entry runs code, like JAX's own cache: the folder must be writable by its user only. An
entry that cannot be read (truncated, another version) is compiled again and replaced.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import os
import pickle
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jaxlib
from jax.experimental import serialize_executable

if TYPE_CHECKING:
    from gradlab.gradcheck._runner import Tier

__all__ = [
    "calls_out",
    "directory",
    "environment",
    "load",
    "program_key",
    "programs_in",
    "store",
]

_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("gradlab_programs", default=None)
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


@contextlib.contextmanager
def programs_in(path: Path | None) -> Iterator[None]:
    """Keeps and finds programs under ``path`` inside the block (None: not at all)."""
    token = _DIR.set(path)
    try:
        yield
    finally:
        _DIR.reset(token)


def directory() -> Path | None:
    """Where programs are kept now, or None when they are not."""
    return _DIR.get()


@functools.cache
def _source_digest() -> str:
    """The checker's own source: a changed kernel or rule never meets an old program."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@functools.cache
def _host() -> str:
    """The host processor: XLA:CPU compiles for its instruction set (AVX-512, AMX, ...).

    A home folder shared by machines of different processors (a cluster's network home) must
    never hand one an executable compiled for another: it would stop on an illegal
    instruction.
    """
    text = ""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
    keep = [line for line in text.splitlines()[:64] if line.startswith(("model name", "flags"))]
    mine = "\n".join(sorted(set(keep))) or platform.processor() or platform.machine()
    return hashlib.sha256(mine.encode()).hexdigest()


def environment(device: jax.Device, tier: Tier) -> str:
    """Everything outside a program's jaxpr that its executable depends on.

    ``tier``: how it is compiled (:class:`~gradlab.gradcheck._runner.Tier`).

    Example:
        >>> import jax
        >>> from gradlab.gradcheck._runner import Tier
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


def load(key: str, device: jax.Device) -> Any | None:
    """The executable kept under ``key``, loaded onto ``device``; None if there is none."""
    folder = directory()
    if folder is None:
        return None
    try:
        blob = (folder / key).read_bytes()
    except OSError:
        return None
    try:
        payload, in_tree, out_tree = pickle.loads(blob)
        return serialize_executable.deserialize_and_load(
            payload, in_tree, out_tree, backend=device.client, execution_devices=[device]
        )
    except Exception:
        return None


def calls_out(lowered: Any) -> bool:
    """Whether a lowered program calls a library through a custom call (LAPACK, ...).

    Such a program is never kept: JAX registers a custom call's handler when it lowers a
    program that uses it, which a program loaded from disk skips — XLA:CPU then crashes
    the process calling it (seen with ``eigh``'s ``lapack_dsyevd_ffi``, JAX 0.10.2).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> lower = lambda f: jax.jit(f).lower(jnp.eye(3))
        >>> calls_out(lower(lambda a: jnp.linalg.eigh(a)[0])), calls_out(lower(jnp.tanh))
        (True, False)
    """
    try:
        return "custom_call" in lowered.as_text()
    except Exception:
        return True


def store(key: str, compiled: Any) -> bool:
    """Keeps ``compiled`` under ``key`` (written whole or not at all); whether it was kept."""
    folder = directory()
    if folder is None:
        return False
    try:
        blob = pickle.dumps(serialize_executable.serialize(compiled))
    except Exception:
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(blob)
        os.replace(tmp, folder / key)
    except OSError:
        return False
    return True
