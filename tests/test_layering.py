"""No import cycle anywhere in gradlab/: every module's imports lead only downwards.

The import graph is grimp's (what ``lint-imports`` checks the layers of pyproject.toml's
``[tool.importlinter]`` with): every ``import`` in gradlab's source, a function's deferred ones
included; imports under ``if TYPE_CHECKING:`` are annotations only and left out, as there. A
cycle is a strongly connected component of more than one module (Tarjan's algorithm), or a
module that imports itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grimp
import pytest


def strongly_connected(
    nodes: Iterable[str], successors: Callable[[str], Iterable[str]]
) -> list[list[str]]:
    """The strongly connected components of a directed graph (Tarjan's, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(nodes):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(successors(root))))]
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(successors(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def cycles(nodes: Iterable[str], successors: Callable[[str], Iterable[str]]) -> list[list[str]]:
    """The components of the graph that hold a cycle, each sorted, largest first."""
    found = [
        c
        for c in strongly_connected(nodes, successors)
        if len(c) > 1 or c[0] in set(successors(c[0]))
    ]
    return sorted(found, key=lambda c: (-len(c), c))


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": ["b"], "b": ["c"], "c": []}, []),
        ({"a": ["b"], "b": ["a"], "c": ["a"]}, [["a", "b"]]),
        ({"a": ["a"], "b": []}, [["a"]]),
        (
            {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": ["d"]},
            [["a", "b", "c"], ["d", "e"]],
        ),
    ],
)
def test_cycles_are_found(edges, expected):
    assert cycles(edges, lambda n: edges[n]) == expected


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # no cache_dir: nothing is written into the working tree
    return grimp.build_graph("gradlab", exclude_type_checking_imports=True, cache_dir=None)


def test_the_graph_is_gradlabs(graph):
    # the graph holds what the layers are made of: a failure here is grimp, not gradlab
    assert {"gradlab.flow", "gradlab._diagnose", "gradlab.plots"} <= graph.modules
    assert "gradlab._diagnose" in graph.find_modules_directly_imported_by("gradlab.flow")


def test_no_import_cycle_in_gradlab(graph):
    found = cycles(graph.modules, graph.find_modules_directly_imported_by)
    lines = []
    for component in found:
        members = set(component)
        lines.append(" <-> ".join(component))
        for importer in component:
            for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
                for d in graph.get_import_details(importer=importer, imported=imported):
                    lines.append(f"    {importer}:{d['line_number']}: {d['line_contents']}")
    assert not found, "import cycles in gradlab/ (break each by moving a name down a layer):\n" + (
        "\n".join(lines)
    )
