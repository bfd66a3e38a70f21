"""The learning experiments: which initialisers and architectures train, measured over seeds.

Each experiment is run by :func:`run` (or ``gradlab experiment NAME``) at a size ``tiny``
(seconds, for tests), ``default`` (minutes on 2 CPU cores) or ``large`` (for a GPU), and
writes ``OUT/NAME/result.json`` (see :func:`validate_result` for its schema) and its figures.

Every claim states its rule, its threshold and where the threshold comes from, is judged on
evaluation seeds that did not set it, and carries a control that must come out false
(:mod:`gradlab.experiments._result` says how a new experiment builds them;
:mod:`gradlab.experiments._stats` holds the intervals and the seed split).

Example:
    >>> from gradlab import experiments
    >>> experiments.names()  # doctest: +NORMALIZE_WHITESPACE
    ('init-depth', 'residual-depth', 'lstm-adding', 'clipping', 'lr-scale-grid',
     'trainability-depth', 'isometry', 'transformer-ln')
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import jax

from gradlab._errors import InputError
from gradlab.experiments import _stats
from gradlab.experiments._result import (
    SIZES,
    Claim,
    Control,
    Threshold,
    check_of,
    jsonable,
    validate_result,
    write_result,
)

__all__ = ["SIZES", "Claim", "Control", "Threshold", "describe", "names", "run", "validate_result"]

#: experiment name -> the private module that implements it (imported when first used).
_MODULES = {
    "init-depth": "_init_depth",
    "residual-depth": "_residual_depth",
    "lstm-adding": "_lstm_adding",
    "clipping": "_clipping",
    "lr-scale-grid": "_lr_scale_grid",
    "trainability-depth": "_trainability_depth",
    "isometry": "_isometry",
    "transformer-ln": "_transformer_ln",
}


def names() -> tuple[str, ...]:
    """The experiments' names, in the order of the issue.

    Example:
        >>> names()[:2]
        ('init-depth', 'residual-depth')
    """
    return tuple(_MODULES)


def _module(name: str) -> ModuleType:
    if name not in _MODULES:
        raise InputError(
            f"Unknown experiment {name!r}; choose one of {', '.join(_MODULES)} "
            "(gradlab experiment list describes them)."
        )
    return importlib.import_module(f"gradlab.experiments.{_MODULES[name]}")


def describe(name: str) -> str:
    """A one-line summary of the experiment.

    Raises:
        InputError: for an unknown name (the message lists the experiments).

    Example:
        >>> describe("clipping")
        'tanh RNN with recurrent spectral radius 1.3 (Pascanu et al.): clipping vs an lr sweep'
    """
    return str(_module(name).SUMMARY)


def run(
    name: str,
    *,
    size: str = "default",
    seeds: int | None = None,
    out: str | Path = "gradlab-out/experiments",
    first_seed: int | None = None,
) -> dict[str, Any]:
    """Runs experiment ``name`` and writes ``out/name/result.json`` and its figures.

    The claims are judged on the evaluation seeds ``first_seed .. first_seed + seeds - 1``;
    thresholds not taken from theory or a paper were fixed from the development seeds
    ``0 .. dev_seeds - 1`` of the size's config, which the evaluation seeds may not overlap.

    Args:
        name: one of :func:`names`.
        size: ``"tiny"`` (nothing trains: the claims are computed but not judged),
            ``"default"`` or ``"large"``.
        seeds: evaluation seeds (default: the size's own).
        out: output folder.
        first_seed: the first evaluation seed (default: the size config's ``first_seed``
            where it has one, else 1000; another value gives an independent evaluation set,
            to check that the claims are robust).

    Returns:
        The result, as written to ``result.json`` (its ``check`` says whether every claim held
        and every control came out false).

    Raises:
        InputError: for an unknown name or size, seeds < 2, or evaluation seeds that are
            negative or overlap the development seeds.

    Example:
        >>> import tempfile
        >>> from gradlab import experiments
        >>> with tempfile.TemporaryDirectory() as out:  # doctest: +SKIP
        ...     result = experiments.run("clipping", size="tiny", out=out)
        >>> result["check"]["judged"]  # doctest: +SKIP
        False
        >>> experiments.run("clipping", size="huge")
        Traceback (most recent call last):
        ...
        gradlab.InputError: Unknown size 'huge'; choose one of tiny, default, large.
    """
    if name not in _MODULES:
        _module(name)  # raises, naming the experiments
    if size not in SIZES:
        raise InputError(f"Unknown size {size!r}; choose one of {', '.join(SIZES)}.")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2):
        raise InputError(
            f"seeds must be an integer >= 2 (claims hold over seeds), got {seeds!r}; pass e.g. "
            "seeds=8, or None for the size's own."
        )
    module = _module(name)
    cfg = module.CONFIGS[size]
    # an experiment whose rules were fixed after an earlier run names fresh evaluation seeds
    own_first = getattr(cfg, "first_seed", _stats.EVAL_FIRST_SEED)
    first = own_first if first_seed is None else first_seed
    if isinstance(first, bool) or not isinstance(first, int) or first < 0:
        raise InputError(f"first_seed must be an integer >= 0, got {first!r}; pass e.g. 2000.")
    seeds = cfg.seeds if seeds is None else seeds
    split = _stats.split_seeds(getattr(cfg, "dev_seeds", 0), seeds, first)
    out_dir = Path(out) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    body = module.run(cfg, split, out_dir)
    claims = [c.to_dict() for c in body["claims"]]
    judged = size != "tiny"
    result = {
        "experiment": name,
        "size": size,
        "judged": judged,
        "seeds": split.to_dict(),
        **body,
        "claims": claims,
        "check": check_of(jsonable(claims), judged, size),
        "seconds": round(time.perf_counter() - start, 1),
        "versions": {"jax": jax.__version__, "backend": jax.default_backend()},
    }
    write_result(result, out_dir)
    return jsonable(result)
