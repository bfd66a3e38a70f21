"""Tests of the command line, run in-process through gradlab.cli.main."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import gradlab
from gradlab.cli import main

USER_MODULE = textwrap.dedent(
    """
    import jax
    import jax.numpy as jnp


    def correct():
        w = jnp.arange(1.0, 7.0).reshape(2, 3) / 7.0
        x = jnp.linspace(-1.0, 1.0, 8).reshape(4, 2)
        return (lambda w, x: jnp.sum(jnp.tanh(x @ w) ** 2)), w, (x,)


    @jax.custom_vjp
    def square(x):
        return x**2


    square.defvjp(lambda x: (x**2, x), lambda x, g: (x * g,))  # bug: forgets the 2


    def buggy():
        return (lambda p: jnp.sum(square(p))), jnp.arange(1.0, 4.0), ()


    def unresolvable():  # a gradient of 1e-12 next to |f| = 1e8: rounding hides it
        return (lambda p: 1e8 + 1e-12 * jnp.sum(jnp.sin(p))), jnp.linspace(0.1, 1.0, 5), ()


    def not_a_problem():
        return 42


    def integer_params():  # integers: nothing to check
        return (lambda p: jnp.sum(p**2)), jnp.arange(3), ()
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_layers.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "my_layers.py"


@pytest.mark.slow
def test_demo_quick_writes_summary_and_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["quick"] is True
    lecture = {r["weight"]: r for r in summary["lecture"]["rows"]}
    assert lecture[1.1]["lecture_chain"] == pytest.approx(1.1**150, rel=1e-9)
    assert 10 ** lecture[1.1]["orthogonal_log10_mean"] == pytest.approx(1.1**150, rel=1e-3)
    # every row of the lecture's table is measured with both kinds of weights, --quick too:
    # the Gaussian 1.1 row is not a nan (it was when --quick measured one kind per row)
    for row in lecture.values():
        for kind in ("orthogonal", "normal"):
            for stat in ("mean", "std"):
                assert math.isfinite(row[f"{kind}_log10_{stat}"]), (row["weight"], kind, stat)
        # Gaussian weights N(0, w²/n): measured within 5 spreads of the exact theory
        spread = math.hypot(row["normal_log10_std"], row["gaussian_theory_log10_std"])
        assert abs(row["normal_log10_mean"] - row["gaussian_theory_log10_mean"]) < 5 * spread
    checks = {r["model"]: r for r in summary["checks"]["rows"]}
    assert not checks["buggy custom_vjp tanh (deliberate)"]["ok"]
    assert all(r["ok"] for name, r in checks.items() if "buggy" not in name)
    md = (out / "summary.md").read_text()
    assert "# gradlab demo" in md and "figures/lstm_vs_rnn.png" in md
    for name in (
        "lecture_chain",
        "initialisers",
        "weight_gradients",
        "plain_vs_residual",
        "phase_diagram",
        "lstm_vs_rnn",
    ):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000  # --quick: PNG only
    printed = capsys.readouterr().out
    assert "summary.md" in printed and "The lecture's chains" in printed
    assert not re.search(r"\bnan\b", printed) and not re.search(r"\bnan\b", md)


def test_check_passes_on_a_correct_function(user_module, capsys, tmp_path):
    report = tmp_path / "report.json"
    assert main(["check", f"{user_module}:correct", "--json", str(report)]) == 0
    assert "OK" in capsys.readouterr().out
    assert json.loads(report.read_text())["ok"] is True


def test_check_fails_on_a_buggy_custom_vjp(user_module, capsys):
    assert main(["check", "my_layers:buggy"]) == 1  # dotted module path, from the cwd
    assert "FAILED" in capsys.readouterr().out


def test_check_options(user_module):
    assert main(["check", "my_layers:correct", "--eps", "1e-6", "--tolerance", "1e-5"]) == 0


