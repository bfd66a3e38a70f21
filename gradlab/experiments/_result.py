"""What every experiment returns: claims that can fail, their controls, and ``result.json``.

A :class:`Claim` states a rule with a :class:`Threshold` (its value and where it comes from:
``"theory"``, ``"published"`` or ``"development run"``), whether the evaluation seeds satisfy
it, the evidence it was decided on, and a :class:`Control`: the same rule evaluated where it
must come out false. A claim whose control holds shows nothing (the rule passes everywhere), so
an experiment with any control holding fails its own check (``check.passed`` is false and
``gradlab experiment`` exits 1).

``result.json`` holds::

    {"experiment": NAME, "size": "tiny|default|large", "judged": true|false,
     "seeds": {"development": [...], "evaluation": [...]}, "config": {...},
     "claims": [{"text": ..., "holds": true|false, "evidence": {...},
                 "threshold": {"rule", "value", "source", "derivation"},
                 "control": {"text", "holds", "evidence"}}, ...],
     "check": {"judged", "passed", "claims_hold", "controls_holding", "message"},
     "results": {...}, "figures": ["NAME_x.png", ...], "seconds": ..., "versions": {...}}

``holds`` is always computed from the measured numbers in the evidence, never written by hand.
At size ``tiny`` nothing trains: the claims are computed (to test the machinery) but not judged.

How a new experiment uses it: its module defines ``NAME``, ``SUMMARY``, ``CONFIGS`` (one
frozen dataclass per size, with fields ``seeds`` — evaluation seeds — and ``dev_seeds`` —
development seeds, 0 when every threshold comes from theory or a paper) and
``run(cfg, seeds: SeedSplit, out: Path) -> {"config", "claims", "results", "figures"}``.
Inside ``run`` it trains the evaluation seeds (and the development seeds if a threshold is
fixed from them), then builds each claim with :func:`fraction_claim` (a success fraction,
judged by its Wilson interval) or :func:`ratio_claim` (a ratio, judged by the bootstrap
interval of its median in log space)::

    t = Threshold("final loss < {value:.3g}", 0.35, "development run",
                  "midpoint of trained/stalled losses on the development seeds")
    claim = fraction_claim(
        "He init trains the 30-layer ReLU MLP", t, he_loss < t.value,
        control_text="Glorot 'trains' too at depth 30 (must be false)",
        control_passed=glorot_loss < t.value,
        evidence={"final_loss": he_loss}, control_evidence={"final_loss": glorot_loss})
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from gradlab._errors import InputError
from gradlab.experiments import _stats

__all__ = [
    "MAJORITY",
    "SIZES",
    "SOURCES",
    "Claim",
    "Control",
    "Threshold",
    "check_of",
    "fraction_claim",
    "jsonable",
    "ratio_claim",
    "validate_result",
    "write_result",
]

SIZES: tuple[str, ...] = ("tiny", "default", "large")
"""The sizes every experiment offers, smallest first.

``tiny`` runs in seconds and checks the machinery (the tests use it): nothing trains at that
size, so its claims are not judged. ``default`` takes minutes on 2 CPU cores and is the size
the documented numbers come from; ``large`` is meant for a GPU.

Example:
    >>> from gradlab import experiments
    >>> experiments.SIZES
    ('tiny', 'default', 'large')
"""

SOURCES: tuple[str, ...] = ("theory", "published", "development run")
"""Where a threshold may come from: a formula, a paper's number, or development seeds."""

MAJORITY: float = 0.5
"""A fraction claim holds when the Wilson interval's lower end lies above this (with 8
evaluation seeds: at least 7 of 8 pass)."""


@dataclasses.dataclass(frozen=True)
class Threshold:
    """The rule a claim applies and where its number comes from.

    Attributes:
        rule: the test in words; ``{value}`` (with an optional format) is replaced by the value.
        value: the threshold.
        source: ``"theory"``, ``"published"`` or ``"development run"`` (:data:`SOURCES`).
        derivation: how the value follows from its source (the formula, the paper and figure,
            or the development seeds and the rule that set it).

    Example:
        >>> t = Threshold("ratio < {value:.1e}", 1.9e-5 * 100, "theory", "100 x 2^(-depth/2)")
        >>> t.to_dict()["rule"]
        'ratio < 1.9e-03'
        >>> Threshold("x", 1.0, "guess", "")
        Traceback (most recent call last):
        ...
        gradlab.InputError: Threshold source must be one of theory, published, development run; ...
    """

    rule: str
    value: float
    source: str
    derivation: str

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise InputError(
                f"Threshold source must be one of {', '.join(SOURCES)}; got {self.source!r} "
                "(say where the number comes from)."
            )
        if not self.derivation and self.source != "published":
            raise InputError("Threshold: give its derivation (the formula or the seeds).")

    def to_dict(self) -> dict[str, Any]:
        """``{"rule", "value", "source", "derivation"}`` with the value put into the rule."""
        return {
            "rule": self.rule.format(value=self.value),
            "value": jsonable(float(self.value)),
            "source": self.source,
            "derivation": self.derivation,
        }


