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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SIZES", "Claim", "claim_all", "jsonable", "validate_result", "write_result"]

#: The sizes every experiment offers: ``tiny`` for tests (seconds), ``default`` for a laptop
#: (minutes on 2 CPU cores), ``large`` for a GPU.
SIZES: tuple[str, ...] = ("tiny", "default", "large")


@dataclasses.dataclass(frozen=True)
class Claim:
    """A statement about the experiment's outcome, with the measurement that decides it.

    Attributes:
        text: the statement, in words.
        holds: whether the measured evidence supports it.
        evidence: the numbers it was decided on (per seed), and the rule.
    """

    text: str
    holds: bool
    evidence: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``{"text", "holds", "evidence"}``."""
        return {"text": self.text, "holds": bool(self.holds), "evidence": jsonable(self.evidence)}


def claim_all(text: str, values: Sequence[float], rule: str, passed: Sequence[bool]) -> Claim:
    """A claim that holds when it holds for every seed.

    Args:
        text: the statement.
        values: the measured value per seed.
        rule: the per-seed test in words, e.g. ``"final loss < 0.35"``.
        passed: whether each seed passed the rule.

    Example:
        >>> c = claim_all("x is small", [0.1, 0.2], "x < 0.5", [True, True])
        >>> c.holds, c.evidence["seeds_passing"]
        (True, 2)
    """
    passed = [bool(p) for p in passed]
    return Claim(
        text,
        bool(passed) and all(passed),
        {
            "rule (per seed)": rule,
            "per_seed": [float(v) for v in values],
            "seeds_passing": sum(passed),
            "seeds": len(passed),
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
    """Raises ValueError unless ``result`` follows the ``result.json`` schema above.

    >>> validate_result({"experiment": "x"})
    Traceback (most recent call last):
    ...
    ValueError: result.json: missing keys ['claims', 'config', 'figures', 'results', 'seconds', 'seeds', 'size']
    """  # noqa: E501
    missing = sorted(set(_KEYS) - set(result))
    if missing:
        raise ValueError(f"result.json: missing keys {missing}")
    if not result["claims"]:
        raise ValueError("result.json: an experiment must state at least one claim.")
    for c in result["claims"]:
        if set(c) != {"text", "holds", "evidence"} or not isinstance(c["holds"], bool):
            raise ValueError(f"result.json: a claim needs text, holds (bool), evidence: {c}")
        if not c["evidence"]:
            raise ValueError(f"result.json: claim {c['text']!r} has no evidence.")


def write_result(result: dict[str, Any], out_dir: Path) -> Path:
    """Validates ``result`` and writes it as ``out_dir/result.json`` (strict JSON)."""
    result = jsonable(result)
    validate_result(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "result.json"
    path.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    return path
