"""The ``gradlab`` command line: ``gradlab demo``, ``gradlab flow``, ``gradlab check``, ...

Run ``gradlab --help`` or ``gradlab COMMAND --help``; ``python -m gradlab`` is the same.
:func:`main` returns the exit status: 0 on success, 1 when ``gradlab check`` finds a wrong
gradient or ``gradlab diagnose`` flags a layer, 2 for bad usage or input (argparse's
convention), 3 when a check is inconclusive. Results go to stdout (``--json -`` puts the JSON
there alone), messages about bad usage or input to stderr; tables are never cut to a width when
the output is piped or redirected.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gradlab._errors import InputError
from gradlab._validate import for_argparse, integer, positive_number

__all__ = ["build_parser", "main"]

_ACTIVATIONS = ("tanh", "relu", "linear", "sigmoid", "gelu")

#: Width of tables and text when the output is not a terminal: wide enough that no row is cut.
PIPED_WIDTH = 1000
#: Width of the horizontal rules between sections when the output is not a terminal.
PIPED_RULE_WIDTH = 80


def _init_name(value: str) -> str:
    from gradlab import init

    try:
        init.get(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def _spread_seeds(name: str, value: Any) -> int:
    try:
        return integer(name, value, minimum=2)
    except InputError as e:
        raise InputError(f"{e} (a spread needs two seeds)") from None


_positive = for_argparse(integer, minimum=1)
_non_negative = for_argparse(integer, minimum=0)
_at_least_two = for_argparse(_spread_seeds)
_positive_float = for_argparse(positive_number, float)


def _branch_scale(value: str) -> float | str | None:
    if value in ("none", "None"):
        return None
    if value in ("rezero", "fixup"):
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r}: use none, rezero, fixup or a number (the fixed branch scale α)"
        ) from None


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps each line of a description or epilog as a paragraph; keeps indented lines whole.

    So that lists (the exit statuses) keep their layout and nothing is cut: argparse's default
    joins every line of a text into one paragraph.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for line in text.splitlines():
            if not line.strip() or line.startswith("  "):
                out.append(indent + line)
            else:
                out.append(
                    textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
                )
        return "\n".join(out)


def exit_status(*rows: tuple[int, str]) -> str:
    """The ``exit status:`` block of a command's ``--help`` epilog.

    Example:
        >>> print(exit_status((0, "done"), (2, "bad usage or input")))
        exit status:
          0  done
          2  bad usage or input
    """
    return "exit status:\n" + "\n".join(f"  {code}  {text}" for code, text in rows)


#: The exit status of bad usage or input, the same for every command.
USAGE_ROW = (2, "bad usage or input (the message, on stderr, says what to change)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    from gradlab import __version__, init

    parser = argparse.ArgumentParser(
        prog="gradlab",
        description="See and fix vanishing and exploding gradients in JAX, and verify "
        "gradients numerically.",
        epilog=exit_status(
            (0, "success"),
            (1, "check: a gradient is wrong; diagnose: gradients vanish or explode somewhere"),
            USAGE_ROW,
            (3, "check: inconclusive (nothing wrong found, not everything verified)"),
        )
        + "\n\nEach command's --help lists its own.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="the lecture's vanishing/exploding gradients, measured vs theory (~2 min)",
        description="Measures gradient norms through 150-layer networks and 100-step "
        "LSTMs/RNNs over many seeds, compares them with closed-form theory, runs gradient "
        "checks on the built-in models, prints tables and writes figures, summary.json and "
        "summary.md.",
        epilog=exit_status((0, "done"), USAGE_ROW),
    )
    demo.add_argument("--out", default="gradlab-out", help="output folder (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="reduced sizes, a few seconds")
    demo.add_argument(
        "--seeds", type=_at_least_two, default=None, help="networks per configuration (>= 2)"
    )

    fl = sub.add_parser(
        "flow",
        help="one gradient-flow measurement: per-layer or per-step gradient norms",
        description="Measures per-layer (mlp, residual) or per-time-step (lstm, rnn) gradient "
        "norms over many seeds, prints a table and writes JSON and a figure.",
        epilog="Initialisers: "
        + ", ".join(init.NAMES)
        + " (parametric ones take NAME:VALUE, e.g. orthogonal:1.1, fan_in_normal:0.9).\n\n"
        + exit_status((0, "measured, table printed, files written"), USAGE_ROW),
    )
    fl.add_argument("--arch", choices=("mlp", "residual", "lstm", "rnn"), default="mlp")
    fl.add_argument("--depth", type=_non_negative, default=150, help="layers (mlp, residual)")
    fl.add_argument("--steps", type=_positive, default=100, help="time steps (lstm, rnn)")
    fl.add_argument("--width", type=_positive, default=64, help="width / hidden size")
    fl.add_argument(
        "--activation",
        choices=_ACTIVATIONS,
        default=None,
        help="default: tanh (mlp, rnn), relu (residual)",
    )
    fl.add_argument(
        "--init",
        type=_init_name,
        default=None,
        help="initialiser (default: lecun_normal for mlp, he_normal for residual, "
        "orthogonal recurrent weights for lstm/rnn)",
    )
    fl.add_argument("--seeds", type=_positive, default=32)
    fl.add_argument("--batch", type=_positive, default=8, help="examples per network")
    fl.add_argument("--key", type=int, default=0, help="random seed")
    fl.add_argument("--loss", choices=("readout", "bce"), default="readout")
    fl.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    fl.add_argument(
        "--branch-scale",
        type=_branch_scale,
        default=None,
        help="residual: none, rezero, fixup or a number",
    )
    fl.add_argument("--forget-bias", type=float, default=1.0, help="lstm forget-gate bias")
    fl.add_argument(
        "--out",
        default="gradlab-out/flow",
        help="folder for flow.json and flow.png/svg (default: %(default)s)",
    )
    fl.add_argument("--no-figure", action="store_true", help="do not write the figure")

    for name in _EXTENSIONS:
        importlib.import_module(name).register(sub)
    for command in sub.choices.values():  # every command's help, extensions' included
        command.formatter_class = _HelpFormatter
    return parser


#: Modules that add subcommands: each has ``register(sub)``, which adds its parsers with
#: ``set_defaults(handler=fn)``, ``fn(args, parser) -> int`` being the exit status.
_EXTENSIONS: tuple[str, ...] = (
    "gradlab._cli_check",
    "gradlab._cli_experiment",
    "gradlab._cli_diagnose",
    "gradlab._cli_cache",
)


# --------------------------------------------------------------------------- commands


def _console(*, stderr: bool = False) -> Any:
    """A rich console on stdout (or stderr); when that is not a terminal, tables are not cut.

    Rich lays out for 80 columns when the output is piped or redirected, which cuts table
    cells (``hidden[1…``). There every command prints at :data:`PIPED_WIDTH` columns without
    wrapping text, and draws its rules :data:`PIPED_RULE_WIDTH` wide.
    """
    from rich.console import Console
    from rich.rule import Rule

    class _PipedConsole(Console):
        def rule(self, title: Any = "", **kwargs: Any) -> None:
            self.print(Rule(title, **kwargs), width=PIPED_RULE_WIDTH)

    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return _PipedConsole(stderr=stderr, width=PIPED_WIDTH, soft_wrap=True)


def _write_json(data: Any, dest: str, console: Any) -> None:
    """Writes ``data`` as JSON to the file ``dest``, or to stdout alone when ``dest`` is ``-``."""
    text = json.dumps(data, indent=1, default=str)
    if dest == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    console.print(f"wrote {path}")


def _cmd_demo(args: argparse.Namespace) -> int:
    from gradlab import demo

    demo.run(args.out, quick=args.quick, seeds=args.seeds, console=_console())
    return 0


def _cmd_flow(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from gradlab import flow, plots

    console = _console()
    arch = args.arch
    if arch in ("mlp", "residual"):
        activation = args.activation or ("relu" if arch == "residual" else "tanh")
        init = args.init or ("he_normal" if arch == "residual" else "lecun_normal")
        if arch == "mlp" and args.branch_scale is not None:
            parser.error("--branch-scale applies to --arch residual only")
        with console.status(f"measuring {arch}, depth {args.depth}, {args.seeds} seeds"):
            profile = flow.depth_profile(
                arch,
                depth=args.depth,
                width=args.width,
                activation=activation,
                init=init,
                seeds=args.seeds,
                batch=args.batch,
                key=args.key,
                loss=args.loss,
                dtype=args.dtype,
                branch_scale=args.branch_scale,
            )
    else:
        if arch == "lstm" and args.activation not in (None, "tanh"):
            parser.error("--activation applies to --arch mlp, residual and rnn")
        with console.status(f"measuring {arch}, {args.steps} steps, {args.seeds} seeds"):
            profile = flow.time_profile(
                arch,
                steps=args.steps,
                hidden=args.width,
                seeds=args.seeds,
                batch=args.batch,
                key=args.key,
                init=args.init or "orthogonal",
                activation=args.activation or "tanh",
                forget_bias=args.forget_bias,
                loss=args.loss,
                dtype=args.dtype,
            )
    console.print(profile.table())
    h = profile.headline()
    line = (
        f"end to end: log10 ratio {h['log10_ratio_mean']:+.2f} ± {h['log10_ratio_std']:.2f} "
        f"(typical ratio {h['typical_ratio']:.3g})"
    )
    if "theory_log10_mean" in h:
        line += (
            f"; theory {h['theory_log10_mean']:+.2f} ± {h['theory_log10_std']:.2f} "
            f"({'exact' if h['theory_exact'] else 'approximate'}: {h['theory_note']})"
        )
    console.print(line)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "flow.json").write_text(json.dumps(profile.to_dict(), indent=1))
    written = [out / "flow.json"]
    if not args.no_figure:
        fig = plots.plot_profiles([profile], [str(profile.config["init"])], title=profile.title)
        written += plots.save(fig, out / "flow")
    console.print("wrote " + ", ".join(str(p) for p in written))
    return 0


@contextlib.contextmanager
def _importable(target: str) -> Iterator[None]:
    """While loading ``target``: its file's folder (or the cwd, for a module) on ``sys.path``.

    So that a file imports its neighbours (``import helpers`` next to ``problem.py``) and a
    module path resolves from the current folder, as ``python path/to/file.py`` and ``python -m``
    would. ``sys.path`` is restored afterwards; the modules imported stay imported.
    """
    module_part = target.rpartition(":")[0]
    path = Path(module_part)
    if module_part.endswith(".py") or path.is_file():
        folder = str(path.resolve().parent)
    else:
        folder = str(Path.cwd())
    saved = list(sys.path)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path[:] = saved


def _load_target(target: str, parser: argparse.ArgumentParser, command: str = "check") -> Any:
    """Imports ``FUNCTION`` from ``MODULE`` (a dotted path or a ``.py`` file).

    Call it inside :func:`_importable` so that the target's neighbours import.
    """
    module_part, sep, func_name = target.rpartition(":")
    if not sep or not module_part or not func_name:
        parser.error(
            f"{command}: expected MODULE:FUNCTION (e.g. mypkg.layers:problem or "
            f"path/to/file.py:problem), got {target!r}"
        )
    path = Path(module_part)
    if module_part.endswith(".py") or path.is_file():
        if not path.is_file():
            parser.error(f"{command}: no such file {module_part!r}")
        name = f"_gradlab_check_target_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            parser.error(f"{command}: cannot import {module_part!r} as a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            parser.error(f"{command}: importing {module_part!r} raised {type(e).__name__}: {e}")
    else:
        try:
            module = importlib.import_module(module_part)
        except Exception as e:
            parser.error(
                f"{command}: cannot import module {module_part!r}: {type(e).__name__}: {e}"
            )
    fn = getattr(module, func_name, None)
    if fn is None or not callable(fn):
        parser.error(f"{command}: {module_part!r} has no function {func_name!r}")
    return fn


def _load_problem(
    target: str, parser: argparse.ArgumentParser, command: str
) -> tuple[Any, Any, tuple[Any, ...]]:
    """``MODULE:FUNCTION`` loaded and called: the ``(f, params, args)`` it returns.

    Bad targets end in ``parser.error`` (the message on stderr, exit status 2).
    """
    with _importable(target):
        fn = _load_target(target, parser, command)
        try:
            problem = fn()
        except Exception as e:
            parser.error(f"{command}: {target}() raised {type(e).__name__}: {e}")
    if not (isinstance(problem, tuple | list) and len(problem) == 3):
        parser.error(
            f"{command}: {target}() must return (f, params, args) with args a tuple, got "
            f"{type(problem).__name__}"
            + (f" of length {len(problem)}" if isinstance(problem, tuple | list) else "")
        )
    f, params, f_args = problem
    if not callable(f):
        parser.error(f"{command}: the first element returned by {target}() is not callable")
    if not isinstance(f_args, tuple | list):
        f_args = (f_args,)
    return f, params, tuple(f_args)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line and returns the exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        0 on success, 1 when ``gradlab check`` fails or ``gradlab diagnose`` flags a layer, 2
        for bad usage or input, 3 when a check is inconclusive.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "flow":
            return _cmd_flow(args, parser)
        return int(args.handler(args, parser))
    except SystemExit as e:  # argparse errors and --help
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except InputError as e:  # bad input found past parsing: the message says the fix
        print(f"gradlab {_argv_command(argv)}: error: {e}", file=sys.stderr)
        return 2


def _argv_command(argv: Sequence[str] | None) -> str:
    """The subcommand named in ``argv`` (for messages), or ``""``."""
    args = list(sys.argv[1:] if argv is None else argv)
    return next((a for a in args if not a.startswith("-")), "")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
