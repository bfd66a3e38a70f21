"""``gradlab cache info`` and ``gradlab cache clear``: what the checker keeps on disk.

gradlab's cache folder (``platformdirs.user_cache_dir("gradlab")/jax-<version>``, or the path
in ``GRADLAB_COMPILATION_CACHE``) holds JAX's persistent compilation cache for the checker's
programs and, in ``gradlab-programs``, the executables gradlab finds before tracing
(:mod:`gradlab.gradcheck.programs._stored`). ``info`` shows where they are, how much they hold, the
size limit and whether the folder is private enough to be used; ``clear`` deletes them. A
cache folder the user configured for JAX (``jax_compilation_cache_dir``) is shown, never
cleared: it is the user's.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "register", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds ``cache`` (with ``info`` and ``clear``) to a CLI's subparsers.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="gradlab")
        >>> p = add_parser(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["cache", "clear", "--programs-only"]).programs_only
        True
    """
    from gradlab.cli import USAGE_ROW, exit_status

    p = subparsers.add_parser(
        "cache",
        help="show or clear what gradlab.check keeps on disk",
        description="info: where gradlab keeps compiled programs, how much they take and the "
        "size limit (GRADLAB_PROGRAMS_MAX_MB); clear: delete them (and gradlab's own JAX "
        "compilation cache unless --programs-only). A JAX cache folder you configured is "
        "shown, never cleared.",
        epilog=exit_status((0, "done"), USAGE_ROW),
    )
    actions = p.add_subparsers(dest="cache_action", metavar="ACTION")
    info = actions.add_parser("info", help="where the cache is, how much it holds, its limit")
    info.add_argument("--json", action="store_true", help="print the facts as JSON")
    clear = actions.add_parser("clear", help="delete gradlab's cached programs")
    clear.add_argument(
        "--programs-only",
        action="store_true",
        help="delete only gradlab's own programs, keep JAX's compilation cache",
    )
    p.set_defaults(handler=run, cache_action=None)
    return p


register = add_parser  # the name gradlab.cli's extension modules use


def _size(folder: Path) -> tuple[int, int]:
    """Files and bytes under ``folder`` (0, 0 when it does not exist)."""
    files = total = 0
    if folder.is_dir():
        for path in folder.rglob("*"):
            if path.is_file():
                files += 1
                total += path.stat().st_size
    return files, total


def facts() -> dict[str, Any]:
    """What ``gradlab cache info`` reports, as a dict.

    Example:
        >>> sorted(facts())[:3]
        ['enabled', 'folder', 'jax_bytes']
    """
    from gradlab import _jax_compat
    from gradlab.gradcheck.programs import _stored
    from gradlab.gradcheck.programs._cache import cache_dir, resolve_enabled

    folder = cache_dir()
    programs = folder / _stored.PROGRAMS
    n_all, bytes_all = _size(folder)
    n_prog, bytes_prog = _size(programs)
    unsafe = ""
    for path in (folder, programs):
        if path.exists() and not unsafe:
            unsafe = _stored._is_private(path)
    enabled: bool | str
    try:
        enabled = resolve_enabled(None)
    except Exception as e:  # a bad GRADLAB_COMPILATION_CACHE value: say so
        enabled = f"error: {e}"
    return {
        "enabled": enabled,
        "folder": str(folder),
        "jax_cache_configured": _jax_compat.cache_settings().directory.value,
        "jax_entries": n_all - n_prog,
        "jax_bytes": bytes_all - bytes_prog,
        "programs_folder": str(programs),
        "programs": n_prog,
        "programs_bytes": bytes_prog,
        "programs_limit_bytes": _stored.max_bytes(),
        "unsafe": unsafe,
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def run(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Runs ``gradlab cache info|clear``; returns the exit status."""
    if args.cache_action == "clear":
        return _clear(bool(getattr(args, "programs_only", False)))
    if args.cache_action != "info":
        if parser is not None:
            print("usage: gradlab cache {info,clear}")
        return 2
    found = facts()
    if getattr(args, "json", False):
        print(json.dumps(found, indent=2))
        return 0
    print(f"gradlab cache folder: {found['folder']} (enabled: {found['enabled']})")
    print(f"  JAX compilation cache: {found['jax_entries']} files, {_mib(found['jax_bytes'])}")
    print(
        f"  gradlab programs: {found['programs']} entries, {_mib(found['programs_bytes'])} "
        f"(limit {_mib(found['programs_limit_bytes'])}, GRADLAB_PROGRAMS_MAX_MB)"
    )
    if found["unsafe"]:
        print(f"  not used: {found['unsafe']}")
    if found["jax_cache_configured"]:
        print(
            f"JAX's own cache folder (configured by you): {found['jax_cache_configured']}; "
            "gradlab keeps no programs there and never clears it"
        )
    return 0


def _clear(programs_only: bool) -> int:
    from gradlab.gradcheck.programs import _stored
    from gradlab.gradcheck.programs._cache import cache_dir

    folder = cache_dir()
    target = folder / _stored.PROGRAMS if programs_only else folder
    n, size = _size(target)
    if target.exists():
        shutil.rmtree(target)
    print(f"removed {n} files ({_mib(size)}) from {target}")
    return 0
