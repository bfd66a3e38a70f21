"""Tests of gradlab.experiments and ``gradlab experiment``: every experiment at --size tiny.

The tiny runs check the machinery (the JSON schema, the claims' evidence, the figures); the
qualitative claims are checked at default size, where docs/experiments.md reports them over
several seed sets, since at tiny size nothing has time to train.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gradlab import InputError, cli, experiments, init, nn
from gradlab.experiments import _result as result_mod
from gradlab.experiments import _stats
from gradlab.experiments._result import Claim, Control, Threshold, fraction_claim, ratio_claim
from gradlab.experiments._scaling import from_lecun, gaussian_init


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("experiments")


@pytest.mark.slow
@pytest.mark.parametrize("name", experiments.names())
def test_experiment_tiny_writes_json_and_figures(name, out, capsys):
    code = cli.main(["experiment", name, "--size", "tiny", "--out", str(out)])
    assert code == 0  # tiny is not judged: it says so and exits 0
    assert "nothing can train at size 'tiny'" in " ".join(capsys.readouterr().out.split())
    folder = out / name
    data = json.loads((folder / "result.json").read_text())
    experiments.validate_result(data)
    assert data["experiment"] == name and data["size"] == "tiny"
    assert data["judged"] is False and data["check"]["passed"] is None
    ev_seeds = data["seeds"]["evaluation"]
    assert len(ev_seeds) == data["config"]["seeds"]  # the tiny size's own seed count
    assert ev_seeds[0] == data["config"].get("first_seed", 1000)  # fresh seeds where declared
    assert not set(ev_seeds) & set(data["seeds"]["development"])
    for claim in data["claims"]:
        t, ctrl = claim["threshold"], claim["control"]
        assert t["source"] in result_mod.SOURCES and t["derivation"] and t["rule"]
        assert ctrl["text"] and isinstance(ctrl["holds"], bool)
        ev = claim["evidence"]
        if "k" in ev:  # a fraction claim: holds is the Wilson lower bound above one half
            assert ev["n"] == len(ev_seeds)
            assert claim["holds"] == (ev["interval"][0] > result_mod.MAJORITY)
            assert ev["interval"] == pytest.approx(list(_stats.wilson(ev["k"], ev["n"])))
        elif "log10_median" in ev:  # a ratio claim: the median of logs, its bootstrap interval
            assert len(ev["per_seed_log10"]) == len(ev_seeds)
            lo, hi = ev["interval"]
            assert lo <= ev["log10_median"] <= hi
        else:  # a claim with measurements of its own (a fitted law, a boundary): named values
            assert isinstance(ev, dict) and ev
    assert data["figures"]
    for fig in data["figures"]:
        assert (folder / fig).stat().st_size > 1000
    assert data["seconds"] > 0


def test_cli_exit_status_follows_the_check(monkeypatch, tmp_path, capsys):
    """Judged sizes exit 1 when a control holds or a claim fails, 0 when all is well."""
    holding = _claim(control={"text": "k", "holds": True, "evidence": {}})

    def fake_run(name, **kw):
        claims = result_mod.jsonable(fake_run.claims)
        return {
            "claims": claims,
            "seeds": {"development": [], "evaluation": [1000, 1001]},
            "check": result_mod.check_of(claims, True, "default"),
            "seconds": 1.0,
        }

    monkeypatch.setattr(experiments, "run", fake_run)
    for claims, code in (([_claim()], 0), ([holding], 1), ([_claim(holds=False)], 1)):
        fake_run.claims = claims
        assert cli.main(["experiment", "clipping", "--out", str(tmp_path)]) == code
    assert "a control came out true" in " ".join(capsys.readouterr().out.split())


def test_loss_curves_mark_diverged_runs():
    from matplotlib.figure import Figure

    from gradlab.experiments._figures import diverged_step, loss_curves

    loss = np.array([[1.0, 0.5, np.inf, np.nan], [1.0, 0.5, 0.4, 0.3], [1.0, 50.0, 1.0, 1.0]])
    assert diverged_step(loss, top=10.0).tolist() == [2, -1, 1]
    ax = Figure().subplots()
    assert loss_curves(ax, loss, color="C0", label="x", top=10.0) == 2
    crosses = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]
    assert [tuple(c.get_xydata()[0]) for c in crosses] == [(2.0, 10.0), (1.0, 10.0)]
    assert "2/3 diverged" in ax.get_legend_handles_labels()[1][0]


@pytest.mark.slow
def test_shells_task_is_not_linearly_solvable():
    """The best linear model stays at ln 2; the squared norm separates the classes exactly."""
    from gradlab.experiments._baselines import linear_baseline
    from gradlab.train import tasks

    x, y = tasks.shells(jax.random.key(3), batch=40_000, dim=16)
    # balanced to within 4 binomial sd (Wilson-Hilferty's median is off by < 4e-3 relative)
    assert abs(float(y.mean()) - 0.5) < 4 * 0.5 / math.sqrt(40_000) + 0.002
    r2 = jnp.sum(x * x, axis=1)
    assert bool(jnp.all((r2 > float(jnp.median(r2)) + 0.5) <= (y > 0.5)))
    loss = linear_baseline(16, 256, 300, (0, 1))
    # the batch BCE of logits near 0 has sd well under 0.01 at batch 256; the optimum is ln 2
    assert abs(loss[:, -30:].mean() - tasks.BCE_BASELINE) < 0.01
    noisy = tasks.shells(jax.random.key(3), batch=40_000, dim=16, noise=0.1)[1]  # same x
    assert abs(float(jnp.mean(noisy != y)) - 0.1) < 5 * math.sqrt(0.09 / 40_000) + 0.01
    with pytest.raises(InputError, match="noise"):
        tasks.shells(jax.random.key(0), batch=4, dim=2, noise=0.5)


def test_init_depth_theory_ratio_matches_a_direct_rescaling():
    """theory_ratio is the product of the other layers' Glorot/He weight scales."""
    from gradlab.experiments import _init_depth as m

    cfg = m.Config(depth=6, width=20, dim=5)
    c2 = {"in": (1 / 12.5) / (2 / 5), "hidden": (1 / 20) / (2 / 20), "out": (1 / 10.5) / (2 / 20)}
    expected = math.sqrt(c2["in"] * c2["out"] * c2["hidden"] ** 5)
    assert m.theory_ratio(cfg, 6) == pytest.approx(expected, rel=1e-12)


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
    # lr-scale-grid's grid was set on development seeds 0 and 1: they cannot judge its claim
    with pytest.raises(InputError, match="both development and evaluation"):
        experiments.run("lr-scale-grid", size="default", seeds=2, first_seed=1)
    assert cli.main(["experiment", "lr-scale-grid", "--seeds", "2", "--first-seed", "0"]) == 2
    summaries = {experiments.describe(name) for name in experiments.names()}
    assert len(summaries) == len(experiments.names())  # one summary per experiment


