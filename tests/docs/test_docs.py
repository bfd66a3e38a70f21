"""Every ```python block of the documentation runs, page by page, as a reader would run it.

Blocks of a page share one namespace, in order (a page builds on its earlier blocks). A block
that is not meant to run (a signature, a shell command, output) must be marked ```text or
```bash, not ```python: that is what this test enforces.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([p.relative_to(ROOT) for p in (ROOT / "docs").glob("*.md")] + [Path("README.md")])
#: Pages whose code takes longer (it measures, trains or checks at a reader's sizes): run by the
#: full suite, left out of the fast loop (-m "not slow").
_SLOW_PAGES = {
    "README.md",
    "docs/check.md",
    "docs/check_modes.md",
    "docs/flow.md",
    "docs/initialisers.md",
    "docs/models.md",
    "docs/train.md",
}
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a markdown text, in order."""
    return [m.group(1) for m in _BLOCK.finditer(text)]


def test_python_blocks_are_found():
    text = "a\n```python\nx = 1\n```\n```text\nnot code\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = x\n"]


#: JAX settings a page may change (a reader's script may enable x64); restored after each page.
_JAX_SETTINGS = ("jax_enable_x64", "jax_default_matmul_precision")


@pytest.fixture
def jax_settings_restored():
    saved = {name: getattr(jax.config, name) for name in _JAX_SETTINGS}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)


@pytest.mark.usefixtures("jax_settings_restored")
@pytest.mark.parametrize(
    "page",
    [pytest.param(p, marks=[pytest.mark.slow] if str(p) in _SLOW_PAGES else []) for p in PAGES],
    ids=str,
)
def test_every_python_block_runs(page, tmp_path, monkeypatch):
    blocks = python_blocks((ROOT / page).read_text())
    # run where the reader's files may go, with the repository's folders at hand (pages refer
    # to files by their path in the repository): a page's figures land in tmp_path
    for name in ("tests", "docs", "benchmarks"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{page}[block {i}]", "exec"), namespace)
        except Exception as e:
            pytest.fail(f"{page}, python block {i} raised {type(e).__name__}: {e}\n{block}")
    assert os.getcwd() == str(tmp_path)


# The documentation speaks of the product, not of how it was made: no work-item numbers, no
# "bars", no revision hashes, sessions or dates of runs. Each pattern names what it catches.
_PROCESS_WORDS = {
    "a work-item number": re.compile(r"\bissues?\s*#?\d|\bparts?\s+\d+\b", re.I),
    "an issue reference": re.compile(r"(?<![\w/&#])#\d+\b"),
    "a bar": re.compile(r"\bbars?\b", re.I),
    "a session": re.compile(r"\bsessions?\b", re.I),
    # 7 to 40 hex digits, at least one a letter and one a digit, not a part of a number
    "a revision hash": re.compile(
        r"(?<![\w.+-])(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![\w.]|[+-]\d)"
    ),
    "a date or time of a run": re.compile(r"\b20\d\d-\d\d-\d\d\b|\b\d\d:\d\d\s*UTC\b"),
    "the development machine": re.compile(r"development machine|lent to this work", re.I),
}

#: Phrases these patterns would catch that are right where they stand: other projects' issues
#: and bars that are drawn.
_ALLOWED = (
    "Caffe's issue #1334",
    "BVLC/caffe#1334",
    "progress bar",
    "error bar",
    "bar chart",
    "grouped bars",
)


def process_words(text: str) -> list[str]:
    """What of the development process ``text`` mentions, as "what: the words" lines."""
    for phrase in _ALLOWED:
        text = re.sub(re.escape(phrase), " ", text, flags=re.I)
    found = []
    for what, pattern in _PROCESS_WORDS.items():
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"line {line}: {what}: {m.group(0)!r}")
    return found


def test_process_words_are_caught():
    caught = [
        "## Cold cost of a small check (issue 10, part 1)",
        "## Are the bars met?",
        "checker of commit `6a9a36a`",
        "revision 3d435ed+dirty",
        "the session 5 run",
        "Run of 2026-12-01 00:26 UTC",
        "load average 6–7 on the development machine",
        "as asked in #12",
    ]
    for text in caught:
        assert process_words(text), text
    fine = [
        "Caffe's issue #1334 asked for it",
        "a progress bar appears",
        "[theory §5](theory.md#5-residual-stacks)",
        "relative error 1.44e-09, eps 1e-7, float64, 0xff, deadbeef, 1234567",
        "numerical +5.7701485867e-01  analytical -4.9242721831e+01",
        "Saxe et al. 2014; N(0, 1/n); chunk 256",
    ]
    for text in fine:
        assert not process_words(text), (text, process_words(text))


@pytest.mark.parametrize(
    "page",
    [*sorted(ROOT.glob("docs/**/*.md")), ROOT / "README.md"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_development_process_in_the_docs(page):
    found = process_words(page.read_text())
    assert not found, f"{page.relative_to(ROOT)} speaks of how it was made:\n" + "\n".join(found)
