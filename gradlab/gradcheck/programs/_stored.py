"""Compiled programs kept on disk, found again BEFORE they are traced and lowered.

JAX's persistent compilation cache (:mod:`~gradlab.gradcheck.programs._cache`) saves a second
process the XLA compile, but not the tracing and lowering JAX needs to compute its key: for the
small programs of a test suite's checks, those are most of what remains. gradlab therefore keeps
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
:func:`~gradlab.gradcheck.programs._fingerprint.fingerprint` cannot see into (a host callback, a
Python callable in a parameter) is never stored.

The programs live in the subfolder ``gradlab-programs`` of gradlab's own cache folder
(:func:`~gradlab.gradcheck.programs._cache.compilation_cache`), never in a cache folder the user
configured for JAX (shareable, possibly remote). Loading an entry runs code, like JAX's own
cache, so nothing is stored or loaded unless that folder and the cache folder above it are
owned by the user and writable by no one else (:func:`programs_folder`). Each entry carries a
SHA-256 digest of its payload, checked before anything is unpickled: a damaged entry (a
flipped bit, a truncated write) is deleted and compiled again. The folder is bounded
(:func:`max_bytes`, ``GRADLAB_PROGRAMS_MAX_MB``): the entries used least recently are
removed first.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import pickle
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax

from gradlab import _jax_compat

if TYPE_CHECKING:
    pass

__all__ = [
    "PROGRAMS",
    "calls_out",
    "directory",
    "entries",
    "kept",
    "load",
    "max_bytes",
    "programs_folder",
    "programs_in",
    "store",
    "unsafe_reason",
]

#: The subfolder of gradlab's cache where it keeps its own programs.
PROGRAMS = "gradlab-programs"
#: The environment variable that bounds the folder's size, in MiB.
MAX_ENV_VAR = "GRADLAB_PROGRAMS_MAX_MB"
_DEFAULT_MAX_MB = 512
#: What a stored entry starts with: a format tag, then the SHA-256 digest of the payload.
_MAGIC = b"gradlab-program-1\n"
_DIGEST = 32

_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("gradlab_programs", default=None)
_UNSAFE: list[str] = []  # why the last folder asked for was refused (for `gradlab cache info`)


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


def _is_private(path: Path) -> str:
    """Why ``path`` is not private to this user ("" when it is: owned, no one else writes)."""
    try:
        st = path.stat()
    except OSError as e:
        return f"{path} cannot be read ({e.strerror})"
    getuid = getattr(os, "getuid", None)
    if getuid is not None and st.st_uid != getuid():
        return f"{path} is owned by another user (uid {st.st_uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by its group or by others (mode {stat.filemode(st.st_mode)})"
    return ""


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def programs_folder(root: Path) -> Path | None:
    """The folder of kept programs under cache folder ``root``, or None where it is unsafe.

    Created (mode 0700) if missing. None when ``root`` is remote (a URL), or when ``root``
    or the folder is owned by someone else or writable by its group or others: an entry is
    code that the next check runs. :func:`unsafe_reason` says why.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> root = Path(tempfile.mkdtemp())
        >>> programs_folder(root) == root / PROGRAMS
        True
        >>> _ = (root / PROGRAMS).chmod(0o777)
        >>> print(programs_folder(root))
        None
    """
    _UNSAFE.clear()
    if _URL.match(str(root)):  # gs://..., also as a Path has written it (gs:/...)
        _UNSAFE.append(f"{root} is not a folder of this machine")
        return None
    folder = root / PROGRAMS
    if root.is_dir() and _is_private(root):  # refused before anything is made in it
        _UNSAFE.append(_is_private(root) + ": programs are neither stored nor loaded there")
        return None
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        _UNSAFE.append(f"{folder} cannot be created ({e.strerror})")
        return None
    for path in (root, folder):
        why = _is_private(path) if path.is_dir() else f"{path} is not a folder"
        if why:
            _UNSAFE.append(why + ": programs are neither stored nor loaded there")
            return None
    return folder


def unsafe_reason() -> str:
    """Why the last folder asked of :func:`programs_folder` was refused ("" if it was not)."""
    return _UNSAFE[0] if _UNSAFE else ""


def kept(key: str) -> bool:
    """Whether an entry is kept under ``key`` now (not verified: :func:`load` does that)."""
    folder = directory()
    return folder is not None and (folder / key).is_file()


def load(key: str, device: jax.Device) -> Any | None:
    """The executable kept under ``key``, loaded onto ``device``; None if there is none.

    The entry's digest is checked before anything is unpickled; an entry that is damaged,
    not private to this user, or that does not load is deleted (it is compiled again).
    """
    folder = directory()
    if folder is None:
        return None
    path = folder / key
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    payload = _verified(blob)
    if payload is None or _is_private(path):
        _remove(path)
        return None
    try:
        data, in_tree, out_tree = pickle.loads(payload)
        loaded = _jax_compat.deserialize_executable(data, in_tree, out_tree, device, [device])
    except Exception:
        _remove(path)
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # used now: evicted last
    return loaded


def _verified(blob: bytes) -> bytes | None:
    """The payload of a stored entry whose digest matches, else None."""
    head = len(_MAGIC)
    if len(blob) < head + _DIGEST or not blob.startswith(_MAGIC):
        return None
    digest, payload = blob[head : head + _DIGEST], blob[head + _DIGEST :]
    return payload if hashlib.sha256(payload).digest() == digest else None


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


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
        payload = pickle.dumps(_jax_compat.serialize_executable(compiled))
    except Exception:
        return False
    blob = _MAGIC + hashlib.sha256(payload).digest() + payload
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(blob)
        os.replace(tmp, folder / key)
    except OSError:
        return False
    evict(folder, max_bytes())
    return True


def max_bytes() -> int:
    """The most bytes the folder of programs may hold (``GRADLAB_PROGRAMS_MAX_MB``, 512).

    Example:
        >>> max_bytes() > 0
        True
    """
    value = os.environ.get(MAX_ENV_VAR, "").strip()
    try:
        mb = float(value) if value else _DEFAULT_MAX_MB
    except ValueError:
        mb = _DEFAULT_MAX_MB
    return int(max(mb, 0) * 2**20)


def entries(folder: Path) -> list[tuple[Path, int, float]]:
    """The programs kept in ``folder``: ``(path, bytes, last used)``, least recent first."""
    found = []
    with contextlib.suppress(OSError):
        for path in folder.iterdir():
            if path.name.startswith("."):
                continue
            with contextlib.suppress(OSError):
                st = path.stat()
                found.append((path, st.st_size, st.st_mtime))
    return sorted(found, key=lambda e: e[2])


def evict(folder: Path, limit: int) -> int:
    """Deletes the least recently used entries until ``folder`` holds at most ``limit`` bytes.

    Returns how many were deleted.
    """
    kept = entries(folder)
    total = sum(size for _, size, _ in kept)
    removed = 0
    for path, size, _ in kept:
        if total <= limit:
            break
        _remove(path)
        total -= size
        removed += 1
    return removed
