"""What every experiment returns: claims measured over seeds, and the ``result.json`` schema.

``result.json`` holds::

    {"experiment": NAME, "size": "tiny|default|large", "seeds": N, "config": {...},
     "claims": [{"text": ..., "holds": true|false, "evidence": {...}}, ...],
     "results": {...}, "figures": ["NAME_x.png", ...], "seconds": ..., "versions": {...}}

A claim's ``holds`` is computed from the measured numbers in its ``evidence`` (per-seed values
and the rule applied to them), never written by hand.
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

__all__ = ["SIZES", "Claim", "claim_all", "jsonable", "validate_result", "write_result"]

SIZES: tuple[str, ...] = ("tiny", "default", "large")
"""The sizes every experiment offers, smallest first.

``tiny`` runs in seconds and checks the machinery (the tests use it; nothing trains), ``default``
takes minutes on 2 CPU cores and is the size the documented numbers come from, ``large`` is
meant for a GPU.

Example:
    >>> from gradlab import experiments
    >>> experiments.SIZES
    ('tiny', 'default', 'large')
"""


@dataclasses.dataclass(frozen=True)
class Claim:
    """A statement about the experiment's outcome, with the measurement that decides it.

    Attributes:
        text: the statement, in words.
        holds: whether the measured evidence supports it.
        evidence: the numbers it was decided on (per seed), and the rule.

    Example:
        >>> from gradlab.experiments import Claim
        >>> c = Claim("the loss fell", True, {"per_seed": [0.2, 0.3]})
        >>> c.to_dict()["holds"]
        True
    """

    text: str
    holds: bool
    evidence: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``{"text", "holds", "evidence"}`` (numbers as plain Python values).

        Example:
            >>> import numpy as np
            >>> Claim("x", True, {"per_seed": np.array([1.0, np.inf])}).to_dict()["evidence"]
            {'per_seed': [1.0, None]}
        """
        return {"text": self.text, "holds": bool(self.holds), "evidence": jsonable(self.evidence)}


def claim_all(text: str, values: ArrayLike, rule: str, passed: ArrayLike) -> Claim:
    """A claim that holds when it holds for every seed.

    Args:
        text: the statement.
        values: the measured value per seed (a sequence or a 1-D array).
        rule: the per-seed test in words, e.g. ``"final loss < 0.35"``.
        passed: whether each seed passed the rule (same length as ``values``).

    Example:
        >>> c = claim_all("x is small", [0.1, 0.2], "x < 0.5", [True, True])
        >>> c.holds, c.evidence["seeds_passing"]
        (True, 2)
    """
    ok = [bool(p) for p in np.ravel(passed)]
    return Claim(
        text,
        bool(ok) and all(ok),
        {
            "rule (per seed)": rule,
            "per_seed": [float(v) for v in np.ravel(values)],
            "seeds_passing": sum(ok),
            "seeds": len(ok),
        },
    )


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


_KEYS = ("experiment", "size", "seeds", "config", "claims", "results", "figures", "seconds")


def validate_result(result: dict[str, Any]) -> None:
    """Checks that ``result`` follows the ``result.json`` schema.

    ``result.json`` holds::

        {"experiment": NAME, "size": "tiny|default|large", "seeds": N, "config": {...},
         "claims": [{"text": ..., "holds": true|false, "evidence": {...}}, ...],
         "results": {...}, "figures": ["NAME_x.png", ...], "seconds": ..., "versions": {...}}

    Raises:
        InputError: naming the first missing key or malformed claim.

    Example:
        >>> validate_result({"experiment": "x"})
        Traceback (most recent call last):
        ...
        gradlab.InputError: result.json: missing keys ['claims', 'config', 'figures', ...
    """
    missing = sorted(set(_KEYS) - set(result))
    if missing:
        raise InputError(
            f"result.json: missing keys {missing}; write results with gradlab.experiments.run."
        )
    if not result["claims"]:
        raise InputError(
            "result.json: an experiment must state at least one claim; add a Claim measured "
            "over the seeds."
        )
    for c in result["claims"]:
        if set(c) != {"text", "holds", "evidence"} or not isinstance(c["holds"], bool):
            raise InputError(
                f"result.json: a claim needs exactly text, holds (a bool) and evidence; got {c}."
            )
        if not c["evidence"]:
            raise InputError(
                f"result.json: claim {c['text']!r} has no evidence; give the per-seed numbers "
                "it was decided on."
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
