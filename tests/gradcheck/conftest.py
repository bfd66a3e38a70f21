"""Fixtures of the checker's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jax
import pytest

from gradlab.gradcheck.programs._cache import ENV_VAR, PROGRAMS


@pytest.fixture
def store(tmp_path, monkeypatch) -> Iterator[Path]:
    """gradlab's cache under tmp_path; returns the folder of kept programs."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    jax.clear_caches()
    yield tmp_path / f"jax-{jax.__version__}" / PROGRAMS
    jax.clear_caches()
