"""How the API pages read gradlab's docstrings: a Griffe extension and an MkDocs hook.

The docstrings are written for ``help()`` and doctests, in Google style with Sphinx roles;
:class:`Docstrings` (loaded by mkdocstrings' ``extensions:`` option) adapts them, before
Griffe parses them, to what mkdocstrings renders:

* doctests: an ``Example:`` header (as Napoleon allows) is read as ``Examples:``, and a run of
  ``>>>`` lines outside any section is fenced as a ``pycon`` block, so every doctest shows as
  Python code rather than as nested quotes;
* reST literal blocks: the ``::`` that opens one is dropped (``formula::`` reads
  ``formula:``); the indented block after it is already Markdown code;
* Sphinx roles (``:func:`depth_profile```, ``:class:`~gradlab.CheckReport```): each becomes
  the name in code, marked with the identifiers it may mean, as Python would resolve it (the
  object whose docstring holds it and each enclosing scope, outwards; the module's imports;
  the name as written). Without the colons of the role, a role at the start of a
  ``Returns:`` item is no longer read as ``name: description``.

The MkDocs hook (``hooks:`` in ``mkdocs.yml``), once every page has registered its anchors,
links each marked name to the first of its identifiers that the site documents; names it
does not (``jax.lax.scan``) stay as code. It then checks that the API reference is complete:
every name in ``gradlab.__all__``, and in the ``__all__`` of each module exported there and
of each module in ``_EXTRA_MODULES``, must have its entry in the site
(``::: gradlab.flow.depth_profile`` in ``docs/api/flow.md``); a missing one is a warning, so
``mkdocs build --strict`` fails and names it. An object rendered twice on one page (an
explicit entry for a name that had no docstring, next to a module listing that shows it once
it has one) is a warning too. Nothing here changes the docstrings in the source.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe
from griffe import Extension, Object
from mkdocs.plugins import get_plugin_logger

_log = get_plugin_logger("gradlab_api")
# Documented although not exported by ``gradlab`` itself.
_EXTRA_MODULES = ("gradlab.plots", "gradlab.train", "gradlab.train.tasks", "gradlab.experiments")

# A Google-style section header "Example:" alone on its line.
_EXAMPLE_HEADER = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", flags=re.MULTILINE)
# A doctest outside any section: ">>>" at the start of a line, up to the next blank line.
_BARE_DOCTEST = re.compile(r"^>>> .*?(?=\n[ \t]*\n|\Z)", flags=re.MULTILINE | re.DOTALL)
# "text::" or a lone "::" ending a line: reST's literal-block marker.
_LITERAL_MARKER = re.compile(r"(?P<text>\S?)::[ \t]*$", flags=re.MULTILINE)
# :func:`name`, :class:`~pkg.Name`, :meth:`Name.method()`, ...
_ROLE = re.compile(
    r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const|type):"
    r"`(?P<short>~)?(?P<name>[A-Za-z_][\w.]*)(?P<call>\(\))?`"
)
# mkdocstrings' object headings: <h3 id="gradlab.flow.FlowProfile" class="doc doc-heading">.
_HEADING = re.compile(r'<h\d id="(?P<id>[\w.]+)"[^>]*class="doc doc-heading')
# The mark a role becomes, replaced by a link (or plain code) in on_env.
_MARK = re.compile(r'<span data-gl-ref="(?P<candidates>[^"]*)">(?P<title>.*?)</span>')


class Docstrings(Extension):
    """Griffe extension: doctests shown as code, Sphinx roles marked for linking."""

    def on_package(self, *, pkg: Object, **kwargs: Any) -> None:
        """The package's own docstring (``on_object`` covers its members)."""
        _adapt(pkg)

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        """Every module, class, function and attribute below the package."""
        _adapt(obj)


def _adapt(obj: Object) -> None:
    """Rewrites ``obj``'s docstring before it is parsed."""
    if obj.docstring is None:
        return
    text = _EXAMPLE_HEADER.sub(r"\g<indent>Examples:", obj.docstring.value)
    text = _BARE_DOCTEST.sub(lambda m: f"```pycon\n{m[0]}\n```", text)
    text = _LITERAL_MARKER.sub(lambda m: f"{m['text']}:" if m["text"] else "", text)
    obj.docstring.value = _ROLE.sub(lambda m: _mark(m, obj), text)


def _mark(match: re.Match[str], obj: Object) -> str:
    name = match["name"]
    shown = name.rsplit(".", 1)[-1] if match["short"] else name
    candidates = html.escape(" ".join(_candidates(name, obj)))
    return f'<span data-gl-ref="{candidates}"><code>{shown}{match["call"] or ""}</code></span>'


def _candidates(name: str, obj: Object) -> list[str]:
    """The identifiers ``name`` may mean in ``obj``'s docstring, most specific first."""
    out: list[str] = []
    parts = obj.path.split(".")
    for i in range(len(parts), 0, -1):
        out.append(".".join([*parts[:i], name]))
    head, _, rest = name.partition(".")
    imported = obj.module.imports.get(head)
    if imported:
        out.append(f"{imported}.{rest}" if rest else imported)
    out.append(name)
    return out


def on_page_content(html_text: str, page: Any, **kwargs: Any) -> str:
    """Warns about an object rendered twice on the page."""
    seen: set[str] = set()
    for match in _HEADING.finditer(html_text):
        if match["id"] in seen:
            _log.warning(
                f"{match['id']} is rendered twice on {page.file.src_path}: remove its explicit "
                "'::: ' entry if the module's listing shows it"
            )
        seen.add(match["id"])
    return html_text


def on_env(env: Any, config: Any, files: Any) -> Any:
    """Links every marked name (before autorefs resolves links) and checks completeness."""
    autorefs = config.plugins.get("autorefs")

    def documented(identifier: str) -> bool:
        try:
            autorefs.get_item_url(identifier)
        except KeyError:
            return False
        return True

    def link(match: re.Match[str]) -> str:
        for identifier in match["candidates"].split():
            if documented(identifier):
                return f'<autoref identifier="{identifier}" optional>{match["title"]}</autoref>'
        return match["title"]

    for file in files:
        if file.page is not None and file.page.content:
            file.page.content = _MARK.sub(link, file.page.content)
    for identifier in _public_names():
        if not documented(identifier):
            page = "gradlab.md" if identifier.count(".") == 1 else identifier.split(".")[1] + ".md"
            _log.warning(
                f"the public name {identifier} has no entry in the API reference: add "
                f"'::: {identifier}' to docs/api/{page}"
            )
    return env


def _public_names() -> list[str]:
    """``module.name`` for every public name of gradlab and of its public modules.

    Read statically by Griffe (as mkdocstrings reads the docstrings), from the ``gradlab``
    found on ``sys.path``.
    """
    root = griffe.load("gradlab")
    modules = [root] + [root[name.split(".", 1)[1]] for name in _EXTRA_MODULES]
    modules += [root[str(n)] for n in root.exports or () if root[str(n)].is_module]
    return [
        f"{module.path}.{name}"
        for module in modules
        for name in map(str, module.exports or ())
        if not name.startswith("__") and not module[name].is_module
    ]