def _claim(**kw):
    t = Threshold("x < {value}", 1.0, "theory", "x is at most 1")
    c = Claim("c", True, {"x": [0.5]}, t, Control("k", False)).to_dict()
    return {**c, **kw}


def _result(claims):
    claims = result_mod.jsonable(claims)
    return {
        "experiment": "x",
        "size": "default",
        "judged": True,
        "seeds": {"development": [0, 1], "evaluation": [1000, 1001]},
        "config": {},
        "claims": claims,
        "check": result_mod.check_of(
            [c for c in claims if isinstance(c.get("control"), dict) and "holds" in c["control"]],
            True,
            "default",
        ),
        "results": {},
        "figures": [],
        "seconds": 1.0,
    }


def test_validate_result_rejects_bad_claims():
    experiments.validate_result(_result([_claim()]))
    with pytest.raises(InputError, match="missing keys"):
        experiments.validate_result({"experiment": "x"})
    with pytest.raises(InputError, match="at least one claim"):
        experiments.validate_result(_result([]))
    with pytest.raises(InputError, match="holds"):
        experiments.validate_result(_result([_claim(holds=1)]))
    with pytest.raises(InputError, match="no evidence"):
        experiments.validate_result(_result([_claim(evidence={})]))
    no_control = {k: v for k, v in _claim().items() if k != "control"}
    with pytest.raises(InputError, match="a claim needs exactly"):
        experiments.validate_result(_result([no_control]))
    bad_source = _claim(threshold={**_claim()["threshold"], "source": "tuned"})
    with pytest.raises(InputError, match="source"):
        experiments.validate_result(_result([bad_source]))
    with pytest.raises(InputError, match="control needs"):
        experiments.validate_result(_result([_claim(control={"holds": False})]))
    overlap = {**_result([_claim()]), "seeds": {"development": [0, 1], "evaluation": [1, 2]}}
    with pytest.raises(InputError, match="both development and evaluation"):
        experiments.validate_result(overlap)
    # a check written by hand that hides a holding control is rejected
    holding = _claim(control={"text": "k", "holds": True, "evidence": {}})
    forged = {**_result([holding]), "check": _result([_claim()])["check"]}
    with pytest.raises(InputError, match="disagrees"):
        experiments.validate_result(forged)


