"""A persistent XLA compilation cache for the checker's programs, scoped like ``precise``.

Most of a small check's cold time is XLA compiling its programs (the gradient, the difference
kernels). JAX can keep compiled programs on disk, so that a second process — the next
``pytest`` run of the same suite — loads them instead of compiling them again. JAX leaves that
off unless ``jax_compilation_cache_dir`` is set, and even then writes only programs that took a
second or more to compile, which no program of a small check does.

:func:`compilation_cache` turns it on for the block it wraps, in
``platformdirs.user_cache_dir("gradlab")/jax-<version>`` (one folder per JAX version: entries
of another version never match), and puts everything back on exit, also on error:

* a cache the user configured for JAX (``jax_compilation_cache_dir`` set, e.g. by
  ``JAX_COMPILATION_CACHE_DIR``) is used as it is: nothing is changed;
* ``jax_enable_compilation_cache=False`` is honoured: nothing is changed;
* otherwise the directory, the minimum compile time (``0``: every program is kept) and the
  minimum entry size (no minimum) are set, globally (the checker compiles in worker threads)
  and in the calling thread, and their previous values put back on exit; JAX's process-wide
  cache object, which it creates once per process from the directory it first sees, is reset
  on entry and on exit (``compilation_cache.reset_cache``), so that programs compiled after
  the block never go to gradlab's directory.

While the block runs, other threads of the process that compile also use the cache.

Inside the block gradlab also keeps its own programs, found before they are traced and lowered
(:mod:`~gradlab.gradcheck._stored`), in the subfolder :data:`PROGRAMS` of the cache in use
(gradlab's, or the one the user configured for JAX).

It is off with ``GRADLAB_COMPILATION_CACHE=0`` (also ``false``, ``no``, ``off``) or
``enabled=False``; the argument wins over the variable. A variable holding a path (absolute,
or starting with ``~``) puts the cache there instead.

The cache is trusted code: like JAX's own, it must live in a directory only its user can
write to. JAX bounds its size only when ``jax_compilation_cache_max_size`` is set (which
needs the ``filelock`` package); delete the folder to empty it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import platformdirs
from jax._src import compilation_cache as _jax_cache
from jax._src import config as _jax_config

from gradlab._errors import InputError
from gradlab.gradcheck._stored import programs_in

__all__ = [
    "ENV_VAR",
    "PROGRAMS",
    "cache_dir",
    "compilation_cache",
    "jax_cache_off",
    "resolve_enabled",
]

#: The subfolder of the cache where gradlab keeps its own programs (:mod:`._stored`).
PROGRAMS = "gradlab-programs"
#: The environment variable that turns the cache off (``0``) or moves it (a path).
ENV_VAR = "GRADLAB_COMPILATION_CACHE"
_OFF = frozenset({"0", "false", "no", "off"})
_ON = frozenset({"", "1", "true", "yes", "on"})


def _env_value() -> str:
    return os.environ.get(ENV_VAR, "").strip()


def _is_path(value: str) -> bool:
    return os.path.isabs(value) or value.startswith("~")


def resolve_enabled(enabled: bool | None = None) -> bool:
    """Whether gradlab's cache is on: the argument if given, else the environment variable.

    Args:
        enabled: ``True`` or ``False`` to decide here; ``None`` reads
            ``GRADLAB_COMPILATION_CACHE`` (unset or ``1``: on; ``0``: off; a path: on).

    Raises:
        InputError: ``enabled`` is not a bool or None, or the variable holds something else.

    Example:
        >>> resolve_enabled(False)
        False
    """
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise InputError(
                f"compilation_cache: enabled must be True, False or None, got {enabled!r}"
            )
        return enabled
    value = _env_value()
    if value.lower() in _OFF:
        return False
    if value.lower() in _ON or _is_path(value):
        return True
    raise InputError(
        f"{ENV_VAR}={value!r} is not understood: use 0 to turn gradlab's compilation cache "
        "off, 1 to turn it on, or an absolute path to keep it there."
    )


def cache_dir() -> Path:
    """The directory gradlab's cache uses (not created here).

    ``GRADLAB_COMPILATION_CACHE`` if it holds a path, else
    ``platformdirs.user_cache_dir("gradlab")``; in both cases a subfolder per JAX version.

    Example:
        >>> cache_dir().name.startswith("jax-")
        True
    """
    value = _env_value()
    if _is_path(value):
        root = Path(value).expanduser()
    else:
        root = Path(platformdirs.user_cache_dir("gradlab"))
    return root / f"jax-{jax.__version__}"


@contextlib.contextmanager
def compilation_cache(enabled: bool | None = None) -> Iterator[str | None]:
    """Keeps the programs compiled inside the block in a persistent cache on disk.

    Args:
        enabled: ``False`` leaves JAX as it is; ``True`` turns gradlab's cache on; ``None``
            (the default) reads ``GRADLAB_COMPILATION_CACHE`` (on unless it is ``0``).

    Yields:
        The cache directory in use inside the block — gradlab's, or one the user configured
        for JAX (kept as it is, also when ``enabled`` is False) — or None when there is none.

    Example:
        >>> import jax
        >>> before = jax.config.jax_compilation_cache_dir
        >>> with compilation_cache(False) as path:
        ...     pass
        >>> path == before and jax.config.jax_compilation_cache_dir == before
        True
    """
    on = resolve_enabled(enabled) and bool(_jax_config.enable_compilation_cache.value)
    configured = _jax_config.compilation_cache_dir.value
    if configured or not on:
        programs = Path(configured) / PROGRAMS if configured and on else None
        with programs_in(programs):
            yield configured or None
        return
    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without the cache rather than fail the check
        yield None
        return
    settings: dict[Any, Any] = {
        _jax_config.compilation_cache_dir: str(path),
        _jax_config.persistent_cache_min_compile_time_secs: 0.0,
        _jax_config.persistent_cache_min_entry_size_bytes: -1,
    }
    with contextlib.ExitStack() as stack:
        stack.callback(_jax_cache.reset_cache)  # runs last: drop the cache object of our dir
        stack.enter_context(programs_in(path / PROGRAMS))
        for state, value in settings.items():
            # global: the checker compiles in worker threads; thread-local: wins over a
            # thread-local value the caller set in this thread
            stack.callback(jax.config.update, state.name, state.get_global())
            jax.config.update(state.name, value)
            stack.enter_context(state(value))
        _jax_cache.reset_cache()  # JAX creates its cache object once, from the first dir seen
        yield str(path)


@contextlib.contextmanager
def jax_cache_off() -> Iterator[None]:
    """JAX's persistent cache off for the programs compiled inside (its settings restored).

    gradlab keeps some programs itself (:mod:`._stored`); they must be compiled, not taken
    from JAX's cache: on XLA:CPU an executable JAX loaded from its cache cannot be serialised
    again (it runs, but a copy of it fails with "Function ... not found"; JAX 0.10.2).
    """
    state = _jax_config.enable_compilation_cache
    with contextlib.ExitStack() as stack:
        stack.callback(_jax_cache.reset_cache)  # runs last: JAX decides afresh next time
        stack.callback(jax.config.update, state.name, state.get_global())
        jax.config.update(state.name, False)
        stack.enter_context(state(False))
        _jax_cache.reset_cache()  # JAX remembers whether its cache is used until reset
        yield
