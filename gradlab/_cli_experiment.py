"""The command line's ``gradlab experiment`` (the learning experiments).

``gradlab experiment list`` lists them; ``gradlab experiment NAME [--size tiny|default|large]
[--seeds N] [--first-seed K] [--out DIR]`` runs one and writes ``DIR/NAME/result.json`` and its
figures. ``--seeds`` and ``--first-seed`` pick the evaluation seeds the claims are judged on.

Exit status: 0 when every claim held and every control came out false, or at size ``tiny``
(nothing trains there: it says so and judges nothing); 1 when a control came out true (the
experiment failed its own check) or a claim did not hold; 2 for bad usage (an unknown name or
size, fewer than 2 seeds, evaluation seeds overlapping the development seeds).
"""

from __future__ import annotations

import argparse
from typing import Any

from gradlab.cli import USAGE_ROW, _non_negative, _positive, exit_status

__all__ = ["register"]


def _seeds(value: str) -> int:
    n = _positive(value)
    if n < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2 (claims are measured over seeds), got {n}")
    return n


def register(sub: Any) -> None:
    """Adds ``experiment`` to ``sub`` (``argparse`` subparsers).

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="gradlab")
        >>> register(parser.add_subparsers())
        >>> parser.parse_args(["experiment", "clipping", "--size", "tiny"]).size
        'tiny'
    """
    from gradlab import experiments

    p = sub.add_parser(
        "experiment",
        help="training experiments: which initialisers and architectures train",
        description="Runs one learning experiment (or lists them with 'list'), prints its "
        "claims with the measured evidence, and writes DIR/NAME/result.json and figures.",
        epilog="Experiments: "
        + ", ".join(experiments.names())
        + "\n\n"
        + exit_status(
            (0, "it ran and wrote its results, whether or not its claims held"), USAGE_ROW
        ),
    )
    p.add_argument("name", metavar="NAME|list", help="an experiment's name, or 'list'")
    p.add_argument(
        "--size",
        choices=experiments.SIZES,
        default="default",
        help="tiny: seconds; default: minutes on 2 CPU cores; large: for a GPU",
    )
    p.add_argument(
        "--seeds", type=_seeds, default=None, help="evaluation seeds (default: the size's)"
    )
    p.add_argument(
        "--first-seed",
        type=_non_negative,
        default=None,
        help="first evaluation seed (default 1000; another value: an independent seed set)",
    )
    p.add_argument(
        "--out",
        default="gradlab-out/experiments",
        help="output folder; results go to OUT/NAME/ (default: %(default)s)",
    )
    p.set_defaults(handler=_cmd_experiment, experiment_parser=p)


def _cmd_experiment(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rich.table import Table

    from gradlab import experiments
    from gradlab._errors import InputError
    from gradlab.cli import _console

    console = _console()
    if args.name == "list":
        table = Table("experiment", "what it shows")
        for name in experiments.names():
            table.add_row(name, experiments.describe(name))
        console.print(table)
        return 0
    if args.name not in experiments.names():
        args.experiment_parser.error(
            f"unknown experiment {args.name!r}; choose one of "
            f"{', '.join(experiments.names())} (or 'list')"
        )
    try:
        result = experiments.run(
            args.name, size=args.size, seeds=args.seeds, out=args.out, first_seed=args.first_seed
        )
    except InputError as e:
        args.experiment_parser.error(str(e))
    check = result["check"]
    seeds = result["seeds"]["evaluation"]
    title = f"{args.name} ({args.size}, {len(seeds)} evaluation seeds)"
    if not check["judged"]:
        console.print(f"[yellow bold]{check['message']}[/yellow bold]")
        table = Table("computed", "claim", "control (must be false)", title=title)
    else:
        table = Table("holds", "claim", "control (must be false)", title=title)
    for c in result["claims"]:
        mark = "[green]yes[/green]" if c["holds"] else "[red]no[/red]"
        ctrl = c["control"]
        ctrl_mark = "[red]TRUE[/red]" if ctrl["holds"] else "[green]false[/green]"
        table.add_row(mark, c["text"], f"{ctrl_mark}: {ctrl['text']}")
    console.print(table)
    if check["judged"]:
        colour = "green" if check["passed"] and check["claims_hold"] else "red"
        console.print(f"[{colour} bold]{check['message']}[/{colour} bold]")
    console.print(f"wrote {args.out}/{args.name}/result.json in {result['seconds']} s")
    if not check["judged"]:
        return 0
    return 0 if check["passed"] and check["claims_hold"] else 1
