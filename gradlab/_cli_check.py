"""The command line's ``gradlab check``: the checker's options on your own function.

Exit status: 0 passed, 1 failed, 2 bad usage or input, 3 inconclusive (0 with
``--allow-inconclusive``).
"""

from __future__ import annotations

import argparse
from typing import Any

from gradlab.cli import USAGE_ROW, _positive_float, exit_status
from gradlab.cli import _positive as _positive_int

__all__ = ["INCONCLUSIVE_EXIT", "register"]

#: Exit status of an inconclusive check (nothing wrong found, but not everything verified).
INCONCLUSIVE_EXIT = 3


def _eps(value: str) -> float | str:
    return value if value == "auto" else _positive_float(value)


def _entries(value: str) -> Any:
    """``full``, ``sample:N`` or ``directional:K`` as a :mod:`gradlab` entries object."""
    import gradlab

    kind, _, count = value.partition(":")
    if kind == "full" and not count:
        return gradlab.Full()
    makers = {"sample": gradlab.Sample, "directional": gradlab.Directional}
    if kind not in makers:
        raise argparse.ArgumentTypeError(
            f"{value!r}: use full, sample:N (N entries per leaf) or directional:K (K random "
            "directions per leaf)"
        )
    return makers[kind](_positive_int(count)) if count else makers[kind]()


def register(sub: Any) -> None:
    """Adds ``gradlab check MODULE:FUNCTION`` to ``sub`` (``argparse`` subparsers)."""
    ck = sub.add_parser(
        "check",
        help="gradient-check your function: MODULE:FUNCTION returning (f, params, args)",
        description="Imports FUNCTION from MODULE (a dotted module path, or a .py file path), "
        "calls it with no arguments to get (f, params, args), runs gradlab.check(f, params, "
        "*args) and prints the report. A .py file's folder is on the import path while it "
        "loads, so it can import the modules next to it.",
        epilog=exit_status(
            (0, "passed (or inconclusive, with --allow-inconclusive)"),
            (1, "failed: a gradient is wrong"),
            USAGE_ROW,
            (INCONCLUSIVE_EXIT, "inconclusive: nothing wrong found, but not everything verified"),
        ),
    )
    ck.add_argument(
        "target",
        metavar="MODULE:FUNCTION",
        help="e.g. mypkg.layers:problem or path/to/file.py:problem",
    )
    what = ck.add_argument_group("what is checked")
    what.add_argument(
        "--entries",
        type=_entries,
        default=None,
        metavar="full|sample:N|directional:K",
        help="which entries are moved (default: full, every entry)",
    )
    what.add_argument(
        "--autodiff",
        choices=("reverse", "forward", "both"),
        default=None,
        help="which derivative is checked (default: reverse; forward at --second-order)",
    )
    what.add_argument(
        "--second-order",
        action="store_true",
        help="check Hessian-vector products (gradlab.check_second_order)",
    )
    what.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default=None,
        help="the dtype the check computes in (default: float64; float32 on a device without "
        "float64)",
    )
    what.add_argument(
        "--projections",
        type=_positive_int,
        default=None,
        help="random projections of a non-scalar output (default 3)",
    )
    what.add_argument(
        "--seed", type=int, default=0, help="seed of samples, directions, projections"
    )
    how = ck.add_argument_group("how it is judged")
    how.add_argument(
        "--eps",
        type=_eps,
        default=None,
        help="finite-difference step (default: the lecture's 1e-7), or 'auto'",
    )
    how.add_argument(
        "--tolerance",
        type=_positive_float,
        default=None,
        help="relative-error tolerance per leaf (default 1e-6; 1e-3 in float32)",
    )
    how.add_argument(
        "--check-determinism",
        action="store_true",
        help="evaluate every move twice and report a non-reproducible f as such",
    )
    how.add_argument(
        "--allow-inconclusive",
        action="store_true",
        help="exit 0, not 3, when nothing is wrong but not everything was verified",
    )
    run = ck.add_argument_group("how it runs and reports")
    run.add_argument("--chunk-size", type=_positive_int, default=None, help="moves per batch")
    run.add_argument("--verbose", action="store_true", help="print the plan and time estimate")
    run.add_argument("--no-cache", action="store_true", help="no persistent compilation cache")
    run.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="also write the report as JSON to PATH; '-' writes it to stdout, alone (the "
        "printed report then goes to stderr)",
    )
    ck.set_defaults(handler=_cmd_check)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword options of :func:`gradlab.check` the command line asked for."""
    import gradlab

    options: dict[str, Any] = {"seed": args.seed}
    for name in ("entries", "autodiff", "dtype", "projections", "eps", "tolerance"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.check_determinism:
        options["check_determinism"] = True
    options["execution"] = gradlab.Execution(
        chunk_size=args.chunk_size,
        verbose=args.verbose,
        compilation_cache=False if args.no_cache else None,
    )
    return options


def _cmd_check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import gradlab
    from gradlab.cli import _console, _load_problem, _write_json

    f, params, f_args = _load_problem(args.target, parser, "check")
    console = _console(stderr=args.json == "-")  # '--json -': stdout holds the JSON alone
    options = _options(args)
    if args.second_order:
        if args.check_determinism:
            parser.error("check: --second-order takes no --check-determinism")
        run = gradlab.check_second_order
    else:
        run = gradlab.check
    try:
        report = run(f, params, *f_args, **options)
    except gradlab.InputError as e:
        _console(stderr=True).print(f"[bold red]gradlab check: bad input:[/] {e}")
        return 2
    console.print(report)
    if args.json:
        _write_json(report.to_dict(), args.json, console)
    if report.outcome == "passed" or (report.outcome == "inconclusive" and args.allow_inconclusive):
        return 0
    return 1 if report.outcome == "failed" else INCONCLUSIVE_EXIT
