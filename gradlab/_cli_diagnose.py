"""The command line's ``gradlab diagnose`` (gradient flow in your own model)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Adds this module's subcommands to ``sub`` (``argparse`` subparsers)."""
    del sub


def _unused(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:  # pragma: no cover
    return 0
