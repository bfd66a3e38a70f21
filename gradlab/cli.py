"""The ``gradlab`` command line: ``gradlab demo``, ``gradlab flow``, ``gradlab check``.

Run ``gradlab --help`` or ``gradlab COMMAND --help``; ``python -m gradlab`` is the same.
:func:`main` returns the exit status: 0 on success, 1 when ``gradlab check`` finds a wrong
gradient, 2 for bad usage (argparse's convention), 3 when a check is inconclusive.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

_ACTIVATIONS = ("tanh", "relu", "linear", "sigmoid", "gelu")


def _init_name(value: str) -> str:
    from gradlab import init

    try:
        init.get(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _non_negative(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def _at_least_two(value: str) -> int:
    n = _positive(value)
    if n < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2 (a spread needs two seeds), got {n}")
    return n


def _positive_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return x


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    from gradlab import init

    parser = argparse.ArgumentParser(
        prog="gradlab",
        description="See and fix vanishing and exploding gradients in JAX, and verify "
        "gradients numerically.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="the lecture's vanishing/exploding gradients, measured vs theory (~2 min)",
        description="Measures gradient norms through 150-layer networks and 100-step "
        "LSTMs/RNNs over many seeds, compares them with closed-form theory, runs gradient "
        "checks on the built-in models, prints tables and writes figures, summary.json and "
        "summary.md.",
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
        + " (parametric ones take NAME:VALUE, e.g. orthogonal:1.1, normal:0.9).",
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


def _console() -> Any:
    from rich.console import Console

    return Console()


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


def _load_target(target: str, parser: argparse.ArgumentParser) -> Any:
    module_part, sep, func_name = target.rpartition(":")
    if not sep or not module_part or not func_name:
        parser.error(
            f"check: expected MODULE:FUNCTION (e.g. mypkg.layers:problem or "
            f"path/to/file.py:problem), got {target!r}"
        )
    path = Path(module_part)
    if module_part.endswith(".py") or path.is_file():
        if not path.is_file():
            parser.error(f"check: no such file {module_part!r}")
        name = f"_gradlab_check_target_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            parser.error(f"check: cannot import {module_part!r} as a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            parser.error(f"check: importing {module_part!r} raised {type(e).__name__}: {e}")
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(module_part)
        except Exception as e:
            parser.error(f"check: cannot import module {module_part!r}: {type(e).__name__}: {e}")
    fn = getattr(module, func_name, None)
    if fn is None or not callable(fn):
        parser.error(f"check: {module_part!r} has no function {func_name!r}")
    return fn


def _load_problem(
    target: str, parser: argparse.ArgumentParser, command: str
) -> tuple[Any, Any, tuple[Any, ...]]:
    """``MODULE:FUNCTION`` loaded and called: the ``(f, params, args)`` it returns."""
    fn = _load_target(target, parser)
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
        0 on success, 1 when ``gradlab check`` fails, 2 for bad usage, 3 when a check is
        inconclusive.
    """
    from gradlab._errors import InputError

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