def test_check_fails_when_a_control_holds():
    ok = _claim()
    holding = _claim(control={"text": "k", "holds": True, "evidence": {}})
    assert result_mod.check_of([ok], True, "default")["passed"] is True
    bad = result_mod.check_of([ok, holding], True, "default")
    assert bad["passed"] is False and bad["controls_holding"] == ["k"]
    failing = result_mod.check_of([_claim(holds=False)], True, "default")
    assert failing["passed"] is True and failing["claims_hold"] is False
    tiny = result_mod.check_of([holding], False, "tiny")
    assert tiny["passed"] is None and "nothing can train" in tiny["message"]


def test_fraction_claim_uses_the_wilson_lower_bound():
    t = Threshold("loss < {value}", 0.3, "development run", "seeds 0-7")
    kw = {"control_text": "k", "control_passed": [False] * 8}
    assert fraction_claim("c", t, [True] * 7 + [False], **kw).holds  # Wilson low 0.53
    assert not fraction_claim("c", t, [True] * 6 + [False] * 2, **kw).holds  # 0.41
    c = fraction_claim("c", t, [True] * 8, control_text="k", control_passed=[True] * 8)
    assert c.control.holds  # the same rule where it must fail: here it did not
    d = c.to_dict()
    assert d["threshold"]["rule"] == "loss < 0.3" and d["threshold"]["source"] == "development run"
    with pytest.raises(InputError, match="source must be one of"):
        Threshold("x", 1.0, "tuned after the fact", "")


def test_ratio_claim_needs_the_whole_interval_past_the_threshold():
    t = Threshold("ratio < {value:g}", 1e-2, "theory", "x")
    small = [1e-5, 3e-5, 1e-4, 2e-5, 5e-5, 1e-5, 4e-5, 2e-4]
    straddles = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e-4, 1e-1]
    c = ratio_claim("c", t, small, below=True, control_text="k", control_ratios=straddles)
    assert c.holds and not c.control.holds
    up = ratio_claim("c", t, straddles, below=False, control_text="k", control_ratios=small)
    assert not up.holds and not up.control.holds


