"""gradlab: see and fix vanishing and exploding gradients in JAX, and verify gradients.

The centre is :func:`gradlab.check`, a centered-difference gradient checker that perturbs every
parameter entry in parallel and reports per leaf with the lecture's relative-error bands.
"""

import importlib
from typing import TYPE_CHECKING, Any

from gradlab._errors import GradlabError, InputError
from gradlab.gradcheck import (
    BANDS,
    CheckInputError,
    CheckReport,
    Criteria,
    Directional,
    EntryMismatch,
    Execution,
    Full,
    GradCheckError,
    LeafReport,
    RuleReport,
    Sample,
    assert_check,
    check,
    check_rule,
    check_second_order,
    relative_error,
    verdict,
)

if TYPE_CHECKING:
    from gradlab import experiments, flow, init, losses, nn, theory, train

__version__ = "0.1.0"

#: Submodules imported on first use: a test that only checks gradients does not pay for Flax,
#: optax or matplotlib at import time.
_SUBMODULES = ("experiments", "flow", "init", "losses", "nn", "theory", "train")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"gradlab.{name}")
    raise AttributeError(f"module 'gradlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BANDS",
    "CheckInputError",
    "CheckReport",
    "Criteria",
    "Directional",
    "EntryMismatch",
    "Execution",
    "Full",
    "GradCheckError",
    "GradlabError",
    "InputError",
    "LeafReport",
    "RuleReport",
    "Sample",
    "__version__",
    "assert_check",
    "check",
    "check_rule",
    "check_second_order",
    "experiments",
    "flow",
    "init",
    "losses",
    "nn",
    "relative_error",
    "theory",
    "train",
    "verdict",
]
