"""``gradlab cache info`` and ``gradlab cache clear`` (gradlab._cli_cache)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import config as jax_config

import gradlab
from gradlab.cli import main
from gradlab.gradcheck.programs._cache import ENV_VAR
from gradlab.gradcheck.programs._stored import PROGRAMS


def _info(capsys) -> dict:
    assert main(["cache", "info", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_shows_what_a_check_kept_and_clear_removes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    jax.clear_caches()
    assert gradlab.check(lambda w: jnp.sum(jnp.tanh(w) ** 2), np.linspace(-1, 1, 5)).ok
    folder = tmp_path / f"jax-{jax.__version__}"
    found = _info(capsys)
    assert found["folder"] == str(folder) and found["enabled"] is True
    assert found["programs"] >= 2 and found["programs_bytes"] > 0
    assert found["programs_limit_bytes"] > 0 and found["unsafe"] == ""

    assert main(["cache", "clear", "--programs-only"]) == 0
    assert "removed" in capsys.readouterr().out
    assert not (folder / PROGRAMS).exists() and folder.exists()
    assert main(["cache", "clear"]) == 0
    capsys.readouterr()
    assert not folder.exists()
    assert _info(capsys)["programs"] == 0


def test_info_says_why_a_folder_is_not_used(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    folder = tmp_path / f"jax-{jax.__version__}"
    folder.mkdir()
    folder.chmod(0o777)
    try:
        assert "writable by its group or by others" in _info(capsys)["unsafe"]
        assert main(["cache", "info"]) == 0
        assert "not used:" in capsys.readouterr().out
    finally:
        folder.chmod(0o700)


def test_a_jax_cache_the_user_configured_is_shown_and_never_cleared(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gradlab"))
    mine = tmp_path / "users-jax-cache"
    mine.mkdir()
    (mine / "entry").write_text("the user's")
    with jax_config.compilation_cache_dir(str(mine)):
        assert _info(capsys)["jax_cache_configured"] == str(mine)
        assert main(["cache", "clear"]) == 0
    assert (mine / "entry").read_text() == "the user's"


def test_cache_without_an_action_is_a_usage_error(capsys):
    assert main(["cache"]) == 2