@pytest.mark.parametrize("k, n", [(0, 8), (1, 8), (4, 8), (7, 8), (8, 8), (3, 20), (50, 100)])
def test_wilson_matches_scipy(k, n):
    from scipy import stats as sps

    ref = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = _stats.wilson(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_known_values_and_errors():
    # Wilson (1927) / Newcombe (1998) table: 0/10 -> (0, 0.2775), 1/29 -> (0.0061, 0.1718)
    assert [round(v, 4) for v in _stats.wilson(0, 10)] == [0.0, 0.2775]
    assert [round(v, 4) for v in _stats.wilson(1, 29)] == [0.0061, 0.1718]
    with pytest.raises(InputError, match="0 <= k <= n"):
        _stats.wilson(5, 4)
    with pytest.raises(InputError, match="no seeds"):
        _stats.fraction([])


@pytest.mark.parametrize("n", [7, 11])
def test_log_median_bootstrap_coverage_matches_its_exact_value(n):
    """The percentile bootstrap of an odd-n median is an order-statistic interval.

    The bootstrap median is the k-th order statistic with P(median <= X_(k)) =
    P(Bin(n, k/n) >= (n+1)/2); the 2.5% and 97.5% quantiles pick X_(j_lo), X_(j_hi) (for
    n = 7 and 11 far from any boundary, so the resampling noise cannot move them), and the
    interval covers the true median with probability P(j_lo <= Bin(n, 1/2) <= j_hi - 1).
    Over M independent data sets the number covered is Binomial(M, that); the test accepts
    its central 99.99% range.
    """
    from scipy import stats as sps

    ks = np.arange(1, n + 1)
    cdf = sps.binom.sf((n + 1) // 2 - 1, n, ks / n)
    j_lo, j_hi = ks[np.argmax(cdf >= 0.025)], ks[np.argmax(cdf >= 0.975)]
    exact = sps.binom.cdf(j_hi - 1, n, 0.5) - sps.binom.cdf(j_lo - 1, n, 0.5)
    rng = np.random.default_rng(20261206)
    m = 300
    covered = 0
    for i in range(m):
        x = 10.0 ** rng.normal(0.0, 1.0, n)  # true median of log10: 0
        lo, hi = _stats.log_median(x, seed=i)["interval"]
        covered += lo <= 0.0 <= hi
    lo_ok, hi_ok = sps.binom.interval(0.9999, m, exact)
    assert lo_ok <= covered <= hi_ok, (covered, m, exact)


def test_log_median_is_deterministic_and_handles_divergence():
    v = [1e-3, 1e-2, np.inf, 1e-1, 1.0]
    a, b = _stats.log_median(v), _stats.log_median(v)
    assert a == b and a["log10_median"] == -1.0
    assert _stats.log_median([1.0, np.inf])["log10_median"] == np.inf
    with pytest.raises(InputError, match="positive ratios"):
        _stats.log_median([1.0, np.nan])
    with pytest.raises(InputError, match="positive ratios"):
        _stats.log_median([1.0, -2.0])


def test_seed_split_and_log_midpoint():
    s = _stats.split_seeds(4, 3)
    assert s.development == (0, 1, 2, 3) and s.evaluation == (1000, 1001, 1002)
    with pytest.raises(InputError, match="both development and evaluation"):
        _stats.split_seeds(4, 3, first_evaluation=2)
    with pytest.raises(InputError, match="first_seed"):
        experiments.run("init-depth", size="tiny", first_seed=-1)
    assert _stats.log_midpoint([0.01], [1.0]) == pytest.approx(0.1)
    with pytest.raises(InputError, match="overlap"):
        _stats.log_midpoint([0.5, 2.0], [1.0])


@pytest.mark.slow
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


@pytest.mark.slow
def test_fixup_starts_as_a_linear_map_and_its_branches_then_learn():
    from gradlab.experiments import _residual_depth as rd

    cfg = rd.CONFIGS["tiny"]
    p = rd.fixup_params(cfg, depth=6, seed=0)
    x = jax.random.normal(jax.random.key(1), (5, cfg.dim))
    assert float(jnp.abs(rd.fixup_apply(p, x)).max()) == 0.0  # zero readout
    # the last branch layers are zero: the stack is its input projection, read out linearly
    p["out_kernel"] = jnp.ones((cfg.width, 1))
    h0 = x @ p["in_kernel"] + p["in_bias"]
    np.testing.assert_allclose(rd.fixup_apply(p, x), h0 @ p["out_kernel"], rtol=1e-5)
    # the branch's first layer is He's scaled by depth^-1/2 (m = 2)
    assert float(p["kernel1"].std()) == pytest.approx((2 / cfg.width / 6) ** 0.5, rel=0.2)
    # with a non-zero readout, every parameter group gets a gradient (kernel2, the scalars)
    y = (jnp.sum(x**2, -1) > cfg.dim).astype(jnp.float32)
    grads = jax.grad(lambda q: rd._loss(rd.fixup_apply, q, (x, y))[0])(p)
    for name in ("kernel2", "shifts", "out_shift", "out_kernel"):
        assert float(jnp.abs(grads[name]).sum()) > 0, name
    assert float(jnp.abs(grads["scale"]).sum()) == 0  # s multiplies a zero branch at init
