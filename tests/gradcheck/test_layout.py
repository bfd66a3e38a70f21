"""The checker's layout: every module in a stage folder, short, imports only downwards."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "gradlab" / "gradcheck"
PACKAGE = "gradlab.gradcheck"
#: The stages, top to bottom (as in pyproject.toml, [tool.importlinter]); one row's stages may
#: not import each other.
ORDER = [("api",), ("pipeline",), ("judging",), ("evaluation",), ("planning",),
         ("programs", "report")]  # fmt: skip
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    return {
        ".".join((PACKAGE, *p.relative_to(CHECKER).with_suffix("").parts)): p
        for p in sorted(CHECKER.rglob("*.py"))
        if p != CHECKER / "__init__.py"
    }


def _imports(path: Path, known: set[str]) -> set[str]:
    """The checker's modules ``path`` imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            out.update(n for n in names if n in known)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
    return out


def _stage(module: str) -> str:
    return module.split(".")[2]


def test_every_module_is_in_a_stage_folder_and_short():
    stages = {row_stage for row in ORDER for row_stage in row}
    folders = {p.parent.name for p in CHECKER.glob("*/__init__.py")}
    assert folders == stages
    for path in _modules().values():
        rel = path.relative_to(CHECKER)
        assert len(rel.parts) == 2 and rel.parts[0] in stages, f"{rel} is in no stage folder"
        n = len(path.read_text(encoding="utf-8").splitlines())
        assert n < MAX_LINES, f"{rel} has {n} lines: split it by what it does"
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc, f"{rel} says nothing of what it holds"


def test_stages_import_only_downwards():
    row = {stage: i for i, stages in enumerate(ORDER) for stage in stages}
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        for target in _imports(path, set(modules)):
            a, b = _stage(module), _stage(target)
            if a != b and row[b] <= row[a]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports up or across the stages:\n" + "\n".join(wrong)


def test_no_import_cycles_between_the_checkers_modules():
    modules = _modules()
    edges = {m: _imports(p, set(modules)) - {m} for m, p in modules.items()}
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        if m in path:
            cycle = (*path[path.index(m) :], m)
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if m in done:
            return
        for target in sorted(edges[m]):
            if not target.endswith(".__init__") and target in edges:
                visit(target, (*path, m))
        done.add(m)

    for m in modules:
        visit(m, ())


def test_the_architecture_figure_is_drawn(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "gen_architecture", ROOT / "docs" / "gen_architecture.py"
    )
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    out = gen.draw(tmp_path / "architecture.png")
    assert out.stat().st_size > 10_000
    found = gen.stages()
    assert set(found) == {stage for row in ORDER for stage in row}
    level = gen.levels(list(found), gen.stage_edges(found))
    assert [level[s] for (s,) in ORDER[:-1]] == sorted(level[s] for (s,) in ORDER[:-1])
