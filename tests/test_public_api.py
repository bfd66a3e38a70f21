"""The public API reads like a library's: every public name documented, with an example.

Public names are those in ``gradlab.__all__`` and in the ``__all__`` of each public subpackage.
Functions and classes need a Google-style docstring with a runnable example (``>>>``, run by
the doctests); constants and type aliases need a ``#:`` comment or a docstring after them (what
mkdocstrings shows).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import types
from pathlib import Path

import pytest

import gradlab

SUBPACKAGES = ("init", "nn", "flow", "theory", "losses", "train", "experiments", "plots")


def _public() -> list[tuple[str, object, str]]:
    """(qualified name, object, name in its namespace) of every public name."""
    out = []
    for name in gradlab.__all__:
        if name in SUBPACKAGES or name == "__version__":
            continue
        out.append((f"gradlab.{name}", getattr(gradlab, name), name))
    for sub in SUBPACKAGES:
        module = importlib.import_module(f"gradlab.{sub}")
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType):
                continue
            out.append((f"gradlab.{sub}.{name}", obj, name))
    return out


@functools.cache
def _sources() -> tuple[tuple[list[str], list[ast.stmt]], ...]:
    """(lines, top-level statements) of every module of gradlab, parsed once."""
    out = []
    for path in sorted(Path(gradlab.__file__).parent.rglob("*.py")):
        text = path.read_text()
        out.append((text.splitlines(), ast.parse(text).body))
    return tuple(out)


def _documented_constant(name: str) -> bool:
    """A ``#:`` comment before, or a string after, ``name = ...`` in a module of gradlab."""
    for lines, body in _sources():
        for i, node in enumerate(body):
            targets = (
                [t.id for t in node.targets if isinstance(t, ast.Name)]
                if isinstance(node, ast.Assign)
                else [node.target.id]
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                else []
            )
            if name not in targets:
                continue
            before = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
            after = body[i + 1] if i + 1 < len(body) else None
            string_after = (
                isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            )
            if before.startswith("#:") or string_after:
                return True
    return False


CASES = _public()


@pytest.mark.parametrize(("qualname", "obj", "name"), CASES, ids=[c[0] for c in CASES])
def test_public_name_is_documented_with_an_example(qualname, obj, name):
    if inspect.isfunction(obj) or inspect.isclass(obj):
        doc = inspect.getdoc(obj) or ""
        assert doc, f"{qualname} has no docstring"
        assert ">>>" in doc, f"{qualname}'s docstring has no runnable example (>>>)"
    else:
        assert _documented_constant(name), (
            f"{qualname} (a constant or type alias) has no '#:' comment or docstring"
        )


def test_the_checkers_options_are_few_and_independent():
    # at most 12 keyword options; every cross-option rule is a settings object (f_kwargs is
    # not an option of the checker: it carries f's own keywords)
    params = inspect.signature(gradlab.check).parameters.values()
    options = [p for p in params if p.kind is p.KEYWORD_ONLY and p.name != "f_kwargs"]
    assert len(options) <= 12, [p.name for p in options]
    rule = inspect.signature(gradlab.check_rule).parameters
    # check_rule's shared options: the same names and defaults (its argnums defaults to every
    # float argument: fn(*args) has no params argument to default to)
    for p in options:
        if p.name in rule and p.name != "argnums":
            assert rule[p.name].default == p.default, p.name
    assert {"eps", "tolerance", "projections", "seed", "criteria", "execution"} <= set(rule)