@dataclasses.dataclass(frozen=True)
class Control:
    """The claim's rule evaluated where it must come out false.

    Attributes:
        text: what was evaluated, e.g. "Glorot stalls at depth 4 too".
        holds: whether the rule came out true there (a control that holds fails the check).
        evidence: the numbers it was decided on.

    Example:
        >>> from gradlab.experiments import Control
        >>> Control("Glorot stalls at depth 4 too", False, {"k": 0, "n": 8}).to_dict()["holds"]
        False
    """

    text: str
    holds: bool
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"text", "holds", "evidence"}``."""
        return {"text": self.text, "holds": bool(self.holds), "evidence": jsonable(self.evidence)}


@dataclasses.dataclass(frozen=True)
class Claim:
    """A statement about the experiment's outcome, its rule, its evidence and its control.

    Attributes:
        text: the statement, in words.
        holds: whether the evidence on the evaluation seeds satisfies the rule.
        evidence: the numbers it was decided on (per seed, intervals).
        threshold: the rule and where its number comes from.
        control: the same rule where it must come out false.

    Example:
        >>> from gradlab.experiments import Claim, Control, Threshold
        >>> t = Threshold("loss < {value}", 0.3, "development run", "seeds 0-7")
        >>> c = Claim("the loss fell", True, {"per_seed": [0.2]}, t, Control("x", False))
        >>> sorted(c.to_dict())
        ['control', 'evidence', 'holds', 'text', 'threshold']
    """

    text: str
    holds: bool
    evidence: dict[str, Any]
    threshold: Threshold
    control: Control

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (numbers as plain Python values, non-finite as ``None``).

        Example:
            >>> t = Threshold("x < {value}", 1.0, "theory", "x is at most 1")
            >>> c = Claim("x", True, {"per_seed": np.array([1.0, np.inf])}, t, Control("y", 0))
            >>> c.to_dict()["evidence"], c.to_dict()["control"]["holds"]
            ({'per_seed': [1.0, None]}, False)
        """
        return {
            "text": self.text,
            "holds": bool(self.holds),
            "evidence": jsonable(self.evidence),
            "threshold": self.threshold.to_dict(),
            "control": self.control.to_dict(),
        }


def fraction_claim(
    text: str,
    threshold: Threshold,
    passed: ArrayLike,
    *,
    control_text: str,
    control_passed: ArrayLike,
    evidence: dict[str, Any] | None = None,
    control_evidence: dict[str, Any] | None = None,
    minimum: float = MAJORITY,
) -> Claim:
    """A claim that most evaluation seeds pass a per-seed rule, and its control.

    The claim holds when the Wilson interval of the passing fraction lies above ``minimum``
    (its lower end > ``minimum``); the control applies the same test to ``control_passed``.

    Args:
        text: the statement.
        threshold: the per-seed rule.
        passed: one bool per evaluation seed.
        control_text: the control's statement.
        control_passed: one bool per evaluation seed, in the control's setting.
        evidence: extra numbers for the claim (e.g. the per-seed values).
        control_evidence: extra numbers for the control.
        minimum: the fraction the interval must clear.

    Example:
        >>> t = Threshold("loss < {value}", 0.3, "theory", "half of ln 2, rounded")
        >>> c = fraction_claim("trains", t, [True] * 8, control_text="c",
        ...                    control_passed=[True] * 3 + [False] * 5)
        >>> c.holds, c.control.holds, c.evidence["k"]
        (True, False, 8)
        >>> fraction_claim("trains", t, [True] * 6 + [False] * 2, control_text="c",
        ...                control_passed=[False] * 8).holds  # 6/8: Wilson low 0.41
        False
    """
    f = _stats.fraction(passed)
    g = _stats.fraction(control_passed)
    rule = f"Wilson {f['confidence']:.0%} interval of the passing fraction above {minimum:g}"
    return Claim(
        text,
        f["interval"][0] > minimum,
        {**f, "judged_by": rule, **(evidence or {})},
        threshold,
        Control(control_text, g["interval"][0] > minimum, {**g, **(control_evidence or {})}),
    )


