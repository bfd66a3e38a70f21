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

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([p.relative_to(ROOT) for p in (ROOT / "docs").glob("*.md")] + [Path("README.md")])
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
@pytest.mark.parametrize("page", PAGES, ids=str)
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