@pytest.mark.slow
def test_check_exposes_the_checkers_options(user_module, tmp_path):
    path = tmp_path / "r.json"
    argv = ["check", "my_layers:correct", "--entries", "sample:2", "--autodiff", "both"]
    assert main([*argv, "--seed", "3", "--no-cache", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert (
        report["entries"].startswith("sample (2 entries per leaf") and "seed 3" in report["entries"]
    )
    assert report["autodiff"] == "both"
    argv = ["check", "my_layers:correct", "--second-order", "--entries", "directional:2"]
    assert main([*argv, "--json", str(path)]) == 0
    assert json.loads(path.read_text())["order"] == 2
    assert main(["check", "my_layers:correct", "--dtype", "float32", "--json", str(path)]) == 0
    assert json.loads(path.read_text())["dtype"] == "float32"
    # the bug is found whichever entries are moved
    assert main(["check", "my_layers:buggy", "--entries", "directional:3"]) == 1


def test_an_inconclusive_check_exits_3_unless_allowed(user_module, capsys):
    assert main(["check", "my_layers:unresolvable"]) == 3
    assert "INCONCLUSIVE" in capsys.readouterr().out
    assert main(["check", "my_layers:unresolvable", "--allow-inconclusive"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["check", "my_layers"], "MODULE:FUNCTION"),
        (["check", "my_layers:missing"], "has no function 'missing'"),
        (["check", "no_such_module_xyz:f"], "cannot import module"),
        (["check", "missing_file.py:f"], "no such file"),
        (["check", "my_layers:not_a_problem"], "must return (f, params, args)"),
        (["check", "my_layers:correct", "--eps", "-1"], "must be a finite number > 0"),
        (["check", "my_layers:correct", "--entries", "some"], "sample:N"),
        (["check", "my_layers:correct", "--entries", "sample:0"], "must be an integer >= 1"),
        (["check", "my_layers:correct", "--autodiff", "sideways"], "invalid choice"),
        (["flow", "--init", "xavier"], "Valid names: lecun_normal"),
        (["flow", "--arch", "transformer"], "invalid choice"),
        (["flow", "--seeds", "0"], "must be an integer >= 1"),
        (["flow", "--init", "normal:2"], "renamed fan_in_normal"),
        (["check", "my_layers:integer_params"], "bad input"),  # found by the checker
        (["flow", "--branch-scale", "huge"], "rezero, fixup or a number"),
        (["demo", "--seeds", "many"], "is not an integer"),
        (["demo", "--seeds", "1"], "a spread needs two seeds"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_usage_exits_2_with_a_helpful_message(user_module, capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""  # messages go to stderr: stdout stays clean for a pipe


def test_help(capsys):
    for argv in (["--help"], ["demo", "--help"], ["flow", "--help"], ["check", "--help"]):
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "MODULE:FUNCTION" in out and "orthogonal:1.1" in out


# What each command's --help must say about its exit status.
EXIT_STATUSES = {
    (): ("0  success", "1  check: a gradient is wrong", "2  bad usage", "3  check: inconclusive"),
    ("demo",): ("0  done", "2  bad usage"),
    ("flow",): ("0  measured", "2  bad usage"),
    ("check",): ("0  passed", "1  failed", "2  bad usage", "3  inconclusive"),
    ("diagnose",): ("0  no layer flagged", "1  gradients vanish or explode", "2  bad usage"),
    ("experiment",): ("0  it ran", "2  bad usage"),
}


@pytest.mark.parametrize("command", list(EXIT_STATUSES), ids=lambda c: " ".join(c) or "gradlab")
def test_every_help_documents_the_exit_statuses(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "exit status:" in out
    for line in EXIT_STATUSES[command]:  # one line each: the list is not joined into prose
        assert re.search(rf"^  {re.escape(line)}", out, re.M), line


def test_every_command_documents_its_exit_statuses():
    """No command escapes the test above: every subcommand of the parser has an epilog."""
    from gradlab.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        assert parser.epilog and "exit status:" in parser.epilog, name


def test_help_texts_are_whole(capsys):
    assert main(["check", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the help wraps lines; join them
    assert "the dtype the check computes in (default: float64;" in out


def test_version(capsys):
    assert main(["--version"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"gradlab {gradlab.__version__}" and captured.err == ""


def test_json_dash_writes_the_report_to_stdout_alone(user_module, capsys):
    assert main(["check", "my_layers:correct", "--json", "-"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # stdout is the JSON and nothing else
    assert report["ok"] is True and report["outcome"] == "passed"
    assert "gradlab.check OK" in captured.err  # the printed report went to stderr
    assert not (user_module.parent / "-").exists()  # no file named '-'


LONG = "encoder_block_with_a_long_descriptive_name_that_a_terminal_of_80_columns_would_cut"

_DIAGNOSE_TARGET = f"""
import jax.numpy as jnp, numpy as np

def make():
    rng = np.random.default_rng(0)
    ws = {{f"{LONG}_{{i:02d}}": jnp.asarray(rng.normal(size=(8, 8)) * 0.2) for i in range(12)}}
    def f(ws, x):
        for name in sorted(ws):
            x = jnp.tanh(x @ ws[name])
        return jnp.sum(x)
    return f, ws, (jnp.ones((2, 8)),)
"""


@pytest.mark.slow
def test_piped_diagnose_table_is_not_cut(tmp_path, capsys):
    # capsys's stdout is not a terminal, as a pipe is not: rich would lay the table out in 80
    # columns and cut the layer names ('encoder_bl…'); every command prints them whole
    (tmp_path / "longnames.py").write_text(_DIAGNOSE_TARGET)
    assert main(["diagnose", f"{tmp_path / 'longnames.py'}:make", "--no-verify"]) == 1
    out = capsys.readouterr().out
    assert f"{LONG}_00" in out and f"{LONG}_11" in out
    assert "…" not in out
    # --json -: the diagnosis as JSON on stdout alone, the table on stderr
    assert (
        main(["diagnose", f"{tmp_path / 'longnames.py'}:make", "--no-verify", "--json", "-"]) == 1
    )
    captured = capsys.readouterr()
    assert json.loads(captured.out)["flags"][0]["kind"] == "vanishing"
    assert f"{LONG}_00" in captured.err


def test_piped_console_is_wide_and_its_rules_are_not(capsys):
    from gradlab.cli import PIPED_RULE_WIDTH, PIPED_WIDTH, _console

    console = _console()
    assert not console.is_terminal and console.width == PIPED_WIDTH
    console.rule("section")
    line = capsys.readouterr().out.rstrip("\n")
    assert len(line) == PIPED_RULE_WIDTH and "section" in line


_SIBLING = """
import jax.numpy as jnp

def layer(w, x):
    return jnp.tanh(x @ w)
"""

_FILE_TARGET = f"""
import jax.numpy as jnp
from helpers import layer  # a module next to this file, not on the import path

def problem():
    w = jnp.arange(1.0, 7.0).reshape(2, 3) / 7.0
    params = {{"{LONG}": w}}
    x = jnp.linspace(-1.0, 1.0, 8).reshape(4, 2)
    return (lambda p, x: jnp.sum(layer(p["{LONG}"], x) ** 2)), params, (x,)
"""


@pytest.mark.slow
def test_file_target_imports_its_neighbours_and_pipes_whole_rows(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "helpers.py").write_text(_SIBLING)
    (folder / "problem.py").write_text(_FILE_TARGET)
    elsewhere = tmp_path / "elsewhere"  # run from another folder: only the file's has helpers
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(gradlab.__file__).parents[1])}
    run = subprocess.run(
        [sys.executable, "-m", "gradlab", "check", str(folder / "problem.py") + ":problem"],
        cwd=elsewhere,
        capture_output=True,  # stdout is a pipe
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "gradlab.check OK" in run.stdout and LONG in run.stdout  # the leaf name whole
    assert "error" not in run.stderr


def test_file_target_leaves_the_import_path_as_found(tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "helpers.py").write_text(_SIBLING)
    (folder / "problem.py").write_text(_FILE_TARGET)
    before = list(sys.path)
    assert main(["check", f"{folder / 'problem.py'}:problem"]) == 0
    assert sys.path == before
    # without the file's folder on the path the neighbour is not found: the test above tests
    # the fix, not an accident of the working folder
    sys.modules.pop("helpers", None)
    with pytest.raises(ImportError):
        importlib.import_module("helpers")


@pytest.mark.slow
def test_flow_command_writes_json_and_figure(tmp_path, capsys):
    out = tmp_path / "flow"
    argv = [
        "flow",
        "--arch",
        "mlp",
        "--depth",
        "10",
        "--width",
        "6",
        "--seeds",
        "2",
        "--batch",
        "2",
        "--activation",
        "linear",
        "--init",
        "orthogonal:0.9",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    data = json.loads((out / "flow.json").read_text())
    assert data["config"]["init"] == "orthogonal:0.9"
    assert data["headline"]["typical_ratio"] == pytest.approx(0.9**10, rel=1e-4)
    assert (out / "flow.png").is_file() and (out / "flow.svg").is_file()
    assert "theory" in capsys.readouterr().out


def test_bad_input_found_after_parsing_exits_2_with_the_message(monkeypatch, capsys):
    import gradlab
    from gradlab import cli

    def refuse(args, parser):
        raise gradlab.InputError("depth must be >= 1; pass --depth 10")

    monkeypatch.setattr(cli, "_cmd_flow", refuse)
    assert main(["flow"]) == 2
    assert "gradlab flow: error: depth must be >= 1; pass --depth 10" in capsys.readouterr().err


# --------------------------------------------------------------------------- validators


def test_validators_name_the_argument_and_the_fix():
    from gradlab import _validate as v

    assert v.integer("n", 3) == 3 and v.integer("n", np.int64(3)) == 3 and v.integer("n", 3.0) == 3
    assert type(v.integer("n", np.int64(3))) is int
    for bad in (True, 2.5, "3", None, 0, float("nan")):
        with pytest.raises(gradlab.InputError, match=r"n must be an integer >= 1, got .*; pass"):
            v.integer("n", bad)
    with pytest.raises(gradlab.InputError, match="integer >= 1"):
        v.integer("n", 3.0, exact=True)  # exact: ints only
    assert v.positive_number("eps", 1) == 1.0
    for bad in (0, -1.0, float("inf"), float("nan"), True, "1"):
        with pytest.raises(gradlab.InputError, match="eps must be a finite number > 0"):
            v.positive_number("eps", bad)
    assert v.nonnegative_number("gain", 0) == 0.0
    with pytest.raises(gradlab.InputError, match=">= 0"):
        v.nonnegative_number("gain", -1e-9)
    assert v.boolean("flag", False) is False
    with pytest.raises(gradlab.InputError, match="True or False"):
        v.boolean("flag", 1)
    assert v.choice("loss", "bce", ("readout", "bce")) == "bce"
    for bad in ("BCE", 1, np.array(["bce", "bce"])):  # an array is not one of them either
        with pytest.raises(gradlab.InputError, match="loss must be one of 'readout', 'bce'"):
            v.choice("loss", bad, ("readout", "bce"))

    class CustomError(Exception):
        pass

    with pytest.raises(CustomError, match="Sample: per_leaf must be an integer >= 1"):
        v.integer("Sample: per_leaf", 0, exact=True, error=CustomError)


_TREND_TARGET = """
import jax.numpy as jnp, numpy as np

def make():
    # 20 orthogonal layers each multiplying the gradient by 10**(1.35/20): 1.35 decades in
    # all (under the 2-decade rule), but the depth 20 exceeds 6 depth scales (19.3 layers)
    rng = np.random.default_rng(11)
    s = 10 ** (1.35 / 20)
    ws = [jnp.asarray(np.linalg.qr(rng.normal(size=(16, 16)))[0] * s, jnp.float32)
          for _ in range(20)]
    ws.append(jnp.asarray(rng.normal(size=(16, 1)) / 4, jnp.float32))
    def f(ws, x):
        for w in ws[:-1]:
            x = x @ w
        return jnp.sum(x @ ws[-1])
    return f, ws, (jnp.ones((2, 16)),)
"""


def test_diagnose_depth_scales_flag(tmp_path, capsys):
    # --depth-scales K: a trend is flagged over more layers than K depth scales; at 7 the
    # trainable depth (22.5 layers) exceeds the 20 layers, so nothing is flagged
    (tmp_path / "trend.py").write_text(_TREND_TARGET)
    target = f"{tmp_path / 'trend.py'}:make"
    assert main(["diagnose", target, "--no-verify", "--json", "-"]) == 1
    flags = json.loads(capsys.readouterr().out)["flags"]
    assert [f["kind"] for f in flags] == ["exploding"]
    assert main(["diagnose", target, "--no-verify", "--depth-scales", "7"]) == 0
    capsys.readouterr()
    assert main(["diagnose", target, "--no-verify", "--depth-scales", "0"]) == 2
    assert "depth_scales" in capsys.readouterr().err
