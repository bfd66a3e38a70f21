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
* on XLA:CPU before jaxlib 0.10.2, which logs a false machine mismatch on stderr each time it
  loads a kept program, the cache is on only when asked for by name (``enabled=True``, or
  ``GRADLAB_COMPILATION_CACHE`` set): by default nothing is kept there;
* otherwise the directory, the minimum compile time (``0``: every program is kept) and the
  minimum entry size (no minimum) are set, globally (the checker compiles in worker threads)
  and in the calling thread. These are process-wide settings: they are changed under a lock
  with a count of the checks in flight — the first check to enter saves the caller's values,
  the last to leave puts them back — so that checks in several threads at once leave them
  as they found them. JAX's process-wide cache object, which it creates once per process from
  the directory it first sees, is reset when the settings change and when they are put back
  (``compilation_cache.reset_cache``), so that programs compiled after never go to
  gradlab's directory.

While a check runs, other threads of the process that compile also use the cache.

Inside the block gradlab also keeps its own programs, found before they are traced and lowered
(:mod:`~gradlab.gradcheck.programs._stored`), in the subfolder :data:`PROGRAMS` of gradlab's own
cache only — never in a cache the user configured for JAX (JAX documents it as shareable, and it may
be remote: ``gs://...``) — and only while that folder is owned by the user and writable by no
one else.

It is off with ``GRADLAB_COMPILATION_CACHE=0`` (also ``false``, ``no``, ``off``) or
``enabled=False``; the argument wins over the variable. A variable holding a path (absolute,
or starting with ``~``) puts the cache there instead. ``gradlab cache info`` shows what is
kept and ``gradlab cache clear`` empties it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import platformdirs

from gradlab import _jax_compat
from gradlab._errors import InputError
from gradlab.gradcheck.programs._stored import PROGRAMS, programs_folder, programs_in

__all__ = [
    "ENV_VAR",
    "PROGRAMS",
    "cache_dir",
    "compilation_cache",
    "in_flight",
    "jax_cache_off",
    "resolve_enabled",
]

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


class _Shared:
    """Process-wide JAX settings changed while any check needs them, under one lock.

    The first check to enter saves the settings' global values and sets its own; later
    checks (other threads) share them; the last to leave puts the saved values back. Two
    threads checking at once therefore leave every setting as they found it, whatever the
    order they enter and leave in.
    """

    def __init__(self) -> None:
        self.count = 0
        self.saved: dict[Any, Any] = {}
        self.set: dict[Any, Any] = {}
        self.value: Any = None

    def enter(self, settings: dict[Any, Any], value: Any = None) -> Any:
        """Sets ``settings`` (``{state: value}``) unless a check in flight already did."""
        with _LOCK:
            if self.count == 0:
                self.saved = {state: state.get_global() for state in settings}
                self.set = dict(settings)
                for state, v in settings.items():
                    jax.config.update(state.name, v)
                self.value = value
                _jax_compat.reset_compilation_cache()  # JAX makes its cache object once
            self.count += 1
            return self.value

    def leave(self) -> None:
        """The last check to leave puts the saved global values back."""
        with _LOCK:
            self.count -= 1
            if self.count == 0:
                for state, v in self.saved.items():
                    jax.config.update(state.name, v)
                self.saved, self.set, self.value = {}, {}, None
                _jax_compat.reset_compilation_cache()  # later programs not in our folder

    def saved_value(self, state: Any) -> Any:
        """``state``'s value in this thread, as the caller set it (not as checks in flight did).

        A check in flight in another thread sets the global value; seen here, it stands for
        the caller's global value it replaced.
        """
        with _LOCK:
            value = state.value
            if self.count and state in self.saved and value == self.set[state]:
                return self.saved[state]
            return value


_LOCK = threading.RLock()
_GRADLAB_CACHE = _Shared()
_JAX_CACHE_OFF = _Shared()


def in_flight() -> int:
    """How many checks hold gradlab's cache settings now (0: the caller's are in place).

    Example:
        >>> in_flight()
        0
    """
    return _GRADLAB_CACHE.count


@contextlib.contextmanager
def compilation_cache(
    enabled: bool | None = None, device: jax.Device | None = None
) -> Iterator[str | None]:
    """Keeps the programs compiled inside the block in a persistent cache on disk.

    Args:
        enabled: ``False`` leaves JAX as it is; ``True`` turns gradlab's cache on; ``None``
            (the default) reads ``GRADLAB_COMPILATION_CACHE`` (on unless it is ``0``).
        device: where the programs run (None: JAX's default device). Where loading a kept
            program there logs a false machine mismatch on stderr (XLA:CPU before jaxlib
            0.10.2, see :func:`gradlab._jax_compat.keeps_programs_quietly`), gradlab's cache
            is on only when asked for by name: ``enabled=True``, or the variable set.

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
    user_enabled = _JAX_CACHE_OFF.saved_value(_jax_compat.cache_settings().enabled)
    asked = enabled is True or (enabled is None and bool(_env_value()))
    quiet = _jax_compat.keeps_programs_quietly(device or jax.devices()[0])
    on = resolve_enabled(enabled) and bool(user_enabled) and (asked or quiet)
    configured = _GRADLAB_CACHE.saved_value(_jax_compat.cache_settings().directory)
    if configured or not on:
        # a cache the user configured for JAX is used as it is; gradlab keeps no programs
        # there (it may be shared with others, or remote): only in a folder of its own
        with programs_in(None):
            yield configured or None
        return
    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without the cache rather than fail the check
        yield None
        return
    if programs_folder(path) is None:  # others may write there: its executables are code
        with programs_in(None):
            yield None
        return
    settings: dict[Any, Any] = {
        _jax_compat.cache_settings().directory: str(path),
        _jax_compat.cache_settings().min_compile_time_secs: 0.0,
        _jax_compat.cache_settings().min_entry_size_bytes: -1,
    }
    used = Path(_GRADLAB_CACHE.enter(settings, path))
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(programs_in(programs_folder(used)))
            for state, value in settings.items():
                # thread-local: wins over a thread-local value the caller set in this thread
                stack.enter_context(state(str(used) if state.name.endswith("_dir") else value))
            yield str(used)
    finally:
        _GRADLAB_CACHE.leave()


@contextlib.contextmanager
def jax_cache_off() -> Iterator[None]:
    """JAX's persistent cache off for the programs compiled inside (its settings restored).

    gradlab keeps some programs itself (:mod:`._stored`); they must be compiled, not taken
    from JAX's cache: on XLA:CPU an executable JAX loaded from its cache cannot be serialised
    again (it runs, but a copy of it fails with "Function ... not found"; JAX 0.10.2).
    Off globally (the compiles run in worker threads) while any check needs it off.
    """
    state = _jax_compat.cache_settings().enabled
    _JAX_CACHE_OFF.enter({state: False})
    try:
        with state(False):
            yield
    finally:
        _JAX_CACHE_OFF.leave()