def ratio_claim(
    text: str,
    threshold: Threshold,
    ratios: ArrayLike,
    *,
    below: bool | None = None,
    within: float | None = None,
    control_text: str,
    control_ratios: ArrayLike,
    evidence: dict[str, Any] | None = None,
    control_evidence: dict[str, Any] | None = None,
) -> Claim:
    """A claim that a ratio's median lies below, above, or near a threshold, and its control.

    The claim holds when the whole bootstrap interval of the median of ``log10(ratios)`` lies
    on the threshold's side (``below=True`` or ``False``), or within a factor ``within`` of it
    (a prediction); see :func:`gradlab.experiments._stats.log_median`. The control applies the
    same test to ``control_ratios``.

    Example:
        >>> t = Threshold("ratio < {value:g}", 1e-3, "theory", "2^-15 x 30")
        >>> c = ratio_claim("small", t, [1e-5, 2e-5, 4e-5], below=True, control_text="c",
        ...                 control_ratios=[0.5, 1.0, 2.0])
        >>> c.holds, c.control.holds
        (True, False)
        >>> p = Threshold("ratio near {value:g}", 2e-5, "theory", "product of scales")
        >>> ratio_claim("as predicted", p, [1e-5, 2e-5, 4e-5], within=10.0, control_text="c",
        ...             control_ratios=[1e-7, 2e-7, 4e-7]).control.holds
        False
    """
    if (below is None) == (within is None):
        raise InputError("ratio_claim: pass exactly one of below=True/False or within=FACTOR.")
    if not threshold.value > 0:
        raise InputError(f"ratio_claim: the threshold must be positive, got {threshold.value}.")
    if within is not None and not within > 1:
        raise InputError(f"ratio_claim: within must be a factor > 1, got {within!r}.")
    edge = math.log10(threshold.value)
    width = 0.0 if within is None else math.log10(within)

    def side(stats: dict[str, Any]) -> bool:
        lo, hi = stats["interval"]
        if within is not None:
            return bool(edge - width <= lo and hi <= edge + width)
        return bool(hi < edge) if below else bool(lo > edge)

    r, c = _stats.log_median(ratios), _stats.log_median(control_ratios)
    if within is not None:
        rule = f"bootstrap interval of the median of log10(ratio) inside {edge:.3g} ± {width:.3g}"
    else:
        where = "below" if below else "above"
        rule = f"bootstrap interval of the median of log10(ratio) entirely {where} {edge:.3g}"
    return Claim(
        text,
        side(r),
        {**r, "judged_by": rule, **(evidence or {})},
        threshold,
        Control(control_text, side(c), {**c, **(control_evidence or {})}),
    )


def check_of(claims: list[dict[str, Any]], judged: bool, size: str) -> dict[str, Any]:
    """The experiment's own check: no control may hold, and every claim should.

    Returns:
        ``{"judged", "passed", "claims_hold", "controls_holding", "message"}``; ``passed`` is
        ``None`` when the size is not judged, else whether no control held.

    Example:
        >>> ok = {"text": "a", "holds": True, "control": {"text": "b", "holds": False}}
        >>> check_of([ok], True, "default")["passed"]
        True
        >>> bad = {"text": "a", "holds": True, "control": {"text": "b", "holds": True}}
        >>> check_of([bad], True, "default")["message"]
        'failed: a control came out true (b), so its claim shows nothing'
    """
    holding = [c["control"]["text"] for c in claims if c["control"]["holds"]]
    failing = [c["text"] for c in claims if not c["holds"]]
    if not judged:
        return {
            "judged": False,
            "passed": None,
            "claims_hold": None,
            "controls_holding": holding,
            "message": f"not judged: nothing can train at size {size!r}, which runs the "
            "machinery only (claims and controls below are computed, not evidence); run "
            "--size default to judge them",
        }
    if holding:
        one = len(holding) == 1
        message = (
            f"failed: {'a control' if one else 'controls'} came out true "
            f"({'; '.join(holding)}), so {'its claim shows' if one else 'their claims show'} "
            "nothing"
        )
    elif failing:
        message = f"every control false; {len(failing)} of {len(claims)} claims did not hold"
    else:
        message = f"passed: all {len(claims)} claims hold and every control is false"
    return {
        "judged": True,
        "passed": not holding,
        "claims_hold": not failing,
        "controls_holding": holding,
        "message": message,
    }


