"""Tests of gradlab.experiments and ``gradlab experiment``: every experiment at --size tiny.

The tiny runs check the machinery (the JSON schema, the claims' evidence, the figures); the
qualitative claims are checked at default size, where docs/experiments.md reports them over
several seed sets, since at tiny size nothing has time to train.
"""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gradlab import InputError, cli, experiments, init, nn
from gradlab.experiments import _result as result_mod
from gradlab.experiments._scaling import from_lecun, gaussian_init


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("experiments")


@pytest.mark.parametrize("name", experiments.names())
def test_experiment_tiny_writes_json_and_figures(name, out):
    code = cli.main(["experiment", name, "--size", "tiny", "--out", str(out)])
    assert code == 0
    folder = out / name
    data = json.loads((folder / "result.json").read_text())
    experiments.validate_result(data)
    assert data["experiment"] == name and data["size"] == "tiny"
    assert data["seeds"] == data["config"]["seeds"]  # the tiny size's own seed count
    for claim in data["claims"]:
        ev = claim["evidence"]
        # holds is decided by the per-seed evidence, never written by hand
        assert len(ev["per_seed"]) == ev["seeds"] == data["seeds"]
        assert claim["holds"] == (ev["seeds_passing"] == ev["seeds"])
    assert data["figures"]
    for fig in data["figures"]:
        assert (folder / fig).stat().st_size > 1000
    assert data["seconds"] > 0


def test_experiment_list_and_errors(capsys):
    assert cli.main(["experiment", "list"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in experiments.names())
    assert cli.main(["experiment", "no-such-thing"]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    assert cli.main(["experiment", "init-depth", "--seeds", "1"]) == 2
    assert cli.main(["experiment", "init-depth", "--size", "huge"]) == 2
    with pytest.raises(InputError, match="seeds must be"):
        experiments.run("clipping", size="tiny", seeds=1)
    with pytest.raises(InputError, match="choose one of"):
        experiments.run("no-such-thing")
    with pytest.raises(InputError, match="first_seed"):
        experiments.run("clipping", size="tiny", first_seed=-1)
    summaries = {experiments.describe(name) for name in experiments.names()}
    assert len(summaries) == len(experiments.names())  # one summary per experiment


def test_validate_result_rejects_bad_claims():
    ok = {k: 0 for k in result_mod._KEYS}
    ok["claims"] = [{"text": "t", "holds": True, "evidence": {"x": 1}}]
    experiments.validate_result(ok)
    with pytest.raises(InputError, match="missing keys"):
        experiments.validate_result({"experiment": "x"})
    with pytest.raises(InputError, match="at least one claim"):
        experiments.validate_result({**ok, "claims": []})
    with pytest.raises(InputError, match="holds"):
        experiments.validate_result({**ok, "claims": [{"text": "t", "holds": 1, "evidence": {}}]})
    no_evidence = {"text": "t", "holds": True, "evidence": {}}
    with pytest.raises(InputError, match="no evidence"):
        experiments.validate_result({**ok, "claims": [no_evidence]})


def test_claim_all_needs_every_seed():
    assert not result_mod.claim_all("c", [1.0, 2.0], "x < 1.5", [True, False]).holds
    assert not result_mod.claim_all("c", [], "x", []).holds
    c = result_mod.claim_all("c", np.array([0.1, 0.2]), "x < 0.5", np.array([True, True]))
    assert c.holds and c.evidence["per_seed"] == [0.1, 0.2]
    json.dumps(result_mod.jsonable({"a": np.array([np.inf, 1.0])}), allow_nan=False)


@pytest.mark.parametrize(
    "name", ["he_normal", "glorot_normal", "lecture_glorot", "fan_in_normal:1.5"]
)
def test_from_lecun_matches_the_initialiser(name):
    """Rescaled LeCun draws have the target initialiser's variance, layer by layer."""
    model = nn.MLP(40, 1, width=60, depth=3, rngs=nnx.Rngs(0))
    params = nn.pure(model)[1]
    kernels = {"w_in": None, "w_hidden": 0, "w_out": None}
    scaled = from_lecun(params, name, kernels)
    scale, mode = gaussian_init(name)
    for leaf, axis in kernels.items():
        w = jnp.asarray(scaled[leaf][...])
        fan_in, fan_out = init.compute_fans(w.shape, batch_axis=() if axis is None else axis)
        fan = {"fan_in": fan_in, "fan_avg": (fan_in + fan_out) / 2}[mode]
        ratio = float(w.var()) / (scale / fan)
        # the sample variance of m Gaussian entries has relative sd sqrt(2/m); allow 5 sd
        assert abs(ratio - 1) < 5 * math.sqrt(2 / w.size)
    np.testing.assert_array_equal(scaled["b_in"][...], params["b_in"][...])  # biases untouched
    with pytest.raises(InputError, match="not a Gaussian"):
        gaussian_init("orthogonal:1.0")
