"""The command line's ``gradlab diagnose`` (gradient flow in your own model).

``gradlab diagnose MODULE:FUNCTION [--json PATH|-] [--out DIR] [--decades D]
[--depth-scales K] [--no-verify]``
calls ``FUNCTION()`` for ``(f, params, args)`` and prints the diagnosis. The exit status is 0
when no layer is flagged, 1 when some are, 2 for bad usage or bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gradlab.cli import USAGE_ROW, exit_status

__all__ = ["register"]


def register(sub: Any) -> None:
    """Adds ``gradlab diagnose MODULE:FUNCTION`` to ``sub`` (``argparse`` subparsers).

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="gradlab")
        >>> register(parser.add_subparsers())
        >>> parser.parse_args(["diagnose", "pkg.model:make", "--decades", "3"]).decades
        3.0
        >>> parser.parse_args(["diagnose", "pkg.model:make", "--depth-scales", "8"]).depth_scales
        8.0
    """
    p = sub.add_parser(
        "diagnose",
        help="where gradients vanish or explode in your model, why, and what to change",
        description=(
            "Diagnose gradient flow in your own model. FUNCTION() returns (f, params, args) "
            "like `gradlab check`: f(params, *args) is the scalar loss. A .py file's folder is "
            "on the import path while it loads, so it can import the modules next to it."
        ),
        epilog=exit_status(
            (0, "no layer flagged"),
            (1, "gradients vanish or explode somewhere: the flagged layers are printed"),
            USAGE_ROW,
        ),
    )
    p.add_argument(
        "target",
        metavar="MODULE:FUNCTION",
        help="e.g. mypkg.model:make or path/to/file.py:make",
    )
    p.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="also write the diagnosis as JSON to PATH; '-' writes it to stdout, alone (the "
        "printed diagnosis then goes to stderr)",
    )
    p.add_argument(
        "--out", metavar="DIR", default=None, help="write the figure as DIR/diagnose.png and .svg"
    )
    p.add_argument(
        "--decades", type=float, default=None, help="flag a growth or decay beyond 10**DECADES"
    )
    p.add_argument(
        "--depth-scales",
        type=float,
        default=None,
        metavar="K",
        help="flag a consistent per-layer growth or decay of the gradient, even under "
        "--decades in all, over more layers than K depth scales xi = 1/|ln chi_1| of the "
        "measured per-layer factor (default 6: the trainable depth of Schoenholz et al. 2017)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="do not re-run the diagnosis with the suggested fixes applied",
    )
    p.set_defaults(handler=_cmd_diagnose)


def _cmd_diagnose(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from gradlab._errors import InputError
    from gradlab.cli import _console, _load_problem, _write_json
    from gradlab.flow import diagnose

    f, params, f_args = _load_problem(args.target, parser, "diagnose")
    options: dict[str, Any] = {}
    if args.decades is not None:
        options["decades"] = args.decades
    if args.depth_scales is not None:
        options["depth_scales"] = args.depth_scales
    console = _console(stderr=args.json == "-")  # '--json -': stdout holds the JSON alone
    try:
        d = diagnose(f, params, *f_args, **options)
    except InputError as e:
        _console(stderr=True).print(f"[bold red]gradlab diagnose: bad input:[/] {e}")
        return 2
    console.print(d)
    console.print(f"({d.seconds:.2f} s)")
    out: dict[str, Any] = d.to_dict()
    if d.fixes and not args.no_verify:
        after = d.verify()
        console.rule("after the suggested fixes")
        console.print(after.summary())
        out["after_fixes"] = after.to_dict()
    if args.out:
        from gradlab import plots

        paths = plots.save(d.figure(), Path(args.out) / "diagnose")
        console.print("wrote " + ", ".join(str(p) for p in paths))
    if args.json:
        _write_json(out, args.json, console)
    return 0 if d.ok else 1