def jsonable(x: Any) -> Any:
    """Arrays to lists, numpy scalars to Python numbers, NaN/Inf to None.

    >>> jsonable({"a": np.array([1.0, np.nan]), "b": np.int64(3)})
    {'a': [1.0, None], 'b': 3}
    """
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray) or (hasattr(x, "__array__") and not isinstance(x, str)):
        a = np.asarray(x)
        return jsonable(a.tolist()) if a.ndim else jsonable(a.item())
    if isinstance(x, np.generic):
        return jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


_KEYS = (
    "experiment",
    "size",
    "judged",
    "seeds",
    "config",
    "claims",
    "check",
    "results",
    "figures",
    "seconds",
)
_CLAIM_KEYS = {"text", "holds", "evidence", "threshold", "control"}
_THRESHOLD_KEYS = {"rule", "value", "source", "derivation"}


def _bad(message: str) -> InputError:
    return InputError(f"result.json: {message}")


def validate_result(result: dict[str, Any]) -> None:
    """Checks that ``result`` follows the ``result.json`` schema (see the module docstring).

    Every claim needs ``text``, ``holds`` (a bool), non-empty ``evidence``, a ``threshold``
    with its rule, value, source (:data:`SOURCES`) and derivation, and a ``control`` with its
    text and ``holds``; the seeds are declared as disjoint development and evaluation lists;
    ``check.passed`` agrees with the controls.

    Raises:
        InputError: naming the first missing key or malformed entry.

    Example:
        >>> validate_result({"experiment": "x"})
        Traceback (most recent call last):
        ...
        gradlab.InputError: result.json: missing keys ['check', 'claims', 'config', ...
    """
    missing = sorted(set(_KEYS) - set(result))
    if missing:
        raise _bad(f"missing keys {missing}; write results with gradlab.experiments.run.")
    seeds = result["seeds"]
    if not isinstance(seeds, dict) or set(seeds) != {"development", "evaluation"}:
        raise _bad(f"seeds must be {{'development': [...], 'evaluation': [...]}}, got {seeds!r}.")
    _stats.SeedSplit(tuple(seeds["development"]), tuple(seeds["evaluation"]))  # disjoint, etc.
    if not result["claims"]:
        raise _bad("an experiment must state at least one claim; add a Claim with its control.")
    for c in result["claims"]:
        if not isinstance(c, dict) or set(c) != _CLAIM_KEYS or not isinstance(c["holds"], bool):
            raise _bad(f"a claim needs exactly {sorted(_CLAIM_KEYS)} with holds a bool; got {c}.")
        if not c["evidence"]:
            raise _bad(f"claim {c['text']!r} has no evidence; give the numbers it was decided on.")
        t = c["threshold"]
        if not isinstance(t, dict) or set(t) != _THRESHOLD_KEYS or t["source"] not in SOURCES:
            raise _bad(
                f"claim {c['text']!r}: threshold needs {sorted(_THRESHOLD_KEYS)} with source "
                f"one of {SOURCES}; got {t}."
            )
        k = c["control"]
        if not isinstance(k, dict) or not {"text", "holds"} <= set(k):
            raise _bad(f"claim {c['text']!r}: a control needs text and holds; got {k}.")
        if not isinstance(k["holds"], bool) or not k["text"]:
            raise _bad(f"claim {c['text']!r}: control holds must be a bool and text non-empty.")
    if not isinstance(result["judged"], bool):
        raise _bad(f"judged must be a bool, got {result['judged']!r}.")
    expected = check_of(result["claims"], result["judged"], str(result["size"]))
    if result["check"] != expected:
        raise _bad(
            f"check {result['check']} disagrees with the claims and controls ({expected}); "
            "compute it with check_of."
        )


def write_result(result: dict[str, Any], out_dir: Path) -> Path:
    """Validates ``result`` and writes it as ``out_dir/result.json`` (strict JSON).

    Returns:
        The path written.
    """
    result = jsonable(result)
    validate_result(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "result.json"
    path.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    return path
