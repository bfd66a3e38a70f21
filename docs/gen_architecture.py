"""Draws the gradient checker's stages and the imports between them.

Reads the stage packages under ``gradlab/gradcheck/`` (every folder with an ``__init__.py``)
and the imports of their modules (``ast``: module level and inside functions alike), orders
the stages by those imports (a stage sits below every stage that imports it) and draws them
with matplotlib: one box per stage with its modules and their lengths, one arrow per pair
of stages that import each other, labelled with the number of module-to-module imports.

Run from the repository root::

    python docs/gen_architecture.py                 # docs/figures/architecture.png
    python docs/gen_architecture.py --out /tmp/a.png
"""

from __future__ import annotations

import argparse
import ast
import collections
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

ROOT = Path(__file__).resolve().parents[1]
CHECKER = ROOT / "gradlab" / "gradcheck"
PACKAGE = "gradlab.gradcheck"


def stages(checker: Path = CHECKER) -> dict[str, list[Path]]:
    """Each stage package's name and its modules (``__init__.py`` left out)."""
    found = {}
    for init in sorted(checker.glob("*/__init__.py")):
        folder = init.parent
        found[folder.name] = sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")
    return found


def imported_modules(path: Path) -> set[str]:
    """The dotted names of the checker's modules that ``path`` imports, anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith(PACKAGE + "."):
                out.add(node.module)
                out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith(PACKAGE + "."))
    return out


def stage_edges(found: dict[str, list[Path]]) -> collections.Counter[tuple[str, str]]:
    """``(importer, imported)`` stage pairs, counted in module-to-module imports."""
    modules = {f"{PACKAGE}.{stage}.{p.stem}": stage for stage, ps in found.items() for p in ps}
    edges: collections.Counter[tuple[str, str]] = collections.Counter()
    for stage, paths in found.items():
        for path in paths:
            targets = {modules[m] + ":" + m for m in imported_modules(path) if m in modules}
            for target in targets:
                other = target.split(":")[0]
                if other != stage:
                    edges[stage, other] += 1
    return edges


def levels(names: list[str], edges: collections.Counter[tuple[str, str]]) -> dict[str, int]:
    """Each stage's row: 0 for stages nothing imports, else one below its lowest importer.

    Stages that import no other stage sit on the lowest row together.

    Raises:
        ValueError: The stages import each other in a cycle.
    """
    level: dict[str, int] = {}

    def depth(name: str, path: tuple[str, ...]) -> int:
        if name in path:
            raise ValueError(f"import cycle between stages: {' -> '.join((*path, name))}")
        if name not in level:
            importers = [a for (a, b) in edges if b == name]
            level[name] = 1 + max((depth(a, (*path, name)) for a in importers), default=-1)
        return level[name]

    for name in names:
        depth(name, ())
    bottom = max(level.values(), default=0)
    for name in names:
        if not any(a == name for (a, _) in edges):
            level[name] = bottom
    return level


def summary(stage: str) -> str:
    """The first sentence of the stage package's docstring, without its "Stage n" label."""
    doc = ast.get_docstring(ast.parse((CHECKER / stage / "__init__.py").read_text())) or ""
    first = doc.split("\n\n")[0].replace("\n", " ")
    first = first.replace("``", "")
    return first.split(", ", 1)[1] if first.startswith("Stage") else first


def draw(out: Path, checker: Path = CHECKER) -> Path:
    """Draws the stages of ``checker`` and their imports to ``out`` (a PNG)."""
    found = stages(checker)
    edges = stage_edges(found)
    level = levels(list(found), edges)
    rows: dict[int, list[str]] = collections.defaultdict(list)
    for name in found:
        rows[level[name]].append(name)
    width, box_w, row_h, box_h = 12.0, 5.6, 2.6, 2.2
    n_rows = max(rows) + 1
    fig, ax = plt.subplots(figsize=(width, row_h * n_rows + 0.6))
    ax.set_xlim(0, width)
    ax.set_ylim(-0.3, row_h * n_rows + 0.3)
    ax.axis("off")
    centre: dict[str, tuple[float, float]] = {}
    for lvl, names in rows.items():
        y = row_h * (n_rows - lvl) - row_h / 2
        w = box_w if len(names) == 1 else (width - 0.6 - 0.4 * (len(names) - 1)) / len(names)
        for i, name in enumerate(names):
            x = 0.6 + w / 2 + i * (w + 0.4) if len(names) > 1 else 0.6 + w / 2
            centre[name] = (x, y)
            ax.add_patch(
                FancyBboxPatch(
                    (x - w / 2, y - box_h / 2), w, box_h,
                    boxstyle="round,pad=0.02,rounding_size=0.12",
                    facecolor="#eef3fb", edgecolor="#33507a", linewidth=1.2,
                )
            )  # fmt: skip
            ax.text(x - w / 2 + 0.12, y + box_h / 2 - 0.12, f"{PACKAGE}.{name}", va="top",
                    fontsize=9.5, fontweight="bold", color="#1d3357")  # fmt: skip
            blurb = textwrap.fill(summary(name), int(w * 12))
            ax.text(x - w / 2 + 0.12, y + box_h / 2 - 0.42, blurb, va="top", fontsize=7,
                    style="italic", color="#33507a")  # fmt: skip
            mods = [
                f"{p.stem} {len(p.read_text(encoding='utf-8').splitlines())}" for p in found[name]
            ]
            cols = 3 if len(mods) > 6 else 2
            per = -(-len(mods) // cols)
            for c in range(cols):
                text = "\n".join(mods[c * per : (c + 1) * per])
                ax.text(x - w / 2 + 0.12 + c * (w - 0.2) / cols, y + box_h / 2 - 0.95, text,
                        va="top", fontsize=6.5, family="monospace", color="#222")  # fmt: skip
    for (a, b), n in sorted(edges.items()):
        (xa, ya), (xb, yb) = centre[a], centre[b]
        skip = level[b] - level[a]
        rad = 0.0 if skip == 1 and abs(xa - xb) < 1 else -0.18 - 0.07 * skip
        start, end = (xa, ya - box_h / 2), (xb, yb + box_h / 2)
        if skip > 1:  # around the stages between, on the right
            start = (xa + box_w / 2, ya - 0.1 * skip)
            end = (min(xb + 1.5, xa + box_w / 2), yb + box_h / 2)
        ax.add_patch(
            FancyArrowPatch(
                start, end, connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=10,
                linewidth=0.6 + 0.12 * min(n, 12), color="#8a3b12", alpha=0.75,
            )
        )  # fmt: skip
        ax.text((start[0] + end[0]) / 2 + (0.25 + 0.35 * skip if skip > 1 else 0.12),
                (start[1] + end[1]) / 2, str(n), fontsize=7, color="#8a3b12")  # fmt: skip
    ax.set_title(
        "gradlab.gradcheck: stages (boxes: modules and their lines) and their imports "
        "(arrows: importer → imported, module imports counted)",
        fontsize=9,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--out PATH`` (default ``docs/figures/architecture.png``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "architecture.png")
    print(draw(parser.parse_args(argv).out))


if __name__ == "__main__":
    main()
